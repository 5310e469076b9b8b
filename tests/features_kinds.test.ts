/**
 * `sae features` beyond single-hook SAEs, on the tiny GPT-2 fixture with random dictionaries: an
 * MLSAE over two layers (its layers are slices: per-layer firings sum to the total, each top
 * context names its layer, and its maximum is the largest code over (token, layer) computed by
 * hand); a crosscoder over two models run on the same tokens, and a decoupled one over two hooks
 * (per-input activations as slices), each with decoder norms, relative norm and per-input logit
 * effects; a transcoder's effects go through its output hook.
 */
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { fixtureModelAndCorpus, randomDictionary } from "./features_fixture.ts";
import { readFeatures } from "../sae/eval/features_file.ts";
import { architecture } from "../sae/arch/registry.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { toDense } from "../sae/code.ts";
import { tensor } from "../tensor/ops/create.ts";
import { reshape, stack } from "../tensor/ops/shape.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { openTextRows } from "../data/text/open_rows.ts";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

const L0 = "blocks.0.hook_resid_post", L1 = "blocks.1.hook_resid_post";

test("sae features: an MLSAE's layers are slices; the maxima are its codes over (token, layer)", async () => {
  await withTempDir("features-mlsae-", async (dir) => {
    const { model, corpus } = await fixtureModelAndCorpus(dir);
    const dict = join(dir, "mlsae");
    await randomDictionary(dict, {
      arch: "mlsae",
      d_in: 32,
      d_sae: 24,
      k: 3,
      extra: { hook_names: [L0, L1] },
    });
    const r = await runCli(
      ...["features", dict, "--model", model, "--data", corpus, "--context", "16", "--quiet"],
      ...["--top", "2", "--show", "2", "--logits", "3"],
    );
    assertEquals(r.code, 0, r.err);
    assert(/^ {2}firings by slice: blocks\.0\.hook_resid_post \d+ %/m.test(r.out), r.out);
    const { about, contexts, stats } = await readFeatures(join(dict, "features"));
    assertEquals([about.kind, about.slices, about.slice_names], ["mlsae", 2, [L0, L1]]);
    const F = 24;
    const fires = contexts.fires.dataSync() as Float64Array;
    const sliceFires = stats!.slice_fires.dataSync() as Float64Array;
    for (let f = 0; f < F; f++) assertEquals(sliceFires[2 * f] + sliceFires[2 * f + 1], fires[f]);
    assertEquals(stats!.logit_up.shape, [F, 3]);

    const lm = await loadModel(model);
    const saved = await loadSae(dict);
    const { rows, special } = await openTextRows(corpus, model, { context: 16 });
    const max = new Float32Array(F), where = new Int32Array(F).fill(-1);
    for await (const row of rows.rows()) {
      const { cache } = runWithCache(lm, tensor(row.ids, { shape: [1, 16] }), [L0, L1]);
      const x = stack([reshape(cache[L0], [16, 32]), reshape(cache[L1], [16, 32])], 1);
      const code = toDense(
        architecture("mlsae").encodeInference(saved.params, x, saved.cfg),
        F,
      ).dataSync() as Float32Array;
      for (let p = 0; p < 16; p++) {
        if (special.has(row.ids[p])) continue;
        for (let l = 0; l < 2; l++) {
          for (let f = 0; f < F; f++) {
            const v = code[(p * 2 + l) * F + f];
            if (v > max[f]) [max[f], where[f]] = [v, l];
          }
        }
      }
    }
    const values = contexts.values.dataSync() as Float32Array;
    const slices = contexts.slices.dataSync() as Int32Array;
    for (let f = 0; f < F; f++) {
      if (where[f] < 0) continue;
      assertEquals([values[2 * f], slices[2 * f]], [max[f], where[f]], `feature ${f}`);
    }
  });
});

