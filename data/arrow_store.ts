/**
 * The activation store: a folder of Arrow IPC stream shards and a manifest.
 *
 *   manifest.json        rows, row shape, dtype, model, hook point, columns, statistics, and per
 *                        shard: file, rows, bytes, record batches, sha256
 *   shard-00000.arrow    one row per token: `activation` FixedSizeList<f32 | f16 | u16 (bf16)> of
 *                        the row size ([d] or [L, d] flattened), optional `token_id`,
 *                        `sequence_id`, `position` (int32). Schema metadata
 *                        "sparsecoder:store" (JSON: row_shape, dtype, model, hook_point) and
 *                        "sparsecoder:stats" (this shard's Welford state: count, mean, m2).
 *   progress.json        only while a resumable writer is unfinished: the shards so far, their
 *                        statistics and the writer's cursor, rewritten atomically after each shard
 *
 * Shards are written whole and renamed into place, the manifest last, so a reader never sees a
 * half-written store. A resumable writer (resumeStoreWriter) ends shards only between appends and
 * records its progress after each one, so a killed writer continues after its last whole shard. Reading streams one record batch at a time; each shard's sha256 is
 * computed from the bytes as they pass and checked when the shard ends (verifyStore checks all
 * of them up front).
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import * as A from "apache-arrow";
import { encode16, f16ToF32 } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { ensureDir, writeFileAtomic, writeJsonAtomic } from "./atomic.ts";
import {
  ArrowIpcError,
  type ByteSource,
  decodeBatch,
  fileSource,
  primitiveValues,
  readSchema,
} from "./arrow_ipc.ts";
import type { RowChunk, RowStream } from "./row_stream.ts";
import { toF32 } from "./row_stream.ts";
import {
  type Moments,
  welfordFinish,
  welfordFromJson,
  welfordInit,
  welfordMerge,
  welfordOf,
  type WelfordState,
  welfordToJson,
} from "./welford.ts";

export class ArrowStoreError extends Error {
  override name = "ArrowStoreError";
}

export type StoreDType = "f32" | "f16" | "bf16";
export const STORE_FORMAT = "sparsecoder.activations";
export const MANIFEST = "manifest.json";
export const PROGRESS = "progress.json";
const PROGRESS_FORMAT = "sparsecoder.activations.progress";
const EXTRA_COLUMNS = ["token_id", "sequence_id", "position"] as const;
type ExtraColumn = (typeof EXTRA_COLUMNS)[number];

export interface ShardEntry {
  file: string;
  rows: number;
  bytes: number;
  batches: number;
  sha256: string;
}

export interface Manifest {
  format: typeof STORE_FORMAT;
  version: 1;
  row_shape: number[];
  dtype: StoreDType;
  model: string | null;
  hook_point: string | null;
  columns: string[];
  rows: number;
  shards: ShardEntry[];
  /** Per-dimension mean and population variance over all rows (as stored, widened to f64). */
  stats: Moments;
  /** What the writer was given as `meta` (e.g. how the rows were harvested); absent otherwise. */
  meta?: Record<string, unknown>;
}

export interface StoreWriterOptions {
  /** Shape of one row: [d], or [L, d] for multi-input data. */
  rowShape: number[];
  dtype?: StoreDType;
  model?: string;
  hookPoint?: string;
  /** Which optional int32 columns every append provides. */
  columns?: ExtraColumn[];
  rowsPerBatch?: number;
  rowsPerShard?: number;
  /** Free-form JSON kept in the manifest as `meta`; a resumed writer must be given the same. */
  meta?: Record<string, unknown>;
  /**
   * Shards end only between appends (a shard is written once an append leaves rowsPerShard or
   * more rows pending, so it may pass rowsPerShard by less than one append), and progress.json
   * records, after each shard, the shards so far and the cursor of the last append in them.
   */
  resumable?: boolean;
}

