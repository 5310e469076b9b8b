/**
 * Crosscoders across two models read live (model diffing at small size), on the tiny GPT-2 fixture
 * (model A) and a perturbed copy of it (model B, standing in for a finetuned model), both with the
 * tiny byte tokenizer: the two-model activation buffer serves each model's own single-model rows
 * stacked, bitwise, also after a replay; a DFC trained on it stopped and resumed equals the straight
 * run; `sae train --model A,B` writes cfg.json's names and CE/KL per model, `sae diff` runs on it;
 * mismatched tokenizers and meaningless combinations are refused by name; and the domain
 * specificity of a hand-made DFC whose B-exclusive feature fires only on one domain's token comes
 * out as computed by hand.
 */
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { writeByteTokenizer } from "./text_fixtures.ts";
import { root, takeBatch as take } from "./lm_fixtures.ts";
import { type LanguageModel, loadModel } from "../data/lm/model.ts";
import { activationBuffer, type LiveSource } from "../data/lm/activation_buffer.ts";
import { idRows } from "../data/text/id_rows.ts";
import { loadSafetensors, saveSafetensors } from "../data/safetensors.ts";
import { assertSameTokenizer } from "../data/text/tokenizer_match.ts";
import { runTraining } from "../sae/train/driver.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { saveSae } from "../sae/io/saelens.ts";
import {
  featureRatios,
  partitionSets,
  relativeNormBins,
  relativeNormSets,
  setSpecificity,
  topByRatio,
} from "../sae/crosscoder/domain_specificity.ts";

const H0 = "blocks.0.hook_resid_post", H1 = "blocks.1.hook_resid_post";
const T = 32, D = 32;

/**
 * Model folders A (the fixture's weights) and B (every weight moved by a small fixed pattern), with
 * the byte tokenizer (id 0 <|endoftext|>, 1 <unk>, 2 space, 4…29 a…z) and BOS/EOS set to its id 0.
 */
async function modelPair(dir: string): Promise<{ a: string; b: string }> {
  const config = JSON.parse(await readFile(root + "gpt2/config.json", "utf8"));
  const { tensors } = await loadSafetensors(root + "gpt2/model.safetensors");
  const out = { a: join(dir, "A"), b: join(dir, "B") };
  for (const [name, folder] of Object.entries(out)) {
    await mkdir(folder, { recursive: true });
    await writeFile(
      join(folder, "config.json"),
      JSON.stringify({ ...config, bos_token_id: 0, eos_token_id: 0 }),
    );
    const weights = name === "a" ? tensors : Object.fromEntries(
      Object.entries(tensors).map(([k, w]) => {
        if (w.dtype !== "f32") return [k, w];
        const v = Float32Array.from(
          w.dataSync() as Float32Array,
          (x, i) => x + 0.05 * Math.sin(1 + i * 12.9898),
        );
        return [k, t.tensor(v, { shape: w.shape })];
      }),
    );
    await saveSafetensors(join(folder, "model.safetensors"), weights);
    await writeByteTokenizer(folder, { vocabSize: 64 });
  }
  return out;
}

/** 31 characters then the end-of-text id: one document per row of 32 (no merges: a char a token). */
const DE_DOC = "qa ba ".repeat(5) + "q", EN_DOC = "xa ba ".repeat(5) + "x";
const JA_DOC = "ya ba ".repeat(5) + "y";
const DOCS = 20;

async function corpus(dir: string): Promise<string> {
  const path = join(dir, "heldout.jsonl");
  const lines: string[] = [];
  for (let i = 0; i < DOCS; i++) {
    lines.push(JSON.stringify({ text: DE_DOC, domain: "de" }));
    lines.push(JSON.stringify({ text: EN_DOC, domain: "en" }));
    lines.push(JSON.stringify({ text: JA_DOC, domain: "ja" }));
  }
  await writeFile(path, lines.join("\n") + "\n");
  return path;
}

const idsOf = (n: number) => Int32Array.from({ length: n }, (_, i) => (i * 37 + 11) % 64);

