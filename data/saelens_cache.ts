/**
 * SAELens activation caches: Hugging Face `datasets` folders (`state.json` listing the
 * `data-XXXXX-of-YYYYY.arrow` files, `dataset_info.json`), each file an Arrow IPC *stream*.
 * CacheActivationsRunner writes one column per hook, typed datasets `Array2D(shape=(context, d))`
 * — Arrow storage list<list<float>> carrying the field metadata
 * ARROW:extension:name = "datasets.features.features.Array2DExtensionType" and
 * ARROW:extension:metadata = JSON [[context, d], dtype] — and, in newer versions, `token_ids`
 * (a fixed-size list of int32, one per position). Each dataset row is one sequence; we serve its
 * `context` positions as rows.
 *
 * The same reader takes any Arrow stream file whose activation column is a list<list<float>> or a
 * fixed-size list of floats (e.g. one shard of our own store read on its own).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import * as A from "apache-arrow";
import { f16ToF32 } from "../tensor/dtype.ts";
import {
  ArrowIpcError,
  decodeBatch,
  fileSource,
  primitiveValues,
  readSchema,
} from "./arrow_ipc.ts";
import type { RowChunk, RowStream } from "./row_stream.ts";
import { toF32 } from "./row_stream.ts";

export class SaelensCacheError extends Error {
  override name = "SaelensCacheError";
}

const ARRAY2D = "datasets.features.features.Array2DExtensionType";

/** The arrow files of a datasets folder (state.json order), or the file itself. */
export function arrowFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  const state = join(path, "state.json");
  if (existsSync(state)) {
    let files: unknown;
    try {
      files = JSON.parse(readFileSync(state, "utf8"))._data_files;
    } catch (e) {
      throw new SaelensCacheError(`${state}: ${(e as Error).message}`);
    }
    if (!Array.isArray(files) || files.length === 0) {
      throw new SaelensCacheError(`${state}: _data_files must be a non-empty list`);
    }
    return files.map((f, i) => {
      const name = (f as { filename?: unknown })?.filename;
      if (typeof name !== "string" || !/^[\w.-]+\.arrow$/.test(name) || name.startsWith(".")) {
        throw new SaelensCacheError(
          `${state}: _data_files[${i}].filename must be a plain .arrow file name, got ${
            JSON.stringify(name)
          }`,
        );
      }
      return join(path, name);
    });
  }
  const files = readdirSync(path).filter((f) => f.endsWith(".arrow")).sort();
  if (!files.length) throw new SaelensCacheError(`${path}: no state.json and no .arrow files`);
  return files.map((f) => join(path, f));
}

export const isSaelensCache = (path: string): boolean =>
  existsSync(path) &&
  (statSync(path).isDirectory()
    ? existsSync(join(path, "state.json")) && existsSync(join(path, "dataset_info.json"))
    : path.endsWith(".arrow"));

interface ColumnInfo {
  name: string;
  /** Positions per dataset row (1 for a fixed-size-list column). */
  context: number;
  d: number;
  dtype: "f32" | "f16" | "f64";
  nested: boolean;
}

function floatKind(t: A.DataType, where: string): "f32" | "f16" | "f64" {
  if (t instanceof A.Float || A.DataType.isFloat(t)) {
    const p = (t as A.Float).precision;
    return p === A.Precision.SINGLE ? "f32" : p === A.Precision.HALF ? "f16" : "f64";
  }
  throw new SaelensCacheError(`${where}: values are ${t}, not floats`);
}

