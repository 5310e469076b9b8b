/**
 * The API's routes, each declared once: method, path, its OpenAPI operation and its handler.
 * app.ts registers the handlers and answers 405 on a known path from this table; openapi.ts
 * writes the document's paths from it, so a route cannot be served without being described.
 */
import type { Context } from "hono";
import { memoryStats } from "../tensor/tensor.ts";
import type { Batcher } from "./batcher.ts";
import {
  arrowMatrix,
  arrowMatrixResponse,
  arrowSparseResponse,
  arrowSparseRows,
} from "./arrow_body.ts";
import {
  denseCodes,
  densityHistogram,
  featureDetail,
  reconstructionTarget,
  rowMetrics,
  type ServedDictionary,
  sparseFromDense,
  type SparseRow,
  sparsityInfo,
} from "./dictionary.ts";
import type { OpenApiTerms } from "./openapi.ts";
import { crosscoderInfo, featureTags, relativeNormHistogram } from "./crosscoder_view.ts";
import { featuresOnToken, featureStatsDetail, featureViewInfo, tokenText } from "./feature_view.ts";
import { type Prompter, promptIds, runPrompt } from "./prompt.ts";
import {
  ARROW_TYPE,
  bodyKind,
  HttpError,
  JSON_TYPE,
  parseDecode,
  parseEncode,
  parseFeatureId,
  parseJsonObject,
  parsePrompt,
  parseReconstruct,
  parseRelativeNormQuery,
  parseTokenSearch,
  readBody,
} from "./validate.ts";
import type { Limits } from "./validate.ts";

/** What the handlers share: the dictionary, the app's settings and its batchers. */
export interface Served {
  dict: ServedDictionary;
  limits: Limits;
  maxDenseValues: number;
  requestTimeoutMs: number;
  /** Whether a bearer token is required (reported by /v1/info). */
  auth: boolean;
  /** When the app was built (Date.now()), for the uptime. */
  started: number;
  /** One batcher per backend operation; reconstruct is an encode then a decode through both. */
  encoder: Batcher<{ n: number; x: Float32Array }, SparseRow[]>;
  decoder: Batcher<SparseRow[], Float32Array>;
  /** The model the prompt view runs (sae serve --model); null without one. */
  prompter: Prompter | null;
  /** This app's OpenAPI document (openapi.ts reads this table, so the table cannot import it). */
  document(): Record<string, unknown>;
}