/** An open store being written: append rows, then finish once. */
export interface StoreWriter {
  rowShape: number[];
  dtype: StoreDType;
  /**
   * Append rows: f32 values (rows × row size) or a tensor [rows, ...rowShape]. `cursor` (JSON) is
   * where the caller stands after these rows: a resumable writer records it with the shard.
   */
  append(x: Float32Array | Tensor, extras?: AppendExtras, cursor?: unknown): Promise<void>;
  /** Write the last shard and the manifest; returns the manifest. */
  finish(): Promise<Manifest>;
  /** Shards written so far (a resumed writer counts those it continued from). */
  shardCount(): number;
}

export interface AppendExtras {
  token_id?: Int32Array;
  sequence_id?: Int32Array;
  position?: Int32Array;
}

const BYTES: Record<StoreDType, number> = { f32: 4, f16: 2, bf16: 2 };
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function valueType(dtype: StoreDType): A.DataType {
  return dtype === "f32" ? new A.Float32() : dtype === "f16" ? new A.Float16() : new A.Uint16();
}

/** What every shard of one writer looks like: its resolved options and the Arrow schema parts. */
interface ShardLayout {
  rowShape: number[];
  dtype: StoreDType;
  columns: ExtraColumn[];
  /** Values per row (the product of rowShape). */
  size: number;
  rowsPerBatch: number;
  rowsPerShard: number;
  /** The activation column, then the optional int32 columns. */
  fields: A.Field[];
  /** Schema metadata "sparsecoder:store" (the same in every shard). */
  storeMeta: string;
}

/** Rows appended since the last shard was written: stored-dtype values and extra columns. */
interface PendingShard {
  values: (Float32Array | Uint16Array)[];
  extras: Record<string, Int32Array[]>;
  rows: number;
}

/** The writer's options checked and resolved; batch and shard sizes default to ~4 and ~128 MiB. */
function shardLayout(o: StoreWriterOptions): ShardLayout {
  const dtype = o.dtype ?? "f32";
  if (!(dtype in BYTES)) {
    throw new ArrowStoreError(
      `createStoreWriter: dtype must be f32, f16 or bf16, got ${JSON.stringify(dtype)}`,
    );
  }
  if (
    !Array.isArray(o.rowShape) || o.rowShape.length < 1 || o.rowShape.length > 2 ||
    !o.rowShape.every((v) => Number.isSafeInteger(v) && v > 0)
  ) {
    throw new ArrowStoreError(
      `createStoreWriter: rowShape must be [d] or [L, d] of positive integers, got ${
        JSON.stringify(o.rowShape)
      }`,
    );
  }
  const columns = [...(o.columns ?? [])];
  for (const c of columns) {
    if (!EXTRA_COLUMNS.includes(c)) {
      throw new ArrowStoreError(
        `createStoreWriter: unknown column ${JSON.stringify(c)}; optional columns are ${
          EXTRA_COLUMNS.join(", ")
        }`,
      );
    }
  }
  const size = prod(o.rowShape);
  const rowBytes = size * BYTES[dtype] + 4 * columns.length;
  const rowsPerBatch = o.rowsPerBatch ??
    Math.min(Math.max(1, Math.floor((4 << 20) / rowBytes)), o.rowsPerShard ?? Infinity);
  const rowsPerShard = o.rowsPerShard ??
    Math.max(rowsPerBatch, Math.floor((128 << 20) / rowBytes / rowsPerBatch) * rowsPerBatch);
  if (!(rowsPerBatch >= 1 && rowsPerShard >= rowsPerBatch)) {
    throw new ArrowStoreError(
      `createStoreWriter: need 1 <= rowsPerBatch (${rowsPerBatch}) <= rowsPerShard (${rowsPerShard})`,
    );
  }
  const activationField = new A.Field(
    "activation",
    new A.FixedSizeList(size, new A.Field("item", valueType(dtype), false)),
    false,
  );
  return {
    rowShape: o.rowShape,
    dtype,
    columns,
    size,
    rowsPerBatch,
    rowsPerShard,
    fields: [activationField, ...columns.map((c) => new A.Field(c, new A.Int32(), false))],
    storeMeta: JSON.stringify({
      row_shape: o.rowShape,
      dtype,
      model: o.model ?? null,
      hook_point: o.hookPoint ?? null,
    }),
  };
}

