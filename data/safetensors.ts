/**
 * Our own reader and writer of the safetensors format: an 8-byte little-endian header length N,
 * N bytes of UTF-8 JSON ({name: {dtype, shape, data_offsets}, "__metadata__"?: {..}}), then the
 * data buffer (offsets are relative to its start). Files come from untrusted places, so the whole
 * header is validated before anything large is allocated, and every failure is a
 * SafetensorsError that names the file, the tensor, the field and the byte offset.
 */
import type { Backend } from "../tensor/backend.ts";
import type { DType, StorageArray } from "../tensor/dtype.ts";
import { isFloat } from "../tensor/dtype.ts";
import { fromStorage, storageFrom } from "../tensor/ops/create.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import { fmt } from "../tensor/shape.ts";
import { Tensor } from "../tensor/tensor.ts";
import { readFileBytes, writeFileAtomic } from "./atomic.ts";
import { decodeF8 } from "./float8.ts";

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

/** One tensor of a parsed file; `data` is a view into the file's bytes (no copy, maybe unaligned). */
export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data: Uint8Array;
  /** Set by parseSafetensors so that toTensor's errors can say which tensor of which file. */
  name?: string;
  source?: string;
  /** File byte offset of `data`, for error messages. */
  offset?: number;
}

export interface ParsedSafetensors {
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsEntry>;
}

const ITEMSIZE = new Map<string, number>([
  ["F64", 8],
  ["F32", 4],
  ["F16", 2],
  ["BF16", 2],
  ["I64", 8],
  ["I32", 4],
  ["I16", 2],
  ["I8", 1],
  ["U8", 1],
  ["BOOL", 1],
  ["U16", 2],
  ["U32", 4],
  ["U64", 8], // read-only: we never write these
  ["F8_E4M3", 1],
  ["F8_E5M2", 1], // read-only, decoded to f32 (data/float8.ts)
]);

const WRITE_DTYPE: Record<DType, string> = {
  f64: "F64",
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  i32: "I32",
  bool: "BOOL",
};

/** The same limit as the reference (Rust) implementation. */
const MAX_HEADER_BYTES = 100_000_000;

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Short, bounded rendering of a JSON value for error messages (a bad header may be huge). */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? s.slice(0, 57) + "..." : s;
}

/** itemsize·Π shape, exact; stops early once past `limit` (the caller only needs "too big"). */
function byteCount(
  shape: readonly number[],
  itemsize: number,
  limit: number,
): { bytes: bigint; exact: boolean } {
  if (shape.includes(0)) return { bytes: 0n, exact: true };
  let p = BigInt(itemsize);
  for (const d of shape) {
    p *= BigInt(d);
    if (p > BigInt(limit)) return { bytes: p, exact: false };
  }
  return { bytes: p, exact: true };
}

/** One tensor as the header describes it: where its bytes lie in the file. */
export interface SafetensorsHeaderEntry {
  dtype: string;
  shape: number[];
  /** File byte offsets [begin, end) of the tensor's data (the header's offsets plus 8 + N). */
  begin: number;
  end: number;
}

export interface ParsedSafetensorsHeader {
  metadata: Record<string, string>;
  /** In header order. */
  tensors: Map<string, SafetensorsHeaderEntry>;
  /** File byte offset of the data buffer (8 + N). */
  dataStart: number;
}

