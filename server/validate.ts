/**
 * Request validation: every way a body can be wrong maps to one status and a message naming the
 * field. Statuses: 400 malformed (not JSON, wrong types, unknown fields), 408 body too slow to
 * arrive, 413 too large (bytes or rows), 415 wrong content type, 422 well-formed but unusable
 * (wrong width, non-finite values, no rows, feature index out of range). Parsing never allocates
 * more than the byte limit allows.
 */
import type { SparseRow } from "./dictionary.ts";

export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export const JSON_TYPE = "application/json";
export const ARROW_TYPE = "application/vnd.apache.arrow.stream";

export interface Limits {
  /** Largest accepted body in bytes. */
  maxBodyBytes: number;
  /** Most rows in one request. */
  maxRows: number;
}

/** The media type of a Content-Type header, lower-cased, without parameters. */
export function mediaType(header: string | null | undefined): string {
  return (header ?? "").split(";")[0].trim().toLowerCase();
}

/** JSON or Arrow, from the Content-Type header; anything else is 415. */
export function bodyKind(req: Request): "json" | "arrow" {
  const t = mediaType(req.headers.get("content-type"));
  if (t === JSON_TYPE) return "json";
  if (t === ARROW_TYPE) return "arrow";
  throw new HttpError(
    415,
    "unsupported_media_type",
    `Content-Type must be ${JSON_TYPE} or ${ARROW_TYPE}, got ${t ? JSON.stringify(t) : "none"}`,
  );
}

/**
 * The body as bytes, refusing (413) as soon as it passes the limit, declared or streamed, and
 * (408) when it has not all arrived within `timeoutMs`: a client that stalls mid-upload would
 * otherwise hold the request open for ever. Either way the rest of the stream is cancelled.
 */
