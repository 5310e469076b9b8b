/**
 * `sae features` on the tiny GPT-2 fixture with a TopK SAE trained on its MLP: the saved maxima,
 * firing counts, histograms and interval counts are the dictionary's own codes on the model's
 * activations (a pass by hand); the logit effects are W_dec·W_out through the final norm and the
 * tied unembedding (computed here in plain loops); the domain shares are those of the corpus's
 * `domain` field; the files read back as format /2, a /1 folder still reads, others are refused.
 */
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { featureStats } from "../sae/eval/feature_stats.ts";
import { slotsOf } from "../sae/eval/feature_contexts.ts";
import { readFeatures } from "../sae/eval/features_file.ts";
import { binOf } from "../sae/eval/feature_distribution.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { reshape } from "../tensor/ops/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { openTextRows } from "../data/text/open_rows.ts";
import { writeFile } from "node:fs/promises";
import { fixtureModelAndCorpus } from "./features_fixture.ts";
import { join } from "node:path";

test("featureStats: masked positions neither fire nor become maxima", () => {
  const c = featureStats({
    features: 1,
    slices: 1,
    top: 2,
    before: 1,
    after: 1,
    bins: 0,
    intervals: 0,
    samples: 0,
    seed: 0,
  });
  c.add({
    ids: Int32Array.of(5, 6, 7),
    codes: Float32Array.of(9, 1, 2),
    rowIds: [0],
    keep: Uint8Array.of(0, 1, 1),
  });
  const r = c.result();
  assertEquals([r.scanned, r.fires[0]], [2, 2]);
  // The masked 9 is not a maximum, but it is shown in the window of its neighbour.
  assertEquals(slotsOf(r.top, 3, 0, 2).map((x) => [x.value, x.tokens, x.acts]), [
    [2, [6, 7, -1], [1, 2, 0]],
    [1, [5, 6, 7], [9, 1, 2]],
  ]);
});

const HOOK = "blocks.0.mlp.hook_post";