const emptyShard = (columns: ExtraColumn[]): PendingShard => ({
  values: [],
  extras: Object.fromEntries(columns.map((c) => [c, [] as Int32Array[]])),
  rows: 0,
});

/** Rows r..r+n of a shard as one record batch. */
function recordBatch(
  L: ShardLayout,
  schema: A.Schema,
  values: Float32Array | Uint16Array,
  extras: Record<string, Int32Array>,
  r: number,
  n: number,
): A.RecordBatch {
  const { size } = L;
  const child = A.makeData(
    {
      type: valueType(L.dtype),
      length: n * size,
      data: values.subarray(r * size, (r + n) * size),
    } as never,
  );
  const act = A.makeData({ type: L.fields[0].type, length: n, nullCount: 0, child });
  const extra = L.columns.map((c) =>
    A.makeData({ type: new A.Int32(), length: n, data: extras[c].subarray(r, r + n) })
  );
  return new A.RecordBatch(
    schema,
    A.makeData({
      type: new A.Struct(L.fields),
      length: n,
      nullCount: 0,
      children: [act, ...extra],
    }),
  );
}

/** One shard as an Arrow IPC stream of record batches, its statistics in the schema metadata. */
function encodeShard(
  L: ShardLayout,
  values: Float32Array | Uint16Array,
  extras: Record<string, Int32Array>,
  rows: number,
  stats: WelfordState,
): { bytes: Uint8Array; batches: number } {
  const schema = new A.Schema(
    L.fields,
    new Map([["sparsecoder:store", L.storeMeta], [
      "sparsecoder:stats",
      JSON.stringify(welfordToJson(stats)),
    ]]),
  );
  const w = new A.RecordBatchStreamWriter();
  let batches = 0;
  for (let r = 0; r < rows; r += L.rowsPerBatch) {
    w.write(recordBatch(L, schema, values, extras, r, Math.min(L.rowsPerBatch, rows - r)));
    batches++;
  }
  w.finish();
  return { bytes: w.toUint8Array(true), batches };
}

/** An append's rows as f32, checked against the row shape and the declared columns. */
async function appendedRows(
  L: ShardLayout,
  x: Float32Array | Tensor,
  extras: AppendExtras,
): Promise<{ data: Float32Array; rows: number }> {
  const data = x instanceof Float32Array ? x : await tensorRows(x, L.rowShape);
  if (data.length % L.size !== 0) {
    throw new ArrowStoreError(
      `append: ${data.length} values are not a whole number of rows of ${L.rowShape.join("×")}`,
    );
  }
  const rows = data.length / L.size;
  for (const c of L.columns) {
    const v = extras[c];
    if (!(v instanceof Int32Array) || v.length !== rows) {
      throw new ArrowStoreError(
        `append: column ${c} needs an Int32Array of ${rows} values, got ${
          v ? v.length + " values" : "none"
        }`,
      );
    }
  }
  for (const k of Object.keys(extras)) {
    if (!L.columns.includes(k as ExtraColumn)) {
      throw new ArrowStoreError(`append: column ${k} was not declared in the writer's columns`);
    }
  }
  return { data, rows };
}

/** Where a writer starts: empty, or the shards and statistics a resumed writer already has. */
interface WriterStart {
  shards: ShardEntry[];
  total: WelfordState;
}

/** The options a resumed writer must match, as recorded in progress.json. */
function progressOptions(L: ShardLayout, o: StoreWriterOptions): Record<string, unknown> {
  return {
    row_shape: L.rowShape,
    dtype: L.dtype,
    model: o.model ?? null,
    hook_point: o.hookPoint ?? null,
    columns: L.columns,
    rows_per_batch: L.rowsPerBatch,
    rows_per_shard: L.rowsPerShard,
    meta: o.meta ?? null,
  };
}

/**
 * A writer that takes rows in any amount and writes whole shards. Rows are converted to the
 * store's dtype (round to nearest even for f16/bf16) on append; statistics are computed from the
 * stored values, so they describe exactly what a reader gets back.
 */
