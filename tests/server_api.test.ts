// The API through the app's fetch handler and over a real socket (Deno.serve / Bun.serve): answers
// checked against a plain-JS reference of the dictionary, Arrow bodies, micro-batching, auth, CORS,
// the dashboard's files, and graceful shutdown with a request in flight (`sae serve` itself:
// server_command.test.ts).
import { tableFromIPC } from "apache-arrow";
import * as t from "../mod.ts";
import { createApp } from "../server/app.ts";
import { loadAssets } from "../server/assets.ts";
import { startServer } from "../server/serve.ts";
import { createBatcher } from "../server/batcher.ts";
import { arrowMatrixResponse, arrowSparseResponse } from "../server/arrow_body.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import {
  type Client,
  decodeRef,
  type Fixture,
  makeFixture,
  postJson,
  preacts,
  row,
  topkRef,
  viaApp,
  viaSocket,
} from "./server_fixture.ts";

const ARROW = "application/vnd.apache.arrow.stream";

async function checkCoreApi(c: Client, f: Fixture): Promise<void> {
  assertEquals(await (await c("/healthz")).json(), { status: "ok" }, "healthz");
  const info = await (await c("/v1/info")).json();
  assertEquals([info.architecture, info.d_in, info.d_sae, info.k, info.dtype, info.backend], [
    "topk",
    f.d_in,
    f.d_sae,
    f.k,
    "f32",
    "cpu",
  ], "info");
  assertEquals(info.metrics.fvu, 0.25, "saved metrics from eval.json");

  const xs = [row(f, 1), row(f, 2), row(f, 3)];
  const enc = await (await postJson(c, "/v1/encode", { inputs: xs })).json();
  assertEquals(enc.features.length, 3, "one entry per row");
  xs.forEach((x, i) => {
    const ref = topkRef(f, x);
    assertEquals(enc.features[i].indices, ref.indices, `row ${i} indices (largest first)`);
    assertClose(enc.features[i].values, ref.values, {
      rtol: 1e-4,
      atol: 1e-5,
      msg: `row ${i} values`,
    });
  });
  const top2 = await (await postJson(c, "/v1/encode", { inputs: xs, top_k: 2 })).json();
  assertEquals(
    top2.features.map((r: { indices: number[] }) => r.indices),
    enc.features.map((r: { indices: number[] }) => r.indices.slice(0, 2)),
    "top_k keeps the largest",
  );
  const dense = await (await postJson(c, "/v1/encode", { inputs: xs, dense: true })).json();
  assertEquals(dense.codes.length, 3);
  assertEquals(dense.codes[0].length, f.d_sae, "dense width");
  const nz = dense.codes[1].map((v: number, j: number) => [v, j]).filter(([v]: number[]) => v !== 0)
    .map(([, j]: number[]) => j);
  assertEquals(
    nz,
    [...enc.features[1].indices].sort((a: number, b: number) => a - b),
    "dense codes hold the same features",
  );

  const dec = await (await postJson(c, "/v1/decode", { features: enc.features })).json();
  xs.forEach((_, i) =>
    assertClose(dec.outputs[i], decodeRef(f, enc.features[i].indices, enc.features[i].values), {
      rtol: 1e-4,
      atol: 1e-5,
      msg: `decode row ${i}`,
    })
  );
  const decDense = await (await postJson(c, "/v1/decode", { codes: dense.codes })).json();
  assertClose(decDense.outputs.flat(), dec.outputs.flat(), {
    rtol: 1e-5,
    atol: 1e-6,
    msg: "dense codes decode the same",
  });

  const rec = await (await postJson(c, "/v1/reconstruct", { inputs: xs })).json();
  assertClose(rec.outputs.flat(), dec.outputs.flat(), {
    rtol: 1e-5,
    atol: 1e-6,
    msg: "reconstruct = decode(encode)",
  });
  let mse = 0, cos = 0;
  xs.forEach((x, i) => {
    const y = rec.outputs[i];
    mse += x.reduce((s, v, j) => s + (v - y[j]) ** 2, 0);
    const dot = x.reduce((s, v, j) => s + v * y[j], 0),
      nx = Math.hypot(...x),
      ny = Math.hypot(...y);
    cos += dot / (nx * ny);
  });
  assertClose([rec.metrics.mse, rec.metrics.cosine, rec.metrics.l0], [
    mse / 3,
    cos / 3,
    enc.features.reduce((s: number, r: { indices: number[] }) => s + r.indices.length, 0) / 3,
  ], { rtol: 1e-4, atol: 1e-5, msg: "metrics" });

  const feat = await (await c("/v1/features/3")).json();
  assertClose(feat.encoder, Array.from({ length: f.d_in }, (_, i) => f.W_enc[i * f.d_sae + 3]), {
    msg: "encoder column",
  });
  assertClose(feat.decoder, Array.from(f.W_dec.subarray(3 * f.d_in, 4 * f.d_in)), {
    msg: "decoder row",
  });
  assertClose([feat.bias, feat.decoder_norm], [
    f.b_enc[3],
    Math.hypot(...f.W_dec.subarray(3 * f.d_in, 4 * f.d_in)),
  ], { rtol: 1e-5, msg: "bias, norm" });
  assertClose([feat.density], [10 ** -3.5], {
    rtol: 1e-5,
    msg: "density from feature_density.npy",
  });
  assertEquals(
    feat.top_examples.map((e: { text: string }) => e.text),
    ["the cat sat", "a dog ran"],
    "top examples",
  );
  assertEquals(
    (await (await c("/v1/features/4")).json()).top_examples,
    [],
    "a feature without examples",
  );

  const spec = await (await c("/openapi.json")).json();
  assertEquals(spec.openapi, "3.1.0");
  for (
    const p of [
      "/healthz",
      "/v1/info",
      "/v1/encode",
      "/v1/decode",
      "/v1/reconstruct",
      "/v1/features/{id}",
    ]
  ) assert(spec.paths[p], `openapi lacks ${p}`);
  assertEquals(
    spec.paths["/v1/encode"].post.requestBody.content["application/json"].schema.properties.inputs
      .items.minItems,
    f.d_in,
    "widths in the schema",
  );
}

