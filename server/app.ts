/**
 * The HTTP API as a Hono app built by a pure function of a loaded dictionary and options; the
 * same app runs under Deno.serve and Bun.serve (serve.ts) and answers `app.fetch` in tests.
 * Errors are always `{"error": {"code", "message"}}` with the status validate.ts assigns.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { cors } from "hono/cors";
import { memoryStats } from "../tensor/tensor.ts";
import type { Assets } from "./assets.ts";
import { checkBearer } from "./auth.ts";
import { createBatcher } from "./batcher.ts";
import {
  arrowMatrix,
  arrowMatrixResponse,
  arrowSparseResponse,
  arrowSparseRows,
} from "./arrow_body.ts";
import {
  decodeRows,
  denseCodes,
  densityHistogram,
  encodeRows,
  featureDetail,
  reconstructionTarget,
  rowMetrics,
  type ServedDictionary,
  sparseFromDense,
  type SparseRow,
  sparsityInfo,
} from "./dictionary.ts";
import { openApiDocument } from "./openapi.ts";
import {
  ARROW_TYPE,
  bodyKind,
  HttpError,
  parseDecode,
  parseEncode,
  parseFeatureId,
  parseJsonObject,
  parseReconstruct,
  readBody,
} from "./validate.ts";
import type { Limits } from "./validate.ts";

export interface AppOptions {
  /** Largest body in bytes (default 16 MiB). */
  maxBodyBytes?: number;
  /** Most rows per request (default 1024). */
  maxRows?: number;
  /**
   * Time budget per request (default 30 s), body upload included: a body still arriving when it
   * runs out answers 408 "body_timeout", backend work past it 503 "timeout".
   */
  requestTimeoutMs?: number;
  /** Most values in a dense-codes answer (rows × d_sae; default 4M): JSON for more runs to hundreds of MB. */
  maxDenseValues?: number;
  /** Micro-batching: longest wait for other requests (default 2 ms) and most rows per backend call (default 256). */
  batchWaitMs?: number;
  maxBatchRows?: number;
  /** Bearer token required on /v1/* and /openapi.json; null or absent: no auth. */
  token?: string | null;
  /** Origins allowed by CORS ("*" for any); absent: no CORS headers at all. */
  corsOrigins?: string[];
  /** Dashboard files (assets.ts); absent: no dashboard routes. */
  assets?: Assets;
}

export const DEFAULTS = {
  maxBodyBytes: 16 << 20,
  maxRows: 1024,
  maxDenseValues: 1 << 22,
  requestTimeoutMs: 30_000,
  batchWaitMs: 2,
  maxBatchRows: 256,
};

const ROUTES: Record<string, string[]> = {
  "/healthz": ["GET"],
  "/openapi.json": ["GET"],
  "/v1/info": ["GET"],
  "/v1/stats": ["GET"],
  "/v1/density": ["GET"],
  "/v1/samples": ["GET"],
  "/v1/encode": ["POST"],
  "/v1/decode": ["POST"],
  "/v1/reconstruct": ["POST"],
  "/v1/features/:id": ["GET"],
};

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** Arrow out when asked for (Accept), else the same kind as came in. */
function wantsArrow(req: Request, cameAs: "json" | "arrow"): boolean {
  const accept = (req.headers.get("accept") ?? "").toLowerCase();
  if (accept.includes(ARROW_TYPE)) return true;
  if (accept.includes("application/json")) return false;
  return cameAs === "arrow";
}

const arrowResponse = (bytes: Uint8Array) =>
  new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": ARROW_TYPE } });

/** `p`, or 503 once `budgetMs` has passed since `since` (the body read spent part of it). */
function withTimeout<T>(p: Promise<T>, budgetMs: number, since: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new HttpError(503, "timeout", `request took longer than ${budgetMs} ms`)),
      budgetMs - (Date.now() - since),
    );
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const rowsOf = (data: Float32Array, n: number) => {
  const w = data.length / n;
  return Array.from({ length: n }, (_, i) => Array.from(data.subarray(i * w, (i + 1) * w)));
};