export function createStoreWriter(dir: string, o: StoreWriterOptions): StoreWriter {
  const L = shardLayout(o);
  for (const f of [MANIFEST, PROGRESS]) {
    if (existsSync(join(dir, f))) {
      throw new ArrowStoreError(
        `createStoreWriter: ${dir} already holds a ${
          f === MANIFEST ? "store" : "store being written"
        } (${f}); choose a new folder`,
      );
    }
  }
  return openWriter(dir, L, o, { shards: [], total: welfordInit(L.size) });
}

/** What resumeStoreWriter found: the writer, and the cursor and rows of its last whole shard. */
export interface ResumedWriter {
  writer: StoreWriter;
  /** The cursor given with the last append of the last recorded shard (null: none yet). */
  cursor: unknown;
  rows: number;
  shards: number;
}

/**
 * Continue an unfinished resumable store (one with progress.json) after its last recorded shard:
 * the options (row shape, dtype, sizes, model, hook, columns, meta) must equal the recorded ones,
 * else an error names each difference. Files past the record (a shard written but not recorded,
 * temporary files of a killed write) are removed; the recorded shards' sizes are checked.
 */
export function resumeStoreWriter(dir: string, o: StoreWriterOptions): ResumedWriter {
  const L = shardLayout({ ...o, resumable: true });
  const path = join(dir, PROGRESS);
  let p: {
    format?: unknown;
    options?: Record<string, unknown>;
    shards?: ShardEntry[];
    stats?: { count: number; mean: number[]; m2: number[] };
    cursor?: unknown;
  };
  try {
    p = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new ArrowStoreError(`${path}: cannot read the progress record: ${(e as Error).message}`);
  }
  if (p?.format !== PROGRESS_FORMAT || !Array.isArray(p.shards) || !p.options || !p.stats) {
    throw new ArrowStoreError(
      `${path}: not a progress record (format ${
        JSON.stringify(PROGRESS_FORMAT)
      } with options, shards, stats)`,
    );
  }
  const want = progressOptions(L, o);
  const diffs = Object.keys(want).flatMap((k) => {
    const [was, now] = [JSON.stringify(p.options![k] ?? null), JSON.stringify(want[k])];
    return was === now ? [] : [`${k}: the store has ${was}, this run ${now}`];
  });
  if (diffs.length) {
    throw new ArrowStoreError(
      `${dir} was begun with other options; finish it with the same ones or choose a new folder (${
        diffs.join("; ")
      })`,
    );
  }
  const recorded = new Set(p.shards.map((s) => s.file));
  for (const s of p.shards) {
    const f = join(dir, s.file);
    const size = existsSync(f) ? statSync(f).size : -1;
    if (size !== s.bytes) {
      throw new ArrowStoreError(
        `${f}: ${size < 0 ? "missing" : `${size} bytes`}, but ${PROGRESS} records ${s.bytes} bytes`,
      );
    }
  }
  for (const f of readdirSync(dir)) {
    const stray = /^shard-\d+\.arrow$/.test(f) ? !recorded.has(f) : /^\..*\.tmp$/.test(f);
    if (stray) unlinkSync(join(dir, f));
  }
  const total = welfordFromJson(p.stats, L.size, `${path}: stats`);
  const rows = p.shards.reduce((a, s) => a + s.rows, 0);
  if (total.count !== rows) {
    throw new ArrowStoreError(
      `${path}: stats count ${total.count} but the shards hold ${rows} rows`,
    );
  }
  return {
    writer: openWriter(dir, L, { ...o, resumable: true }, { shards: p.shards, total }),
    cursor: p.cursor ?? null,
    rows,
    shards: p.shards.length,
  };
}