test("server: the API through app.fetch matches the reference dictionary", async () => {
  const f = await makeFixture();
  try {
    await checkCoreApi(viaApp(createApp(f.dict)), f);
  } finally {
    await f.cleanup();
  }
});

test("server: the same API over a real socket (Deno.serve / Bun.serve)", async () => {
  const f = await makeFixture();
  const s = startServer(createApp(f.dict).fetch, {
    port: 0,
    hostname: "127.0.0.1",
    maxBodyBytes: 1 << 20,
  });
  try {
    assert(s.port > 0 && s.url.startsWith("http://127.0.0.1:"), s.url);
    await checkCoreApi(viaSocket(s.url), f);
  } finally {
    await s.stop();
    await f.cleanup();
  }
});

/** The rows of a FixedSizeList column of an Arrow stream, as plain arrays. */
function arrowRows(bytes: Uint8Array, column: string): number[][] {
  const col = tableFromIPC(bytes).getChild(column);
  assert(col, `no column "${column}" in the Arrow answer`);
  return Array.from(
    { length: col.length },
    (_, i) => Array.from(col.get(i)!.toArray() as Float32Array),
  );
}

test("server: Arrow IPC bodies and responses agree with JSON", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict));
    const xs = [row(f, 4), row(f, 5)];
    const body = arrowMatrixResponse("inputs", Float32Array.from(xs.flat()), f.d_in);
    const r = await c("/v1/encode", { method: "POST", headers: { "content-type": ARROW }, body });
    assertEquals([r.status, r.headers.get("content-type")], [200, ARROW], "Arrow in, Arrow out");
    const tbl = tableFromIPC(new Uint8Array(await r.arrayBuffer()));
    const json = (await (await postJson(c, "/v1/encode", { inputs: xs })).json()).features;
    for (let i = 0; i < 2; i++) {
      assertEquals(
        Array.from(tbl.getChild("indices")!.get(i)!.toArray() as Int32Array),
        json[i].indices,
        `arrow row ${i}`,
      );
      assertClose(tbl.getChild("values")!.get(i)!.toArray() as Float32Array, json[i].values, {
        msg: `arrow values ${i}`,
      });
    }
    // Arrow body, JSON answer when asked; query options.
    const r2 = await c("/v1/encode?top_k=1", {
      method: "POST",
      headers: { "content-type": ARROW, accept: "application/json" },
      body,
    });
    assertEquals(
      (await r2.json()).features.map((x: { indices: number[] }) => x.indices),
      json.map((x: { indices: number[] }) => x.indices.slice(0, 1)),
    );
    const sparse = arrowSparseResponse(json);
    const d = await c("/v1/decode", {
      method: "POST",
      headers: { "content-type": ARROW },
      body: sparse,
    });
    const want = (await (await postJson(c, "/v1/decode", { features: json })).json()).outputs;
    assertClose(arrowRows(new Uint8Array(await d.arrayBuffer()), "outputs").flat(), want.flat(), {
      msg: "arrow decode",
    });
    // Dense codes as Arrow both ways: ?dense=true answers a "codes" matrix, ?codes=dense decodes one.
    const denseJson =
      (await (await postJson(c, "/v1/encode", { inputs: xs, dense: true })).json()).codes;
    const de = await c("/v1/encode?dense=true", {
      method: "POST",
      headers: { "content-type": ARROW },
      body,
    });
    const codes = arrowRows(new Uint8Array(await de.arrayBuffer()), "codes");
    assertEquals(
      codes.map((r) => r.length),
      [f.d_sae, f.d_sae],
      "dense Arrow codes: one d_sae row per input",
    );
    assertClose(codes.flat(), denseJson.flat(), { msg: "dense Arrow codes = dense JSON codes" });
    const dd = await c("/v1/decode?codes=dense", {
      method: "POST",
      headers: { "content-type": ARROW },
      body: arrowMatrixResponse("codes", Float32Array.from(denseJson.flat()), f.d_sae),
    });
    assertEquals(dd.status, 200, "dense-codes Arrow decode");
    assertClose(arrowRows(new Uint8Array(await dd.arrayBuffer()), "outputs").flat(), want.flat(), {
      msg: "dense-codes Arrow decode = sparse decode",
    });
    const rr = await c("/v1/reconstruct", {
      method: "POST",
      headers: { "content-type": ARROW },
      body,
    });
    const meta = tableFromIPC(new Uint8Array(await rr.arrayBuffer())).schema.metadata.get(
      "metrics",
    );
    assertEquals(
      JSON.parse(meta!).l0,
      (json[0].indices.length + json[1].indices.length) / 2,
      "metrics in the schema metadata",
    );
  } finally {
    await f.cleanup();
  }
});