function buffer(
  a: LanguageModel,
  opts: { alongside?: LanguageModel; seed?: number; contexts?: number } = {},
): LiveSource {
  return activationBuffer({
    model: a,
    modelName: "A",
    ...(opts.alongside ? { alongside: [{ model: opts.alongside, name: "B" }] } : {}),
    rows: idRows(idsOf(20 * 8), 8, { name: "ids" }),
    hooks: [H0],
    contexts: opts.contexts ?? 6,
    modelBatch: 4,
    seed: opts.seed ?? 1,
  });
}

test("two-model buffer: rows [2, d] = each model's own single-model rows, bitwise; replay too", async () => {
  await withTempDir("cc-live-buf-", async (dir) => {
    const { a, b } = await modelPair(dir);
    const [A, B] = await Promise.all([loadModel(a), loadModel(b)]);
    const two = buffer(A, { alongside: B }), onlyA = buffer(A), onlyB = buffer(B);
    assertEquals([two.width, two.layers], [D, 2]);
    assertEquals((two.identity as { models: string[] }).models, ["A", "B"]);
    let last = null;
    for (let i = 0; i <= 9; i++) {
      const [m, ra, rb] = [
        await take(two, i, 16),
        await take(onlyA, i, 16),
        await take(onlyB, i, 16),
      ];
      assertEquals(m.shape, [16, 2, D]);
      assertEquals([m.origin, m.origin], [ra.origin, rb.origin], `batch ${i}: the same tokens`);
      let differ = 0;
      for (let j = 0; j < 16; j++) {
        const xa = m.x.subarray(2 * j * D, (2 * j + 1) * D);
        const xb = m.x.subarray((2 * j + 1) * D, (2 * j + 2) * D);
        assertEquals([...xa], [...ra.x.subarray(j * D, (j + 1) * D)], `batch ${i} row ${j}: A`);
        assertEquals([...xb], [...rb.x.subarray(j * D, (j + 1) * D)], `batch ${i} row ${j}: B`);
        if (xa[0] !== xb[0]) differ++;
      }
      assert(differ > 8, `batch ${i}: the models' activations should differ (${differ} rows)`);
      last = m;
    }
    // Batch 9 found by replaying the bookkeeping on ids (a resume) is the one served in order.
    const jumped = buffer(A, { alongside: B });
    const again = await take(jumped, 9, 16);
    assertEquals([...again.x], [...last!.x], "replayed batch 9, bitwise");
    assertEquals(again.origin, last!.origin);
    await Promise.all([two, onlyA, onlyB, jumped].map((s) => s.close()));

    assertThrows(
      () =>
        activationBuffer({
          model: A,
          modelName: "A",
          alongside: [{ model: B, name: "B" }],
          rows: idRows(idsOf(160), 8),
          hooks: [H0, H1],
          contexts: 6,
        }),
      "several models are read at one hook",
      `${H0}, ${H1}`,
    );
  });
});

test("DFC across two live models: stopped and resumed = straight, bitwise", async () => {
  await withTempDir("cc-live-resume-", async (dir) => {
    const { a, b } = await modelPair(dir);
    const [A, B] = await Promise.all([loadModel(a), loadModel(b)]);
    const cfg = resolveConfig({ arch: "dfc", d_in: D, d_sae: 40, k: 4, n_inputs: 2 });
    const train = resolveTrainConfig(cfg, { steps: 14, batch_size: 16, seed: 2 });
    const setup = (out: string) => ({
      cfg,
      train,
      data: buffer(A, { alongside: B, contexts: 5 }),
      out: join(dir, out),
      checkpointEvery: 4,
    });
    const straight = await runTraining(setup("s"));
    await runTraining({ ...setup("r"), stopAfter: 6 });
    const resumed = await runTraining({ ...setup("r"), resume: true });
    for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
      assertEquals(
        [...resumed.params[k]!.dataSync()],
        [...straight.params[k]!.dataSync()],
        `${k} after resume`,
      );
    }
  });
});