/** The header length N from a file's first 8 bytes, checked against the limit and the file size. */
export function safetensorsHeaderLength(first8: Uint8Array, total: number, source: string): number {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`);
  };
  if (total < 8 || first8.byteLength < 8) {
    fail(`file is ${total} bytes, too short for the 8-byte header length at byte 0`);
  }
  // Compared as a bigint: a u64 such as 2^60 does not survive conversion to a number.
  const n64 = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${n64} (u64 at byte 0) exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (n64 > BigInt(total - 8)) {
    fail(
      `header length ${n64} (u64 at byte 0) points past the end of the file (${
        total - 8
      } bytes follow it): the file is truncated or not safetensors`,
    );
  }
  return Number(n64);
}

/**
 * Validate a safetensors header without its data: `prefix` holds at least the file's first 8 + N
 * bytes and `total` is the file's size, so a reader can check every tensor before reading any.
 */
export function parseSafetensorsHeader(
  prefix: Uint8Array,
  total: number,
  source = "<bytes>",
): ParsedSafetensorsHeader {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`);
  };
  const n = safetensorsHeaderLength(prefix, total, source);
  const bufStart = 8 + n;
  if (prefix.byteLength < bufStart) {
    fail(`header (bytes 8..${bufStart}) was not read in full (${prefix.byteLength} bytes given)`);
  }
  const bufLen = total - bufStart;
  const span = `bytes 8..${bufStart}`;

  let text = "";
  try {
    // ignoreBOM keeps a BOM in the text, so it fails the "{" check below instead of being skipped.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      prefix.subarray(8, bufStart),
    );
  } catch {
    fail(`header (${span}) is not valid UTF-8`);
  }
  if (!text.startsWith("{")) {
    fail(
      `header (${span}) must be a JSON object starting with "{", got ${show(text.slice(0, 20))}`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(`header (${span}) is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail(`header (${span}) is not a JSON object`);
  }

  let metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsHeaderEntry>();
  const ranges: { begin: number; end: number; name: string }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = checkMetadata(raw, (m) => fail(`header (${span}): __metadata__${m}`));
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(`${where}: expected an object with dtype, shape and data_offsets, got ${show(raw)}`);
    }
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    const itemsize = typeof dtype === "string" ? ITEMSIZE.get(dtype) : undefined;
    if (itemsize === undefined) {
      fail(
        `${where}: unknown dtype ${show(dtype)}; expected one of ${
          [...ITEMSIZE.keys()].join(", ")
        }`,
      );
    }
    if (!Array.isArray(shape)) {
      fail(`${where}: shape must be an array of non-negative integers, got ${show(shape)}`);
    }
    const dims = shape as unknown[];
    for (let i = 0; i < dims.length; i++) {
      const d = dims[i];
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        fail(`${where}: shape[${i}] is ${show(d)}, not a non-negative integer below 2^53`);
      }
    }
    if (!Array.isArray(offs) || offs.length !== 2) {
      fail(`${where}: data_offsets must be [begin, end], got ${show(offs)}`);
    }
    const [begin, end] = offs as unknown[];
    for (const [k, v] of [["begin", begin], ["end", end]] as const) {
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        fail(`${where}: data_offsets ${k} is ${show(v)}, not a non-negative integer below 2^53`);
      }
    }
    const b = begin as number, e = end as number;
    if (b > e) fail(`${where}: data_offsets [${b}, ${e}] begin after they end`);
    if (e > bufLen) {
      fail(
        `${where}: data_offsets [${b}, ${e}] run past the end of the data buffer (${bufLen} bytes at file bytes ${bufStart}..${total}): ` +
          `the file is truncated or its header is wrong (expected at least ${
            bufStart + e
          } bytes, found ${total})`,
      );
    }
    const need = byteCount(dims as number[], itemsize!, bufLen);
    if (!need.exact || need.bytes !== BigInt(e - b)) {
      fail(
        `${where}: data_offsets [${b}, ${e}] hold ${e - b} bytes (file bytes ${bufStart + b}..${
          bufStart + e
        }) ` +
          `but shape ${fmt(dims as number[])} ${dtype} needs ${
            need.exact ? "" : "at least "
          }${need.bytes}`,
      );
    }
    if (e > b) ranges.push({ begin: b, end: e, name });
    tensors.set(name, {
      dtype: dtype as string,
      shape: dims as number[],
      begin: bufStart + b,
      end: bufStart + e,
    });
  }
  // Two tensors must not share bytes (empty tensors share none, wherever they point).
  ranges.sort((x, y) => x.begin - y.begin || x.end - y.end);
  for (let i = 1; i < ranges.length; i++) {
    const p = ranges[i - 1], c = ranges[i];
    if (c.begin < p.end) {
      fail(
        `tensor ${JSON.stringify(c.name)}: data_offsets [${c.begin}, ${c.end}] overlap tensor ${
          JSON.stringify(p.name)
        } at [${p.begin}, ${p.end}] (file byte ${bufStart + c.begin})`,
      );
    }
  }
  return { metadata, tensors, dataStart: bufStart };
}

/**
 * Validate and index a safetensors file held in memory. Nothing is copied: each entry's `data`
 * is a subarray of `bytes`. `source` (usually the path) prefixes every error message.
 */
export function parseSafetensors(bytes: Uint8Array, source = "<bytes>"): ParsedSafetensors {
  const header = parseSafetensorsHeader(bytes, bytes.byteLength, source);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, { dtype, shape, begin, end }] of header.tensors) {
    tensors.set(name, {
      dtype,
      shape,
      data: bytes.subarray(begin, end),
      name,
      source,
      offset: begin,
    });
  }
  return { metadata: header.metadata, tensors };
}

function checkMetadata(raw: unknown, fail: (m: string) => never): Record<string, string> {
  if (raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    return fail(` must be an object of strings, got ${show(raw)}`);
  }
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== "string") fail(`[${JSON.stringify(k)}] must be a string, got ${show(v)}`);
    out.push([k, v as string]);
  }
  // fromEntries defines own properties, so a key such as "__proto__" stays plain data.
  return Object.fromEntries(out);
}

/** A tensor that takes ownership of a fresh host array (no copy): the readers' name for fromStorage. */
export const adoptHostArray: typeof fromStorage = fromStorage;

/** A copy of `src` in a fresh (hence aligned) buffer, in host byte order. */
function alignedLE(src: Uint8Array, itemsize: number): ArrayBuffer {
  const copy = src.slice();
  if (!HOST_LE && itemsize > 1) swapBytes(copy, itemsize);
  return copy.buffer;
}

/** Reverse the bytes of each `itemsize`-byte element in place (endianness conversion). */
export function swapBytes(b: Uint8Array, itemsize: number): void {
  for (let i = 0; i < b.length; i += itemsize) {
    for (let lo = i, hi = i + itemsize - 1; lo < hi; lo++, hi--) {
      const t = b[lo];
      b[lo] = b[hi];
      b[hi] = t;
    }
  }
}

export interface ToTensorOptions {
  /** Cast to this dtype after reading (e.g. BF16 weights to f32). */
  dtype?: DType;
  backend?: Backend;
  /**
   * The entry's `data` is a fresh buffer of its own that the caller gives up (e.g. just read from
   * a file): on a little-endian host it becomes the tensor's storage without a copy.
   */
  adopt?: boolean;
}

/**
 * Materialise one entry as a Tensor. F32/F64/F16/BF16/I32/BOOL keep their type (f16/bf16 bits
 * exactly); the other integer types become i32, with a range check where they might not fit.
 * With a float dtype, U32/I64/U64 pass through f64 exactly (then round as any cast to f32 does);
 * a 64-bit value beyond ±2^53 is an error.
 */
export function toTensor(entry: SafetensorsEntry, opts: ToTensorOptions = {}): Tensor {
  const where = `${entry.source ?? "<bytes>"}: tensor ${JSON.stringify(entry.name ?? "?")}`;
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${where}: ${msg}`);
  };
  const { dtype, shape, data } = entry;
  const itemsize = ITEMSIZE.get(dtype) ?? fail(`unknown dtype ${show(dtype)}`);
  // Entries may be built by hand rather than by parseSafetensors, so the shape is checked again.
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`invalid shape ${show(shape)}`);
  }
  const need = byteCount(shape, itemsize, data.byteLength);
  if (!need.exact || need.bytes !== BigInt(data.byteLength)) {
    fail(`${data.byteLength} bytes of data do not fit shape ${fmt(shape)} ${dtype}`);
  }
  const target = opts.dtype;
  const backend = opts.backend;
  const make = (arr: StorageArray, d: DType): Tensor => {
    const t0 = adoptHostArray(arr, d, [...shape], backend);
    if (!target || target === d) return t0;
    const t1 = cast(t0, target);
    t0.dispose();
    return t1;
  };
  const owned = opts.adopt && HOST_LE && data.byteOffset === 0 &&
    data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
  const buf = owned ? data.buffer as ArrayBuffer : alignedLE(data, itemsize);
  switch (dtype) {
    case "F32":
      return make(new Float32Array(buf), "f32");
    case "F64":
      return make(new Float64Array(buf), "f64");
    case "F16":
      return make(new Uint16Array(buf), "f16");
    case "BF16":
      return make(new Uint16Array(buf), "bf16");
    case "I32":
      return make(new Int32Array(buf), "i32");
    case "BOOL": {
      const b = new Uint8Array(buf);
      for (let i = 0; i < b.length; i++) b[i] = b[i] ? 1 : 0; // our kernels assume 0/1
      return make(b, "bool");
    }
    case "I8":
      return make(Int32Array.from(new Int8Array(buf)), "i32");
    case "U8":
      return make(Int32Array.from(new Uint8Array(buf)), "i32");
    case "I16":
      return make(Int32Array.from(new Int16Array(buf)), "i32");
    case "U16":
      return make(Int32Array.from(new Uint16Array(buf)), "i32");
    case "F8_E4M3":
    case "F8_E5M2":
      return make(decodeF8(new Uint8Array(buf), dtype), "f32");
  }
  // U32/I64/U64 may not fit i32; a float target takes them directly, exactly up to 2^53.
  const src = dtype === "U32"
    ? new Uint32Array(buf)
    : dtype === "I64"
    ? new BigInt64Array(buf)
    : new BigUint64Array(buf);
  const at = (i: number) =>
    entry.offset === undefined
      ? `byte ${i * itemsize} of its data`
      : `file byte ${entry.offset + i * itemsize}`;
  if (target && isFloat(target)) {
    const out = new Float64Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = src[i];
      // Past 2^53 a double skips integers: an id would silently become its neighbour.
      if (v > 2 ** 53 || v < -(2 ** 53)) {
        fail(
          `${dtype} element ${i} is ${v}, beyond ±2^53 where f64 cannot hold every integer (${
            at(i)
          }); parseSafetensors gives the raw bytes`,
        );
      }
      out[i] = Number(v);
    }
    return make(storageFrom(target, out), target); // converted on the host: no f64 detour on backends without f64
  }
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (v > 2147483647 || v < -2147483648) {
      fail(
        `${dtype} element ${i} is ${v}, outside the i32 range (${
          at(i)
        }); pass { dtype: "f64" } to read it as a float`,
      );
    }
    out[i] = Number(v);
  }
  return make(out, "i32");
}