test("sae features: statistics are the dictionary's codes on the model's activations", async () => {
  await withTempDir("features-", async (dir) => {
    const { model, corpus } = await fixtureModelAndCorpus(dir);
    const sae = join(dir, "sae");
    const common = ["--model", model, "--data", corpus, "--context", "16"];
    const tr = await runCli(
      "train",
      ...common,
      ...["--hook", HOOK, "--arch", "topk", "--k", "4", "--expansion", "2", "--steps", "20"],
      ...["--batch", "64", "--out", sae, "--quiet", "--eval-tokens", "256"],
    );
    assertEquals(tr.code, 0, tr.err);
    const r = await runCli(
      "features",
      sae,
      ...common,
      ...["--top", "3", "--before", "4", "--after", "2", "--show", "2", "--quiet"],
      ...["--bins", "8", "--intervals", "4", "--samples", "2", "--logits", "4"],
      ...["--domain-field", "domain", "--show-domains", "1"],
    );
    assertEquals(r.code, 0, r.err);
    assert(/^feature \d+: fires on [\d.]+ % of tokens, max/m.test(r.out), r.out);
    assert(r.out.includes("⟦") && /^ {2}raises: /m.test(r.out), r.out);
    const m = /^domains: (\d+) of (\d+) alive features/m.exec(r.out);
    assert(m !== null, r.out);
    const { about, version, contexts, stats } = await readFeatures(join(sae, "features"));
    assertEquals(version, 2);
    assertEquals([about.hook, about.top, about.before, about.after, about.kind], [
      HOOK,
      3,
      4,
      2,
      "sae",
    ]);
    const F = about.features as number;
    const values = contexts.values.dataSync() as Float32Array;
    const fires = contexts.fires.dataSync() as Float64Array;
    const domainsOf = contexts.domains.dataSync() as Int32Array;
    assertEquals(contexts.tokens.shape, [F, 3, 7]);
    const hist = stats!.hist.dataSync() as Float64Array;
    const scale = stats!.hist_scale.dataSync() as Float64Array;
    const counts = stats!.interval_counts.dataSync() as Float64Array;
    const sampleValues = stats!.sample_values.dataSync() as Float32Array;

    // The same pass by hand: every kept position's code; per feature max, count, histogram.
    const lm = await loadModel(model);
    const saved = await loadSae(sae);
    const names = (about.domains as { names: string[] }).names;
    const { rows, special } = await openTextRows(corpus, model, {
      context: 16,
      labelField: "domain",
    });
    const max = new Float32Array(F), count = new Float64Array(F);
    const codes: { f: number; v: number; label: string }[] = [];
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
        const seg = row.segments!.filter((s) => s.at <= p).at(-1)!;
        for (let f = 0; f < F; f++) {
          const v = code[p * F + f];
          if (v > 0) {
            count[f]++;
            codes.push({ f, v, label: seg.label });
          }
          if (v > max[f]) max[f] = v;
        }
      }
    }
    assertEquals(about.tokens_scanned, scanned);
    for (let f = 0; f < F; f++) {
      assertEquals(fires[f], count[f], `fires of feature ${f}`);
      assertEquals(values[f * 3], count[f] ? max[f] : -Infinity, `max of feature ${f}`);
    }
    const wantHist = new Float64Array(F * 8), wantCounts = new Float64Array(F * 4);
    for (const { f, v } of codes) {
      wantHist[f * 8 + binOf(v, 8, scale[f])]++;
      wantCounts[f * 4 + binOf(v, 4, scale[f])]++;
    }
    assertEquals(Array.from(hist), Array.from(wantHist));
    assertEquals(Array.from(counts), Array.from(wantCounts));
    for (let f = 0; f < F; f++) {
      if (count[f]) assert(scale[f] >= max[f] && scale[f] / 2 < max[f], `scale of ${f}`);
      for (let q = 0; q < 4; q++) {
        for (let s = 0; s < 2; s++) {
          const v = sampleValues[(f * 4 + q) * 2 + s];
          if (v === -Infinity) continue;
          assertEquals(binOf(v, 4, scale[f]), q, `sample of feature ${f} in interval ${q}`);
        }
      }
    }
    // Domains: each top context's label is its position's document's.
    for (let f = 0; f < F; f++) {
      for (let s = 0; s < 3; s++) {
        const v = values[f * 3 + s];
        if (v === -Infinity) continue;
        const label = names[domainsOf[f * 3 + s]];
        assert(codes.some((c) => c.f === f && c.v === v && c.label === label), `domain of ${f}`);
      }
    }
    const rule = about.domains as { meeting: number; full: number };
    assertEquals(Number(m![1]), rule.meeting);

    // Logit effects: W_dec · W_out, centred, × γ, · wteᵀ, less the vocabulary mean, in loops.
    const p = lm.params as unknown as {
      wte: Tensor;
      lnF: { w: Tensor };
      blocks: { wOut: Tensor }[];
    };
    const dec = saved.params.W_dec.dataSync() as Float32Array;
    const wOut = p.blocks[0].wOut.dataSync(), gamma = p.lnF.w.dataSync(), wte = p.wte.dataSync();
    const [m4, d] = p.blocks[0].wOut.shape, V = p.wte.shape[0];
    const upIds = stats!.logit_up_ids.dataSync() as Int32Array;
    const up = stats!.logit_up.dataSync() as Float32Array;
    const down = stats!.logit_down.dataSync() as Float32Array;
    assertEquals(stats!.logit_up.shape, [F, 4]);
    for (const f of [0, 1, F - 1]) {
      const r = new Float64Array(d);
      for (let j = 0; j < d; j++) {
        for (let i = 0; i < m4; i++) r[j] += dec[f * m4 + i] * wOut[i * d + j];
      }
      const mu = r.reduce((a, b) => a + b, 0) / d;
      const logit = Array.from({ length: V }, (_, v) => {
        let s = 0;
        for (let j = 0; j < d; j++) s += (r[j] - mu) * gamma[j] * wte[v * d + j];
        return s;
      });
      const lm0 = logit.reduce((a, b) => a + b, 0) / V;
      const sorted = logit.map((x) => x - lm0).sort((a, b) => b - a);
      assertClose(up.subarray(f * 4, f * 4 + 4), sorted.slice(0, 4), { rtol: 1e-3, atol: 1e-5 });
      assertClose(down.subarray(f * 4, f * 4 + 4), sorted.slice(-4).reverse(), {
        rtol: 1e-3,
        atol: 1e-5,
      });
      assertClose([logit[upIds[f * 4]] - lm0], [sorted[0]], { rtol: 1e-3, atol: 1e-5 });
    }
    const bad = await runCli("features", sae, "--model", model);
    assertEquals(bad.code, 2);
    assert(bad.err.includes("--data"), bad.err);
    const odd = await runCli("features", sae, ...common, "--bins", "5", "--quiet");
    assertEquals(odd.code, 2);
    assert(odd.err.includes("--bins must be even"), odd.err);
  });
});

test("readFeatures: a format /1 folder reads without stats; an unknown format is refused", async () => {
  await withTempDir("features-format-", async (dir) => {
    const { saveSafetensors } = await import("../data/safetensors.ts");
    await saveSafetensors(join(dir, "contexts.safetensors"), {
      values: tensor(Float32Array.of(1, -Infinity), { shape: [1, 2] }),
      fires: tensor(Float64Array.of(1), { shape: [1], dtype: "f64" }),
    });
    const v1 = { format: "sparsecoder.features/1", features: 1, top: 2 };
    await writeFile(join(dir, "features.json"), JSON.stringify(v1));
    const r = await readFeatures(dir);
    assertEquals([r.version, r.stats, r.contexts.values.shape], [1, null, [1, 2]]);
    await writeFile(
      join(dir, "features.json"),
      JSON.stringify({ format: "sparsecoder.features/3" }),
    );
    let err = "";
    await readFeatures(dir).catch((e) => (err = (e as Error).message));
    assert(err.includes(`format "sparsecoder.features/3"; this reader knows`), err);
  });
});
