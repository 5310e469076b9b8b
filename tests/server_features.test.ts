// The feature pages' API over `sae features` statistics (server/feature_view.ts): GET
// /v1/features/:id returns the saved contexts (rendered from bytes, each token's span and
// activation), histogram, density, logit tables and interval samples exactly as the files hold
// them; GET /v1/features?token= answers from an index equal to a brute-force scan of the top
// contexts; bad queries get a 4xx naming the problem; the OpenAPI document describes the search.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { createApp } from "../server/app.ts";
import { disposeDictionary, loadDictionary } from "../server/dictionary.ts";
import { readFeatures } from "../sae/eval/features_file.ts";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { tokenSpans } from "../data/text/token_spans.ts";
import { assert, assertClose, assertEquals, test, withTempDir } from "./harness.ts";
import { dictionaryWithFeatures, MLP_SAE, RESID_MLSAE } from "./features_fixture.ts";
import { makeFixture, viaApp } from "./server_fixture.ts";

const getJson = async (c: ReturnType<typeof viaApp>, path: string) => {
  const r = await c(path);
  return { status: r.status, body: await r.json() };
};

test("GET /v1/features/:id: the saved statistics, contexts rendered from bytes", async () => {
  await withTempDir("server-features-", async (dir) => {
    const { dict: folder, model } = await dictionaryWithFeatures(dir, MLP_SAE);
    const dict = await loadDictionary(folder);
    try {
      const c = viaApp(createApp(dict));
      const info = await getJson(c, "/v1/info");
      assertEquals(info.body.files.features, true);
      assertEquals(
        [info.body.features.top, info.body.features.window, info.body.features.text],
        [3, { before: 4, after: 2 }, true],
        "info names the statistics; the tokenizer comes from features.json's model",
      );
      const saved = await readFeatures(join(folder, "features"));
      const F = 24, W = 7;
      const values = saved.contexts.values.dataSync() as Float32Array;
      const tokens = saved.contexts.tokens.dataSync() as Int32Array;
      const acts = saved.contexts.acts.dataSync() as Float32Array;
      const fires = saved.contexts.fires.dataSync() as Float64Array;
      const hist = saved.stats!.hist.dataSync() as Float64Array;
      const up = saved.stats!.logit_up_ids.dataSync() as Int32Array;
      const counts = saved.stats!.interval_counts.dataSync() as Float64Array;
      const tok = await loadTokenizer(model);
      let checked = 0;
      for (let f = 0; f < F; f++) {
        const { status, body } = await getJson(c, `/v1/features/${f}`);
        assertEquals(status, 200);
        const st = body.stats;
        assertEquals(st.fires, fires[f]);
        assertClose([st.density], [fires[f] / (saved.about.tokens_scanned as number)], {
          rtol: 1e-12,
        });
        const filled = Array.from(values.subarray(f * 3, f * 3 + 3)).filter((v) => v > -Infinity);
        assertEquals(st.contexts.map((x: { value: number }) => x.value), filled, `feature ${f}`);
        st.contexts.forEach((x: { ids: number[]; acts: number[]; text: string }, s: number) => {
          const o = (f * 3 + s) * W;
          assertEquals(x.ids, Array.from(tokens.subarray(o, o + W)));
          assertEquals(x.acts, Array.from(acts.subarray(o, o + W)));
          assertEquals(x.text, tokenSpans(tok, x.ids).text);
          assertEquals(x.acts[4], x.ids[4] >= 0 ? filled[s] : 0, "the maximum is at `before`");
        });
        assertEquals(st.histogram.counts, Array.from(hist.subarray(f * 8, f * 8 + 8)));
        assertEquals(st.histogram.counts.reduce((a: number, b: number) => a + b, 0), fires[f]);
        assertEquals(
          st.logits.up[0].map((e: { id: number }) => e.id),
          Array.from(up.subarray(f * 4, f * 4 + 4)),
        );
        assertEquals(st.logits.up[0][0].token, tokenSpans(tok, [up[f * 4]]).text);
        // Intervals strongest first; their counts are the saved ones.
        assertEquals(
          st.intervals.map((q: { count: number }) => q.count).reverse(),
          Array.from(counts.subarray(f * 4, f * 4 + 4)),
        );
        assert(st.domain_share !== null && "en" in st.domain_fires, "per-domain figures named");
        if (st.contexts.length) checked++;
      }
      assert(checked > 10, `features with contexts: ${checked}`);
      // Without the statistics' folder, the feature answer carries stats: null.
      const plain = await makeFixture();
      try {
        const r = await getJson(viaApp(createApp(plain.dict)), "/v1/features/3");
        assertEquals([r.status, r.body.stats], [200, null]);
      } finally {
        await plain.cleanup();
      }
      disposeAll(saved);
    } finally {
      disposeDictionary(dict);
    }
  });
});

function disposeAll(r: Awaited<ReturnType<typeof readFeatures>>) {
  for (const t of [...Object.values(r.contexts), ...Object.values(r.stats ?? {})]) t.dispose();
}