function openWriter(
  dir: string,
  L: ShardLayout,
  o: StoreWriterOptions,
  start: WriterStart,
): StoreWriter {
  const { dtype, columns, size } = L;
  const resumable = o.resumable === true;
  let pending = emptyShard(columns);
  const shards = [...start.shards];
  let total = start.total;
  let finished = false;
  let cursor: unknown = null;
  const ready = ensureDir(dir);
  ready.catch(() => {}); // surfaces where it is awaited (flush, finish), never as an unhandled rejection

  /** Write the pending rows as the next shard and add them to the running statistics. */
  async function flushShard(): Promise<void> {
    if (pending.rows === 0) return;
    const rows = pending.rows;
    const values = concatTyped(pending.values, rows * size);
    const extras = Object.fromEntries(
      columns.map((c) => [c, concatTyped(pending.extras[c], rows) as Int32Array]),
    );
    pending = emptyShard(columns);
    const f32 = dtype === "f32" ? values as Float32Array : toF32(values, dtype, f16ToF32);
    const stats = welfordOf(f32, rows, size);
    total = welfordMerge(total, stats);
    const { bytes, batches } = encodeShard(L, values, extras, rows, stats);
    const file = `shard-${String(shards.length).padStart(5, "0")}.arrow`;
    await ready;
    await writeFileAtomic(join(dir, file), bytes);
    shards.push({
      file,
      rows,
      bytes: bytes.length,
      batches,
      sha256: createHash("sha256").update(bytes).digest("hex"),
    });
    if (resumable) {
      await writeJsonAtomic(join(dir, PROGRESS), {
        format: PROGRESS_FORMAT,
        options: progressOptions(L, o),
        shards,
        stats: welfordToJson(total),
        cursor,
      });
    }
  }

  /** Queue rows r..r+n of an append in the stored dtype. */
  function push(data: Float32Array, extras: AppendExtras, r: number, n: number): void {
    const part = data.subarray(r * size, (r + n) * size);
    pending.values.push(dtype === "f32" ? part.slice() : encode16(dtype, part));
    for (const c of columns) pending.extras[c].push(extras[c]!.slice(r, r + n));
    pending.rows += n;
  }

  return {
    rowShape: o.rowShape,
    dtype,
    shardCount: () => shards.length,
    async append(x: Float32Array | Tensor, extras: AppendExtras = {}, at?: unknown): Promise<void> {
      if (finished) throw new ArrowStoreError(`append: the store ${dir} is already finished`);
      const { data, rows } = await appendedRows(L, x, extras);
      if (resumable) {
        // A shard holds whole appends: the cursor then says exactly where the shard ends.
        push(data, extras, 0, rows);
        cursor = at ?? null;
        if (pending.rows >= L.rowsPerShard) await flushShard();
        return;
      }
      // Fill the pending shard up to rowsPerShard, write it, go on with the rest.
      let r = 0;
      while (r < rows) {
        const n = Math.min(rows - r, L.rowsPerShard - pending.rows);
        push(data, extras, r, n);
        r += n;
        if (pending.rows === L.rowsPerShard) await flushShard();
      }
    },
    async finish(): Promise<Manifest> {
      if (finished) throw new ArrowStoreError(`finish: the store ${dir} is already finished`);
      finished = true;
      await flushShard();
      await ready;
      const manifest: Manifest = {
        format: STORE_FORMAT,
        version: 1,
        row_shape: o.rowShape,
        dtype,
        model: o.model ?? null,
        hook_point: o.hookPoint ?? null,
        columns: ["activation", ...columns],
        rows: shards.reduce((a, s) => a + s.rows, 0),
        shards,
        stats: welfordFinish(total),
        ...(o.meta ? { meta: o.meta } : {}),
      };
      await writeJsonAtomic(join(dir, MANIFEST), manifest);
      // The manifest is in place; the progress record is no longer needed (a reader ignores it).
      if (resumable) await rm(join(dir, PROGRESS), { force: true });
      return manifest;
    },
  };
}

