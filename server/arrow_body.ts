/**
 * Arrow IPC stream bodies (`application/vnd.apache.arrow.stream`) for the numeric endpoints, so
 * clients in Python/R/Rust send and receive columns without JSON's text round trip.
 *
 * Requests: a matrix is one column (named "inputs", or "codes" for /v1/decode) of type
 * FixedSizeList<Float32 | Float64>[width], one row per list; sparse rows for /v1/decode are two
 * columns "indices" List<Int32> and "values" List<Float32 | Float64>. No nulls.
 * Responses: /v1/encode → "indices" List<Int32> + "values" List<Float32> (or "codes"
 * FixedSizeList<Float32>[d_sae] when dense); /v1/decode and /v1/reconstruct → "outputs"
 * FixedSizeList<Float32>[d_out]; reconstruct's metrics ride in the schema metadata key "metrics" (JSON).
 */
import {
  Field,
  FixedSizeList,
  Float32,
  Int32,
  List,
  makeData,
  makeVector,
  Schema,
  Table,
  tableFromIPC,
  tableToIPC,
  Type,
} from "apache-arrow";
import type { Data, Vector } from "apache-arrow";
import type { SparseRow } from "./dictionary.ts";
import { HttpError, type Limits } from "./validate.ts";
import { checkArrowStream } from "./arrow_guard.ts";

function readTable(bytes: Uint8Array, limits: Limits, width: number): Table {
  checkArrowStream(bytes, limits.maxRows, limits.maxRows * width);
  let t: Table;
  try {
    t = tableFromIPC(bytes);
  } catch (e) {
    throw new HttpError(
      400,
      "malformed_arrow",
      `body is not an Arrow IPC stream: ${(e as Error).message}`,
    );
  }
  if (t.schema.fields.length === 0) {
    throw new HttpError(400, "malformed_arrow", "body is not an Arrow IPC stream with columns");
  }
  return t;
}

function column(t: Table, name: string): Vector {
  const c = t.getChild(name);
  if (!c) {
    throw new HttpError(
      400,
      "missing_field",
      `Arrow body has no column "${name}" (has ${
        t.schema.fields.map((f) => JSON.stringify(f.name)).join(", ")
      })`,
    );
  }
  return c;
}

function rowCount(t: Table, limits: Limits): number {
  if (t.numRows === 0) throw new HttpError(422, "empty_input", "Arrow body has no rows");
  if (t.numRows > limits.maxRows) {
    throw new HttpError(
      413,
      "too_many_rows",
      `Arrow body has ${t.numRows} rows; the limit is ${limits.maxRows}`,
    );
  }
  return t.numRows;
}

const isFloat = (d: Data) => d.type.typeId === Type.Float;

function noNulls(d: Data, what: string): void {
  if (d.nullCount > 0) throw new HttpError(422, "null_values", `${what} contains nulls`);
}

/** A FixedSizeList<float>[width] column as row-major f32; every value must be finite. */
export function arrowMatrix(
  bytes: Uint8Array,
  name: string,
  width: number,
  limits: Limits,
): { n: number; data: Float32Array } {
  const t = readTable(bytes, limits, width);
  const col = column(t, name);
  const n = rowCount(t, limits);
  const type = col.type as { typeId: Type; listSize?: number };
  if (type.typeId !== Type.FixedSizeList || !isFloat(col.data[0].children[0])) {
    throw new HttpError(
      400,
      "wrong_type",
      `column "${name}" must be FixedSizeList<Float32 or Float64>[${width}], got ${
        String(col.type)
      }`,
    );
  }
  if (type.listSize !== width) {
    throw new HttpError(
      422,
      "wrong_width",
      `column "${name}" has rows of ${type.listSize} values; expected ${width}`,
    );
  }
  const out = new Float32Array(n * width);
  let row = 0;
  for (const chunk of col.data) {
    noNulls(chunk, `column "${name}"`);
    const child = chunk.children[0];
    noNulls(child, `column "${name}"`);
    const src = child.values as Float32Array | Float64Array,
      base = child.offset + chunk.offset * width;
    for (let i = 0; i < chunk.length * width; i++) {
      const x = Math.fround(src[base + i]);
      if (!Number.isFinite(x)) {
        throw new HttpError(
          422,
          "non_finite",
          `${name}[${row + Math.floor(i / width)}][${i % width}] = ${
            src[base + i]
          } is not a finite f32 value`,
        );
      }
      out[row * width + i] = x;
    }
    row += chunk.length;
  }
  return { n, data: out };
}