test("server: concurrent requests are micro-batched into fewer backend calls, answers unchanged", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict, { batchWaitMs: 20 }));
    const xs = Array.from({ length: 24 }, (_, i) => row(f, 10 + i));
    const res = await Promise.all(
      xs.map((x) => postJson(c, "/v1/encode", { inputs: [x] }).then((r) => r.json())),
    );
    res.forEach((r, i) =>
      assertEquals(r.features[0].indices, topkRef(f, xs[i]).indices, `request ${i}`)
    );
    const stats = await (await c("/v1/stats")).json();
    assertEquals(stats.encode.requests, 24);
    assert(
      stats.encode.batches < 24 && stats.encode.largest > 1,
      `24 concurrent requests took ${stats.encode.batches} backend calls`,
    );
  } finally {
    await f.cleanup();
  }
});

test("batcher: batches stay within maxRows, answers go back in order, a failed batch fails only its own requests", async () => {
  const seen: number[][] = [];
  const b = createBatcher<number, string>(async (items) => {
    seen.push(items);
    await new Promise((r) => setTimeout(r, 5));
    if (items.includes(13)) throw new Error("boom");
    return items.map((i) => `r${i}`);
  }, { maxWaitMs: 5, maxRows: 8 });
  const ids = Array.from({ length: 20 }, (_, i) => i);
  const out = await Promise.allSettled(ids.map((i) => b.submit(i, 3)));
  assert(
    seen.every((batch) => batch.length * 3 <= 8),
    `rows per batch within 8: ${JSON.stringify(seen)}`,
  );
  assertEquals(seen.flat(), ids, "every request once, in arrival order");
  const failed = seen.find((batch) => batch.includes(13))!;
  out.forEach((o, i) => {
    if (failed.includes(i)) {
      assert(
        o.status === "rejected" && String(o.reason).includes("boom"),
        `request ${i} shares the failed batch`,
      );
    } else assertEquals(o.status === "fulfilled" && o.value, `r${i}`, `request ${i}`);
  });
  assertEquals(b.stats().requests, 20);
  await b.idle();
  assertEquals(await b.submit(99, 100), "r99", "a request over maxRows runs alone");
});