/** Find the activation column: the named one, else the only Array2D / list-of-float column. */
function activationColumn(schema: A.Schema, file: string, want?: string): ColumnInfo {
  const candidates = schema.fields.filter((f) => {
    const t = f.type;
    if (f.name === "token_ids") return false;
    const inner = t?.children?.[0]?.type;
    if (A.DataType.isList(t)) {
      return A.DataType.isList(inner) && A.DataType.isFloat(inner.children?.[0]?.type);
    }
    return A.DataType.isFixedSizeList(t) && A.DataType.isFloat(inner);
  });
  const names = schema.fields.map((f) => f.name).join(", ");
  const field = want
    ? schema.fields.find((f) => f.name === want)
    : candidates.length === 1
    ? candidates[0]
    : undefined;
  if (!field) {
    throw new SaelensCacheError(
      want
        ? `${file}: no column ${JSON.stringify(want)} (columns: ${names})`
        : `${file}: ${candidates.length ? "several" : "no"} activation columns (${
          candidates.map((f) => f.name).join(", ") || "none of " + names
        }); name one as PATH#column`,
    );
  }
  const where = `${file}: column ${field.name}`;
  if (!candidates.includes(field)) {
    throw new SaelensCacheError(
      `${where} is ${field.type}, not list<list<float>> or a fixed-size list of floats`,
    );
  }
  if (A.DataType.isFixedSizeList(field.type)) {
    return {
      name: field.name,
      context: 1,
      d: (field.type as A.FixedSizeList).listSize,
      dtype: floatKind(field.type.children[0].type, where),
      nested: false,
    };
  }
  // The extension metadata gives [context, d]; without it they are learned from the first row.
  let context = -1, d = -1;
  if (field.metadata.get("ARROW:extension:name") === ARRAY2D) {
    let meta: unknown;
    try {
      meta = JSON.parse(field.metadata.get("ARROW:extension:metadata") ?? "");
    } catch {
      throw new SaelensCacheError(`${where}: ARROW:extension:metadata is not JSON`);
    }
    const shape = Array.isArray(meta) ? meta[0] : null;
    if (
      !Array.isArray(shape) || shape.length !== 2 ||
      !shape.every((v) => Number.isSafeInteger(v) && v > 0)
    ) {
      throw new SaelensCacheError(
        `${where}: Array2D metadata ${JSON.stringify(meta)} lacks a [context, d] shape`,
      );
    }
    [context, d] = shape as number[];
  }
  return {
    name: field.name,
    context,
    d,
    dtype: floatKind(field.type.children[0].type.children[0].type, where),
    nested: true,
  };
}

/** A datasets folder or .arrow stream file as a RowStream. `column` picks the hook column. */
export function saelensCacheStream(
  path: string,
  opts: { column?: string; tokenIds?: boolean } = {},
): RowStream & { column: string; context: number } {
  const files = arrowFiles(path);
  // The schema of the first file fixes the row shape; every file must agree.
  const first = fileSource(files[0]);
  let col: ColumnInfo;
  try {
    col = activationColumn(readSchema(first).schema, files[0], opts.column);
    if (col.nested && col.context < 0) col = learnShape(files[0], col);
  } catch (e) {
    if (e instanceof ArrowIpcError) throw new SaelensCacheError(e.message);
    if (e instanceof TypeError || e instanceof RangeError) {
      throw new SaelensCacheError(`${files[0]}: corrupt Arrow data (${e.message})`);
    }
    throw e;
  } finally {
    first.close();
  }
  return {
    column: col.name,
    context: col.context,
    rowShape: [col.d],
    dtype: col.dtype,
    format: "saelens-cache",
    path,
    *open(): Generator<RowChunk> {
      for (const file of files) {
        const src = fileSource(file);
        try {
          const { schema, frame, frames } = readSchema(src);
          const c = activationColumn(schema, file, col.name);
          if (
            c.d >= 0 && (c.d !== col.d || (c.nested && c.context !== col.context)) ||
            c.dtype !== col.dtype
          ) throw new SaelensCacheError(`${file}: column ${col.name} differs from ${files[0]}'s`);
          for (const f of frames) {
            if (f.type !== "recordbatch") {
              throw new SaelensCacheError(
                `${file}: unexpected ${f.type} message at byte ${f.offset}`,
              );
            }
            const batch = decodeBatch(src, frame, f);
            yield rowsOf(batch, col, file, f.offset, opts.tokenIds === true);
          }
        } catch (e) {
          if (e instanceof ArrowIpcError) throw new SaelensCacheError(e.message);
          // apache-arrow's decoded objects can be malformed in ways no check above anticipated.
          if (e instanceof TypeError || e instanceof RangeError) {
            throw new SaelensCacheError(`${file}: corrupt Arrow data (${e.message})`);
          }
          throw e;
        } finally {
          src.close();
        }
      }
    },
  };
}

