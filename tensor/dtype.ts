/** Element types. f16 and bf16 are stored as raw 16-bit words; the CPU computes on them in f32. */
export type DType = "f32" | "f64" | "f16" | "bf16" | "i32" | "bool";

export const DTYPES: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32", "bool"];

/** The typed array a dtype is stored in on the host. */
export type StorageArray = Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array;

/** What `data()` returns: f16/bf16 are widened to f32 so callers never see raw bits. */
export type DataArray<D extends DType = DType> = D extends "f64" ? Float64Array
  : D extends "i32" ? Int32Array
  : D extends "bool" ? Uint8Array
  : Float32Array;

export function isFloat(d: DType): boolean {
  return d === "f32" || d === "f64" || d === "f16" || d === "bf16";
}

export function byteSize(d: DType): number {
  switch (d) {
    case "f64":
      return 8;
    case "f32":
    case "i32":
      return 4;
    case "f16":
    case "bf16":
      return 2;
    case "bool":
      return 1;
  }
}

export function allocStorage(d: DType, n: number): StorageArray {
  switch (d) {
    case "f32":
      return new Float32Array(n);
    case "f64":
      return new Float64Array(n);
    case "f16":
    case "bf16":
      return new Uint16Array(n);
    case "i32":
      return new Int32Array(n);
    case "bool":
      return new Uint8Array(n);
  }
}

export function assertDType(d: unknown, where: string): asserts d is DType {
  if (!DTYPES.includes(d as DType)) {
    throw new TypeError(
      `${where}: unknown dtype ${JSON.stringify(d)}; expected one of ${DTYPES.join(", ")}`,
    );
  }
}

// Promotion lattice: bool < i32 < {f16, bf16} < f32 < f64; f16 with bf16 meets at f32 (as in JAX).
const RANK: Record<DType, number> = { bool: 0, i32: 1, f16: 2, bf16: 2, f32: 3, f64: 4 };

export function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  if ((a === "f16" && b === "bf16") || (a === "bf16" && b === "f16")) return "f32";
  return RANK[a] >= RANK[b] ? a : b;
}

/** The dtype a JS number takes next to a tensor of dtype `d` (numbers are weakly typed, as in JAX). */
export function weakDType(value: number, d: DType): DType {
  if (isFloat(d)) return d;
  if (Number.isInteger(value)) return d === "bool" && (value === 0 || value === 1) ? "bool" : "i32";
  return "f32";
}

// ---- 16-bit float conversion (round to nearest even) ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

export function f32ToF16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rem > half || (rem === half && (m & 1))) m++;
    return sign | m; // a carry into the exponent field is the correct result
  }
  let m = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Storage words of a 16-bit dtype, decoded to f32. */
export function decode16(d: "f16" | "bf16", src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  if (d === "bf16") {
    new Uint32Array(out.buffer).set(src);
    const w = new Uint32Array(out.buffer);
    for (let i = 0; i < w.length; i++) w[i] = w[i] << 16;
  } else {
    for (let i = 0; i < src.length; i++) out[i] = f16ToF32(src[i]);
  }
  return out;
}

export function encode16(d: "f16" | "bf16", src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  const conv = d === "bf16" ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]);
  return out;
}