/**
 * A tensor's elements in row-major order as little-endian bytes. f16/bf16 are the exact stored
 * words: data() would decode them to f32, and a backend copy would canonicalise NaN payloads, so
 * the raw storage is read and strided on the host instead.
 */
export async function tensorBytes(t: Tensor): Promise<Uint8Array> {
  let arr: StorageArray;
  if (t.dtype === "f16" || t.dtype === "bf16") {
    const v = t.view();
    const all = await t.backend.read(v.buf, t.dtype, t.storage.bytes / 2) as Uint16Array;
    if (t.isContiguous()) arr = all.subarray(0, t.size);
    else {
      arr = new Uint16Array(t.size);
      gatherStrided(all, arr, t.shape, t.strides, t.offset);
    }
  } else {
    arr = await t.data() as StorageArray;
  }
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  if (!HOST_LE && arr.BYTES_PER_ELEMENT > 1) {
    const copy = bytes.slice();
    swapBytes(copy, arr.BYTES_PER_ELEMENT);
    return copy;
  }
  return bytes;
}

/** out[i] = src[element i of the strided view] in row-major order; for host arrays of any type. */
export function gatherStrided<T extends { [i: number]: number; length: number }>(
  src: T,
  out: T,
  shape: readonly number[],
  strides: readonly number[],
  offset: number,
): void {
  const nd = shape.length;
  const idx = new Array<number>(nd).fill(0);
  let pos = offset;
  for (let i = 0; i < out.length; i++) {
    out[i] = src[pos];
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      pos += strides[d];
      if (idx[d] < shape[d]) break;
      pos -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

/**
 * A safetensors file with the given tensors, sorted by name (deterministic bytes), packed with no
 * gaps (as the reference reader requires), header padded with spaces to a multiple of 8.
 */
export async function serializeSafetensors(
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<Uint8Array> {
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    if (name === "__metadata__") {
      throw new SafetensorsError(
        `serializeSafetensors: "__metadata__" is reserved and cannot name a tensor`,
      );
    }
    if (!(tensors[name] instanceof Tensor)) {
      throw new SafetensorsError(
        `serializeSafetensors: tensor ${JSON.stringify(name)} is not a Tensor`,
      );
    }
  }
  const blobs: Uint8Array[] = [];
  for (const name of names) blobs.push(await tensorBytes(tensors[name]));
  // The header is assembled as text so that any name (even "__proto__") is just a string.
  const parts: string[] = [];
  if (metadata) {
    const keys = Object.keys(metadata).sort();
    for (const k of keys) {
      if (typeof metadata[k] !== "string") {
        throw new SafetensorsError(
          `serializeSafetensors: metadata ${JSON.stringify(k)} must be a string, got ${
            show(metadata[k])
          }`,
        );
      }
    }
    parts.push(
      `"__metadata__":{${
        keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(",")
      }}`,
    );
  }
  let pos = 0;
  names.forEach((name, i) => {
    const t = tensors[name];
    const end = pos + blobs[i].byteLength;
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"${WRITE_DTYPE[t.dtype]}","shape":[${
        t.shape.join(",")
      }],"data_offsets":[${pos},${end}]}`,
    );
    pos = end;
  });
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const n = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + n + pos);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + n);
  let at = 8 + n;
  for (const b of blobs) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}

/** Read a safetensors file into tensors (see toTensor for the dtype mapping). */
export async function loadSafetensors(
  path: string,
  opts: ToTensorOptions = {},
): Promise<{ metadata: Record<string, string>; tensors: Record<string, Tensor> }> {
  const { metadata, tensors } = parseSafetensors(await readFileBytes(path), path);
  const out: [string, Tensor][] = [];
  try {
    for (const [name, entry] of tensors) out.push([name, toTensor(entry, opts)]);
  } catch (e) {
    for (const [, t] of out) t.dispose();
    throw e;
  }
  return { metadata, tensors: Object.fromEntries(out) };
}

/** Write tensors to `path` atomically (a reader never sees a half-written file). */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, await serializeSafetensors(tensors, metadata));
}