async function tensorRows(x: Tensor, rowShape: number[]): Promise<Float32Array> {
  const tail = x.shape.slice(1);
  if (tail.length !== rowShape.length || tail.some((v, i) => v !== rowShape[i])) {
    throw new ArrowStoreError(
      `append: tensor of shape [${x.shape}] does not hold rows of shape [${rowShape}]`,
    );
  }
  const d = await x.data();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

function concatTyped<T extends Float32Array | Uint16Array | Int32Array>(parts: T[], n: number): T {
  if (parts.length === 1) return parts[0];
  const out = new (parts[0]?.constructor as new (n: number) => T ?? Float32Array)(n) as T;
  let at = 0;
  for (const p of parts) {
    out.set(p as never, at);
    at += p.length;
  }
  return out;
}

/** Write a whole array as a store (convenience over createStoreWriter). */
export async function writeStore(
  dir: string,
  x: Tensor | Float32Array,
  o: StoreWriterOptions & { extras?: AppendExtras },
): Promise<Manifest> {
  const w = createStoreWriter(dir, o);
  await w.append(x, o.extras);
  return await w.finish();
}

// ---- reading ----

const isInt = (v: unknown, min = 0) => typeof v === "number" && Number.isSafeInteger(v) && v >= min;

/** Read and validate manifest.json; every problem names the field. */
export function readManifest(dir: string): Manifest {
  const path = join(dir, MANIFEST);
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new ArrowStoreError(`${path}: cannot read the manifest: ${(e as Error).message}`);
  }
  const fail = (field: string, msg: string): never => {
    throw new ArrowStoreError(`${path}: ${field} ${msg}`);
  };
  if (typeof m !== "object" || m === null || Array.isArray(m)) fail("", "is not a JSON object");
  if (m.format !== STORE_FORMAT) {
    fail("format", `must be ${JSON.stringify(STORE_FORMAT)}, got ${JSON.stringify(m.format)}`);
  }
  if (m.version !== 1) {
    fail("version", `${JSON.stringify(m.version)} is not supported (this reader knows version 1)`);
  }
  const shape = m.row_shape as number[];
  if (
    !Array.isArray(shape) || shape.length < 1 || shape.length > 2 ||
    !shape.every((v) => isInt(v, 1))
  ) fail("row_shape", `must be [d] or [L, d] of positive integers, got ${JSON.stringify(shape)}`);
  if (typeof m.dtype !== "string" || !(m.dtype in BYTES)) {
    fail("dtype", `must be f32, f16 or bf16, got ${JSON.stringify(m.dtype)}`);
  }
  if (
    !Array.isArray(m.columns) || m.columns[0] !== "activation" ||
    !m.columns.slice(1).every((c) => EXTRA_COLUMNS.includes(c))
  ) {
    fail(
      "columns",
      `must be ["activation", ...${EXTRA_COLUMNS.join("|")}], got ${JSON.stringify(m.columns)}`,
    );
  }
  if (!Array.isArray(m.shards)) fail("shards", "must be an array");
  let rows = 0;
  (m.shards as ShardEntry[]).forEach((s, i) => {
    const f = `shards[${i}]`;
    if (typeof s !== "object" || s === null) fail(f, "is not an object");
    if (typeof s.file !== "string" || !/^[\w.-]+\.arrow$/.test(s.file) || s.file.startsWith(".")) {
      fail(
        `${f}.file`,
        `must be a plain file name ending in .arrow (no folders), got ${JSON.stringify(s.file)}`,
      );
    }
    for (const k of ["rows", "bytes", "batches"] as const) {
      if (!isInt(s[k])) {
        fail(`${f}.${k}`, `must be a non-negative integer, got ${JSON.stringify(s[k])}`);
      }
    }
    if (typeof s.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(s.sha256)) {
      fail(`${f}.sha256`, `must be 64 hex digits, got ${JSON.stringify(s.sha256)}`);
    }
    rows += s.rows;
  });
  if (!isInt(m.rows) || m.rows !== rows) {
    fail("rows", `is ${JSON.stringify(m.rows)} but the shards hold ${rows}`);
  }
  return m as unknown as Manifest;
}

export interface StoreReadOptions {
  /**
   * Check each shard's sha256 as it streams: true (default) on the first pass over each shard of
   * this stream only, "always" on every pass (epoch), false never.
   */
  verify?: boolean | "always";
  /** Also return token ids (`token_id`) with each chunk, when the store has them. */
  tokenIds?: boolean;
  /** Also return sequence ids (`sequence_id`), when the store has them. */
  sequenceIds?: boolean;
  /** Also return positions in the sequence (`position`), when the store has them. */
  positions?: boolean;
}