test("server: BatchTopK without a saved θ (batch-dependent codes) never merges requests", async () => {
  const f = await makeFixture({ arch: "batchtopk", extras: false });
  try {
    assertEquals(f.dict.rowIndependent, false);
    const c = viaApp(createApp(f.dict, { batchWaitMs: 20 }));
    const xs = Array.from({ length: 6 }, (_, i) => [row(f, 40 + i), row(f, 50 + i)]);
    const alone = [];
    for (const x of xs) {
      alone.push((await (await postJson(c, "/v1/encode", { inputs: x })).json()).features);
    }
    const together = await Promise.all(
      xs.map((x) => postJson(c, "/v1/encode", { inputs: x }).then((r) => r.json())),
    );
    assertEquals(together.map((r) => r.features), alone, "the same answers as one at a time");
    assertEquals(
      (await (await c("/v1/stats")).json()).encode.largest,
      1,
      "one request per backend call",
    );
  } finally {
    await f.cleanup();
  }
});

test("server: a dense-code architecture (ReLU) lists its non-zero features largest first", async () => {
  const f = await makeFixture({ arch: "relu", extras: false });
  try {
    const c = viaApp(createApp(f.dict));
    const x = row(f, 7);
    const want = preacts(f, x).map((v, j) => [v, j]).filter(([v]) => v > 0).sort((a, b) =>
      b[0] - a[0]
    );
    const got = (await (await postJson(c, "/v1/encode", { inputs: [x] })).json()).features[0];
    assertEquals(got.indices, want.map(([, j]) => j), "non-zero features, largest first");
    assertClose(got.values, want.map(([v]) => v), { rtol: 1e-4, atol: 1e-5 });
    assertEquals((await c("/v1/density")).status, 404, "no density files: 404 with a reason");
    assertEquals((await (await c("/v1/features/0")).json()).density, null);
  } finally {
    await f.cleanup();
  }
});