test("sae features: crosscoders over two models and over two hooks (decoupled), a transcoder", async () => {
  await withTempDir("features-cross-", async (dir) => {
    const { model, corpus } = await fixtureModelAndCorpus(dir);
    const modelB = join(dir, "modelB");
    await cp(model, modelB, { recursive: true });
    const common = ["--data", corpus, "--context", "16", "--quiet", "--show", "1", "--top", "2"];

    const cross = join(dir, "cross");
    await randomDictionary(cross, { arch: "crosscoder", d_in: 32, d_sae: 20, n_inputs: 2 });
    const a = await runCli(
      ...["features", cross, "--model", `${model},${modelB}`, "--hook", L1, ...common],
    );
    assertEquals(a.code, 0, a.err);
    assert(/decoder norms per input: [\d.]+, [\d.]+/.test(a.out), a.out);
    assert(a.out.includes("raises (input 1)"), a.out);
    const fa = await readFeatures(join(cross, "features"));
    assertEquals([fa.about.kind, fa.about.models, fa.about.slices], [
      "crosscoder",
      [model, modelB],
      1,
    ]);
    const norms = fa.stats!.decoder_norms.dataSync() as Float32Array;
    const rel = fa.stats!.relative_norm.dataSync() as Float32Array;
    const W = (await loadSae(cross)).params.W_dec.dataSync() as Float32Array; // [2, 20, 32]
    for (const f of [0, 7, 19]) {
      const n = [0, 1].map((l) =>
        Math.hypot(...Array.from(W.subarray((l * 20 + f) * 32, (l * 20 + f + 1) * 32)))
      );
      assertClose(norms.subarray(2 * f, 2 * f + 2), n, { rtol: 1e-5 });
      assertClose([rel[f]], [n[1] / (n[0] + n[1])], { rtol: 1e-5 });
    }
    // The same model twice: both inputs' decoders write through the same unembedding.
    assertEquals(fa.stats!.logit_up_ids.shape, [20, 2, 10]);

    const dec = join(dir, "decoupled");
    await randomDictionary(dec, {
      arch: "batchtopk-crosscoder",
      d_in: 32,
      d_sae: 20,
      k: 3,
      n_inputs: 2,
      code_norm: "decoupled",
      extra: { hook_names: [L0, L1] },
    });
    const b = await runCli(...["features", dec, "--model", model, ...common]);
    assertEquals(b.code, 0, b.err);
    const fb = await readFeatures(join(dec, "features"));
    assertEquals([fb.about.slices, fb.about.slice_names], [2, [L0, L1]]);
    const fires = fb.contexts.fires.dataSync() as Float64Array;
    assert(fires.some((v) => v > 0), "the decoupled crosscoder fired");

    const tc = join(dir, "transcoder");
    await randomDictionary(tc, {
      arch: "transcoder",
      d_in: 32,
      d_sae: 16,
      extra: { hook_name: "blocks.0.ln2.hook_normalized" },
    });
    const c = await runCli(...["features", tc, "--model", model, ...common]);
    assertEquals(c.code, 0, c.err);
    const fc = await readFeatures(join(tc, "features"));
    assertEquals((fc.about.logits as { through: string[] }).through, [
      "blocks.0.hook_mlp_out: direct",
    ]);
    const bad = await runCli(...["features", cross, "--model", model, ...common]);
    assertEquals(bad.code, 2);
    assert(bad.err.includes("reads several hook points"), bad.err);

    // Same vocabulary size, another tokenizer: the token rows would mean different text.
    const modelC = join(dir, "modelC");
    await cp(model, modelC, { recursive: true });
    const tok = JSON.parse(await readFile(join(modelC, "tokenizer.json"), "utf8"));
    tok.normalizer = { type: "Lowercase" };
    await writeFile(join(modelC, "tokenizer.json"), JSON.stringify(tok));
    const other = await runCli(
      ...["features", cross, "--model", `${model},${modelC}`, "--hook", L1, ...common],
    );
    assertEquals(other.code, 2, other.err);
    assert(
      other.err.includes("must share a tokenizer") && other.err.includes("normalizer"),
      other.err,
    );
  });
});