/** Each optional store column and the RowChunk field (and read option) that carries it. */
const CHUNK_FIELDS: [ExtraColumn, "tokenIds" | "sequenceIds" | "positions"][] = [
  ["token_id", "tokenIds"],
  ["sequence_id", "sequenceIds"],
  ["position", "positions"],
];

/** The store as a RowStream: shard by shard, record batch by record batch. */
export function storeStream(
  dir: string,
  opts: StoreReadOptions = {},
): RowStream & { manifest: Manifest } {
  const manifest = readManifest(dir);
  const verified = new Set<string>();
  return {
    manifest,
    rowShape: manifest.row_shape,
    rows: manifest.rows,
    dtype: manifest.dtype,
    format: "arrow-store",
    path: dir,
    *open() {
      for (const s of manifest.shards) {
        const verify = opts.verify === "always" || (opts.verify !== false && !verified.has(s.file));
        yield* readShard(join(dir, s.file), manifest, s, { ...opts, verify });
        if (verify) verified.add(s.file);
      }
    },
  };
}

function openShard(path: string) {
  try {
    return fileSource(path);
  } catch (e) {
    // A manifest naming a shard that is not there is the store's fault, not the IPC reader's.
    if (e instanceof ArrowIpcError) {
      throw new ArrowStoreError(`${e.message} (named in the store's ${MANIFEST})`);
    }
    throw e;
  }
}

function* readShard(
  path: string,
  m: Manifest,
  entry: ShardEntry,
  opts: StoreReadOptions,
): Generator<RowChunk> {
  const src = openShard(path);
  try {
    if (src.size !== entry.bytes) {
      throw new ArrowStoreError(
        `${path}: file is ${src.size} bytes but the manifest says ${entry.bytes}`,
      );
    }
    const verify = opts.verify ?? true;
    const hash = verify ? createHash("sha256") : null;
    const { schema, frame, frames } = readSchema(src);
    hash?.update(frame);
    const size = prod(m.row_shape);
    checkSchema(schema, m, path);
    let rows = 0, end = frame.length;
    for (const f of frames) {
      if (f.type !== "recordbatch") {
        throw new ArrowStoreError(
          `${path}: unexpected ${f.type} message at byte ${f.offset}; a store shard holds only record batches`,
        );
      }
      const batch = decodeBatch(src, frame, f, (b) => hash?.update(b));
      end = f.offset + f.headerBytes + f.bodyLength;
      const n = batch.numRows;
      if (rows + n > entry.rows) {
        throw new ArrowStoreError(
          `${path}: record batch at byte ${f.offset} brings the rows past the manifest's ${entry.rows}`,
        );
      }
      const x = activationValues(batch, size, m.dtype, path, f.offset);
      const chunk: RowChunk = { x, rows: n };
      for (const [col, field] of CHUNK_FIELDS) {
        if (opts[field] && m.columns.includes(col)) {
          chunk[field] = int32Column(batch, col, n, path, f.offset);
        }
      }
      rows += n;
      yield chunk;
    }
    if (rows !== entry.rows) {
      throw new ArrowStoreError(`${path}: holds ${rows} rows but the manifest says ${entry.rows}`);
    }
    if (hash) {
      const rest = new Uint8Array(src.size - end);
      src.readAt(end, rest);
      hash.update(rest);
      const got = hash.digest("hex");
      if (got !== entry.sha256) {
        throw new ArrowStoreError(
          `${path}: sha256 ${got} does not match the manifest's ${entry.sha256} (the shard changed or is corrupt)`,
        );
      }
    }
  } catch (e) {
    if (e instanceof ArrowIpcError) throw new ArrowStoreError(e.message);
    // apache-arrow's decoded objects can be malformed in ways no check above anticipated.
    if (e instanceof TypeError || e instanceof RangeError) {
      throw new ArrowStoreError(`${path}: corrupt shard (${e.message})`);
    }
    throw e;
  } finally {
    src.close();
  }
}

