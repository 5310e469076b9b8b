/**
 * dictionary_learning's ActivationCache (and the crosscoder forks' paired caches): a folder per
 * submodule with `config.json` (shard_count, total_size, d_model, …) and, per shard i,
 * `shard_i.memmap` (raw row-major [n, d] values, no header) and `shard_i.meta` (JSON: shape and,
 * in newer versions, dtype; bfloat16 is stored as int16 words; no dtype means float32). Token
 * ids, when stored, are `tokens.pt` in the parent folder.
 *
 * Several folders read in lockstep give multi-input rows [L, d] (PairedActivationCache: two
 * models' activations for the same tokens; ActivationCacheTuple: several layers).
 * Everything is validated (sizes against the meta, the meta against the config) before reading;
 * rows are then read in bounded chunks.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { dirname, join } from "node:path";
import { f16ToF32 } from "../tensor/dtype.ts";
import type { RowChunk, RowStream } from "./row_stream.ts";
import { isTensorRef, parseTorch } from "./torch_pt.ts";
import { toF32 } from "./row_stream.ts";

export class MemmapCacheError extends Error {
  override name = "MemmapCacheError";
}

const DTYPES: Record<string, { itemsize: number; dtype: string }> = {
  float32: { itemsize: 4, dtype: "f32" },
  float16: { itemsize: 2, dtype: "f16" },
  bfloat16: { itemsize: 2, dtype: "bf16" },
  float64: { itemsize: 8, dtype: "f64" },
};

export interface MemmapShard {
  file: string;
  rows: number;
  bytes: number;
}

export interface MemmapCache {
  dir: string;
  d: number;
  dtype: string;
  itemsize: number;
  rows: number;
  shards: MemmapShard[];
  config: Record<string, unknown>;
}

const isInt = (v: unknown, min = 0): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= min;

function json(path: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new MemmapCacheError(`${path}: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new MemmapCacheError(`${path}: not a JSON object`);
  }
  return v as Record<string, unknown>;
}

export const isMemmapCache = (dir: string): boolean =>
  existsSync(join(dir, "config.json")) && existsSync(join(dir, "shard_0.memmap"));

/** Read and validate one cache folder's config and shard metadata (no activation data read). */
export function openMemmapCache(dir: string): MemmapCache {
  const cfgPath = join(dir, "config.json");
  const config = json(cfgPath);
  const count = config.shard_count;
  if (!isInt(count, 1) || count > 1_000_000) {
    throw new MemmapCacheError(
      `${cfgPath}: shard_count must be a positive integer, got ${JSON.stringify(count)}`,
    );
  }
  const shards: MemmapShard[] = [];
  let d = -1, dtypeName = "";
  for (let i = 0; i < count; i++) {
    const metaPath = join(dir, `shard_${i}.meta`), file = join(dir, `shard_${i}.memmap`);
    const meta = json(metaPath);
    const shape = meta.shape as unknown[];
    if (!Array.isArray(shape) || shape.length !== 2 || !isInt(shape[0]) || !isInt(shape[1], 1)) {
      throw new MemmapCacheError(
        `${metaPath}: shape must be [rows, d] of integers, got ${JSON.stringify(meta.shape)}`,
      );
    }
    const name = meta.dtype === undefined ? "float32" : String(meta.dtype).replace(/^torch\./, "");
    if (!DTYPES[name]) {
      throw new MemmapCacheError(
        `${metaPath}: dtype ${JSON.stringify(meta.dtype)} is not supported (${
          Object.keys(DTYPES).join(", ")
        })`,
      );
    }
    if (d >= 0 && (shape[1] !== d || name !== dtypeName)) {
      throw new MemmapCacheError(
        `${metaPath}: shard ${i} is [${shape}] ${name} but shard 0 is [·, ${d}] ${dtypeName}`,
      );
    }
    [d, dtypeName] = [shape[1] as number, name];
    const bytes = (shape[0] as number) * d * DTYPES[name].itemsize;
    let size: number;
    try {
      const fd = openSync(file, "r");
      size = fstatSync(fd).size;
      closeSync(fd);
    } catch (e) {
      throw new MemmapCacheError(`${file}: cannot open: ${(e as Error).message}`);
    }
    if (size !== bytes) {
      throw new MemmapCacheError(
        `${file}: ${size} bytes, but ${metaPath} says [${shape}] ${name} = ${bytes} bytes`,
      );
    }
    shards.push({ file, rows: shape[0] as number, bytes });
  }
  if (isInt(config.d_model) && config.d_model !== d) {
    throw new MemmapCacheError(
      `${cfgPath}: d_model ${config.d_model} but the shards hold rows of ${d}`,
    );
  }
  const rows = shards.reduce((a, s) => a + s.rows, 0);
  // Older versions left the last shard out of total_size; more rows than the shards hold is an error.
  if (config.total_size !== undefined && (!isInt(config.total_size) || config.total_size > rows)) {
    throw new MemmapCacheError(
      `${cfgPath}: total_size ${
        JSON.stringify(config.total_size)
      } exceeds the ${rows} rows of the shards`,
    );
  }
  const { itemsize, dtype } = DTYPES[dtypeName];
  return { dir, d, dtype, itemsize, rows, shards, config };
}

