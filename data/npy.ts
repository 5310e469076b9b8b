/**
 * NumPy's .npy format: magic "\x93NUMPY", version (1.0, 2.0 or 3.0), a little-endian header
 * length (u16 for 1.0, u32 after), a Python dict literal {'descr', 'fortran_order', 'shape'},
 * then the raw array. The dict is read by a small strict parser (never evaluated), and the whole
 * header is validated before the data is touched; every failure is an NpyError naming the file,
 * the field and the byte offset.
 */
import type { Backend } from "../tensor/backend.ts";
import { type DType, isFloat } from "../tensor/dtype.ts";
import { storageFrom } from "../tensor/ops/create.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { readFileBytes, writeFileAtomic } from "./atomic.ts";
import { adoptHostArray, gatherStrided, swapBytes, tensorBytes } from "./safetensors.ts";

export class NpyError extends Error {
  override name = "NpyError";
}

export interface NpyOptions {
  /** Read '<u2' / '>u2' arrays as raw bfloat16 words (NumPy has no bf16; people store the bits as uint16). */
  bf16?: boolean;
  /** Cast to this dtype after reading. */
  dtype?: DType;
  backend?: Backend;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** NumPy itself refuses headers over 10 000 characters; we allow more but stay bounded. */
const MAX_HEADER_BYTES = 1 << 20;
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---- a strict parser for the Python literal subset that headers use ----

type PyVal = string | boolean | null | number | { seq: "tuple" | "list"; items: PyVal[] } | {
  dict: Map<string, PyVal>;
};

class HeaderParser {
  i = 0;
  constructor(readonly s: string, readonly fail: (msg: string, pos: number) => never) {}

  ws(): void {
    while (this.i < this.s.length && " \t\r\n".includes(this.s[this.i])) this.i++;
  }

  expect(c: string): void {
    this.ws();
    if (this.s[this.i] !== c) {
      this.fail(`expected ${JSON.stringify(c)}, found ${this.found()}`, this.i);
    }
    this.i++;
  }

  found(): string {
    return this.i < this.s.length ? JSON.stringify(this.s[this.i]) : "the end of the header";
  }

