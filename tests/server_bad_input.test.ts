// The bad-input suite: each kind of bad request gets its documented status and
// {"error": {"code", "message"}}, through app.fetch and over a real socket, and the server answers
// a good request right after every bad one. Then fast-check fuzzes JSON, text and Arrow bodies:
// never a 500, never a malformed error, never a crash.
import fc from "fast-check";
import { connect } from "node:net";
import { createApp } from "../server/app.ts";
import { arrowMatrixResponse } from "../server/arrow_body.ts";
import { startServer } from "../server/serve.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runs } from "./ref.ts";
import {
  type Client,
  type Fixture,
  makeFixture,
  postJson,
  row,
  viaApp,
  viaSocket,
} from "./server_fixture.ts";

const ARROW = "application/vnd.apache.arrow.stream";
const LIMITS = { maxBodyBytes: 4096, maxRows: 4, maxDenseValues: 64, token: "tok-123" };
const AUTH = { authorization: "Bearer tok-123" };

/** A valid 2-row Arrow body for the fixture's width (8) with bytes replaced: mutate(at, value, ...). */
function mutate(...pairs: number[]): Uint8Array<ArrayBuffer> {
  const b = arrowMatrixResponse("inputs", Float32Array.from({ length: 16 }, (_, i) => i / 7), 8);
  for (let i = 0; i < pairs.length; i += 2) b[pairs[i]] = pairs[i + 1];
  return b;
}

type Case = [
  name: string,
  send: (c: Client, f: Fixture) => Promise<Response>,
  status: number,
  code: string,
];

const post = (
  path: string,
  body: BodyInit,
  type: string | null = "application/json",
  headers: Record<string, string> = AUTH,
) =>
(c: Client) =>
  c(path, {
    method: "POST",
    headers: { ...(type ? { "content-type": type } : {}), ...headers },
    body,
  });
const enc = (body: unknown) => post("/v1/encode", JSON.stringify(body));
const withRow = (f: Fixture, j: number, v: unknown) => {
  const r: unknown[] = row(f, 1);
  r[j] = v;
  return r;
};