test("GET /v1/features?token=: the index equals a scan of the top contexts; bad queries 4xx", async () => {
  await withTempDir("server-search-", async (dir) => {
    const { dict: folder, model } = await dictionaryWithFeatures(dir, MLP_SAE);
    const dict = await loadDictionary(folder);
    try {
      const c = viaApp(createApp(dict));
      const saved = await readFeatures(join(folder, "features"));
      const values = saved.contexts.values.dataSync() as Float32Array;
      const tokens = saved.contexts.tokens.dataSync() as Int32Array;
      disposeAll(saved);
      // Brute force: for each token, the features and how many of their contexts peak on it.
      const want = new Map<number, Map<number, number>>();
      for (let f = 0; f < 24; f++) {
        for (let s = 0; s < 3; s++) {
          if (values[f * 3 + s] === -Infinity) continue;
          const id = tokens[(f * 3 + s) * 7 + 4];
          const m = want.get(id) ?? new Map<number, number>();
          m.set(f, (m.get(f) ?? 0) + 1);
          want.set(id, m);
        }
      }
      assert(want.size > 3, `tokens peaked on: ${want.size}`);
      for (const [id, m] of want) {
        const { status, body } = await getJson(c, `/v1/features?token_id=${id}&limit=100`);
        assertEquals(status, 200);
        const got = body.tokens[0].features as { id: number; contexts: number }[];
        assertEquals(
          new Map(got.map((g) => [g.id, g.contexts])),
          m,
          `token ${id}`,
        );
        for (let i = 1; i < got.length; i++) {
          assert(got[i - 1].contexts >= got[i].contexts, "most contexts first");
        }
      }
      // By text: tokenized with the model's tokenizer, each token answered.
      const tok = await loadTokenizer(model);
      const [id] = want.keys();
      const text = tokenSpans(tok, [id]).text;
      const byText = await getJson(c, `/v1/features?token=${encodeURIComponent(text)}`);
      assertEquals(byText.status, 200);
      assertEquals(
        byText.body.tokens.map((t: { id: number }) => t.id),
        Array.from(tok.encode(text)),
      );
      const lim = await getJson(c, `/v1/features?token_id=${id}&limit=1`);
      assertEquals(lim.body.tokens[0].features.length, 1, "limit");

      const bad: [string, number, string][] = [
        ["/v1/features", 400, "bad_query"],
        ["/v1/features?token=a&token_id=1", 400, "bad_query"],
        ["/v1/features?token_id=abc", 400, "bad_token_id"],
        ["/v1/features?token_id=-1", 400, "bad_token_id"],
        ["/v1/features?token_id=64", 422, "unknown_token"],
        ["/v1/features?token=", 400, "empty_token"],
        [`/v1/features?token=${"x".repeat(201)}`, 413, "text_too_long"],
        ["/v1/features?token_id=1&limit=0", 400, "bad_limit"],
        ["/v1/features?token_id=1&limit=101", 400, "bad_limit"],
        ["/v1/features?token_id=1&sort=x", 400, "unknown_parameter"],
      ];
      for (const [path, status, code] of bad) {
        const r = await getJson(c, path);
        assertEquals([r.status, r.body.error?.code], [status, code], path);
        assert(r.body.error.message.length > 10, r.body.error.message);
      }
      const unknown = await getJson(c, "/v1/features?token_id=64");
      assert(unknown.body.error.message.includes("0..63"), unknown.body.error.message);

      const doc = (await getJson(c, "/openapi.json")).body;
      const op = doc.paths["/v1/features"].get;
      assertEquals(op.parameters.map((p: { name: string }) => p.name), [
        "token",
        "token_id",
        "limit",
      ]);
      assert(doc.components.schemas.TokenSearch, "TokenSearch schema");
      assert(op.responses["422"] && op.responses["413"], "documented errors");
    } finally {
      disposeDictionary(dict);
    }
    // No tokenizer (the model folder is gone): text search is a 422 naming the fix, ids still work.
    await rm(join(model, "tokenizer.json"));
    const noTok = await loadDictionary(folder);
    try {
      const c = viaApp(createApp(noTok));
      const r = await getJson(c, "/v1/features?token=the");
      assertEquals([r.status, r.body.error.code], [422, "no_tokenizer"]);
      assert(r.body.error.message.includes("--model"), r.body.error.message);
      assertEquals((await getJson(c, "/v1/features?token_id=5")).status, 200);
      const f = await getJson(c, "/v1/features/0");
      const ctx = f.body.stats.contexts[0];
      assertEquals(ctx.text, tokenSpans(null, ctx.ids).text, "ids shown without a tokenizer");
    } finally {
      disposeDictionary(noTok);
    }
  });
});

test("GET /v1/features?token=: 404 naming sae features when the folder has no statistics", async () => {
  const f = await makeFixture();
  try {
    const r = await viaApp(createApp(f.dict))("/v1/features?token_id=1");
    const body = await r.json();
    assertEquals([r.status, body.error.code], [404, "no_features"]);
    assert(body.error.message.includes("sae features"), body.error.message);
  } finally {
    await f.cleanup();
  }
});

test("GET /v1/features/:id on an MLSAE: contexts name their layer, firings per layer add up", async () => {
  await withTempDir("server-features-mlsae-", async (dir) => {
    const { dict: folder } = await dictionaryWithFeatures(dir, RESID_MLSAE);
    const dict = await loadDictionary(folder);
    try {
      const c = viaApp(createApp(dict));
      const layers = (RESID_MLSAE.extra as { hook_names: string[] }).hook_names;
      const info = await getJson(c, "/v1/info");
      assertEquals(info.body.features.slices, layers);
      let seen = 0;
      for (let f = 0; f < 24; f++) {
        const st = (await getJson(c, `/v1/features/${f}`)).body.stats;
        if (!st.fires) continue;
        seen++;
        assertEquals(Object.keys(st.slice_fires), layers);
        const sum = Object.values(st.slice_fires as Record<string, number>).reduce((a, b) => a + b);
        assertEquals(sum, st.fires, `feature ${f}: firings per layer add up`);
        for (const x of st.contexts) assert(layers.includes(x.slice), `layer named: ${x.slice}`);
        const tokens = info.body.features.tokens_scanned;
        assertClose([st.density], [st.fires / (tokens * 2)], {
          rtol: 1e-12,
          msg: "per (token, layer)",
        });
      }
      assert(seen > 5, `features that fired: ${seen}`);
    } finally {
      disposeDictionary(dict);
    }
  });
});