/** Token ids of a cache (tokens.pt beside it, one per row, in row order), as i32. */
export function cacheTokens(dir: string, rows: number): Int32Array {
  const p = tokensPath(dir);
  if (!p) {
    throw new MemmapCacheError(
      `${dir}: no tokens.pt in its parent folder (collect with store_tokens=True)`,
    );
  }
  // Read the storage directly (no tensor, so no backend is involved): a 1-D int64/int32 view.
  const v = parseTorch(readFileSync(p), p);
  if (!isTensorRef(v)) throw new MemmapCacheError(`${p}: expected one tensor of token ids`);
  const { storage, shape, stride, offset } = v.value;
  const ints = storage.type === "LongStorage"
    ? new BigInt64Array(storage.bytes.buffer, storage.bytes.byteOffset, storage.numel)
    : storage.type === "IntStorage"
    ? new Int32Array(storage.bytes.buffer, storage.bytes.byteOffset, storage.numel)
    : null;
  if (!ints || shape.length !== 1 || shape[0] !== rows) {
    throw new MemmapCacheError(
      `${p}: token ids are [${shape}] ${storage.type}, expected [${rows}] integers (LongStorage or IntStorage)`,
    );
  }
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const x = Number(ints[offset + i * stride[0]]);
    if (x > 2147483647 || x < -2147483648) {
      throw new MemmapCacheError(`${p}: token id ${i} is ${x}, outside the i32 range`);
    }
    out[i] = x;
  }
  return out;
}

/** Rows of one or several (lockstep) caches as a stream of f32 chunks of up to `chunkRows` rows. */
export function memmapCacheStream(
  dirs: string[],
  opts: { chunkRows?: number; tokenIds?: boolean } = {},
): RowStream & { caches: MemmapCache[] } {
  if (dirs.length === 0) throw new MemmapCacheError("memmapCacheStream: no cache folders given");
  const caches = dirs.map(openMemmapCache);
  const c0 = caches[0];
  for (const c of caches.slice(1)) {
    const same = c.d === c0.d && c.shards.length === c0.shards.length &&
      c.shards.every((s, i) => s.rows === c0.shards[i].rows);
    if (!same) {
      throw new MemmapCacheError(
        `${c.dir}: shards [${
          c.shards.map((s) => s.rows)
        }] of width ${c.d} do not line up with ${c0.dir}'s [${
          c0.shards.map((s) => s.rows)
        }] of width ${c0.d}; caches read together must hold the same tokens`,
      );
    }
  }
  const L = caches.length, d = c0.d;
  const chunkRows = opts.chunkRows ?? Math.max(1, Math.floor((4 << 20) / (L * d * c0.itemsize)));
  const tokens = opts.tokenIds ? cacheTokens(dirs[0], c0.rows) : null;
  return {
    caches,
    rowShape: L === 1 ? [d] : [L, d],
    rows: c0.rows,
    dtype: caches.every((c) => c.dtype === c0.dtype)
      ? c0.dtype
      : caches.map((c) => c.dtype).join(","),
    format: L === 1 ? "dictionary_learning-cache" : "dictionary_learning-cache (lockstep)",
    path: dirs.join(","),
    *open(): Generator<RowChunk> {
      let row = 0;
      for (let s = 0; s < c0.shards.length; s++) {
        const fds = caches.map((c) => openSync(c.shards[s].file, "r"));
        try {
          const raw = new Uint8Array(chunkRows * d * 8);
          for (let r = 0; r < c0.shards[s].rows; r += chunkRows) {
            const n = Math.min(chunkRows, c0.shards[s].rows - r);
            const out = new Float32Array(n * L * d);
            for (let l = 0; l < L; l++) {
              // Caches read together may differ in dtype (e.g. f32 and bf16 layers).
              const { itemsize, dtype } = caches[l];
              const want = n * d * itemsize, part = raw.subarray(0, want);
              for (let done = 0; done < want;) {
                const k = readSync(fds[l], part, done, want - done, r * d * itemsize + done);
                if (k <= 0) {
                  throw new MemmapCacheError(
                    `${caches[l].shards[s].file}: ended early at byte ${r * d * itemsize + done}`,
                  );
                }
                done += k;
              }
              const vals = decode(part, dtype);
              if (L === 1) out.set(vals);
              else {for (let i = 0; i < n; i++) {
                  out.set(vals.subarray(i * d, (i + 1) * d), (i * L + l) * d);
                }}
            }
            yield tokens
              ? { x: out, rows: n, tokenIds: tokens.subarray(row, row + n) }
              : { x: out, rows: n };
            row += n;
          }
        } finally {
          for (const fd of fds) closeSync(fd);
        }
      }
    },
  };
}

function decode(b: Uint8Array, dtype: string): Float32Array {
  const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  if (dtype === "f32") return new Float32Array(buf);
  if (dtype === "f64") return Float32Array.from(new Float64Array(buf));
  return toF32(new Uint16Array(buf), dtype, f16ToF32);
}

/** tokens.pt beside (in the parent of) a cache folder, if the cache stored tokens. */
export function tokensPath(dir: string): string | null {
  const p = join(dirname(dir.replace(/\/+$/, "")), "tokens.pt");
  return existsSync(p) ? p : null;
}
