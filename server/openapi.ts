/**
 * The OpenAPI 3.1 description served at /openapi.json, with this dictionary's widths filled in:
 * the envelope and shared schemas here, each path's operation from the route table (routes.ts).
 */
import type { ServedDictionary } from "./dictionary.ts";
import { ROUTES } from "./routes.ts";
import { ARROW_TYPE, JSON_TYPE, type Limits } from "./validate.ts";

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const obj = (properties: Record<string, unknown>) => ({ type: "object", properties });
const list = (items: unknown) => ({ type: "array", items });
const INT = { type: "integer" }, NUM = { type: "number" }, STR = { type: "string" };

function errors(...statuses: number[]) {
  const text: Record<number, string> = {
    400: "malformed body or query (not JSON, wrong types, unknown fields)",
    401: "missing or wrong bearer token",
    404: "unknown feature or route, or a file the operation reads is missing",
    405: "method not allowed",
    408: "the request body did not arrive within the request timeout",
    413: "body, row count or text over the limit",
    415: "Content-Type is not JSON or Arrow IPC",
    422: "wrong width, non-finite values, no rows, index or token id out of range, no tokenizer",
    503: "the backend work ran past the request timeout",
  };
  return Object.fromEntries(
    statuses.map((
      s,
    ) => [String(s), { description: text[s], content: { [JSON_TYPE]: { schema: ref("Error") } } }]),
  );
}

const jsonBody = (schema: unknown) => ({
  required: true,
  content: {
    [JSON_TYPE]: { schema },
    [ARROW_TYPE]: {
      schema: {
        type: "string",
        format: "binary",
        description: "Arrow IPC stream; see the column layout in the operation's description",
      },
    },
  },
});

const reply = (schema: unknown) => ({
  "200": {
    description: "OK",
    content: {
      [JSON_TYPE]: { schema },
      [ARROW_TYPE]: { schema: { type: "string", format: "binary" } },
    },
  },
});

/** The schema vocabulary a route's operation is written in (routes.ts), for one dictionary. */
export interface OpenApiTerms {
  d_in: number;
  d_sae: number;
  d_out: number;
  maxRows: number;
  /** A crosscoder's inputs per row (1 otherwise), and a row's width in Arrow (inputs·d). */
  inputs: number;
  inWidth: number;
  outWidth: number;
  /** How Arrow lays out a crosscoder's row ("" for single-input dictionaries). */
  flatNote: string;
  /** Rows of `d` numbers, or for a crosscoder rows [inputs][d]; 1 to maxRows of them. */
  inputRows(d: number): Record<string, unknown>;
  /** A reference to one of the document's component schemas. */
  ref: typeof ref;
  /** Rows of `n` numbers, 1 to maxRows of them. */
  matrix(n: number): Record<string, unknown>;
  /** The error answers for these statuses. */
  errors: typeof errors;
  /** A required request body, as JSON of `schema` or Arrow IPC. */
  jsonBody: typeof jsonBody;
  /** A 200 answer, as JSON of `schema` or Arrow IPC. */
  reply: typeof reply;
  /** The statuses an operation that reads a body can answer with. */
  bodyErrors: number[];
}

function termsFor(d: ServedDictionary, limits: Limits): OpenApiTerms {
  const row = (n: number) => ({
    type: "array",
    items: { type: "number" },
    minItems: n,
    maxItems: n,
  });
  const matrix = (n: number) => ({
    type: "array",
    items: row(n),
    minItems: 1,
    maxItems: limits.maxRows,
  });
  const L = d.inputs;
  return {
    d_in: d.d_in,
    d_sae: d.d_sae,
    d_out: d.d_out,
    maxRows: limits.maxRows,
    inputs: L,
    inWidth: d.inWidth,
    outWidth: d.outWidth,
    flatNote: L > 1 ? ` (each row its ${L} inputs one after another)` : "",
    inputRows: (n) =>
      L === 1 ? matrix(n) : {
        type: "array",
        items: { type: "array", items: row(n), minItems: L, maxItems: L },
        minItems: 1,
        maxItems: limits.maxRows,
      },
    ref,
    matrix,
    errors,
    jsonBody,
    reply,
    bodyErrors: [400, 401, 408, 413, 415, 422, 503],
  };
}

/** Every route of the table under its path (`:name` parameters written `{name}`). */
function pathsOf(t: OpenApiTerms): Record<string, Record<string, unknown>> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const path = r.path.replace(/:(\w+)/g, "{$1}");
    (paths[path] ??= {})[r.method.toLowerCase()] = r.doc(t);
  }
  return paths;
}

export function openApiDocument(d: ServedDictionary, limits: Limits): Record<string, unknown> {
  const { d_in, d_sae, d_out } = d;
  return {
    openapi: "3.1.0",
    info: {
      title: "sparsecoder dictionary server",
      version: "1",
      description: `Serves a ${d.saved.cfg.arch} dictionary (${
        d.inputs > 1 ? `${d.inputs} inputs of ` : ""
      }d_in ${d_in}, d_sae ${d_sae}, d_out ${d_out}). Bodies are JSON or Arrow IPC (${ARROW_TYPE}); responses follow Accept, else the request's type. Largest body ${limits.maxBodyBytes} bytes, at most ${limits.maxRows} rows.`,
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: { code: { type: "string" }, message: { type: "string" } },
            },
          },
        },
        TokenSearch: obj({
          query: { type: ["string", "null"] },
          tokens: list(obj({
            id: INT,
            text: STR,
            features: list(obj({
              id: INT,
              contexts: INT,
              max_activation: NUM,
              density: { type: ["number", "null"] },
            })),
          })),
        }),
        PromptResult: obj({
          model: STR,
          kind: STR,
          text: STR,
          tokens: list(obj({
            id: INT,
            text: STR,
            span: { ...list(INT), minItems: 2, maxItems: 2 },
            special: { type: "boolean" },
            features: list(obj({
              id: INT,
              value: NUM,
              slice: STR,
              partition: { ...STR, description: "a DFC's partition set: A-exclusive, …, shared" },
              relative_norm: { ...NUM, description: "a two-input crosscoder's relative norm" },
            })),
          })),
          layers: {
            ...obj({ names: list(STR), latents: list(INT), sums: list(list(NUM)) }),
            type: ["object", "null"],
          },
        }),
        CrosscoderFeature: obj({
          inputs: list(STR),
          decoder_norms: list(NUM),
          relative_norm: { type: ["number", "null"] },
          partition: { type: ["string", "null"] },
        }),
        RelativeNormHistogram: obj({
          inputs: list(STR),
          edges: list(NUM),
          counts: list(INT),
          nan: INT,
          by_partition: { type: ["object", "null"], additionalProperties: list(INT) },
        }),
        SparseRow: {
          type: "object",
          required: ["indices", "values"],
          properties: {
            indices: { type: "array", items: { type: "integer", minimum: 0, maximum: d_sae - 1 } },
            values: { type: "array", items: { type: "number" } },
          },
        },
      },
    },
    security: [{ bearer: [] }, {}],
    paths: pathsOf(termsFor(d, limits)),
  };
}