function learnShape(file: string, col: ColumnInfo): ColumnInfo {
  const src = fileSource(file);
  try {
    const { frame, frames } = readSchema(src);
    for (const f of frames) {
      if (f.type !== "recordbatch") continue;
      const data = decodeBatch(src, frame, f).getChild(col.name)!.data[0];
      if (data.length === 0) continue;
      const o = data.valueOffsets, inner = data.children[0].valueOffsets;
      return { ...col, context: o[1] - o[0], d: inner[o[0] + 1] - inner[o[0]] };
    }
    throw new SaelensCacheError(
      `${file}: column ${col.name} has no rows to learn its shape from, and no Array2D metadata`,
    );
  } finally {
    src.close();
  }
}

/** One record batch's activation rows (dataset rows × context positions), validated and widened. */
function rowsOf(
  batch: A.RecordBatch,
  col: ColumnInfo,
  file: string,
  at: number,
  withTokens: boolean,
): RowChunk {
  const where = `${file}: record batch at byte ${at}, column ${col.name}`;
  const data = batch.getChild(col.name)!.data[0];
  const n = batch.numRows;
  if (data.nullCount > 0) throw new SaelensCacheError(`${where}: ${data.nullCount} null rows`);
  let vals: ArrayLike<number>;
  if (!col.nested) {
    const child = data.children[0];
    const start = data.offset * col.d;
    vals = primitiveValues(child, where, file).subarray(start, start + n * col.d);
    if (vals.length !== n * col.d) {
      throw new SaelensCacheError(`${where}: ${vals.length} values for ${n} rows of ${col.d}`);
    }
  } else {
    // Offsets must describe exactly context lists of d values per row, contiguously.
    const outer = data.valueOffsets, inner = data.children[0].valueOffsets;
    const o0 = outer[data.offset];
    for (let i = 0; i <= n; i++) {
      if (outer[data.offset + i] !== o0 + i * col.context) {
        throw new SaelensCacheError(
          `${where}: row ${i - 1} does not hold ${col.context} positions (list offsets ${
            outer[data.offset + i - 1]
          }..${outer[data.offset + i]})`,
        );
      }
    }
    if (data.children[0].nullCount > 0) throw new SaelensCacheError(`${where}: null positions`);
    const i0 = inner[o0];
    for (let j = 0; j <= n * col.context; j++) {
      if (inner[o0 + j] !== i0 + j * col.d) {
        throw new SaelensCacheError(`${where}: position ${j - 1} does not hold ${col.d} values`);
      }
    }
    const leaf = data.children[0].children[0];
    const all = primitiveValues(leaf, where, file);
    vals = all.subarray(leaf.offset === 0 ? i0 : i0, i0 + n * col.context * col.d);
    if (vals.length !== n * col.context * col.d) {
      throw new SaelensCacheError(
        `${where}: ${vals.length} values for ${n}×${col.context} positions of ${col.d}`,
      );
    }
  }
  const chunk: RowChunk = { x: toF32(vals, col.dtype, f16ToF32), rows: n * col.context };
  if (withTokens && batch.getChild("token_ids")) {
    const t = batch.getChild("token_ids")!.data[0];
    const leaf = A.DataType.isFixedSizeList(t.type) ? t.children[0] : t.children[0];
    const start = A.DataType.isFixedSizeList(t.type)
      ? t.offset * col.context
      : t.valueOffsets[t.offset];
    const ids = primitiveValues(leaf, `${file}: token_ids`, file).subarray(
      start,
      start + n * col.context,
    );
    if (ids.length === n * col.context) chunk.tokenIds = Int32Array.from(ids);
  }
  return chunk;
}