const CASES: Case[] = [
  ["malformed JSON", post("/v1/encode", '{"inputs": [[1, 2'), 400, "malformed_json"],
  ["raw NaN token (not JSON)", post("/v1/encode", '{"inputs": [[NaN]]}'), 400, "malformed_json"],
  [
    "invalid UTF-8",
    post("/v1/encode", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])),
    400,
    "malformed_json",
  ],
  ["a JSON array body", enc([[1, 2]]), 400, "malformed_json"],
  ["inputs missing", enc({}), 400, "missing_field"],
  ["unknown field", (c, f) => enc({ inputs: [row(f, 1)], extra: 1 })(c), 400, "unknown_field"],
  ["inputs a string", enc({ inputs: "1,2,3" }), 400, "wrong_type"],
  ["a row that is a number", enc({ inputs: [1, 2, 3] }), 400, "wrong_type"],
  ["a string element", (c, f) => enc({ inputs: [withRow(f, 2, "abc")] })(c), 400, "wrong_type"],
  ["a null element", (c, f) => enc({ inputs: [withRow(f, 0, null)] })(c), 400, "wrong_type"],
  ["top_k zero", (c, f) => enc({ inputs: [row(f, 1)], top_k: 0 })(c), 400, "wrong_type"],
  ["top_k as a string", (c, f) => enc({ inputs: [row(f, 1)], top_k: "3" })(c), 400, "wrong_type"],
  [
    "dense not a boolean",
    (c, f) => enc({ inputs: [row(f, 1)], dense: "yes" })(c),
    400,
    "wrong_type",
  ],
  ["wrong width", enc({ inputs: [[1, 2, 3]] }), 422, "wrong_width"],
  [
    "ragged rows",
    (c, f) => enc({ inputs: [row(f, 1), row(f, 2).slice(1)] })(c),
    422,
    "wrong_width",
  ],
  ["empty inputs", enc({ inputs: [] }), 422, "empty_input"],
  ["empty row", enc({ inputs: [[]] }), 422, "wrong_width"],
  ['"NaN" as a string', (c, f) => enc({ inputs: [withRow(f, 1, "NaN")] })(c), 422, "non_finite"],
  [
    '"-Infinity" as a string',
    (c, f) => enc({ inputs: [withRow(f, 1, "-Infinity")] })(c),
    422,
    "non_finite",
  ],
  [
    "1e400 (parses to Infinity)",
    (c, f) =>
      post(
        "/v1/encode",
        `{"inputs": [[${withRow(f, 3, 0).map((v, j) => (j === 3 ? "1e400" : v)).join(",")}]]}`,
      )(c),
    422,
    "non_finite",
  ],
  ["1e39 (overflows f32)", (c, f) => enc({ inputs: [withRow(f, 3, 1e39)] })(c), 422, "non_finite"],
  [
    "too many rows",
    (c, f) => enc({ inputs: Array.from({ length: 5 }, (_, i) => row(f, i)) })(c),
    413,
    "too_many_rows",
  ],
  [
    "dense answer over the limit",
    (c, f) => enc({ inputs: [row(f, 1), row(f, 2), row(f, 3)], dense: true })(c),
    413,
    "dense_too_large",
  ],
  [
    "oversized body",
    (c, f) => enc({ inputs: [row(f, 1)], pad: "x".repeat(5000) })(c),
    413,
    "payload_too_large",
  ],
  [
    "text/plain",
    (c, f) => post("/v1/encode", JSON.stringify({ inputs: [row(f, 1)] }), "text/plain")(c),
    415,
    "unsupported_media_type",
  ],
  [
    "no content type",
    (c, f) => post("/v1/encode", JSON.stringify({ inputs: [row(f, 1)] }), null)(c),
    415,
    "unsupported_media_type",
  ],
  [
    "form-encoded",
    post("/v1/reconstruct", "inputs=1", "application/x-www-form-urlencoded"),
    415,
    "unsupported_media_type",
  ],
  [
    "decode: both features and codes",
    post("/v1/decode", JSON.stringify({ features: [], codes: [] })),
    400,
    "missing_field",
  ],
  [
    "decode: index out of range",
    post("/v1/decode", JSON.stringify({ features: [{ indices: [32], values: [1] }] })),
    422,
    "index_out_of_range",
  ],
  [
    "decode: negative index",
    post("/v1/decode", JSON.stringify({ features: [{ indices: [-1], values: [1] }] })),
    422,
    "index_out_of_range",
  ],
  [
    "decode: fractional index",
    post("/v1/decode", JSON.stringify({ features: [{ indices: [1.5], values: [1] }] })),
    400,
    "wrong_type",
  ],
  [
    "decode: lengths differ",
    post("/v1/decode", JSON.stringify({ features: [{ indices: [1, 2], values: [1] }] })),
    422,
    "length_mismatch",
  ],
  [
    "decode: codes of the wrong width",
    post("/v1/decode", JSON.stringify({ codes: [[1, 2]] })),
    422,
    "wrong_width",
  ],
  [
    "reconstruct: empty",
    post("/v1/reconstruct", JSON.stringify({ inputs: [] })),
    422,
    "empty_input",
  ],
  [
    "Arrow: garbage bytes",
    post("/v1/encode", new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), ARROW),
    400,
    "malformed_arrow",
  ],
  [
    "Arrow: wrong column",
    post("/v1/encode", arrowMatrixResponse("x", new Float32Array(8), 8), ARROW),
    400,
    "missing_field",
  ],
  [
    "Arrow: wrong width",
    post("/v1/encode", arrowMatrixResponse("inputs", new Float32Array(6), 3), ARROW),
    422,
    "wrong_width",
  ],
  [
    "Arrow: NaN value",
    post(
      "/v1/encode",
      arrowMatrixResponse(
        "inputs",
        Float32Array.from({ length: 8 }, (_, i) => (i === 5 ? NaN : i)),
        8,
      ),
      ARROW,
    ),
    422,
    "non_finite",
  ],
  [
    "Arrow: too many rows",
    post("/v1/encode", arrowMatrixResponse("inputs", new Float32Array(40), 8), ARROW),
    413,
    "too_many_rows",
  ],
  // One flipped byte each: a child-field count, then a custom-metadata count. apache-arrow alone
  // allocated gigabytes for these; server/arrow_guard.ts refuses them.
  [
    "Arrow: corrupt children count",
    post("/v1/encode", mutate(174, 157), ARROW),
    400,
    "malformed_arrow",
  ],
  [
    "Arrow: corrupt metadata count",
    post("/v1/encode", mutate(40, 82, 44, 204), ARROW),
    400,
    "malformed_arrow",
  ],
  [
    "feature id not a number",
    (c) => c("/v1/features/abc", { headers: AUTH }),
    400,
    "bad_feature_id",
  ],
  ["feature id negative", (c) => c("/v1/features/-1", { headers: AUTH }), 400, "bad_feature_id"],
  ["feature id fractional", (c) => c("/v1/features/1.5", { headers: AUTH }), 400, "bad_feature_id"],
  ["feature id past d_sae", (c) => c("/v1/features/32", { headers: AUTH }), 404, "unknown_feature"],
  [
    "feature id huge",
    (c) => c("/v1/features/99999999999999999999", { headers: AUTH }),
    400,
    "bad_feature_id",
  ],
  ["unknown route", (c) => c("/v2/encode", { headers: AUTH }), 404, "not_found"],
  ["GET on a POST route", (c) => c("/v1/encode", { headers: AUTH }), 405, "method_not_allowed"],
  [
    "DELETE on a GET route",
    (c) => c("/v1/info", { method: "DELETE", headers: AUTH }),
    405,
    "method_not_allowed",
  ],
  [
    "no token",
    (c, f) =>
      post("/v1/encode", JSON.stringify({ inputs: [row(f, 1)] }), "application/json", {})(c),
    401,
    "unauthorized",
  ],
  [
    "wrong token",
    (c, f) =>
      post("/v1/encode", JSON.stringify({ inputs: [row(f, 1)] }), "application/json", {
        authorization: "Bearer tok-124",
      })(c),
    401,
    "unauthorized",
  ],
  [
    "token of another length",
    (c) => c("/v1/info", { headers: { authorization: "Bearer t" } }),
    401,
    "unauthorized",
  ],
];