/** Build the app. Nothing here reads files or the environment: all of that is in the arguments. */
export function createApp(dict: ServedDictionary, options: AppOptions = {}): Hono {
  const o = { ...DEFAULTS, ...options };
  const limits: Limits = { maxBodyBytes: o.maxBodyBytes, maxRows: o.maxRows };
  const { d_in, d_sae, d_out } = dict;
  const started = Date.now();

  // One batcher per backend operation; reconstruct is an encode then a decode through both.
  const batchOpts = { maxWaitMs: o.batchWaitMs, maxRows: o.maxBatchRows };
  const encoder = createBatcher<{ n: number; x: Float32Array }, SparseRow[]>(async (items) => {
    const n = items.reduce((s, i) => s + i.n, 0);
    const x = new Float32Array(n * d_in);
    let at = 0;
    for (const it of items) {
      x.set(it.x, at * d_in);
      at += it.n;
    }
    const rows = await encodeRows(dict, x, n);
    let r = 0;
    return items.map((it) => rows.slice(r, r += it.n));
  }, { ...batchOpts, merge: dict.rowIndependent });
  const decoder = createBatcher<SparseRow[], Float32Array>(async (items) => {
    const out = await decodeRows(dict, items.flat());
    let r = 0;
    return items.map((it) => out.slice(r * d_out, (r += it.length) * d_out));
  }, batchOpts);

  const app = new Hono();
  if (o.corsOrigins?.length) {
    const list = o.corsOrigins;
    app.use(
      "*",
      cors({
        origin: list.includes("*") ? "*" : list,
        allowHeaders: ["Authorization", "Content-Type", "Accept"],
        allowMethods: ["GET", "POST", "OPTIONS"],
      }),
    );
  }
  if (o.token) {
    const token = o.token;
    const guard = async (c: Context, next: () => Promise<void>) => {
      if (c.req.method !== "OPTIONS") await checkBearer(c.req.header("authorization"), token);
      await next();
    };
    app.use("/v1/*", guard);
    app.use("/openapi.json", guard);
  }

  /** The body, and when the request's time budget started (the backend work gets what is left). */
  async function body(
    c: Context,
  ): Promise<{ kind: "json" | "arrow"; bytes: Uint8Array; since: number }> {
    const since = Date.now();
    const kind = bodyKind(c.req.raw);
    return {
      kind,
      bytes: await readBody(c.req.raw, limits.maxBodyBytes, o.requestTimeoutMs),
      since,
    };
  }
  const timed = <T>(p: Promise<T>, since = Date.now()) => withTimeout(p, o.requestTimeoutMs, since);

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.get("/v1/info", (c) => {
    const { cfg, threshold, params } = dict.saved;
    const ev = dict.evaluation ?? {};
    const metrics = Object.fromEntries(Object.entries(ev).filter(([, v]) => typeof v === "number"));
    return c.json({
      architecture: cfg.arch,
      d_in,
      d_sae,
      d_out,
      ...sparsityInfo(cfg, threshold),
      dtype: params.W_enc.dtype,
      backend: dict.backend,
      apply_b_dec_to_input: cfg.apply_b_dec_to_input,
      metrics: Object.keys(metrics).length ? metrics : null,
      files: {
        feature_density: dict.density !== null,
        top_examples: dict.topExamples !== null,
        sample_inputs: dict.samples?.rows ?? 0,
      },
      limits: {
        max_body_bytes: limits.maxBodyBytes,
        max_rows: limits.maxRows,
        max_dense_values: o.maxDenseValues,
        request_timeout_ms: o.requestTimeoutMs,
      },
      auth: Boolean(o.token),
    });
  });

  app.get(
    "/v1/stats",
    (c) =>
      c.json({
        uptime_s: (Date.now() - started) / 1000,
        encode: encoder.stats(),
        decode: decoder.stats(),
        tensors: memoryStats(),
      }),
  );

  app.get("/v1/density", (c) => {
    const h = densityHistogram(dict);
    if (!h) {
      throw new HttpError(
        404,
        "no_density",
        "this folder has neither feature_density.npy nor a density histogram in eval.json",
      );
    }
    return c.json({ ...h, densities: dict.density ? Array.from(dict.density) : null });
  });

  app.get("/v1/samples", (c) => {
    const s = dict.samples;
    if (!s) throw new HttpError(404, "no_samples", "this folder has no sample_inputs.npy");
    const n = Math.min(s.rows, 64);
    return c.json({ rows: rowsOf(s.data.subarray(0, n * d_in), n), total: s.rows });
  });

  app.get(
    "/v1/features/:id",
    async (c) => c.json(await timed(featureDetail(dict, parseFeatureId(c.req.param("id"), d_sae)))),
  );

  app.post("/v1/encode", async (c) => {
    const { kind, bytes, since } = await body(c);
    const req = kind === "json"
      ? parseEncode(parseJsonObject(bytes), d_in, limits)
      : (({ n, data }) => ({
        n,
        x: data,
        dense: c.req.query("dense") === "true",
        topK: queryTopK(c.req.query("top_k")),
      }))(arrowMatrix(bytes, "inputs", d_in, limits));
    if (req.dense && req.n * d_sae > o.maxDenseValues) {
      throw new HttpError(
        413,
        "dense_too_large",
        `dense codes for ${req.n} rows would be ${
          req.n * d_sae
        } values; the limit is ${o.maxDenseValues} (send fewer rows or use the sparse answer)`,
      );
    }
    let rows = await timed(encoder.submit({ n: req.n, x: req.x }, req.n), since);
    if (req.topK !== undefined) {
      rows = rows.map((r) => ({
        indices: r.indices.slice(0, req.topK),
        values: r.values.slice(0, req.topK),
      }));
    }
    if (wantsArrow(c.req.raw, kind)) {
      return arrowResponse(
        req.dense
          ? arrowMatrixResponse("codes", denseCodes(rows, d_sae), d_sae)
          : arrowSparseResponse(rows),
      );
    }
    if (req.dense) return c.json({ codes: rowsOf(denseCodes(rows, d_sae), req.n) });
    return c.json({ features: rows });
  });

  app.post("/v1/decode", async (c) => {
    const { kind, bytes, since } = await body(c);
    let rows: SparseRow[];
    if (kind === "json") {
      const d = parseDecode(parseJsonObject(bytes), d_sae, limits);
      rows = d.rows ?? sparseFromDense(d.codes!.data, d.codes!.n, d_sae);
    } else {
      const mode = c.req.query("codes") === "dense" ? "dense" : "sparse";
      if (mode === "dense") {
        const m = arrowMatrix(bytes, "codes", d_sae, limits);
        rows = sparseFromDense(m.data, m.n, d_sae);
      } else rows = arrowSparseRows(bytes, d_sae, limits);
    }
    const out = await timed(decoder.submit(rows, rows.length), since);
    if (wantsArrow(c.req.raw, kind)) {
      return arrowResponse(arrowMatrixResponse("outputs", out, d_out));
    }
    return c.json({ outputs: rowsOf(out, rows.length) });
  });

  app.post("/v1/reconstruct", async (c) => {
    const { kind, bytes, since } = await body(c);
    const { n, x } = kind === "json"
      ? parseReconstruct(parseJsonObject(bytes), d_in, limits)
      : (({ n, data }) => ({ n, x: data }))(arrowMatrix(bytes, "inputs", d_in, limits));
    const out = await timed(
      encoder.submit({ n, x }, n).then((rows) =>
        decoder.submit(rows, n).then((xhat) => ({ rows, xhat }))
      ),
      since,
    );
    // A transcoder's output lives in another space: there is nothing to compare it with here.
    const metrics = d_out === d_in
      ? rowMetrics(reconstructionTarget(dict, x, n), out.xhat, n, out.rows)
      : null;
    if (wantsArrow(c.req.raw, kind)) {
      return arrowResponse(
        arrowMatrixResponse("outputs", out.xhat, d_out, { metrics: JSON.stringify(metrics) }),
      );
    }
    return c.json({ outputs: rowsOf(out.xhat, n), metrics });
  });

  app.get("/openapi.json", (c) => c.json(openApiDocument(dict, limits)));

  if (o.assets) {
    const assets = o.assets;
    for (const [path, a] of Object.entries(assets)) {
      app.get(
        path,
        () =>
          new Response(a.body as Uint8Array<ArrayBuffer>, {
            headers: { "content-type": a.type, "cache-control": "no-cache" },
          }),
      );
    }
  }

  // Known paths with another method: 405 and the methods that work.
  for (const [path, methods] of Object.entries(ROUTES)) {
    app.all(path, (c) => {
      if (c.req.method === "OPTIONS" && o.corsOrigins?.length) return c.body(null, 204);
      c.header("Allow", methods.join(", "));
      return c.json(
        errorBody(
          "method_not_allowed",
          `${c.req.method} ${c.req.path}: use ${methods.join(" or ")}`,
        ),
        405,
      );
    });
  }

  app.notFound((c) =>
    c.json(errorBody("not_found", `no route ${c.req.method} ${c.req.path.slice(0, 200)}`), 404)
  );
  app.onError((err, c) => {
    if (err instanceof HttpError) {
      return c.json(errorBody(err.code, err.message), err.status as 400);
    }
    console.error(`sae serve: ${c.req.method} ${c.req.path}: ${(err as Error).stack ?? err}`);
    return c.json(errorBody("internal", "internal server error"), 500);
  });
  return app;
}

function queryTopK(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v) || Number(v) < 1) {
    throw new HttpError(
      400,
      "wrong_type",
      `query top_k must be an integer >= 1, got ${JSON.stringify(v.slice(0, 40))}`,
    );
  }
  return Number(v);
}
