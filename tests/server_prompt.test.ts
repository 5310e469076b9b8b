// POST /v1/prompt (server/prompt.ts): the text is tokenized by the model's tokenizer, each token's
// features are the dictionary's codes on the model's activations (computed here by hand, through
// runWithCache and the architecture's encoder), an MLSAE's layer × latent sums add up its codes,
// and bad requests get a 4xx naming the problem (no model, too many tokens, wrong types). `sae
// serve DIR --model M` wires it up and refuses --max-prompt-tokens without a model.
import { join } from "node:path";
import { createApp } from "../server/app.ts";
import { disposeDictionary, loadDictionary } from "../server/dictionary.ts";
import { loadPrompter } from "../server/prompt.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { architecture } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { reshape, stack } from "../tensor/ops/shape.ts";
import { tidy } from "../tensor/scope.ts";
import { tensor } from "../tensor/ops/create.ts";
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import {
  fixtureModelAndCorpus,
  MLP_SAE,
  randomDictionary,
  RESID_MLSAE,
} from "./features_fixture.ts";
import { postJson, serveQuietly, viaApp, viaSocket } from "./server_fixture.ts";
import { runCli } from "./cli_run.ts";

const HOOK = "blocks.0.mlp.hook_post";
const L0 = "blocks.0.hook_resid_post", L1 = "blocks.1.hook_resid_post";
const TEXT = "the cat sat on the mat";

/** The dictionary's dense codes [T, S, F] on `ids`, by hand. */
async function handCodes(model: string, dict: string, ids: number[], hooks: string[]) {
  const lm = await loadModel(model);
  const saved = await loadSae(dict);
  const { cfg, params } = saved;
  const out = tidy(() => {
    const tok = tensor(Int32Array.from(ids), { shape: [1, ids.length], dtype: "i32" });
    const cache = runWithCache(lm, tok, hooks).cache;
    const rows = hooks.map((h) => reshape(cache[h], [ids.length, -1]));
    const x = hooks.length === 1 ? rows[0] : stack(rows, 1);
    return toDense(architecture(cfg.arch).encodeInference(params, x, cfg), cfg.d_sae);
  });
  return { codes: Float32Array.from(await out.data()), F: cfg.d_sae };
}

test("POST /v1/prompt: each token's top features are the SAE's codes on the model's activations", async () => {
  await withTempDir("server-prompt-", async (dir) => {
    const { model } = await fixtureModelAndCorpus(dir, 1);
    const folder = join(dir, "sae");
    await randomDictionary(folder, MLP_SAE);
    const dict = await loadDictionary(folder);
    try {
      const prompter = await loadPrompter(dict.saved, model);
      const c = viaApp(createApp(dict, { prompter }));
      const r = await postJson(c, "/v1/prompt", { text: TEXT, top_k: 3 });
      const body = await r.json();
      assertEquals(r.status, 200, JSON.stringify(body));
      const tok = await loadTokenizer(model);
      const ids = Array.from(tok.encode(TEXT));
      assertEquals(body.tokens.map((t: { id: number }) => t.id), ids);
      assertEquals(body.text, TEXT);
      assertEquals(body.kind, "sae");
      const { codes, F } = await handCodes(model, folder, ids, [HOOK]);
      ids.forEach((_, t) => {
        const want = Array.from(codes.subarray(t * F, (t + 1) * F), (v, f) => [v, f])
          .filter(([v]) => v > 0).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 3);
        const got = body.tokens[t].features;
        assertEquals(got.map((g: { id: number }) => g.id), want.map(([, f]) => f), `token ${t}`);
        assertClose(got.map((g: { value: number }) => g.value), want.map(([v]) => v), {
          rtol: 1e-4,
        });
        const [a, b] = body.tokens[t].span;
        assertEquals(body.text.slice(a, b), body.tokens[t].text);
      });
      assertEquals(body.layers, null);
      const info = await (await c("/v1/info")).json();
      assertEquals(info.prompt, { model, kind: "sae", max_tokens: 32 });

      const bad: [unknown, number, string, string?][] = [
        [{}, 400, "wrong_type", '"text"'],
        [{ text: 5 }, 400, "wrong_type", '"text"'],
        [{ text: "" }, 422, "empty_text"],
        [{ text: "a", top_k: 0 }, 400, "wrong_type", "top_k"],
        [{ text: "a", extra: 1 }, 400, "unknown_field", "extra"],
        [{ text: "the cat ".repeat(40) }, 413, "text_too_long", "limit is 32"],
        [{ text: "x".repeat(20000) }, 413, "text_too_long", "characters"],
        ["{not json", 400, "malformed_json"],
      ];
      for (const [b, status, code, words] of bad) {
        const res = await postJson(c, "/v1/prompt", b);
        const e = (await res.json()).error;
        assertEquals([res.status, e.code], [status, code], JSON.stringify(b).slice(0, 60));
        if (words) assert(e.message.includes(words), e.message);
      }
      const arrow = await c("/v1/prompt", {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "hi",
      });
      assertEquals(arrow.status, 415);
      // Without a model: 404 saying how to start the server with one.
      const none = await postJson(viaApp(createApp(dict)), "/v1/prompt", { text: TEXT });
      const e = (await none.json()).error;
      assertEquals([none.status, e.code], [404, "no_model"]);
      assert(e.message.includes("--model"), e.message);
      const doc = await (await c("/openapi.json")).json();
      assert(doc.paths["/v1/prompt"].post.responses["413"], "documented");
    } finally {
      disposeDictionary(dict);
    }
  });
});