test(
  "sae train --model A,B --arch dfc: names in cfg.json, CE/KL per model; sae diff runs; bad combinations refused",
  async () => {
    await withTempDir("cc-live-cli-", async (dir) => {
      const { a, b } = await modelPair(dir);
      const data = await corpus(dir), out = join(dir, "dfc");
      const common = ["--hook", H0, "--data", data, "--context", String(T), "--quiet"];
      const r = await runCli(
        "train",
        ...["--model", `${a},${b}`, ...common, "--arch", "dfc", "--d-sae", "40", "--k", "4"],
        ...["--steps", "16", "--batch", "64", "--eval-tokens", "256", "--features", "2"],
        ...["--out", out],
      );
      assertEquals(r.code, 0, r.err);
      const cfg = JSON.parse(await readFile(join(out, "cfg.json"), "utf8"));
      assertEquals([cfg.model_names, cfg.model_name, cfg.hook_name], [[a, b], a, H0]);
      const ev = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
      assertEquals(ev.per_model.map((m: { model: string }) => m.model), [a, b]);
      for (const m of ev.per_model) {
        for (const k of ["ce_clean", "ce_spliced", "ce_zero", "kl_spliced", "ce_loss_score"]) {
          assert(Number.isFinite(m[k]), `eval.json per_model ${m.model} ${k}: ${m[k]}`);
        }
      }
      assert(ev.per_model[0].ce_clean !== ev.per_model[1].ce_clean, "each model's own clean CE");
      assertEquals(ev.partition_usage.map((u: { set: string }) => u.set), [
        "exclusive 0",
        "exclusive 1",
        "shared",
      ]);
      assert(ev.relative_norm.histogram.length === 10, JSON.stringify(ev.relative_norm));
      assert(r.out.includes(`spliced at ${H0} of ${b}:`), r.out);
      assert(
        /2 features \(sae features/.test(r.out) && /^feature \d+: fires on/m.test(r.out),
        r.out,
      );

      const d = await runCli("diff", out, "--data", data, "--domain", "de", "--context", String(T));
      assertEquals(d.code, 0, d.err);
      const diff = JSON.parse(await readFile(join(out, "diff.json"), "utf8"));
      assertEquals(diff.tokens, { domain: DOCS * 31, rest: 2 * DOCS * 31 });
      assertEquals(diff.per_domain.map((p: { domain: string }) => p.domain), ["de", "en", "ja"]);
      assertEquals(diff.by_partition.map((s: { set: string }) => s.set), [
        "A-exclusive",
        "B-exclusive",
        "shared",
      ]);
      assert(/B-exclusive features most specific to de/.test(d.out), d.out);

      // sae eval with both models: the same report and CE/KL per model as the end of the run.
      const both = await runCli(
        ...["eval", out, "--model", `${a},${b}`, "--data", data, "--context", String(T)],
        ...["--tokens", "256", "--json"],
      );
      assertEquals(both.code, 0, both.err);
      const bj = JSON.parse(both.out);
      assertEquals([bj.models, bj.hooks, bj.per_model.length], [[a, b], [H0], 2]);
      assertEquals(bj.per_model[1].ce_clean, ev.per_model[1].ce_clean, "B's clean CE, 256 tokens");
      // A dictionary across two models cannot be judged on one.
      const one = await runCli("eval", out, "--model", a, "--data", data, "--context", String(T));
      assert(one.code === 2 && one.err.includes(`--model ${a},${b}`), one.err);
      // Refused: a one-input architecture, several hooks, and models with different tokenizers.
      const topk = await runCli("train", "--model", `${a},${b}`, ...common, "--arch", "topk");
      assert(topk.code === 2 && topk.err.includes("several models train a crosscoder"), topk.err);
      const hooks = await runCli(
        ...["train", "--model", `${a},${b}`, "--hook", `${H0},${H1}`, "--data", data],
        "--arch",
        "crosscoder",
      );
      assert(hooks.code === 2 && hooks.err.includes("give one --hook"), hooks.err);
      const c = join(dir, "C");
      await mkdir(c);
      await copyFile(join(b, "config.json"), join(c, "config.json"));
      await copyFile(join(b, "model.safetensors"), join(c, "model.safetensors"));
      await writeByteTokenizer(c, { vocabSize: 60 });
      const mismatch = await runCli("train", "--model", `${a},${c}`, ...common, "--arch", "dfc");
      assert(
        mismatch.code === 2 && mismatch.err.includes(join(a, "tokenizer.json")) &&
          mismatch.err.includes(join(c, "tokenizer.json")) &&
          mismatch.err.includes("vocabularies of 64 and 60 tokens"),
        mismatch.err,
      );
    });
  },
  180_000,
);

test("assertSameTokenizer: equal files, layout-only differences pass; other ones are named", async () => {
  await withTempDir("cc-live-tok-", async (dir) => {
    const [x, y, z, w, none] = ["x", "y", "z", "w", "none"].map((n) => join(dir, n));
    await writeByteTokenizer(x, { vocabSize: 64 });
    await writeByteTokenizer(y, { vocabSize: 64 });
    await writeByteTokenizer(z, { vocabSize: 64, addBos: true });
    await mkdir(none);
    // y: the same tokenizer written with indentation and reversed key order.
    const tok = JSON.parse(await readFile(join(y, "tokenizer.json"), "utf8"));
    const reversed = Object.fromEntries(Object.entries(tok).reverse());
    await writeFile(join(y, "tokenizer.json"), JSON.stringify(reversed, null, 2));
    assert(typeof assertSameTokenizer([x, y]) === "string");
    assertThrows(() => assertSameTokenizer([x, z]), "post_processor", x, z);
    assertThrows(() => assertSameTokenizer([x, none]), `${none} has none`);
    // w: two ids swapped.
    await writeByteTokenizer(w, { vocabSize: 64 });
    const swapped = JSON.parse(await readFile(join(w, "tokenizer.json"), "utf8"));
    const v = swapped.model.vocab as Record<string, number>;
    const [p, q] = Object.keys(v).filter((k) => v[k] === 4 || v[k] === 5);
    [v[p], v[q]] = [v[q], v[p]];
    await writeFile(join(w, "tokenizer.json"), JSON.stringify(swapped));
    assertThrows(() => assertSameTokenizer([x, w]), `token ${JSON.stringify(p)} is id`);
  });
});

/** Token ids of the byte tokenizer (bytesByUse order: 2 space, 4 + (c − 'a') for a…z). */
const idOf = (c: string) => (c === " " ? 2 : 4 + c.charCodeAt(0) - 97);

test("sae diff on a hand-made DFC: a B-exclusive feature that fires only on the domain's token", async () => {
  await withTempDir("cc-live-diff-", async (dir) => {
    const { a, b } = await modelPair(dir);
    const data = await corpus(dir);
    const [A, B] = await Promise.all([loadModel(a), loadModel(b)]);
    const wte = [A, B].map((m) => (m.params as { wte: t.Tensor }).wte.dataSync() as Float32Array);
    const row = (l: number, id: number) => wte[l].subarray(id * D, (id + 1) * D);
    const dot = (u: ArrayLike<number>, v: ArrayLike<number>) => {
      let s = 0;
      for (let i = 0; i < u.length; i++) s += u[i] * v[i];
      return s;
    };
    // F = 8: A-exclusive 0–1, B-exclusive 2–3, shared 4–7 (shares 0.25, 0.25). At hook_embed the
    // activation is the token's embedding: feature i reads token c through the inputs `via`, with
    // encoder column wte_l[c] / (|via|·‖wte_l[c]‖²) (score 1 on c) and a bias halfway between 1
    // and the best other token's score, so it fires exactly on c.
    const F = 8;
    const W_enc = new Float32Array(2 * D * F), W_dec = new Float32Array(2 * F * D);
    const b_enc = new Float32Array(F).fill(-1);
    const feature = (i: number, c: string, via: number[]) => {
      const id = idOf(c);
      const cols = via.map((l) => {
        const r = row(l, id), n2 = dot(r, r);
        return Float32Array.from(r, (x) => x / (via.length * n2));
      });
      via.forEach((l, k) => cols[k].forEach((v, j) => (W_enc[(l * D + j) * F + i] = v)));
      let best = -Infinity;
      for (let o = 2; o < 64; o++) {
        if (o === id) continue;
        best = Math.max(best, via.reduce((s, l, k) => s + dot(row(l, o), cols[k]), 0));
      }
      assert(best < 0.9, `feature ${i}: token ${c} not separable (${best})`);
      b_enc[i] = -(1 + best) / 2;
    };
    feature(0, "a", [0]); // A-exclusive, on both domains alike
    feature(2, "q", [1]); // B-exclusive, only in de documents
    feature(3, "b", [1]); // B-exclusive, on both domains alike
    feature(4, "x", [0, 1]); // shared, only in en documents
    const dec = (l: number, i: number, s: number) => (W_dec[(l * F + i) * D] = s);
    [0, 1].forEach((i) => dec(0, i, 1));
    [2, 3].forEach((i) => dec(1, i, 1));
    dec(0, 4, 0.05), dec(1, 4, 1); // r = 1/1.05: counted B-only by relative norm
    [5, 6, 7].forEach((i) => (dec(0, i, 1), dec(1, i, 1)));
    const cfg = resolveConfig({
      arch: "dfc",
      d_in: D,
      d_sae: F,
      k: 2,
      n_inputs: 2,
      dfc_shares: [0.25, 0.25],
      extra: { model_names: [a, b], hook_name: "hook_embed" },
    });
    const out = join(dir, "hand");
    await saveSae(out, {
      cfg,
      params: {
        W_enc: t.tensor(W_enc, { shape: [2, D, F] }),
        W_dec: t.tensor(W_dec, { shape: [2, F, D] }),
        b_enc: t.tensor(b_enc, { shape: [F] }),
        b_dec: t.zeros([2, D]),
      },
      threshold: 1e-4,
    });
    const r = await runCli("diff", out, "--data", data, "--domain", "de", "--context", "32");
    assertEquals(r.code, 0, r.err);
    const j = JSON.parse(await readFile(join(out, "diff.json"), "utf8"));
    // Each domain: 20 rows of one 31-token document (the end-of-text id left out); the rest en + ja.
    const N = DOCS * 31;
    assertEquals([j.tokens, j.rest_domains, j.hook], [
      { domain: N, rest: 2 * N },
      ["en", "ja"],
      "hook_embed",
    ]);
    // q: 6 per de document, never in en or ja: freq(rest) floored at 1/(2N).
    const rq = (6 / 31) / (1 / (2 * N));
    const [pa, pb, ps] = j.by_partition;
    const close = (got: number, want: number, msg: string) =>
      assertClose([got], [want], { rtol: 1e-9, atol: 1e-12, msg });
    assertEquals([pa.set, pa.features, pa.alive, pa.share_above], ["A-exclusive", 2, 1, 0]);
    close(pa.mean_ratio, 1, "A-exclusive mean");
    close(pa.pooled_ratio, 1, "A-exclusive pooled");
    assertEquals([pb.set, pb.features, pb.alive, pb.share_above], ["B-exclusive", 2, 2, 0.5]);
    close(pb.mean_ratio, (rq + 1) / 2, "B-exclusive mean");
    close(pb.median_ratio, (rq + 1) / 2, "B-exclusive median");
    close(pb.pooled_ratio, (6 + 5) / 5, "B-exclusive pooled: (q + b on de) / (b on en, ja)");
    assertEquals([ps.set, ps.features, ps.alive, ps.mean_ratio, ps.pooled_ratio], [
      "shared",
      4,
      1,
      0,
      0,
    ]);
    // By relative norm, the shared x-feature (r = 0.952) joins B-only; the dead shared ones stay.
    const norm = Object.fromEntries(j.by_relative_norm.map((s: { set: string }) => [s.set, s]));
    assertEquals([norm["A-only"].features, norm["B-only"].features, norm.shared.features], [
      2,
      3,
      3,
    ]);
    assertEquals([norm["B-only"].alive, norm.shared.alive, norm.shared.mean_ratio], [3, 0, null]);
    close(norm["B-only"].median_ratio, 1, "B-only median of q, b, x");
    close(norm["B-only"].share_above, 1 / 3, "B-only share > 2");
    assertEquals(
      j.by_relative_norm_bin.map((s: { set: string; features: number }) => [s.set, s.features]),
      [["r 0–0.1", 2], ["r 0.5–0.6", 3], ["r 0.9–1", 3]],
    );
    assertEquals(j.top_b.set, "B-exclusive");
    assertEquals(j.top_b.features.map((f: { feature: number }) => f.feature), [2, 3]);
    close(j.top_b.features[0].ratio, rq, "feature 2's ratio");
    close(j.top_b.features[0].freq_domain, 6 / 31, "feature 2 on de");
    assertEquals(j.top_b.features[0].freq_rest, 0);
    close(j.top_b.features[1].ratio, 1, "feature 3's ratio");
    assertEquals(Object.keys(j.top_b.features[0].freq_by_domain), ["de", "en", "ja"]);
    close(j.top_b.features[0].freq_by_domain.de, 6 / 31, "feature 2 on de");
    assertEquals([j.top_b.features[0].freq_by_domain.en, j.top_b.features[0].freq_by_domain.ja], [
      0,
      0,
    ]);
    // Per domain, each set's mean frequency per feature: B-exclusive = (q + b) / 2 features.
    const ja = j.per_domain.find((p: { domain: string }) => p.domain === "ja");
    close(ja.set_frequency["B-exclusive"], (5 / 31) / 2, "B-exclusive on ja: b only");
    close(j.per_domain[0].set_frequency["B-exclusive"], (11 / 31) / 2, "B-exclusive on de");
    close(j.per_domain[1].set_frequency.shared, (6 / 31) / 4, "shared on en: x");
    assert(
      r.out.includes("B-exclusive features most specific to de (frequency on de / en / ja):"),
      r.out,
    );
  });
});

test("domain specificity: floored ratios, set statistics, buckets, order, and bad input named", () => {
  const r = featureRatios({ fired: [10, 0, 4, 0, 3], tokens: 100 }, {
    fired: [5, 0, 0, 2, 3],
    tokens: 50,
  });
  assertEquals([...r.freqDomain], [0.1, 0, 0.04, 0, 0.03]);
  assertEquals([...r.alive], [1, 0, 1, 1, 1]);
  // 0.1 / 0.1; dead; 0.04 / (1/50) (never on the rest: floored); 0 / 0.04; 0.03 / 0.06.
  assertClose(r.ratio, [1, 0, 2, 0, 0.5], { rtol: 1e-12, atol: 0, msg: "ratios" });
  const [s] = setSpecificity(r, [{ name: "all", features: [0, 1, 2, 3, 4] }]);
  assertEquals([s.features, s.alive], [5, 4]);
  assertClose(
    [s.meanRatio, s.medianRatio, s.shareAbove, s.pooledRatio],
    [3.5 / 4, 0.75, 0, 0.17 / 0.2],
    { rtol: 1e-12, atol: 1e-15, msg: "set statistics" },
  );
  assertEquals(setSpecificity(r, [{ name: "x", features: [2] }], 1.5)[0].shareAbove, 1);
  assertEquals(setSpecificity(r, [{ name: "x", features: [2] }])[0].pooledRatio, Infinity);
  assertEquals(topByRatio(r, [0, 1, 2, 3, 4], 3).map((f) => f.feature), [2, 0, 4]);
  const sets = relativeNormSets([0.05, 0.5, 0.95, NaN, 0.1]);
  assertEquals(sets.map((x) => [x.name, x.features]), [
    ["A-only", [0]],
    ["B-only", [2]],
    ["shared", [1, 4]],
    ["no decoder", [3]],
  ]);
  assertEquals(relativeNormBins([0.05, 0.5, 0.95, NaN, 0.1, 1]).map((x) => [x.name, x.features]), [
    ["r 0–0.1", [0]],
    ["r 0.1–0.2", [4]],
    ["r 0.5–0.6", [1]],
    ["r 0.9–1", [2, 5]],
  ]);
  assertEquals(
    partitionSets({ features: 6, exclusive: [[0, 1], [1, 3]], shared: [3, 6] }).map((x) =>
      x.features
    ),
    [[0], [1, 2], [3, 4, 5]],
  );
  assertThrows(
    () => featureRatios({ fired: [1], tokens: 1 }, { fired: [1, 2], tokens: 1 }),
    "1 features counted on the domain, 2 on the rest",
  );
  assertThrows(
    () => featureRatios({ fired: [1], tokens: 1 }, { fired: [0], tokens: 0 }),
    "the rest needs a positive token count",
  );
  assertThrows(() => setSpecificity(r, [{ name: "x", features: [9] }]), "set x holds feature 9");
});