export interface Route {
  method: "GET" | "POST";
  /** Hono's pattern: parameters as `:name` (the document writes `{name}`). */
  path: string;
  /** The OpenAPI operation, in terms of this dictionary's widths and limits. */
  doc(t: OpenApiTerms): Record<string, unknown>;
  handle(c: Context, s: Served): Response | Promise<Response>;
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

/** Backend work within what is left of the request's time budget. */
const timed = <T>(s: Served, p: Promise<T>, since = Date.now()) =>
  withTimeout(p, s.requestTimeoutMs, since);

/** The body, and when the request's time budget started (the backend work gets what is left). */
async function body(
  c: Context,
  s: Served,
): Promise<{ kind: "json" | "arrow"; bytes: Uint8Array; since: number }> {
  const since = Date.now();
  const kind = bodyKind(c.req.raw);
  return {
    kind,
    bytes: await readBody(c.req.raw, s.limits.maxBodyBytes, s.requestTimeoutMs),
    since,
  };
}

const rowsOf = (data: Float32Array, n: number) => {
  const w = data.length / n;
  return Array.from({ length: n }, (_, i) => Array.from(data.subarray(i * w, (i + 1) * w)));
};

/** A crosscoder's inputs and outputs as JSON: each row [n_inputs][d] (flat rows otherwise). */
const rowsIn = (data: Float32Array, n: number, inputs: number) =>
  inputs === 1 ? rowsOf(data, n) : rowsOf(data, n).map((r) => rowsOf(Float32Array.from(r), inputs));

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

// ---- handlers -----------------------------------------------------------------------------------

function info(c: Context, s: Served): Response {
  const { dict, limits } = s;
  const { d_in, d_sae, d_out } = dict;
  const { cfg, threshold, params } = dict.saved;
  const ev = dict.evaluation ?? {};
  const metrics = Object.fromEntries(Object.entries(ev).filter(([, v]) => typeof v === "number"));
  return c.json({
    architecture: cfg.arch,
    d_in,
    d_sae,
    d_out,
    crosscoder: crosscoderInfo(dict.cross),
    ...sparsityInfo(cfg, threshold),
    dtype: params.W_enc.dtype,
    backend: dict.backend,
    apply_b_dec_to_input: cfg.apply_b_dec_to_input,
    metrics: Object.keys(metrics).length ? metrics : null,
    files: {
      feature_density: dict.density !== null,
      top_examples: dict.topExamples !== null,
      sample_inputs: dict.samples?.rows ?? 0,
      features: dict.features !== null,
    },
    features: featureViewInfo(dict.features),
    prompt: s.prompter
      ? { model: s.prompter.model, kind: s.prompter.source.kind, max_tokens: s.prompter.maxTokens }
      : null,
    limits: {
      max_body_bytes: limits.maxBodyBytes,
      max_rows: limits.maxRows,
      max_dense_values: s.maxDenseValues,
      request_timeout_ms: s.requestTimeoutMs,
    },
    auth: s.auth,
  });
}

const stats = (c: Context, s: Served) =>
  c.json({
    uptime_s: (Date.now() - s.started) / 1000,
    encode: s.encoder.stats(),
    decode: s.decoder.stats(),
    tensors: memoryStats(),
  });

function density(c: Context, s: Served): Response {
  const h = densityHistogram(s.dict);
  if (!h) {
    throw new HttpError(
      404,
      "no_density",
      "this folder has neither feature_density.npy nor a density histogram in eval.json",
    );
  }
  return c.json({ ...h, densities: s.dict.density ? Array.from(s.dict.density) : null });
}

function samples(c: Context, s: Served): Response {
  const smp = s.dict.samples;
  if (!smp) throw new HttpError(404, "no_samples", "this folder has no sample_inputs.npy");
  const n = Math.min(smp.rows, 64);
  return c.json({
    rows: rowsIn(smp.data.subarray(0, n * s.dict.inWidth), n, s.dict.inputs),
    total: smp.rows,
  });
}

function relativeNorms(c: Context, s: Served): Response {
  const v = s.dict.cross;
  if (!v || !v.relative) {
    throw new HttpError(
      404,
      "no_relative_norm",
      v
        ? `the relative decoder norm compares two inputs; this crosscoder has ${v.labels.length}`
        : `a ${s.dict.saved.cfg.arch} dictionary has one input: relative decoder norms are a crosscoder's`,
    );
  }
  const { bins } = parseRelativeNormQuery(new URL(c.req.url).searchParams);
  return c.json({ inputs: v.labels, ...relativeNormHistogram(v, bins) });
}

async function feature(c: Context, s: Served): Promise<Response> {
  const id = parseFeatureId(c.req.param("id")!, s.dict.d_sae);
  const detail = await timed(s, featureDetail(s.dict, id));
  const v = s.dict.features;
  return c.json({ ...detail, stats: v ? featureStatsDetail(v, id) : null });
}

/** What the search needs: the statistics, else 404 saying how to make them. */
function needFeatures(s: Served) {
  const v = s.dict.features;
  if (!v) {
    throw new HttpError(
      404,
      "no_features",
      `${s.dict.dir}/features does not exist: run \`sae features ${s.dict.dir} --model M --data TEXT\` to collect the statistics the search reads`,
    );
  }
  return v;
}

function search(c: Context, s: Served): Response {
  const v = needFeatures(s);
  const q = parseTokenSearch(new URL(c.req.url).searchParams, v.tokenizer?.vocabSize ?? null);
  let ids: number[];
  if (q.token !== undefined) {
    if (!v.tokenizer) {
      throw new HttpError(
        422,
        "no_tokenizer",
        `no tokenizer to read ${
          JSON.stringify(q.token.slice(0, 40))
        } with: start the server with --model M, or search by ?token_id=N`,
      );
    }
    ids = Array.from(v.tokenizer.encode(q.token));
    if (ids.length === 0) throw new HttpError(422, "no_tokens", "token gives no token ids");
  } else ids = [q.tokenId!];
  return c.json({
    query: q.token ?? null,
    tokens: ids.map((id) => ({
      id,
      text: tokenText(v, id),
      features: featuresOnToken(v, id, q.limit),
    })),
  });
}

async function encode(c: Context, s: Served): Promise<Response> {
  const { d_in, d_sae, inWidth, inputs } = s.dict;
  const { kind, bytes, since } = await body(c, s);
  const req = kind === "json"
    ? parseEncode(parseJsonObject(bytes), d_in, s.limits, inputs)
    : (({ n, data }) => ({
      n,
      x: data,
      dense: c.req.query("dense") === "true",
      topK: queryTopK(c.req.query("top_k")),
    }))(arrowMatrix(bytes, "inputs", inWidth, s.limits));
  if (req.dense && req.n * d_sae > s.maxDenseValues) {
    throw new HttpError(
      413,
      "dense_too_large",
      `dense codes for ${req.n} rows would be ${
        req.n * d_sae
      } values; the limit is ${s.maxDenseValues} (send fewer rows or use the sparse answer)`,
    );
  }
  let rows = await timed(s, s.encoder.submit({ n: req.n, x: req.x }, req.n), since);
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
}

async function decode(c: Context, s: Served): Promise<Response> {
  const { d_sae, outWidth, inputs } = s.dict;
  const { kind, bytes, since } = await body(c, s);
  let rows: SparseRow[];
  if (kind === "json") {
    const d = parseDecode(parseJsonObject(bytes), d_sae, s.limits);
    rows = d.rows ?? sparseFromDense(d.codes!.data, d.codes!.n, d_sae);
  } else {
    const mode = c.req.query("codes") === "dense" ? "dense" : "sparse";
    if (mode === "dense") {
      const m = arrowMatrix(bytes, "codes", d_sae, s.limits);
      rows = sparseFromDense(m.data, m.n, d_sae);
    } else rows = arrowSparseRows(bytes, d_sae, s.limits);
  }
  const out = await timed(s, s.decoder.submit(rows, rows.length), since);
  if (wantsArrow(c.req.raw, kind)) {
    return arrowResponse(arrowMatrixResponse("outputs", out, outWidth));
  }
  return c.json({ outputs: rowsIn(out, rows.length, inputs) });
}

async function reconstruct(c: Context, s: Served): Promise<Response> {
  const { d_in, d_out, inWidth, outWidth, inputs } = s.dict;
  const { kind, bytes, since } = await body(c, s);
  const { n, x } = kind === "json"
    ? parseReconstruct(parseJsonObject(bytes), d_in, s.limits, inputs)
    : (({ n, data }) => ({ n, x: data }))(arrowMatrix(bytes, "inputs", inWidth, s.limits));
  const out = await timed(
    s,
    s.encoder.submit({ n, x }, n).then((rows) =>
      s.decoder.submit(rows, n).then((xhat) => ({ rows, xhat }))
    ),
    since,
  );
  // A transcoder's output lives in another space: there is nothing to compare it with here.
  const metrics = d_out === d_in
    ? rowMetrics(reconstructionTarget(s.dict, x, n), out.xhat, n, out.rows)
    : null;
  if (wantsArrow(c.req.raw, kind)) {
    return arrowResponse(
      arrowMatrixResponse("outputs", out.xhat, outWidth, { metrics: JSON.stringify(metrics) }),
    );
  }
  return c.json({ outputs: rowsIn(out.xhat, n, inputs), metrics });
}

async function prompt(c: Context, s: Served): Promise<Response> {
  const { bytes, since } = await body(c, s);
  if (bodyKind(c.req.raw) !== "json") {
    throw new HttpError(415, "unsupported_media_type", "POST /v1/prompt takes JSON");
  }
  const req = parsePrompt(parseJsonObject(bytes));
  const p = s.prompter;
  if (!p) {
    throw new HttpError(
      404,
      "no_model",
      `no model to run the prompt through: start the server with sae serve ${s.dict.dir} --model M`,
    );
  }
  const ids = promptIds(p, req.text);
  if (ids.length > p.maxTokens) {
    throw new HttpError(
      413,
      "text_too_long",
      `the text is ${ids.length} tokens; the limit is ${p.maxTokens} (the model's context, or --max-prompt-tokens)`,
    );
  }
  const cross = s.dict.cross;
  const tags = cross ? (f: number) => featureTags(cross, f) : undefined;
  return c.json(await timed(s, runPrompt(p, ids, req.topK, tags), since));
}

// ---- the table, in the document's order --------------------------------------------------------

export const ROUTES: readonly Route[] = [
  {
    method: "GET",
    path: "/healthz",
    doc: () => ({
      summary: "liveness",
      security: [],
      responses: {
        "200": {
          description: "OK",
          content: {
            [JSON_TYPE]: {
              schema: { type: "object", properties: { status: { const: "ok" } } },
            },
          },
        },
      },
    }),
    handle: (c) => c.json({ status: "ok" }),
  },
  {
    method: "GET",
    path: "/v1/info",
    doc: (t) => ({
      summary: "architecture, sizes, k/threshold, dtype, backend, saved metrics",
      responses: { "200": { description: "OK" }, ...t.errors(401) },
    }),
    handle: info,
  },
  {
    method: "GET",
    path: "/v1/stats",
    doc: (t) => ({
      summary: "micro-batching counters",
      responses: { "200": { description: "OK" }, ...t.errors(401) },
    }),
    handle: stats,
  },
  {
    method: "GET",
    path: "/v1/density",
    doc: (t) => ({
      summary:
        "log10 feature-density histogram (and per-feature densities when the folder has them)",
      responses: { "200": { description: "OK" }, ...t.errors(401, 404) },
    }),
    handle: density,
  },
  {
    method: "GET",
    path: "/v1/samples",
    doc: (t) => ({
      summary: "up to 64 sample input rows from sample_inputs.npy",
      responses: { "200": { description: "OK" }, ...t.errors(401, 404) },
    }),
    handle: samples,
  },
  {
    method: "GET",
    path: "/v1/relative-norms",
    doc: (t) => ({
      summary:
        "crosscoder over two inputs: histogram of the relative decoder norm ‖W_dec[B,i]‖ / (‖W_dec[A,i]‖ + ‖W_dec[B,i]‖) over [0, 1], and for a DFC the counts of each partition set",
      description:
        "Bins are [edges[j], edges[j+1]), the last closed; nan counts features with no decoder. 404 no_relative_norm for a single-input dictionary or a crosscoder of other than two inputs.",
      parameters: [
        { name: "bins", in: "query", schema: { type: "integer", minimum: 1, maximum: 200 } },
      ],
      responses: {
        "200": {
          description: "OK",
          content: { [JSON_TYPE]: { schema: t.ref("RelativeNormHistogram") } },
        },
        ...t.errors(400, 401, 404),
      },
    }),
    handle: relativeNorms,
  },
  {
    method: "POST",
    path: "/v1/encode",
    doc: (t) => ({
      summary: "non-zero features per row, largest first (or dense codes)",
      description:
        `Arrow: column "inputs" FixedSizeList<Float32>[${t.inWidth}]${t.flatNote}; query ?top_k=n&dense=true. Reply: "indices" List<Int32> + "values" List<Float32>, or "codes" FixedSizeList<Float32>[${t.d_sae}].`,
      requestBody: t.jsonBody({
        type: "object",
        required: ["inputs"],
        additionalProperties: false,
        properties: {
          inputs: t.inputRows(t.d_in),
          top_k: { type: "integer", minimum: 1 },
          dense: { type: "boolean" },
        },
      }),
      responses: {
        ...t.reply({
          oneOf: [{
            type: "object",
            properties: { features: { type: "array", items: t.ref("SparseRow") } },
          }, { type: "object", properties: { codes: t.matrix(t.d_sae) } }],
        }),
        ...t.errors(...t.bodyErrors),
      },
    }),
    handle: encode,
  },
  {
    method: "POST",
    path: "/v1/decode",
    doc: (t) => ({
      summary: "outputs from sparse features or dense codes (repeated indices add up)",
      description:
        `Arrow: "indices" List<Int32> + "values" List<Float32>, or ?codes=dense with column "codes" FixedSizeList<Float32>[${t.d_sae}]. Reply: "outputs" FixedSizeList<Float32>[${t.outWidth}]${t.flatNote}.`,
      requestBody: t.jsonBody({
        type: "object",
        additionalProperties: false,
        oneOf: [{ required: ["features"] }, { required: ["codes"] }],
        properties: {
          features: {
            type: "array",
            items: t.ref("SparseRow"),
            minItems: 1,
            maxItems: t.maxRows,
          },
          codes: t.matrix(t.d_sae),
        },
      }),
      responses: {
        ...t.reply({ type: "object", properties: { outputs: t.inputRows(t.d_out) } }),
        ...t.errors(...t.bodyErrors),
      },
    }),
    handle: decode,
  },
  {
    method: "POST",
    path: "/v1/reconstruct",
    doc: (t) => ({
      summary:
        "decode(encode(x)) and its metrics: mse (mean over rows of the summed squared error), mean cosine, mean L0",
      description:
        `Arrow: column "inputs" FixedSizeList<Float32>[${t.inWidth}]${t.flatNote}. Reply: "outputs" FixedSizeList<Float32>[${t.outWidth}], metrics as JSON in the schema metadata key "metrics".`,
      requestBody: t.jsonBody({
        type: "object",
        required: ["inputs"],
        additionalProperties: false,
        properties: { inputs: t.inputRows(t.d_in) },
      }),
      responses: {
        ...t.reply({
          type: "object",
          properties: {
            outputs: t.inputRows(t.d_out),
            metrics: {
              type: ["object", "null"],
              properties: {
                mse: { type: "number" },
                cosine: { type: "number" },
                l0: { type: "number" },
              },
            },
          },
        }),
        ...t.errors(...t.bodyErrors),
      },
    }),
    handle: reconstruct,
  },
  {
    method: "GET",
    path: "/v1/features",
    doc: (t) => ({
      summary: "search: the features whose saved top contexts peak on a token",
      description:
        "Give ?token=TEXT (tokenized with the model's tokenizer; each of its tokens is answered) or ?token_id=N, and ?limit (1..100, default 20). The index is built at load from features/contexts.safetensors: per token, the features with a top context whose maximum is that token, most such contexts first, then the strongest. 404 no_features when the folder has no statistics.",
      parameters: [
        { name: "token", in: "query", schema: { type: "string", minLength: 1, maxLength: 200 } },
        { name: "token_id", in: "query", schema: { type: "integer", minimum: 0 } },
        { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 100 } },
      ],
      responses: {
        "200": {
          description: "OK",
          content: { [JSON_TYPE]: { schema: t.ref("TokenSearch") } },
        },
        ...t.errors(400, 401, 404, 413, 422),
      },
    }),
    handle: search,
  },
  {
    method: "GET",
    path: "/v1/features/:id",
    doc: (t) => ({
      summary:
        "encoder and decoder vectors (a crosscoder's: one per input), bias, decoder norm, density, top examples; a crosscoder's per-input decoder norms, relative norm and DFC partition set; with features/ also its statistics (contexts with per-token activations, histogram, logit tables, interval samples)",
      parameters: [{
        name: "id",
        in: "path",
        required: true,
        schema: { type: "integer", minimum: 0, maximum: t.d_sae - 1 },
      }],
      responses: {
        "200": {
          description: "OK",
          content: {
            [JSON_TYPE]: {
              schema: {
                type: "object",
                properties: {
                  id: { type: "integer" },
                  decoder_norm: { type: "number" },
                  crosscoder: { ...t.ref("CrosscoderFeature"), type: ["object", "null"] },
                },
              },
            },
          },
        },
        ...t.errors(400, 401, 404, 503),
      },
    }),
    handle: feature,
  },
  {
    method: "POST",
    path: "/v1/prompt",
    doc: (t) => ({
      summary:
        "tokenize a text, run the model and the dictionary: each token's strongest features (and an MLSAE's layer × latent sums)",
      description:
        "Needs the server started with --model M (else 404 no_model). The text must fit the model's context (413 text_too_long, naming the token count).",
      requestBody: {
        required: true,
        content: {
          [JSON_TYPE]: {
            schema: {
              type: "object",
              required: ["text"],
              additionalProperties: false,
              properties: {
                text: { type: "string", minLength: 1, maxLength: 16384 },
                top_k: {
                  type: "integer",
                  minimum: 1,
                  description: "features per token (default 5, at most 64)",
                },
              },
            },
          },
        },
      },
      responses: {
        "200": { description: "OK", content: { [JSON_TYPE]: { schema: t.ref("PromptResult") } } },
        ...t.errors(400, 401, 404, 408, 413, 415, 422, 503),
      },
    }),
    handle: prompt,
  },
  {
    method: "GET",
    path: "/openapi.json",
    doc: () => ({ summary: "this document", responses: { "200": { description: "OK" } } }),
    handle: (c, s) => c.json(s.document()),
  },
];
