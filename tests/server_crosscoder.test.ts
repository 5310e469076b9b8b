// Crosscoders and DFCs served (server/crosscoder_view.ts): encode, decode and reconstruct take rows
// [n_inputs, d_in] (JSON nested, Arrow flattened) and agree with the architecture's own encoder and
// decoder; wrong shapes get a 4xx naming the row and input; GET /v1/features/:id has the per-input
// decoder norms (computed here by hand), the relative norm and the DFC partition set;
// GET /v1/relative-norms bins the relative norms by partition. POST /v1/prompt over two models (one
// folder copied) and over two hooks of one model: each token's features are the crosscoder's codes
// on the stacked activations, tagged with their partition and relative norm; models with different
// tokenizers are refused.
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tableFromIPC } from "apache-arrow";
import { createApp } from "../server/app.ts";
import { arrowMatrixResponse } from "../server/arrow_body.ts";
import { disposeDictionary, loadDictionary } from "../server/dictionary.ts";
import { loadPrompter } from "../server/prompt.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import type { SaeConfigInput } from "../sae/config.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { tensor } from "../tensor/ops/create.ts";
import { reshape, stack } from "../tensor/ops/shape.ts";
import { dispose, tidy } from "../tensor/scope.ts";
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import {
  DFC,
  fixtureModelAndCorpus,
  MLP_SAE,
  randomDictionary,
  scaledDictionary,
} from "./features_fixture.ts";
import { postJson, serveQuietly, viaApp, viaSocket } from "./server_fixture.ts";
import { runCli } from "./cli_run.ts";

const L0 = "blocks.0.hook_resid_post", L1 = "blocks.1.hook_resid_post";
const ARROW = "application/vnd.apache.arrow.stream";

/** Hand norms ‖W_dec[l, i]‖ from the saved weights [L, F, d]. */
function handNorms(W: Float32Array, L: number, F: number, d: number): number[][] {
  return Array.from({ length: L }, (_, l) =>
    Array.from(
      { length: F },
      (_, i) => Math.hypot(...W.subarray((l * F + i) * d, (l * F + i + 1) * d)),
    ));
}