/** Two List columns "indices" (Int32) and "values" (float) as sparse rows. */
export function arrowSparseRows(bytes: Uint8Array, d_sae: number, limits: Limits): SparseRow[] {
  const t = readTable(bytes, limits, d_sae);
  const n = rowCount(t, limits);
  const idx = column(t, "indices"), val = column(t, "values");
  if (idx.type.typeId !== Type.List || idx.data[0].children[0].type.typeId !== Type.Int) {
    throw new HttpError(
      400,
      "wrong_type",
      `column "indices" must be List<Int32>, got ${String(idx.type)}`,
    );
  }
  if (val.type.typeId !== Type.List || !isFloat(val.data[0].children[0])) {
    throw new HttpError(
      400,
      "wrong_type",
      `column "values" must be List<Float32 or Float64>, got ${String(val.type)}`,
    );
  }
  const lists = (v: Vector, what: string): number[][] => {
    const out: number[][] = [];
    for (const chunk of v.data) {
      noNulls(chunk, `column "${what}"`);
      noNulls(chunk.children[0], `column "${what}"`);
      const offs = chunk.valueOffsets as Int32Array,
        src = chunk.children[0].values as ArrayLike<number>,
        co = chunk.children[0].offset;
      for (let r = 0; r < chunk.length; r++) {
        out.push(
          Array.from(
            { length: offs[chunk.offset + r + 1] - offs[chunk.offset + r] },
            (_, j) => Number(src[co + offs[chunk.offset + r] + j]),
          ),
        );
      }
    }
    return out;
  };
  const I = lists(idx, "indices"), V = lists(val, "values");
  return Array.from({ length: n }, (_, i) => {
    if (I[i].length !== V[i].length) {
      throw new HttpError(
        422,
        "length_mismatch",
        `row ${i}: ${I[i].length} indices but ${V[i].length} values`,
      );
    }
    I[i].forEach((j, k) => {
      if (!Number.isInteger(j) || j < 0 || j >= d_sae) {
        throw new HttpError(
          422,
          "index_out_of_range",
          `row ${i}: indices[${k}] = ${j} is not a feature in [0, ${d_sae})`,
        );
      }
    });
    const values = V[i].map((x, k) => {
      const f = Math.fround(x);
      if (!Number.isFinite(f)) {
        throw new HttpError(
          422,
          "non_finite",
          `row ${i}: values[${k}] = ${x} is not a finite f32 value`,
        );
      }
      return f;
    });
    return { indices: I[i], values };
  });
}

function fixedList(name: string, data: Float32Array, width: number): [string, Vector] {
  const n = data.length / width;
  const child = makeData({ type: new Float32(), length: data.length, data });
  return [
    name,
    makeVector(
      makeData({
        type: new FixedSizeList(width, new Field("item", new Float32(), false)),
        length: n,
        nullCount: 0,
        child,
      }),
    ),
  ];
}

function listColumn(rows: number[][], ints: boolean): Vector {
  const offsets = new Int32Array(rows.length + 1);
  rows.forEach((r, i) => (offsets[i + 1] = offsets[i] + r.length));
  const values = ints
    ? new Int32Array(offsets[rows.length])
    : new Float32Array(offsets[rows.length]);
  rows.forEach((r, i) => values.set(r, offsets[i]));
  const length = values.length;
  const child = values instanceof Int32Array
    ? makeData({ type: new Int32(), length, data: values })
    : makeData({ type: new Float32(), length, data: values });
  return makeVector(
    makeData({
      type: new List(new Field("item", child.type, false)),
      length: rows.length,
      nullCount: 0,
      valueOffsets: offsets,
      child,
    }),
  );
}

function toIpc(
  columns: [string, Vector][],
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  const t = new Table(Object.fromEntries(columns));
  const withMeta = metadata
    ? new Table(new Schema(t.schema.fields, new Map(Object.entries(metadata))), t.batches)
    : t;
  return tableToIPC(withMeta, "stream") as Uint8Array<ArrayBuffer>;
}

export function arrowSparseResponse(rows: SparseRow[]): Uint8Array<ArrayBuffer> {
  return toIpc([["indices", listColumn(rows.map((r) => r.indices), true)], [
    "values",
    listColumn(rows.map((r) => r.values), false),
  ]]);
}

export function arrowMatrixResponse(
  name: string,
  data: Float32Array,
  width: number,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  return toIpc([fixedList(name, data, width)], metadata);
}
