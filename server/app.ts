/**
 * The HTTP API as a Hono app built by a pure function of a loaded dictionary and options; the
 * same app runs under Deno.serve and Bun.serve (serve.ts) and answers `app.fetch` in tests.
 * The routes come from one table (routes.ts); around them: CORS, the bearer token, the dashboard
 * files, 405 for a known path with another method, and errors, always `{"error": {"code",
 * "message"}}` with the status validate.ts assigns.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { cors } from "hono/cors";
import type { Assets } from "./assets.ts";
import type { Prompter } from "./prompt.ts";
import { checkBearer } from "./auth.ts";
import { createBatcher } from "./batcher.ts";
import { decodeRows, encodeRows, type ServedDictionary, type SparseRow } from "./dictionary.ts";
import { openApiDocument } from "./openapi.ts";
import { type Route, ROUTES, type Served } from "./routes.ts";
import { HttpError } from "./validate.ts";
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
  /** The model POST /v1/prompt runs (prompt.ts, sae serve --model); absent: 404 no_model. */
  prompter?: Prompter;
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

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** The batchers the encode, decode and reconstruct routes share. */
function batchersFor(
  dict: ServedDictionary,
  o: typeof DEFAULTS,
): Pick<Served, "encoder" | "decoder"> {
  const { inWidth: d_in, outWidth: d_out } = dict;
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
  return { encoder, decoder };
}

/** CORS headers for these origins ("*": any). */
function allowOrigins(app: Hono, list: string[]): void {
  app.use(
    "*",
    cors({
      origin: list.includes("*") ? "*" : list,
      allowHeaders: ["Authorization", "Content-Type", "Accept"],
      allowMethods: ["GET", "POST", "OPTIONS"],
    }),
  );
}

/** The bearer token on /v1/* and /openapi.json (CORS preflights pass: they carry no token). */
function requireToken(app: Hono, token: string): void {
  const guard = async (c: Context, next: () => Promise<void>) => {
    if (c.req.method !== "OPTIONS") await checkBearer(c.req.header("authorization"), token);
    await next();
  };
  app.use("/v1/*", guard);
  app.use("/openapi.json", guard);
}

function serveAssets(app: Hono, assets: Assets): void {
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

/** Known paths with another method: 405 and the methods that work (a CORS preflight: 204). */
function answerOtherMethods(app: Hono, routes: readonly Route[], cors: boolean): void {
  const allowed = new Map<string, string[]>();
  for (const r of routes) allowed.set(r.path, [...(allowed.get(r.path) ?? []), r.method]);
  for (const [path, methods] of allowed) {
    app.all(path, (c) => {
      if (c.req.method === "OPTIONS" && cors) return c.body(null, 204);
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
}

/** Errors as `{"error": {"code", "message"}}`: 404 for unknown routes, HttpError's status, else 500. */
function answerErrors(app: Hono): void {
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
}

/** Build the app. Nothing here reads files or the environment: all of that is in the arguments. */
export function createApp(dict: ServedDictionary, options: AppOptions = {}): Hono {
  const o = { ...DEFAULTS, ...options };
  const limits: Limits = { maxBodyBytes: o.maxBodyBytes, maxRows: o.maxRows };
  const served: Served = {
    dict,
    limits,
    maxDenseValues: o.maxDenseValues,
    requestTimeoutMs: o.requestTimeoutMs,
    auth: Boolean(o.token),
    prompter: o.prompter ?? null,
    started: Date.now(),
    ...batchersFor(dict, o),
    document: () => openApiDocument(dict, limits),
  };
  const app = new Hono();
  if (o.corsOrigins?.length) allowOrigins(app, o.corsOrigins);
  if (o.token) requireToken(app, o.token);
  for (const r of ROUTES) app.on(r.method, r.path, (c) => r.handle(c, served));
  if (o.assets) serveAssets(app, o.assets);
  answerOtherMethods(app, ROUTES, Boolean(o.corsOrigins?.length));
  answerErrors(app);
  return app;
}