async function expectError(r: Response, status: number, code: string, name: string): Promise<void> {
  const text = await r.text();
  assertEquals(r.status, status, `${name}: status (body ${text.slice(0, 200)})`);
  let body: { error?: { code?: unknown; message?: unknown } };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${name}: error body is not JSON: ${text.slice(0, 200)}`);
  }
  assertEquals(Object.keys(body), ["error"], `${name}: body shape`);
  assertEquals(body.error!.code, code, `${name}: error code`);
  assert(
    typeof body.error!.message === "string" && body.error!.message.length > 0,
    `${name}: a message`,
  );
}

async function stillServes(c: Client, f: Fixture, after: string): Promise<void> {
  const r = await postJson(c, "/v1/encode", { inputs: [row(f, 9)] }, AUTH);
  assertEquals(r.status, 200, `a good request after "${after}"`);
  assertEquals((await r.json()).features.length, 1);
}

async function runSuite(c: Client, f: Fixture): Promise<void> {
  for (const [name, send, status, code] of CASES) {
    await expectError(await send(c, f), status, code, name);
    await stillServes(c, f, name);
  }
}

test("bad input: every case through app.fetch gets its status and error body; the app keeps serving", async () => {
  const f = await makeFixture();
  try {
    const app = createApp(f.dict, LIMITS);
    await runSuite(viaApp(app), f);
    // A streamed body without Content-Length is cut off at the limit too.
    const stream = new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let i = 0; i < 10; i++) ctl.enqueue(new Uint8Array(1000).fill(32));
        ctl.close();
      },
    });
    const r = await app.fetch(
      new Request(
        "http://localhost/v1/encode",
        {
          method: "POST",
          headers: { "content-type": "application/json", ...AUTH },
          body: stream,
          duplex: "half",
        } as RequestInit,
      ),
    );
    await expectError(r, 413, "payload_too_large", "streamed oversized body");
  } finally {
    await f.cleanup();
  }
});

test("bad input: the same suite over a real socket", async () => {
  const f = await makeFixture();
  const s = startServer(createApp(f.dict, LIMITS).fetch, {
    port: 0,
    hostname: "127.0.0.1",
    maxBodyBytes: LIMITS.maxBodyBytes,
  });
  try {
    await runSuite(viaSocket(s.url), f);
  } finally {
    await s.stop();
    await f.cleanup();
  }
});

/** `body` as JSON in 20-character pieces, each after `pieceMs`: an upload taking ≥ pieces × pieceMs. */
function slowBody(body: unknown, pieceMs: number): ReadableStream<Uint8Array> {
  const pieces = JSON.stringify(body).match(/.{1,20}/g)!;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      await new Promise((r) => setTimeout(r, pieceMs));
      const p = pieces.shift();
      if (p === undefined) ctl.close();
      else ctl.enqueue(new TextEncoder().encode(p));
    },
  });
}

/** A POST through the app whose body is `stream` (no Content-Length, as a chunked upload). */
const postStream = (
  app: { fetch: (r: Request) => Response | Promise<Response> },
  stream: ReadableStream<Uint8Array>,
) =>
  app.fetch(
    new Request(
      "http://localhost/v1/encode",
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: stream,
        duplex: "half",
      } as RequestInit,
    ),
  );

test("bad input: a request over the timeout answers 503 and the next one is served", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict, { requestTimeoutMs: 30, batchWaitMs: 200 }));
    await expectError(
      await postJson(c, "/v1/encode", { inputs: [row(f, 1)] }),
      503,
      "timeout",
      "slow request",
    );
    // Upload and backend work share one budget: a ≥ 200 ms upload plus a 500 ms batching wait
    // passes 600 ms, though each alone fits.
    const shared = createApp(f.dict, { requestTimeoutMs: 600, batchWaitMs: 500 });
    const pieces = Math.ceil(JSON.stringify({ inputs: [row(f, 1)] }).length / 20);
    await expectError(
      await postStream(shared, slowBody({ inputs: [row(f, 1)] }, Math.ceil(200 / pieces))),
      503,
      "timeout",
      "slow upload, then slow work",
    );
    await new Promise((r) => setTimeout(r, 250));
    const ok = await (await c("/healthz")).json();
    assertEquals(ok, { status: "ok" });
  } finally {
    await f.cleanup();
  }
});

test("bad input: a body that stalls mid-upload answers 408 within the timeout and its stream is cancelled", async () => {
  const f = await makeFixture();
  try {
    const app = createApp(f.dict, { requestTimeoutMs: 300 });
    let cancelled = false;
    const stalled = new ReadableStream<Uint8Array>({
      start: (ctl) => ctl.enqueue(new TextEncoder().encode(`{"inputs": [[`)),
      cancel: () => void (cancelled = true),
    });
    const t0 = Date.now();
    await expectError(await postStream(app, stalled), 408, "body_timeout", "stalled body");
    const took = Date.now() - t0;
    assert(took >= 290 && took < 5000, `answered at the timeout, after ${took} ms`);
    assert(cancelled, "the stalled stream is cancelled, not left pending");

    const ok = await postStream(app, slowBody({ inputs: [row(f, 1)] }, 5));
    assertEquals(ok.status, 200, "a slow upload that finishes within the timeout is served");
    assertEquals((await ok.json()).features.length, 1);
    await stillServes(viaApp(app), f, "a stalled body");
  } finally {
    await f.cleanup();
  }
});

test("bad input: over a socket, a client that stops sending its body gets 408 and the server keeps serving", async () => {
  const f = await makeFixture();
  const s = startServer(createApp(f.dict, { requestTimeoutMs: 200 }).fetch, {
    port: 0,
    hostname: "127.0.0.1",
    maxBodyBytes: 1 << 20,
  });
  const sock = connect(s.port, "127.0.0.1");
  try {
    // Headers promise 1000 bytes; 13 come, then nothing.
    sock.write(
      `POST /v1/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs": [[`,
    );
    const reply = await new Promise<string>((resolve, reject) => {
      let got = "";
      const guard = setTimeout(
        () => reject(new Error(`no answer within 10 s; got ${JSON.stringify(got)}`)),
        10_000,
      );
      sock.on("data", (b: Uint8Array) => {
        got += new TextDecoder().decode(b);
        if (got.includes("body_timeout") || /^HTTP\/1\.1 (?!408)/.test(got)) {
          clearTimeout(guard), resolve(got);
        }
      });
      sock.on("error", reject);
    });
    assert(reply.startsWith("HTTP/1.1 408"), `status line: ${reply.slice(0, 200)}`);
    await stillServes(viaSocket(s.url), f, "a stalled upload over a socket");
  } finally {
    sock.destroy();
    await s.stop();
    await f.cleanup();
  }
});