export async function readBody(
  req: Request,
  maxBytes: number,
  timeoutMs: number,
): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) {
    throw new HttpError(
      413,
      "payload_too_large",
      `body of ${declared} bytes exceeds the limit of ${maxBytes} bytes`,
    );
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new HttpError(
            408,
            "body_timeout",
            `the request body did not arrive within ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
  });
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), late]);
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        throw new HttpError(
          413,
          "payload_too_large",
          `body exceeds the limit of ${maxBytes} bytes`,
        );
      }
      chunks.push(value);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

/** Parse a JSON object body (400 if not JSON or not an object). */
export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new HttpError(400, "malformed_json", `body is not valid JSON: ${(e as Error).message}`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) {
    throw new HttpError(400, "malformed_json", `body must be a JSON object, got ${describe(v)}`);
  }
  return v as Record<string, unknown>;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "string" ? `a string` : `a ${typeof v}`;
}

function onlyFields(body: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) {
      throw new HttpError(
        400,
        "unknown_field",
        `unknown field ${JSON.stringify(k)}; expected ${
          allowed.map((a) => JSON.stringify(a)).join(", ")
        }`,
      );
    }
  }
}

// Strings a client might send for values JSON cannot carry: reported as non-finite, not as a type error.
const NON_FINITE_TEXT = /^[+-]?(nan|inf|infinity)$/i;

/** 422 for no rows, 413 for more than the limit. */
function checkRowCount(n: number, field: string, limits: Limits): void {
  if (n === 0) throw new HttpError(422, "empty_input", `"${field}" has no rows`);
  if (n > limits.maxRows) {
    throw new HttpError(
      413,
      "too_many_rows",
      `"${field}" has ${n} rows; the limit is ${limits.maxRows}`,
    );
  }
}

/** A list of rows of exactly `width` finite numbers, as row-major f32. */
export function parseMatrix(
  v: unknown,
  field: string,
  width: number,
  limits: Limits,
): { n: number; data: Float32Array } {
  if (!Array.isArray(v)) {
    throw new HttpError(
      400,
      "wrong_type",
      `"${field}" must be an array of rows (arrays of numbers), got ${describe(v)}`,
    );
  }
  checkRowCount(v.length, field, limits);
  const data = new Float32Array(v.length * width);
  v.forEach((row, i) => {
    if (!Array.isArray(row)) {
      throw new HttpError(
        400,
        "wrong_type",
        `${field}[${i}] must be an array of numbers, got ${describe(row)}`,
      );
    }
    if (row.length !== width) {
      throw new HttpError(
        422,
        "wrong_width",
        `${field}[${i}] has ${row.length} values; expected ${width}`,
      );
    }
    for (let j = 0; j < width; j++) {
      const x = row[j];
      if (typeof x !== "number") {
        if (typeof x === "string" && NON_FINITE_TEXT.test(x.trim())) {
          throw new HttpError(
            422,
            "non_finite",
            `${field}[${i}][${j}] is ${JSON.stringify(x)}; values must be finite`,
          );
        }
        throw new HttpError(
          400,
          "wrong_type",
          `${field}[${i}][${j}] must be a number, got ${describe(x)}`,
        );
      }
      const f = Math.fround(x);
      // 1e400 parses to Infinity; 1e39 is finite in f64 but overflows the f32 we compute in.
      if (!Number.isFinite(f)) {
        throw new HttpError(
          422,
          "non_finite",
          `${field}[${i}][${j}] = ${x} is not a finite f32 value`,
        );
      }
      data[i * width + j] = f;
    }
  });
  return { n: v.length, data };
}

/**
 * Input rows: for a single-input dictionary (`inputs` 1) rows of `d` numbers; for a crosscoder,
 * rows [inputs, d] (one list of d numbers per input). Row-major f32 of n·inputs·d values.
 */
export function parseInputRows(
  v: unknown,
  field: string,
  d: number,
  inputs: number,
  limits: Limits,
): { n: number; data: Float32Array } {
  if (inputs === 1) return parseMatrix(v, field, d, limits);
  if (!Array.isArray(v)) {
    throw new HttpError(
      400,
      "wrong_type",
      `"${field}" must be an array of rows, each [${inputs}, ${d}] (one list of ${d} numbers per input), got ${
        describe(v)
      }`,
    );
  }
  checkRowCount(v.length, field, limits);
  v.forEach((row, i) => {
    if (!Array.isArray(row)) {
      throw new HttpError(
        400,
        "wrong_type",
        `${field}[${i}] must be [${inputs}, ${d}] (a list per input), got ${describe(row)}`,
      );
    }
    if (row.length !== inputs || row.some((r) => !Array.isArray(r))) {
      throw new HttpError(
        422,
        "wrong_shape",
        `${field}[${i}] must be [${inputs}, ${d}]: one list of ${d} numbers for each of the crosscoder's ${inputs} inputs, got ${
          row.every((r) => Array.isArray(r))
            ? `${row.length} lists`
            : `${row.length} values (flatten nothing: nest one list per input)`
        }`,
      );
    }
  });
  // Each input's list is a row of d numbers: the matrix check names [i·inputs + l].
  try {
    return (({ data }) => ({ n: v.length, data }))(
      parseMatrix(v.flat(), field, d, { ...limits, maxRows: limits.maxRows * inputs }),
    );
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    throw new HttpError(
      e.status,
      e.code,
      e.message.replace(
        new RegExp(`^${field}\\[(\\d+)\\]`),
        (_, k) => `${field}[${Math.floor(Number(k) / inputs)}][${Number(k) % inputs}]`,
      ),
    );
  }
}

function optionalInt(
  body: Record<string, unknown>,
  field: string,
  min: number,
): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new HttpError(
      400,
      "wrong_type",
      `"${field}" must be an integer >= ${min}, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function optionalBool(body: Record<string, unknown>, field: string): boolean {
  const v = body[field];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") {
    throw new HttpError(
      400,
      "wrong_type",
      `"${field}" must be true or false, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

export interface EncodeRequest {
  n: number;
  x: Float32Array;
  topK?: number;
  dense: boolean;
}

export function parseEncode(
  body: Record<string, unknown>,
  d_in: number,
  limits: Limits,
  inputs = 1,
): EncodeRequest {
  onlyFields(body, ["inputs", "top_k", "dense"]);
  if (body.inputs === undefined) {
    throw new HttpError(
      400,
      "missing_field",
      `"inputs" is required: an array of rows of ${
        inputs > 1 ? `[${inputs}, ${d_in}]` : d_in
      } numbers`,
    );
  }
  const topK = optionalInt(body, "top_k", 1);
  const dense = optionalBool(body, "dense");
  const { n, data } = parseInputRows(body.inputs, "inputs", d_in, inputs, limits);
  return { n, x: data, dense, ...(topK !== undefined ? { topK } : {}) };
}

export function parseReconstruct(
  body: Record<string, unknown>,
  d_in: number,
  limits: Limits,
  inputs = 1,
): { n: number; x: Float32Array } {
  onlyFields(body, ["inputs"]);
  if (body.inputs === undefined) {
    throw new HttpError(
      400,
      "missing_field",
      `"inputs" is required: an array of rows of ${
        inputs > 1 ? `[${inputs}, ${d_in}]` : d_in
      } numbers`,
    );
  }
  const { n, data } = parseInputRows(body.inputs, "inputs", d_in, inputs, limits);
  return { n, x: data };
}

/** Sparse rows: each {indices: int[], values: number[]} of one length, indices in [0, d_sae). */
export function parseSparseRows(v: unknown, d_sae: number, limits: Limits): SparseRow[] {
  if (!Array.isArray(v)) {
    throw new HttpError(
      400,
      "wrong_type",
      `"features" must be an array of {"indices", "values"} objects, got ${describe(v)}`,
    );
  }
  if (v.length === 0) throw new HttpError(422, "empty_input", `"features" has no rows`);
  if (v.length > limits.maxRows) {
    throw new HttpError(
      413,
      "too_many_rows",
      `"features" has ${v.length} rows; the limit is ${limits.maxRows}`,
    );
  }
  return v.map((r, i) => {
    if (!r || typeof r !== "object" || Array.isArray(r)) {
      throw new HttpError(
        400,
        "wrong_type",
        `features[${i}] must be an object {"indices", "values"}, got ${describe(r)}`,
      );
    }
    const { indices, values, ...rest } = r as Record<string, unknown>;
    const extra = Object.keys(rest)[0];
    if (extra !== undefined) {
      throw new HttpError(
        400,
        "unknown_field",
        `features[${i}]: unknown field ${JSON.stringify(extra)}`,
      );
    }
    if (!Array.isArray(indices) || !Array.isArray(values)) {
      throw new HttpError(400, "wrong_type", `features[${i}] needs "indices" and "values" arrays`);
    }
    if (indices.length !== values.length) {
      throw new HttpError(
        422,
        "length_mismatch",
        `features[${i}]: ${indices.length} indices but ${values.length} values`,
      );
    }
    if (indices.length > d_sae) {
      throw new HttpError(
        422,
        "wrong_width",
        `features[${i}] has ${indices.length} entries; at most d_sae = ${d_sae}`,
      );
    }
    indices.forEach((j, k) => {
      if (typeof j !== "number" || !Number.isInteger(j)) {
        throw new HttpError(
          400,
          "wrong_type",
          `features[${i}].indices[${k}] must be an integer, got ${JSON.stringify(j)}`,
        );
      }
      if (j < 0 || j >= d_sae) {
        throw new HttpError(
          422,
          "index_out_of_range",
          `features[${i}].indices[${k}] = ${j} is not a feature in [0, ${d_sae})`,
        );
      }
    });
    const vals = values.map((x, k) => {
      if (typeof x !== "number") {
        if (typeof x === "string" && NON_FINITE_TEXT.test(x.trim())) {
          throw new HttpError(
            422,
            "non_finite",
            `features[${i}].values[${k}] is ${JSON.stringify(x)}; values must be finite`,
          );
        }
        throw new HttpError(
          400,
          "wrong_type",
          `features[${i}].values[${k}] must be a number, got ${describe(x)}`,
        );
      }
      if (!Number.isFinite(Math.fround(x))) {
        throw new HttpError(
          422,
          "non_finite",
          `features[${i}].values[${k}] = ${x} is not a finite f32 value`,
        );
      }
      return Math.fround(x);
    });
    return { indices: indices as number[], values: vals };
  });
}

/** Decode takes either sparse "features" or dense "codes" [n, d_sae]. */
export function parseDecode(
  body: Record<string, unknown>,
  d_sae: number,
  limits: Limits,
): { rows?: SparseRow[]; codes?: { n: number; data: Float32Array } } {
  onlyFields(body, ["features", "codes"]);
  const hasF = body.features !== undefined, hasC = body.codes !== undefined;
  if (hasF === hasC) {
    throw new HttpError(
      400,
      "missing_field",
      `give exactly one of "features" (sparse rows) or "codes" (dense rows of ${d_sae})`,
    );
  }
  return hasF
    ? { rows: parseSparseRows(body.features, d_sae, limits) }
    : { codes: parseMatrix(body.codes, "codes", d_sae, limits) };
}

/** A feature id from the URL: 400 if not a non-negative integer, 404 if past the dictionary. */
export function parseFeatureId(raw: string, d_sae: number): number {
  if (!/^\d{1,10}$/.test(raw)) {
    throw new HttpError(
      400,
      "bad_feature_id",
      `feature id must be a non-negative integer, got ${JSON.stringify(raw.slice(0, 40))}`,
    );
  }
  const id = Number(raw);
  if (id >= d_sae) {
    throw new HttpError(
      404,
      "unknown_feature",
      `feature ${id} does not exist; this dictionary has features 0..${d_sae - 1}`,
    );
  }
  return id;
}

/** GET /v1/features's query: a token's text or id (exactly one), and how many features per token. */
export interface TokenSearch {
  token?: string;
  tokenId?: number;
  limit: number;
}

/** Longest token text a search takes (it is tokenized; a longer text is not one token's search). */
export const MAX_SEARCH_CHARS = 200;

export function parseTokenSearch(q: URLSearchParams, vocabSize: number | null): TokenSearch {
  for (const k of q.keys()) {
    if (!["token", "token_id", "limit"].includes(k)) {
      throw new HttpError(
        400,
        "unknown_parameter",
        `unknown query parameter ${
          JSON.stringify(k.slice(0, 40))
        }; expected token, token_id, limit`,
      );
    }
  }
  const token = q.get("token"), rawId = q.get("token_id"), rawLimit = q.get("limit");
  if ((token === null) === (rawId === null)) {
    throw new HttpError(
      400,
      "bad_query",
      "give exactly one of ?token=TEXT (tokenized by the model's tokenizer) or ?token_id=N",
    );
  }
  let limit = 20;
  if (rawLimit !== null) {
    if (!/^\d{1,4}$/.test(rawLimit) || Number(rawLimit) < 1 || Number(rawLimit) > 100) {
      throw new HttpError(
        400,
        "bad_limit",
        `limit must be an integer in 1..100, got ${JSON.stringify(rawLimit.slice(0, 40))}`,
      );
    }
    limit = Number(rawLimit);
  }
  if (token !== null) {
    if (token === "") throw new HttpError(400, "empty_token", "token must not be empty");
    if (token.length > MAX_SEARCH_CHARS) {
      throw new HttpError(
        413,
        "text_too_long",
        `token is ${token.length} characters; the limit is ${MAX_SEARCH_CHARS}`,
      );
    }
    return { token, limit };
  }
  if (!/^\d{1,10}$/.test(rawId!)) {
    throw new HttpError(
      400,
      "bad_token_id",
      `token_id must be a non-negative integer, got ${JSON.stringify(rawId!.slice(0, 40))}`,
    );
  }
  const tokenId = Number(rawId);
  if (vocabSize !== null && tokenId >= vocabSize) {
    throw new HttpError(
      422,
      "unknown_token",
      `token id ${tokenId} is not in the vocabulary (0..${vocabSize - 1})`,
    );
  }
  return { tokenId, limit };
}

/** POST /v1/prompt's body: the text, and how many features to list per token. */
export interface PromptRequest {
  text: string;
  topK: number;
}

/** Longest prompt text in characters (the token limit is checked after tokenizing). */
export const MAX_PROMPT_CHARS = 16384;

export function parsePrompt(body: Record<string, unknown>): PromptRequest {
  onlyFields(body, ["text", "top_k"]);
  const { text, top_k } = body;
  if (typeof text !== "string") {
    throw new HttpError(400, "wrong_type", `"text" must be a string, got ${describe(text)}`);
  }
  if (text.length === 0) throw new HttpError(422, "empty_text", `"text" is empty`);
  if (text.length > MAX_PROMPT_CHARS) {
    throw new HttpError(
      413,
      "text_too_long",
      `"text" is ${text.length} characters; the limit is ${MAX_PROMPT_CHARS}`,
    );
  }
  if (top_k !== undefined && !(Number.isInteger(top_k) && (top_k as number) >= 1)) {
    throw new HttpError(400, "wrong_type", `"top_k" must be an integer >= 1, got ${top_k}`);
  }
  return { text, topK: Math.min((top_k as number | undefined) ?? 5, 64) };
}

/** GET /v1/relative-norms?bins=N: 1..200 bins over [0, 1], default 20. */
export function parseRelativeNormQuery(q: URLSearchParams): { bins: number } {
  const v = q.get("bins");
  if (v === null) return { bins: 20 };
  if (!/^\d{1,3}$/.test(v) || Number(v) < 1 || Number(v) > 200) {
    throw new HttpError(
      400,
      "wrong_type",
      `query bins must be an integer in [1, 200], got ${JSON.stringify(v.slice(0, 40))}`,
    );
  }
  return { bins: Number(v) };
}
