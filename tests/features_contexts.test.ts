/**
 * Top-activating contexts: the streaming collector keeps exactly what a brute-force sort of every
 * (activation, row, position) would (ties to the earlier position), whatever the batch cuts; and
 * `sae features` on the tiny GPT-2 fixture writes files whose maxima are the dictionary's own
 * codes on the model's activations.
 */
import fc from "fast-check";
import { assert, assertEquals, assertThrows, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { contextCollector, contextsOf } from "../sae/eval/feature_contexts.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { reshape } from "../tensor/ops/shape.ts";
import { tensor } from "../tensor/ops/create.ts";
import { openTextRows } from "../data/text/open_rows.ts";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** What the collector should hold for feature f: a full sort, earlier positions first on ties. */
function bruteForce(
  ids: Int32Array,
  codes: Float32Array,
  R: number,
  T: number,
  F: number,
  f: number,
  top: number,
  before: number,
  after: number,
) {
  const all: { value: number; r: number; t: number }[] = [];
  for (let r = 0; r < R; r++) {
    for (let t = 0; t < T; t++) {
      const v = codes[(r * T + t) * F + f];
      if (v > 0) all.push({ value: Math.fround(v), r, t });
    }
  }
  all.sort((a, b) => b.value - a.value || a.r - b.r || a.t - b.t);
  return all.slice(0, top).map(({ value, r, t }) => {
    const tokens: number[] = [], acts: number[] = [];
    for (let p = t - before; p <= t + after; p++) {
      const inside = p >= 0 && p < T;
      tokens.push(inside ? ids[r * T + p] : -1);
      acts.push(inside ? codes[(r * T + p) * F + f] : 0);
    }
    return { value, tokens, acts, row: r, position: t };
  });
}

test("contextCollector: equals a brute-force sort, for any batch cuts", () => {
  fc.assert(
    fc.property(
      fc.record({
        R: fc.integer({ min: 1, max: 6 }),
        T: fc.integer({ min: 1, max: 7 }),
        F: fc.integer({ min: 1, max: 5 }),
        top: fc.integer({ min: 1, max: 4 }),
        before: fc.integer({ min: 0, max: 3 }),
        after: fc.integer({ min: 0, max: 3 }),
        seed: fc.integer({ min: 0, max: 1e6 }),
        cut: fc.integer({ min: 1, max: 6 }),
      }),
      ({ R, T, F, top, before, after, seed, cut }) => {
        let s = seed;
        const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
        const ids = Int32Array.from({ length: R * T }, () => Math.floor(rnd() * 50));
        // Few distinct values, so ties are common; about half the entries zero.
        const codes = Float32Array.from(
          { length: R * T * F },
          () => (rnd() < 0.5 ? 0 : Math.floor(rnd() * 4) / 2),
        );
        const c = contextCollector(F, { top, before, after });
        for (let r0 = 0; r0 < R; r0 += cut) {
          const r1 = Math.min(R, r0 + cut);
          c.add(
            ids.slice(r0 * T, r1 * T),
            codes.slice(r0 * T * F, r1 * T * F),
            Array.from({ length: r1 - r0 }, (_, i) => r0 + i),
          );
        }
        const got = c.result();
        assertEquals(got.scanned, R * T);
        for (let f = 0; f < F; f++) {
          assertEquals(contextsOf(got, f), bruteForce(ids, codes, R, T, F, f, top, before, after));
          let n = 0;
          for (let i = 0; i < R * T; i++) if (codes[i * F + f] > 0) n++;
          assertEquals(got.fires[f], n);
        }
      },
    ),
    { numRuns: 200 },
  );
});

test("contextCollector: masked positions neither fire nor become maxima", () => {
  const c = contextCollector(1, { top: 2, before: 1, after: 1 });
  c.add(Int32Array.of(5, 6, 7), Float32Array.of(9, 1, 2), [0], Uint8Array.of(0, 1, 1));
  const r = c.result();
  assertEquals(r.scanned, 2);
  assertEquals(r.fires[0], 2);
  // The masked 9 is not a maximum, but it is shown in the window of its neighbour.
  assertEquals(contextsOf(r, 0).map((x) => [x.value, x.tokens, x.acts]), [
    [2, [6, 7, -1], [1, 2, 0]],
    [1, [5, 6, 7], [9, 1, 2]],
  ]);
  assertThrows(() => c.add(Int32Array.of(1, 2), Float32Array.of(1), [0]), "do not fit");
  assertThrows(() => contextCollector(0, { top: 1, before: 0, after: 0 }), "features");
  assertThrows(() => contextCollector(3, { top: 0, before: 0, after: 0 }), "top");
});

const MODEL = "tests/golden/fixtures/lm/gpt2", TEXT = "tests/golden/fixtures/text";
const CORPUS = `${TEXT}/corpus.jsonl`, HOOK = "blocks.0.mlp.hook_post";

test("sae features: the saved maxima are the dictionary's codes on the model's activations", async () => {
  await withTempDir("features-", async (dir) => {
    const model = join(dir, "model"), sae = join(dir, "sae");
    await mkdir(model);
    for (const f of ["config.json", "model.safetensors"]) {
      await copyFile(`${MODEL}/${f}`, `${model}/${f}`);
    }
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      await copyFile(`${TEXT}/${f}`, `${model}/${f}`);
    }
    const common = ["--model", model, "--data", CORPUS, "--context", "16"];
    const tr = await runCli(
      "train",
      ...common,
      ...["--hook", HOOK, "--arch", "topk", "--k", "4", "--expansion", "2", "--steps", "20"],
      ...["--batch", "64", "--out", sae, "--quiet"],
    );
    assertEquals(tr.code, 0, tr.err);
    // A live run splices its dictionary in at the end: CE/KL recovered in eval.json.
    const ev = JSON.parse(await readFile(join(sae, "eval.json"), "utf8"));
    assert(ev.ce_loss_score > 0 && ev.ce_positions > 0, JSON.stringify(ev));
    assertEquals(ev.downstream_eval.hooks, [HOOK]);
    assert(tr.out.includes("ce_loss_score"), tr.out);
    const r = await runCli(
      "features",
      sae,
      ...common,
      ...["--top", "3", "--before", "4", "--after", "2", "--show", "2", "--quiet"],
    );
    assertEquals(r.code, 0, r.err);
    assert(/^feature \d+: fires on [\d.]+ % of tokens, max/m.test(r.out), r.out);
    assert(r.out.includes("⟦"), r.out);
    const about = JSON.parse(await readFile(join(sae, "features/features.json"), "utf8"));
    assertEquals([about.hook, about.top, about.before, about.after], [HOOK, 3, 4, 2]);
    const { tensors } = await loadSafetensors(join(sae, "features/contexts.safetensors"));
    const values = tensors.values.dataSync() as Float32Array;
    const fires = tensors.fires.dataSync() as Float64Array;
    assertEquals(tensors.tokens.shape, [about.features, 3, 7]);

    // The same pass by hand: every kept position's code, per feature the max and the count.
    const lm = await loadModel(model);
    const saved = await loadSae(sae);
    const { rows, special } = await openTextRows(CORPUS, model, { context: 16 });
    const F = saved.cfg.d_sae, max = new Float32Array(F), count = new Float64Array(F);
    let scanned = 0;
    for await (const row of rows.rows()) {
      const { cache } = runWithCache(lm, tensor(row.ids, { shape: [1, 16] }), [HOOK], {
        stopEarly: true,
      });
      const x = reshape(cache[HOOK], [16, -1]);
      const code = toDense(
        architecture(saved.cfg.arch).encodeInference(saved.params, x, saved.cfg),
        F,
      ).dataSync() as Float32Array;
      for (let p = 0; p < (row.length ?? 16); p++) {
        if (special.has(row.ids[p])) continue;
        scanned++;
        for (let f = 0; f < F; f++) {
          const v = code[p * F + f];
          if (v > 0) count[f]++;
          if (v > max[f]) max[f] = v;
        }
      }
    }
    assertEquals(about.tokens_scanned, scanned);
    for (let f = 0; f < F; f++) {
      assertEquals(fires[f], count[f], `fires of feature ${f}`);
      assertEquals(values[f * 3], count[f] ? max[f] : -Infinity, `max of feature ${f}`);
    }
    const bad = await runCli("features", sae, "--model", model);
    assertEquals(bad.code, 2);
    assert(bad.err.includes("--data"), bad.err);
  });
});