const OK = new Set([200, 400, 413, 415, 422]);

async function checkAnswer(r: Response, what: string): Promise<number> {
  const text = await r.text();
  assert(OK.has(r.status), `${what}: status ${r.status} ${text.slice(0, 300)}`);
  if (r.status !== 200) {
    const e = JSON.parse(text).error;
    assert(
      typeof e.code === "string" && typeof e.message === "string",
      `${what}: error body ${text.slice(0, 200)}`,
    );
  }
  return r.status;
}

test("bad input: fuzzed JSON, text and Arrow bodies never crash the server or give a 500", async () => {
  const f = await makeFixture();
  try {
    const c = viaApp(createApp(f.dict, { maxBodyBytes: 1 << 16, maxRows: 4 }));
    const num = fc.oneof(
      fc.double(),
      fc.integer(),
      fc.constantFrom(1e39, -1e308, 0, "NaN", "Infinity", null, true),
    );
    const matrix = fc.oneof(
      fc.array(fc.array(num, { maxLength: 10 }), { maxLength: 6 }),
      fc.array(
        fc.array(fc.double({ noNaN: true, min: -1e6, max: 1e6 }), { minLength: 8, maxLength: 8 }),
        { minLength: 1, maxLength: 5 },
      ),
    );
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record({
        inputs: fc.oneof(matrix, fc.jsonValue()),
        top_k: fc.option(fc.oneof(fc.integer({ min: -2, max: 40 }), fc.jsonValue())),
        dense: fc.option(fc.jsonValue()),
      }, { requiredKeys: ["inputs"] }),
      fc.record({
        features: fc.array(
          fc.record({
            indices: fc.array(fc.integer({ min: -3, max: 40 }), { maxLength: 5 }),
            values: fc.array(num, { maxLength: 5 }),
          }),
          { maxLength: 5 },
        ),
      }),
      fc.record({ codes: matrix }),
      // Mostly valid requests, so the fuzzer also walks the success path.
      fc.record({
        inputs: fc.array(
          fc.array(fc.double({ noNaN: true, min: -1e3, max: 1e3 }), { minLength: 8, maxLength: 8 }),
          { minLength: 1, maxLength: 4 },
        ),
        top_k: fc.integer({ min: 1, max: 40 }),
        dense: fc.boolean(),
      }, { requiredKeys: ["inputs"] }),
    );
    const paths = fc.constantFrom("/v1/encode", "/v1/decode", "/v1/reconstruct");
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(paths, body, async (p, b) => {
        seen.add(
          await checkAnswer(await postJson(c, p, b), `${p} ${JSON.stringify(b).slice(0, 200)}`),
        );
      }),
      { numRuns: runs(300) },
    );
    await fc.assert(
      fc.asyncProperty(paths, fc.string({ maxLength: 200 }), async (p, s) => {
        await checkAnswer(await postJson(c, p, s), `${p} text ${JSON.stringify(s)}`);
      }),
      { numRuns: runs(150) },
    );
    // Valid Arrow streams with bytes flipped, truncated or extended.
    const valid = arrowMatrixResponse(
      "inputs",
      Float32Array.from({ length: 16 }, (_, i) => i / 7),
      8,
    );
    const mutated = fc.tuple(
      fc.array(fc.tuple(fc.nat(valid.length - 1), fc.nat(255)), { maxLength: 6 }),
      fc.nat(valid.length),
      fc.uint8Array({ maxLength: 16 }),
    ).map(([flips, cut, tail]) => {
      const b = valid.slice(0, cut);
      for (const [i, v] of flips) if (i < b.length) b[i] = v;
      const out = new Uint8Array(b.length + tail.length);
      out.set(b);
      out.set(tail, b.length);
      return out;
    });
    await fc.assert(
      fc.asyncProperty(paths, mutated, async (p, bytes) => {
        await checkAnswer(
          await c(p, { method: "POST", headers: { "content-type": ARROW }, body: bytes }),
          `${p} arrow ${bytes.length} bytes`,
        );
      }),
      { numRuns: runs(300) },
    );
    assert(
      seen.has(200) && seen.has(400) && seen.has(422),
      `fuzzing reached good and bad answers: ${[...seen]}`,
    );
    await stillServes(c, f, "fuzzing");
  } finally {
    await f.cleanup();
  }
});