test("crosscoder API: rows [n_inputs, d_in], per-input decoder norms, DFC partition, relative-norm histogram", async () => {
  await withTempDir("server-cross-", async (dir) => {
    const folder = join(dir, "dfc");
    await scaledDictionary(folder, DFC);
    const saved = await loadSae(folder);
    const dict = await loadDictionary(folder);
    try {
      const c = viaApp(createApp(dict));
      const info = await (await c("/v1/info")).json();
      assertEquals(info.crosscoder, {
        n_inputs: 2,
        inputs: ["A", "B"],
        hooks: null,
        relative_norm: true,
        partition: {
          "A-exclusive": { start: 0, end: 4 },
          "B-exclusive": { start: 4, end: 10 },
          shared: { start: 10, end: 20 },
        },
      });
      // Encode: the architecture's own encoder on [n, 2, 8].
      const n = 5, F = 20, d = 8;
      const xs = Array.from(
        { length: n },
        (_, b) =>
          [0, 1].map((l) =>
            Array.from({ length: d }, (_, j) => Math.sin(1 + b * 3.1 + l * 1.7 + j))
          ),
      );
      const want = tidy(() =>
        toDense(
          architecture("dfc").encodeInference(
            saved.params,
            tensor(Float32Array.from(xs.flat(2)), { shape: [n, 2, d] }),
            saved.cfg,
          ),
          F,
        ).dataSync() as Float32Array
      );
      const enc = await postJson(c, "/v1/encode", { inputs: xs, dense: true });
      const codes = (await enc.json()).codes;
      assertEquals(enc.status, 200);
      assertClose(codes.flat(), Array.from(want), { rtol: 1e-5, atol: 1e-6 });
      const sparse = (await (await postJson(c, "/v1/encode", { inputs: xs })).json()).features;
      // Decode: nested outputs [n][2][8] equal to f·W_dec[l] + b_dec[l].
      const dec = await (await postJson(c, "/v1/decode", { features: sparse })).json();
      assertEquals([dec.outputs.length, dec.outputs[0].length, dec.outputs[0][0].length], [
        n,
        2,
        d,
      ]);
      const W = saved.params.W_dec.dataSync() as Float32Array;
      const bd = saved.params.b_dec.dataSync() as Float32Array;
      const hand = xs.map((_, b) =>
        [0, 1].map((l) =>
          Array.from({ length: d }, (_, j) =>
            bd[l * d + j] +
            sparse[b].indices.reduce(
              (s: number, i: number, k: number) => s + sparse[b].values[k] * W[(l * F + i) * d + j],
              0,
            ))
        )
      );
      assertClose(dec.outputs.flat(2), hand.flat(2), { rtol: 1e-4, atol: 1e-5 });
      const rec = await (await postJson(c, "/v1/reconstruct", { inputs: xs })).json();
      assertClose(rec.outputs.flat(2), hand.flat(2), { rtol: 1e-4, atol: 1e-5 });
      assert(rec.metrics.l0 > 0 && rec.metrics.mse > 0, JSON.stringify(rec.metrics));
      // Arrow: each row its inputs one after another; the answer in the same layout.
      const arrow = await c("/v1/encode?dense=true", {
        method: "POST",
        headers: { "content-type": ARROW },
        body: arrowMatrixResponse("inputs", Float32Array.from(xs.flat(2)), 2 * d) as BodyInit,
      });
      assertEquals(arrow.status, 200);
      const col = tableFromIPC(new Uint8Array(await arrow.arrayBuffer())).getChild("codes")!;
      assertClose(
        Array.from({ length: n }, (_, i) => Array.from(col.get(i)!.toArray() as Float32Array))
          .flat(),
        Array.from(want),
        { rtol: 1e-5, atol: 1e-6 },
      );
      const flatArrow = await c("/v1/encode", {
        method: "POST",
        headers: { "content-type": ARROW },
        body: arrowMatrixResponse("inputs", new Float32Array(d), d) as BodyInit,
      });
      assertEquals(flatArrow.status, 422, "an Arrow row of d_in values is one input short");
      assert((await flatArrow.json()).error.message.includes("expected 16"), "names the width");

      const row = xs[0];
      const bad: [unknown, number, string, string][] = [
        [[row[0].concat(row[1])], 422, "wrong_shape", "inputs[0] must be [2, 8]"],
        [[[row[0], row[1], row[0]]], 422, "wrong_shape", "got 3 lists"],
        [[row, [row[0], row[1].slice(1)]], 422, "wrong_width", "inputs[1][1] has 7 values"],
        [[[row[0], ["x", ...row[1].slice(1)]]], 400, "wrong_type", "inputs[0][1][0]"],
        [[[row[0], ["nan", ...row[1].slice(1)]]], 422, "non_finite", "inputs[0][1][0]"],
        [[5], 400, "wrong_type", "inputs[0] must be [2, 8]"],
        [[], 422, "empty_input", "no rows"],
      ];
      for (const [inputs, status, code, words] of bad) {
        const r = await postJson(c, "/v1/reconstruct", { inputs });
        const e = (await r.json()).error;
        assertEquals([r.status, e.code], [status, code], JSON.stringify(inputs).slice(0, 50));
        assert(e.message.includes(words), e.message);
      }

      // Feature pages: norms by hand, relative norm, partition set by range.
      const norms = handNorms(W, 2, F, d);
      const sets: string[] = [];
      for (let f = 0; f < F; f++) {
        const b = await (await c(`/v1/features/${f}`)).json();
        const cc = b.crosscoder;
        assertClose(cc.decoder_norms, [norms[0][f], norms[1][f]], { rtol: 1e-5 });
        assertClose([b.decoder_norm], [Math.hypot(norms[0][f], norms[1][f])], { rtol: 1e-5 });
        const want = f < 4 ? "A-exclusive" : f < 10 ? "B-exclusive" : "shared";
        assertEquals(cc.partition, want, `feature ${f}`);
        assertClose([cc.relative_norm], [norms[1][f] / (norms[0][f] + norms[1][f])], {
          rtol: 1e-5,
        });
        assertEquals([b.decoder.length, b.decoder[0].length, b.encoder.length], [2, d, 2]);
        assertClose(b.decoder[1], Array.from(W.subarray((F + f) * d, (F + f + 1) * d)));
        sets.push(cc.partition);
      }
      // Exclusive features write only their input: r is 0 (A) or 1 (B).
      const h = await (await c("/v1/relative-norms?bins=10")).json();
      assertEquals(h.edges.length, 11);
      assertEquals(h.counts.reduce((a: number, b: number) => a + b, 0), F);
      assertEquals(h.by_partition["A-exclusive"], [4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      assertEquals(h.by_partition["B-exclusive"], [0, 0, 0, 0, 0, 0, 0, 0, 0, 6]);
      const shared = Array(10).fill(0);
      for (let f = 10; f < F; f++) {
        shared[Math.min(9, Math.floor(10 * norms[1][f] / (norms[0][f] + norms[1][f])))]++;
      }
      assertEquals(h.by_partition.shared, shared);
      assertEquals(
        h.counts,
        shared.map((v, j) =>
          v + h.by_partition["A-exclusive"][j] + h.by_partition["B-exclusive"][j]
        ),
      );
      const badBins = await c("/v1/relative-norms?bins=0");
      assertEquals(badBins.status, 400);
      await badBins.body?.cancel();
      const doc = await (await c("/openapi.json")).json();
      assert(doc.paths["/v1/relative-norms"].get, "documented");
      const inputs = doc.paths["/v1/encode"].post.requestBody.content["application/json"].schema
        .properties.inputs;
      assertEquals([inputs.items.minItems, inputs.items.items.minItems], [2, 8]);
      assert(doc.components.schemas.CrosscoderFeature, "feature schema");
    } finally {
      disposeDictionary(dict);
      dispose(saved.params);
    }

    // A plain crosscoder: no partition; an SAE: no relative norms; a decoupled one is refused.
    const cross = join(dir, "cross");
    await scaledDictionary(cross, { arch: "crosscoder", d_in: 8, d_sae: 12, n_inputs: 2 });
    const cd = await loadDictionary(cross);
    try {
      const h = await (await viaApp(createApp(cd))("/v1/relative-norms")).json();
      assertEquals([h.counts.length, h.by_partition], [20, null]);
      const f = await (await viaApp(createApp(cd))("/v1/features/3")).json();
      assertEquals(f.crosscoder.partition, null);
    } finally {
      disposeDictionary(cd);
    }
    const sae = join(dir, "sae");
    await randomDictionary(sae, MLP_SAE);
    const sd = await loadDictionary(sae);
    try {
      const c = viaApp(createApp(sd));
      const r = await c("/v1/relative-norms");
      const e = (await r.json()).error;
      assertEquals([r.status, e.code], [404, "no_relative_norm"]);
      assertEquals((await (await c("/v1/info")).json()).crosscoder, null);
      assertEquals((await (await c("/v1/features/0")).json()).crosscoder, null);
    } finally {
      disposeDictionary(sd);
    }
    const dec = join(dir, "decoupled");
    await randomDictionary(dec, {
      arch: "batchtopk-crosscoder",
      d_in: 8,
      d_sae: 12,
      k: 2,
      n_inputs: 2,
      code_norm: "decoupled",
    });
    const err = await loadDictionary(dec).then(() => "", (e) => String(e));
    assert(err.includes("decoupled crosscoder has one code per input"), err);
  });
});

/** The crosscoder's dense codes [T, F] on `ids`: hook `hooks[l]` of `models[l]`, stacked. */
async function handCodes(models: string[], hooks: string[], dict: string, ids: number[]) {
  const saved = await loadSae(dict);
  const lms = await Promise.all(models.map((m) => loadModel(m)));
  const out = tidy(() => {
    const tok = tensor(Int32Array.from(ids), { shape: [1, ids.length], dtype: "i32" });
    const rows = hooks.map((h, l) =>
      reshape(runWithCache(lms[l], tok, [h]).cache[h], [ids.length, -1])
    );
    const { cfg, params } = saved;
    return toDense(architecture(cfg.arch).encodeInference(params, stack(rows, 1), cfg), cfg.d_sae);
  });
  const codes = Float32Array.from(await out.data());
  out.dispose();
  dispose(saved.params);
  return codes;
}

test("POST /v1/prompt on crosscoders: over two models and over two hooks, features tagged with partition and relative norm", async () => {
  await withTempDir("server-cross-prompt-", async (dir) => {
    const { model, corpus } = await fixtureModelAndCorpus(dir, 1);
    const modelB = join(dir, "modelB");
    await cp(model, modelB, { recursive: true });
    const cases: [string, SaeConfigInput, string, string[], string[]][] = [
      [
        "dfc",
        { ...DFC, d_in: 32, extra: { hook_name: L1 } },
        `${model},${modelB}`,
        [model, modelB],
        [L1, L1],
      ],
      [
        "acausal",
        { arch: "crosscoder", d_in: 32, d_sae: 20, n_inputs: 2, extra: { hook_names: [L0, L1] } },
        model,
        [model, model],
        [L0, L1],
      ],
    ];
    for (const [name, cfg, models, handModels, hooks] of cases) {
      const folder = join(dir, name);
      await scaledDictionary(folder, cfg);
      const dict = await loadDictionary(folder);
      try {
        const prompter = await loadPrompter(dict.saved, models);
        const c = viaApp(createApp(dict, { prompter }));
        const r = await postJson(c, "/v1/prompt", { text: "the cat sat on the mat", top_k: 4 });
        const body = await r.json();
        assertEquals([r.status, body.kind, body.model], [200, "crosscoder", models], name);
        const ids = body.tokens.map((t: { id: number }) => t.id);
        const codes = await handCodes(handModels, hooks, folder, ids);
        const F = 20;
        let tagged = 0;
        body.tokens.forEach((t: { features: Record<string, number | string>[] }, i: number) => {
          const want = Array.from(codes.subarray(i * F, (i + 1) * F), (v, f) => [v, f])
            .filter(([v]) => v > 0).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 4);
          assertEquals(t.features.map((f) => f.id), want.map(([, f]) => f), `${name} token ${i}`);
          for (const f of t.features) {
            const cc = dict.cross!;
            const rel = cc.norms[1][f.id as number] /
              (cc.norms[0][f.id as number] + cc.norms[1][f.id as number]);
            assertClose([f.relative_norm as number], [rel], { rtol: 1e-6 });
            const id = f.id as number;
            const want = name === "dfc"
              ? (id < 4 ? "A-exclusive" : id < 10 ? "B-exclusive" : "shared")
              : undefined;
            assertEquals(f.partition, want, `${name} feature ${id}`);
            tagged++;
          }
        });
        assert(tagged > 0, `${name}: some features fired`);
        if (name === "acausal") {
          const info = await (await c("/v1/info")).json();
          assertEquals(info.crosscoder.hooks, [L0, L1]);
          // With sae features' statistics: the saved norms are the served ones.
          const r = await runCli(
            ...["features", folder, "--model", model, "--data", corpus, "--context", "16"],
            ...["--quiet", "--top", "2", "--show", "0"],
          );
          assertEquals(r.code, 0, r.err);
          const withStats = await loadDictionary(folder);
          try {
            const f = await (await viaApp(createApp(withStats))("/v1/features/3")).json();
            assertClose(f.stats.decoder_norms, f.crosscoder.decoder_norms, { rtol: 1e-5 });
            assertClose([f.stats.relative_norm], [f.crosscoder.relative_norm], { rtol: 1e-5 });
          } finally {
            disposeDictionary(withStats);
          }
        }
      } finally {
        disposeDictionary(dict);
      }
    }
    // Another tokenizer (same vocabulary size): refused at startup, as sae train --model A,B does.
    const modelC = join(dir, "modelC");
    await cp(model, modelC, { recursive: true });
    const tok = JSON.parse(await readFile(join(modelC, "tokenizer.json"), "utf8"));
    tok.normalizer = { type: "Lowercase" };
    await writeFile(join(modelC, "tokenizer.json"), JSON.stringify(tok));
    const dict = await loadDictionary(join(dir, "dfc"));
    try {
      const err = await loadPrompter(dict.saved, `${model},${modelC}`).then(
        () => "",
        (e) => String(e),
      );
      assert(err.includes("must share a tokenizer"), err);
    } finally {
      disposeDictionary(dict);
    }
    // The command: sae serve DIR --model A,B runs the prompt through both.
    const s = await serveQuietly(join(dir, "dfc"), { port: "0", model: `${model},${modelB}` });
    try {
      const r = await postJson(viaSocket(s.url), "/v1/prompt", { text: "the cat" });
      const body = await r.json();
      assertEquals([r.status, body.kind], [200, "crosscoder"]);
    } finally {
      await s.stop();
    }
    const said = s.said.join("\n");
    assert(said.includes("dfc dictionary n_inputs=2 d_in=32"), said);
    const cli = await runCli("serve", join(dir, "dfc"), "--model", `${model},${modelC}`);
    assertEquals(cli.code, 2, cli.err);
    assert(cli.err.includes("must share a tokenizer"), cli.err);
  });
});