  value(depth: number): PyVal {
    if (depth > 32) this.fail("nesting deeper than 32 levels", this.i);
    this.ws();
    const c = this.s[this.i];
    if (c === "'" || c === '"') return this.str();
    if (c === "{") return this.dict(depth);
    if (c === "(" || c === "[") return this.seq(depth);
    if (c === "-" || (c >= "0" && c <= "9")) return this.int();
    for (const [word, v] of [["True", true], ["False", false], ["None", null]] as const) {
      if (this.s.startsWith(word, this.i) && !/\w/.test(this.s[this.i + word.length] ?? "")) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(`unexpected ${this.found()}`, this.i);
  }

  str(): string {
    const q = this.s[this.i], start = this.i++;
    let out = "";
    for (;;) {
      if (this.i >= this.s.length || this.s[this.i] === "\n") {
        this.fail("unterminated string", start);
      }
      const c = this.s[this.i++];
      if (c === q) return out;
      if (c === "\\") {
        const e = this.s[this.i++];
        if (e !== "\\" && e !== "'" && e !== '"') {
          this.fail(`unsupported escape \\${e ?? ""} in a string`, this.i - 2);
        }
        out += e;
      } else out += c;
    }
  }

  int(): number {
    const m = /^-?[0-9]+L?/.exec(this.s.slice(this.i, this.i + 400));
    if (!m || /[.eEjJxX_]/.test(this.s[this.i + m[0].length] ?? "")) {
      return this.fail("only integers are allowed here", this.i);
    }
    this.i += m[0].length;
    // Python 2 wrote longs as 3L; huge values become unsafe numbers and fail the shape check.
    return Number(m[0].replace("L", ""));
  }

  seq(depth: number): PyVal {
    const open = this.s[this.i++], close = open === "(" ? ")" : "]";
    const items: PyVal[] = [];
    let comma = false;
    for (;;) {
      this.ws();
      if (this.s[this.i] === close) {
        this.i++;
        // (3) is just 3 in Python; only (3,) is a tuple.
        if (open === "(" && items.length === 1 && !comma) return items[0];
        return { seq: open === "(" ? "tuple" : "list", items };
      }
      if (items.length > 0 && !comma) {
        this.fail(`expected "," or ${JSON.stringify(close)}, found ${this.found()}`, this.i);
      }
      items.push(this.value(depth + 1));
      this.ws();
      comma = this.s[this.i] === ",";
      if (comma) this.i++;
    }
  }

  dict(depth: number): { dict: Map<string, PyVal> } {
    this.i++;
    const dict = new Map<string, PyVal>();
    let comma = false;
    for (;;) {
      this.ws();
      if (this.s[this.i] === "}") {
        this.i++;
        return { dict };
      }
      if (dict.size > 0 && !comma) this.fail(`expected "," or "}", found ${this.found()}`, this.i);
      const at = this.i;
      if (this.s[this.i] !== "'" && this.s[this.i] !== '"') {
        this.fail(`expected a string key, found ${this.found()}`, this.i);
      }
      const key = this.str();
      if (dict.has(key)) this.fail(`duplicate key ${JSON.stringify(key)}`, at);
      this.expect(":");
      dict.set(key, this.value(depth + 1));
      this.ws();
      comma = this.s[this.i] === ",";
      if (comma) this.i++;
    }
  }
}

function showPy(v: PyVal): string {
  if (v === null) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "string") return `'${v.length > 40 ? v.slice(0, 37) + "..." : v}'`;
  if (typeof v === "number") return String(v);
  if ("dict" in v) return "{...}";
  const inner = v.items.slice(0, 8).map(showPy).join(", ") + (v.items.length > 8 ? ", ..." : "");
  return v.seq === "tuple" ? `(${inner}${v.items.length === 1 ? "," : ""})` : `[${inner}]`;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
  return s;
}

type Host = Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array;

/** Column-major `src` of `shape` to row-major: walk C order, reading at Fortran strides. */
function fortranToC<T extends Host>(src: T, shape: readonly number[]): T {
  const nd = shape.length;
  const out = new (src.constructor as new (n: number) => T)(src.length);
  const strides = new Array<number>(nd);
  for (let d = 0, acc = 1; d < nd; d++) {
    strides[d] = acc;
    acc *= shape[d];
  }
  gatherStrided(src, out, shape, strides, 0);
  return out;
}

const SUPPORTED = new Set(["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "b1"]);

/** What an .npy header says: enough to read the data that follows, whole or in pieces. */
export interface NpyHeader {
  /** The dtype string as written ('<i4', '|u1', …) and its kind+size code ('i4'). */
  descr: string;
  code: string;
  itemsize: number;
  bigEndian: boolean;
  fortranOrder: boolean;
  shape: number[];
  /** Byte offset of the first data byte (prefix + header). */
  dataStart: number;
}

/**
 * Parse and validate an .npy header. `bytes` needs only to hold the file's first bytes up to the
 * end of the header (a streaming reader reads the 12-byte prefix, then the header length it gives).
 */
export function parseNpyHeader(bytes: Uint8Array, source = "<bytes>"): NpyHeader {
  const fail = (msg: string): never => {
    throw new NpyError(`${source}: ${msg}`);
  };
  const total = bytes.byteLength;
  for (let i = 0; i < MAGIC.length; i++) {
    if (i >= total) {
      fail(`file is ${total} bytes, too short for the 6-byte magic "\\x93NUMPY" at byte 0`);
    }
    if (bytes[i] !== MAGIC[i]) {
      fail(
        `not an npy file: byte ${i} is 0x${
          bytes[i].toString(16).padStart(2, "0")
        }, the magic "\\x93NUMPY" needs 0x${MAGIC[i].toString(16)}`,
      );
    }
  }
  if (total < 8) fail(`file is ${total} bytes, too short for the format version at bytes 6..8`);
  const major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3 || minor !== 0) {
    fail(`unsupported format version ${major}.${minor} (bytes 6..8); expected 1.0, 2.0 or 3.0`);
  }
  const lenBytes = major === 1 ? 2 : 4;
  const prefix = 8 + lenBytes;
  if (total < prefix) {
    fail(`file is ${total} bytes, too short for the ${lenBytes}-byte header length at byte 8`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, total);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  if (hlen > MAX_HEADER_BYTES) {
    fail(`header length ${hlen} (at byte 8) exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (hlen > total - prefix) {
    fail(
      `header length ${hlen} (at byte 8) points past the end of the file (${
        total - prefix
      } bytes follow)`,
    );
  }
  const hbytes = bytes.subarray(prefix, prefix + hlen);
  let text = "";
  if (major === 3) {
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(hbytes);
    } catch {
      fail(`header (bytes ${prefix}..${prefix + hlen}) is not valid UTF-8`);
    }
  } else text = latin1(hbytes); // versions 1 and 2 are latin-1 by definition

  // Positions in `text` are bytes for latin-1; for UTF-8 they are re-measured on the error path.
  const at = (pos: number) =>
    prefix + (major === 3 ? new TextEncoder().encode(text.slice(0, pos)).length : pos);
  const p = new HeaderParser(text, (msg, pos) => fail(`header: ${msg} at byte ${at(pos)}`));
  p.ws();
  if (text[p.i] !== "{") {
    fail(`header: expected a dict starting with "{", found ${p.found()} at byte ${at(p.i)}`);
  }
  const { dict } = p.dict(0);
  p.ws();
  if (p.i < text.length) fail(`header: unexpected ${p.found()} after the dict at byte ${at(p.i)}`);
  const keys = [...dict.keys()].sort();
  if (keys.join() !== "descr,fortran_order,shape") {
    fail(
      `header (byte ${prefix}): keys must be exactly 'descr', 'fortran_order', 'shape'; got ${
        keys.map((k) => `'${k}'`).join(", ") || "none"
      }`,
    );
  }
  const hdr = `header (bytes ${prefix}..${prefix + hlen})`;
  const descr = dict.get("descr")!,
    fortran = dict.get("fortran_order")!,
    shapeV = dict.get("shape")!;

  if (typeof descr !== "string") {
    fail(`${hdr}: descr ${showPy(descr)} is not supported (structured or unusual dtype)`);
  }
  const m = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr as string);
  const code = m ? m[2] + m[3] : "";
  if (!m || !SUPPORTED.has(code)) {
    fail(
      `${hdr}: unsupported descr ${
        showPy(descr)
      }; supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 b1 with byte order < > = or |`,
    );
  }
  const itemsize = Number(m![3]);
  if (m![1] === "|" && itemsize > 1) {
    fail(`${hdr}: descr ${showPy(descr)}: byte order "|" is only for 1-byte types`);
  }
  const bigEndian = m![1] === ">" || (m![1] === "=" && !HOST_LE);

  if (typeof fortran !== "boolean") {
    fail(`${hdr}: fortran_order must be True or False, got ${showPy(fortran)}`);
  }
  if (
    typeof shapeV !== "object" || shapeV === null || !("seq" in shapeV) || shapeV.seq !== "tuple"
  ) fail(`${hdr}: shape must be a tuple of integers, got ${showPy(shapeV)}`);
  const dims = (shapeV as { items: PyVal[] }).items;
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i];
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      fail(`${hdr}: shape[${i}] is ${showPy(d)}, not a non-negative integer below 2^53`);
    }
  }
  const shape = dims as number[];
  return {
    descr: descr as string,
    code,
    itemsize,
    bigEndian,
    fortranOrder: fortran as boolean,
    shape,
    dataStart: prefix + hlen,
  };
}

/** Parse an .npy file held in memory into a (C-order) tensor. */
export function parseNpy(bytes: Uint8Array, source = "<bytes>", opts: NpyOptions = {}): Tensor {
  const fail = (msg: string): never => {
    throw new NpyError(`${source}: ${msg}`);
  };
  const total = bytes.byteLength;
  const { descr, code, itemsize, bigEndian, fortranOrder: fortran, shape, dataStart } =
    parseNpyHeader(bytes, source);
  const have = total - dataStart;
  let need = shape.includes(0) ? 0n : BigInt(itemsize);
  let exact = true;
  for (const d of shape) {
    // Once past the file size the answer is "too big"; stop before the bigint gets huge.
    if (need > BigInt(have)) {
      exact = false;
      break;
    }
    need *= BigInt(d);
  }
  if (!exact || need !== BigInt(have)) {
    const shapeStr = showPy({ seq: "tuple", items: shape });
    fail(
      `data is ${have} bytes (file bytes ${dataStart}..${total}) but shape ${shapeStr} '${descr}' needs ${
        exact ? need : "at least " + need
      }`,
    );
  }

  // A fresh copy is aligned for typed arrays and safe to byte-swap in place.
  const raw = bytes.slice(dataStart);
  if (itemsize > 1 && bigEndian === HOST_LE) swapBytes(raw, itemsize);
  const buf = raw.buffer;
  const target = opts.dtype;
  let arr: Host, dtype: DType;
  switch (code) {
    case "f2":
      [arr, dtype] = [new Uint16Array(buf), "f16"];
      break;
    case "f4":
      [arr, dtype] = [new Float32Array(buf), "f32"];
      break;
    case "f8":
      [arr, dtype] = [new Float64Array(buf), "f64"];
      break;
    case "b1":
      for (let i = 0; i < raw.length; i++) raw[i] = raw[i] ? 1 : 0; // our kernels assume 0/1
      [arr, dtype] = [raw, "bool"];
      break;
    case "u2":
      [arr, dtype] = opts.bf16
        ? [new Uint16Array(buf), "bf16"]
        : [Int32Array.from(new Uint16Array(buf)), "i32"];
      break;
    case "i1":
      [arr, dtype] = [Int32Array.from(new Int8Array(buf)), "i32"];
      break;
    case "i2":
      [arr, dtype] = [Int32Array.from(new Int16Array(buf)), "i32"];
      break;
    case "i4":
      [arr, dtype] = [new Int32Array(buf), "i32"];
      break;
    case "u1":
      [arr, dtype] = [Int32Array.from(raw), "i32"];
      break;
    default: {
      // i8 / u4 may not fit i32: a float target takes them directly, otherwise range-check.
      const src = code === "u4" ? new Uint32Array(buf) : new BigInt64Array(buf);
      if (target && isFloat(target)) {
        const out = new Float64Array(src.length);
        for (let i = 0; i < src.length; i++) {
          const v = src[i];
          // f64 holds every integer only up to ±2^53; beyond it Number(v) would round silently.
          if (v > 9007199254740992 || v < -9007199254740992) {
            fail(
              `'${descr}' element ${i} (file byte ${
                dataStart + i * itemsize
              }) is ${v}, beyond ±2^53 where f64 cannot hold every integer`,
            );
          }
          out[i] = Number(v);
        }
        [arr, dtype] = [storageFrom(target, out), target];
        break;
      }
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        if (v > 2147483647 || v < -2147483648) {
          fail(
            `'${descr}' element ${i} (file byte ${
              dataStart + i * itemsize
            }) is ${v}, outside the i32 range; pass { dtype: "f64" } to read it as a float`,
          );
        }
        out[i] = Number(v);
      }
      [arr, dtype] = [out, "i32"];
    }
  }
  if (fortran && shape.length > 1) arr = fortranToC(arr, shape);
  const t0 = adoptHostArray(arr, dtype, shape, opts.backend);
  if (!target || target === dtype) return t0;
  const t1 = cast(t0, target);
  t0.dispose();
  return t1;
}

const DESCR: Record<DType, string> = {
  f32: "<f4",
  f64: "<f8",
  f16: "<f2",
  bf16: "<u2",
  i32: "<i4",
  bool: "|b1",
};

/**
 * The .npy bytes of a tensor, laid out as numpy.save does (version 1.0 unless the header needs
 * 2.0, header padded so the data starts on a 64-byte boundary). bf16 is written as '<u2' words.
 */
export async function serializeNpy(t: Tensor): Promise<Uint8Array> {
  const s = t.shape;
  const shape = s.length === 0 ? "()" : s.length === 1 ? `(${s[0]},)` : `(${s.join(", ")})`;
  let header = `{'descr': '${DESCR[t.dtype]}', 'fortran_order': False, 'shape': ${shape}, }`;
  // numpy leaves room for the first axis to grow to 21 digits so appends can rewrite in place.
  if (s.length > 0) header += " ".repeat(Math.max(0, 21 - String(s[0]).length));
  const hlen = header.length + 1; // + the final newline
  let lenBytes = 2;
  let pad = 64 - ((8 + lenBytes + hlen) % 64);
  if (hlen + pad > 0xffff) {
    lenBytes = 4;
    pad = 64 - ((8 + lenBytes + hlen) % 64);
  }
  const body = await tensorBytes(t);
  const start = 8 + lenBytes + hlen + pad;
  const out = new Uint8Array(start + body.byteLength);
  out.set(MAGIC, 0);
  out[6] = lenBytes === 2 ? 1 : 2;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (lenBytes === 2) dv.setUint16(8, hlen + pad, true);
  else dv.setUint32(8, hlen + pad, true);
  const h = 8 + lenBytes;
  for (let i = 0; i < header.length; i++) out[h + i] = header.charCodeAt(i); // ASCII only
  out.fill(0x20, h + header.length, start - 1);
  out[start - 1] = 0x0a;
  out.set(body, start);
  return out;
}

/** Read an .npy file (see parseNpy). */
export async function loadNpy(path: string, opts: NpyOptions = {}): Promise<Tensor> {
  return parseNpy(await readFileBytes(path), path, opts);
}

/** Write a tensor as .npy atomically. */
export async function saveNpy(path: string, t: Tensor): Promise<void> {
  await writeFileAtomic(path, await serializeNpy(t));
}