test("POST /v1/prompt on an MLSAE: per-layer slices and the layer × latent sums of its codes", async () => {
  await withTempDir("server-prompt-mlsae-", async (dir) => {
    const { model } = await fixtureModelAndCorpus(dir, 1);
    const folder = join(dir, "mlsae");
    await randomDictionary(folder, RESID_MLSAE);
    const dict = await loadDictionary(folder);
    try {
      const prompter = await loadPrompter(dict.saved, model);
      const c = viaApp(createApp(dict, { prompter }));
      const body = await (await postJson(c, "/v1/prompt", { text: TEXT, top_k: 50 })).json();
      assertEquals(body.kind, "mlsae");
      const ids = body.tokens.map((t: { id: number }) => t.id);
      const { codes, F } = await handCodes(model, folder, ids, [L0, L1]);
      assertEquals(body.layers.names, [L0, L1]);
      const sums = [0, 1].map((s) =>
        body.layers.latents.map((f: number) =>
          ids.reduce((x: number, _: number, t: number) => x + codes[(t * 2 + s) * F + f], 0)
        )
      );
      assertClose(body.layers.sums.flat(), sums.flat(), { rtol: 1e-4 });
      // Each token's feature value is its larger layer, and names that layer.
      const t0 = body.tokens[1].features[0];
      const per = [0, 1].map((s) => codes[(1 * 2 + s) * F + t0.id]);
      assertClose([t0.value], [Math.max(...per)], { rtol: 1e-4 });
      assertEquals(t0.slice, per[0] >= per[1] ? L0 : L1);
    } finally {
      disposeDictionary(dict);
    }
  });
});

test("sae serve --model: the prompt view is on; --max-prompt-tokens needs --model", async () => {
  await withTempDir("server-prompt-cli-", async (dir) => {
    const { model } = await fixtureModelAndCorpus(dir, 1);
    const folder = join(dir, "tc");
    await randomDictionary(folder, {
      arch: "transcoder",
      d_in: 32,
      d_sae: 16,
      extra: { hook_name: "blocks.0.ln2.hook_normalized" },
    });
    const s = await serveQuietly(folder, { port: "0", model, "max-prompt-tokens": "8" });
    try {
      const r = await postJson(viaSocket(s.url), "/v1/prompt", { text: "the cat" });
      const body = await r.json();
      assertEquals([r.status, body.kind], [200, "transcoder"]);
      const long = await postJson(viaSocket(s.url), "/v1/prompt", {
        text: "the cat sat on the mat and the dog",
      });
      assertEquals(long.status, 413, "--max-prompt-tokens 8");
      await long.body?.cancel();
    } finally {
      await s.stop();
    }
    const r = await runCli("serve", folder, "--max-prompt-tokens", "8");
    assertEquals(r.code, 2);
    assert(r.err.includes("--max-prompt-tokens needs --model"), r.err);
    const wrong = await runCli("serve", folder, "--model", join(dir, "nowhere"));
    assertEquals(wrong.code, 2, wrong.err);
    assert(wrong.err.includes("nowhere"), wrong.err);
  });
});
