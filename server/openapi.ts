/** The OpenAPI 3.1 description served at /openapi.json, with this dictionary's widths filled in. */
import type { ServedDictionary } from "./dictionary.ts";
import { ARROW_TYPE, JSON_TYPE, type Limits } from "./validate.ts";

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function errors(...statuses: number[]) {
  const text: Record<number, string> = {
    400: "malformed body (not JSON, wrong types, unknown fields)",
    401: "missing or wrong bearer token",
    404: "unknown feature or route",
    405: "method not allowed",
    408: "the request body did not arrive within the request timeout",
    413: "body or row count over the limit",
    415: "Content-Type is not JSON or Arrow IPC",
    422: "wrong width, non-finite values, no rows, index out of range",
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

export function openApiDocument(d: ServedDictionary, limits: Limits): Record<string, unknown> {
  const { d_in, d_sae, d_out } = d;
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
  const common = [400, 401, 408, 413, 415, 422, 503];
  return {
    openapi: "3.1.0",
    info: {
      title: "sparsecoder dictionary server",
      version: "1",
      description:
        `Serves a ${d.saved.cfg.arch} dictionary (d_in ${d_in}, d_sae ${d_sae}, d_out ${d_out}). Bodies are JSON or Arrow IPC (${ARROW_TYPE}); responses follow Accept, else the request's type. Largest body ${limits.maxBodyBytes} bytes, at most ${limits.maxRows} rows.`,
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
    paths: {
      "/healthz": {
        get: {
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
        },
      },
      "/v1/info": {
        get: {
          summary: "architecture, sizes, k/threshold, dtype, backend, saved metrics",
          responses: { "200": { description: "OK" }, ...errors(401) },
        },
      },
      "/v1/stats": {
        get: {
          summary: "micro-batching counters",
          responses: { "200": { description: "OK" }, ...errors(401) },
        },
      },
      "/v1/density": {
        get: {
          summary:
            "log10 feature-density histogram (and per-feature densities when the folder has them)",
          responses: { "200": { description: "OK" }, ...errors(401, 404) },
        },
      },
      "/v1/samples": {
        get: {
          summary: "up to 64 sample input rows from sample_inputs.npy",
          responses: { "200": { description: "OK" }, ...errors(401, 404) },
        },
      },
      "/v1/encode": {
        post: {
          summary: "non-zero features per row, largest first (or dense codes)",
          description:
            `Arrow: column "inputs" FixedSizeList<Float32>[${d_in}]; query ?top_k=n&dense=true. Reply: "indices" List<Int32> + "values" List<Float32>, or "codes" FixedSizeList<Float32>[${d_sae}].`,
          requestBody: jsonBody({
            type: "object",
            required: ["inputs"],
            additionalProperties: false,
            properties: {
              inputs: matrix(d_in),
              top_k: { type: "integer", minimum: 1 },
              dense: { type: "boolean" },
            },
          }),
          responses: {
            ...reply({
              oneOf: [{
                type: "object",
                properties: { features: { type: "array", items: ref("SparseRow") } },
              }, { type: "object", properties: { codes: matrix(d_sae) } }],
            }),
            ...errors(...common),
          },
        },
      },
      "/v1/decode": {
        post: {
          summary: "outputs from sparse features or dense codes (repeated indices add up)",
          description:
            `Arrow: "indices" List<Int32> + "values" List<Float32>, or ?codes=dense with column "codes" FixedSizeList<Float32>[${d_sae}]. Reply: "outputs" FixedSizeList<Float32>[${d_out}].`,
          requestBody: jsonBody({
            type: "object",
            additionalProperties: false,
            oneOf: [{ required: ["features"] }, { required: ["codes"] }],
            properties: {
              features: {
                type: "array",
                items: ref("SparseRow"),
                minItems: 1,
                maxItems: limits.maxRows,
              },
              codes: matrix(d_sae),
            },
          }),
          responses: {
            ...reply({ type: "object", properties: { outputs: matrix(d_out) } }),
            ...errors(...common),
          },
        },
      },
      "/v1/reconstruct": {
        post: {
          summary:
            "decode(encode(x)) and its metrics: mse (mean over rows of the summed squared error), mean cosine, mean L0",
          description:
            `Arrow: column "inputs" FixedSizeList<Float32>[${d_in}]. Reply: "outputs" FixedSizeList<Float32>[${d_out}], metrics as JSON in the schema metadata key "metrics".`,
          requestBody: jsonBody({
            type: "object",
            required: ["inputs"],
            additionalProperties: false,
            properties: { inputs: matrix(d_in) },
          }),
          responses: {
            ...reply({
              type: "object",
              properties: {
                outputs: matrix(d_out),
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
            ...errors(...common),
          },
        },
      },
      "/v1/features/{id}": {
        get: {
          summary: "encoder and decoder vectors, bias, decoder norm, density, top examples",
          parameters: [{
            name: "id",
            in: "path",
            required: true,
            schema: { type: "integer", minimum: 0, maximum: d_sae - 1 },
          }],
          responses: { "200": { description: "OK" }, ...errors(400, 401, 404, 503) },
        },
      },
      "/openapi.json": {
        get: { summary: "this document", responses: { "200": { description: "OK" } } },
      },
    },
  };
}