function checkSchema(schema: A.Schema, m: Manifest, path: string): void {
  const names = schema.fields.map((f) => f.name);
  if (names.join() !== m.columns.join()) {
    throw new ArrowStoreError(
      `${path}: schema columns [${names}] differ from the manifest's [${m.columns}]`,
    );
  }
  const t = schema.fields[0].type;
  const size = prod(m.row_shape);
  if (!(t instanceof A.FixedSizeList) || t.listSize !== size || !t.children?.[0]) {
    throw new ArrowStoreError(
      `${path}: column activation is ${t}, expected FixedSizeList<${size}>`,
    );
  }
  const want = valueType(m.dtype);
  if (!A.util.compareTypes(t.children[0].type, want)) {
    throw new ArrowStoreError(
      `${path}: activation values are ${
        t.children[0].type
      }, but the manifest's dtype ${m.dtype} needs ${want}`,
    );
  }
  for (const f of schema.fields.slice(1)) {
    if (!A.util.compareTypes(f.type, new A.Int32())) {
      throw new ArrowStoreError(`${path}: column ${f.name} is ${f.type}, expected Int32`);
    }
  }
}

/** The activation column of a store batch, widened to f32. */
function activationValues(
  batch: A.RecordBatch,
  size: number,
  dtype: StoreDType,
  path: string,
  at: number,
): Float32Array {
  const data = batch.getChildAt(0)!.data[0];
  if (data.nullCount > 0) {
    throw new ArrowStoreError(
      `${path}: record batch at byte ${at}: activation has ${data.nullCount} null rows`,
    );
  }
  const child = data.children[0];
  const start = data.offset * size;
  const vals = primitiveValues(child, "activation values", path).subarray(
    start,
    start + batch.numRows * size,
  );
  if (vals.length !== batch.numRows * size) {
    throw new ArrowStoreError(
      `${path}: record batch at byte ${at}: ${vals.length} activation values for ${batch.numRows} rows of ${size}`,
    );
  }
  return toF32(vals as ArrayLike<number>, dtype, f16ToF32);
}

function int32Column(
  batch: A.RecordBatch,
  name: string,
  n: number,
  path: string,
  at: number,
): Int32Array {
  const data = batch.getChild(name)!.data[0];
  const v = primitiveValues(data, name, path) as Int32Array;
  if (v.length !== n) {
    throw new ArrowStoreError(
      `${path}: record batch at byte ${at}: column ${name} has ${v.length} values for ${n} rows`,
    );
  }
  return v;
}

/** Check every shard's size and sha256 against the manifest (reads the whole store once). */
export function verifyStore(dir: string): { shards: number; bytes: number } {
  const m = readManifest(dir);
  let bytes = 0;
  const buf = new Uint8Array(8 << 20);
  for (const s of m.shards) {
    const path = join(dir, s.file);
    const src: ByteSource = openShard(path);
    try {
      if (src.size !== s.bytes) {
        throw new ArrowStoreError(
          `${path}: file is ${src.size} bytes but the manifest says ${s.bytes}`,
        );
      }
      const h = createHash("sha256");
      for (let p = 0; p < src.size; p += buf.length) {
        const part = buf.subarray(0, Math.min(buf.length, src.size - p));
        src.readAt(p, part);
        h.update(part);
      }
      const got = h.digest("hex");
      if (got !== s.sha256) {
        throw new ArrowStoreError(
          `${path}: sha256 ${got} does not match the manifest's ${s.sha256} (the shard changed or is corrupt)`,
        );
      }
      bytes += src.size;
    } finally {
      src.close();
    }
  }
  return { shards: m.shards.length, bytes };
}

/** Statistics of one shard, from its schema metadata (no data read). */
export function shardStats(dir: string, entry: ShardEntry, size: number): WelfordState {
  const path = join(dir, entry.file);
  const src = openShard(path);
  try {
    const { schema } = readSchema(src);
    const raw = schema.metadata.get("sparsecoder:stats");
    if (!raw) throw new ArrowStoreError(`${path}: schema metadata lacks sparsecoder:stats`);
    return welfordFromJson(JSON.parse(raw), size, `${path}: sparsecoder:stats`);
  } finally {
    src.close();
  }
}