test("server: bearer-token auth and CORS", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict, { token: "s3cret-token" }));
    assertEquals((await c("/healthz")).status, 200, "healthz needs no token");
    assertEquals((await c("/v1/info")).status, 401, "no token");
    assertEquals(
      (await c("/v1/info", { headers: { authorization: "Bearer wrong" } })).status,
      401,
      "wrong token",
    );
    assertEquals(
      (await c("/v1/info", { headers: { authorization: "Basic s3cret-token" } })).status,
      401,
      "wrong scheme",
    );
    assertEquals((await c("/openapi.json")).status, 401, "openapi behind auth");
    assertEquals(
      (await c("/v1/info", { headers: { authorization: "Bearer s3cret-token" } })).status,
      200,
      "right token",
    );
    const bad = await postJson(c, "/v1/encode", { inputs: [row(f, 1)] });
    assertEquals([bad.status, (await bad.json()).error.code], [401, "unauthorized"]);

    const plain = viaApp(createApp(f.dict));
    assertEquals(
      (await plain("/v1/info", { headers: { origin: "http://evil.example" } })).headers.get(
        "access-control-allow-origin",
      ),
      null,
      "CORS off by default",
    );
    const withCors = viaApp(createApp(f.dict, { corsOrigins: ["http://app.example"] }));
    const pre = await withCors("/v1/encode", {
      method: "OPTIONS",
      headers: { origin: "http://app.example", "access-control-request-method": "POST" },
    });
    assert(
      pre.status === 204 && pre.headers.get("access-control-allow-origin") === "http://app.example",
      `preflight ${pre.status}`,
    );
    assertEquals(
      (await withCors("/v1/info", { headers: { origin: "http://other.example" } })).headers.get(
        "access-control-allow-origin",
      ),
      null,
      "other origins get nothing",
    );
  } finally {
    await f.cleanup();
  }
});

test("server: the dashboard and uPlot are served by the app (no CDN)", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict, { assets: await loadAssets() }));
    const page = await c("/");
    const html = await page.text();
    assert(
      page.headers.get("content-type")!.startsWith("text/html") &&
        html.includes("/vendor/uPlot.iife.min.js"),
      "index.html",
    );
    assert(
      !/https?:\/\//.test(html.replace(/<!doctype[^>]*>/i, "")),
      "no external URLs in the page",
    );
    const js = await c("/vendor/uPlot.iife.min.js");
    assert(js.status === 200 && (await js.text()).includes("uPlot"), "uPlot script");
    assertEquals((await c("/dashboard/app.js")).status, 200);
    assertEquals((await c("/dashboard/style.css")).status, 200);
  } finally {
    await f.cleanup();
  }
});

test("server: graceful shutdown lets an in-flight request finish, then refuses connections", async () => {
  const f = await makeFixture();
  // A long batching wait keeps the request in flight while the server is told to stop.
  const s = startServer(createApp(f.dict, { batchWaitMs: 400 }).fetch, {
    port: 0,
    hostname: "127.0.0.1",
    maxBodyBytes: 1 << 20,
  });
  try {
    const inflight = postJson(viaSocket(s.url), "/v1/encode", { inputs: [row(f, 1)] });
    await new Promise((r) => setTimeout(r, 100));
    const stopped = s.stop();
    const r = await inflight;
    assertEquals(r.status, 200, "in-flight request answered");
    assertEquals((await r.json()).features[0].indices, topkRef(f, row(f, 1)).indices);
    await stopped;
    await s.finished;
    let refused = false;
    await fetch(`${s.url}/healthz`).then((x) => x.body?.cancel(), () => (refused = true));
    assert(refused, "no connections after stop");
  } finally {
    await s.stop();
    await f.cleanup();
  }
});

test("server: memory stays flat over many requests", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict));
    const once = () =>
      Promise.all(
        [
          postJson(c, "/v1/reconstruct", { inputs: [row(f, 1), row(f, 2)] }),
          postJson(c, "/v1/encode", { inputs: [row(f, 3)], dense: true }),
          c("/v1/features/5"),
          postJson(c, "/v1/encode", { inputs: [[1]] }),
        ].map((p) => p.then((r) => r.arrayBuffer())),
      );
    await once();
    const before = t.memoryStats();
    for (let i = 0; i < 40; i++) await once();
    assertEquals(
      t.memoryStats().liveBuffers,
      before.liveBuffers,
      "live buffers after 160 requests",
    );
  } finally {
    await f.cleanup();
  }
});
