/**
 * WGSL building blocks shared by the kernel generators: how each dtype is stored and computed,
 * rounding to 16-bit floats, and the special functions WGSL lacks (erf, a JS-exact pow).
 * NaN tests use the bits: shader compilers may fold `x != x` to false.
 */
import type { DType } from "../dtype.ts";

/** The WGSL type a dtype is computed in on the device (16-bit floats compute in f32). */
export function wty(d: DType): "f32" | "i32" | "u32" {
  if (d === "f64") {
    throw new TypeError(
      "webgpu: f64 is not supported (WGSL has no 64-bit floats); use f32, or the cpu backend for f64",
    );
  }
  return d === "i32" ? "i32" : d === "bool" ? "u32" : "f32";
}

/** Whether f16 tensors are stored as WGSL f16 (the device has `shader-f16`); one device per process. */
let half = false;
export function setHalfStorage(on: boolean): void {
  half = on;
}

/** The WGSL type a dtype is stored in: f16 as f16 where the device allows, else one 32-bit word. */
export function sty(d: DType): "f32" | "i32" | "u32" | "f16" {
  return d === "f16" && half ? "f16" : wty(d);
}

/** Bytes per element on the device. */
export const elemBytes = (d: DType): number => (sty(d) === "f16" ? 2 : 4);

/** A loaded element `e` of dtype `d` as its computed type. */
export const ld = (d: DType, e: string): string => (sty(d) === "f16" ? `f32(${e})` : e);

/** Expression converting a value `v` of computed type `from` into storable `to` (rounded). */
export function convert(v: string, from: DType, to: DType): string {
  const ft = wty(from), tt = wty(to);
  if (to === "bool") {
    return ft === "f32"
      ? `select(0u, 1u, isnan_(${v}) || ${v} != 0.0)`
      : `select(0u, 1u, ${v} != ${ft}(0))`;
  }
  if (tt === "i32") return ft === "f32" ? `select(i32(${v}), 0, isnan_(${v}))` : `i32(${v})`;
  // to a float
  const f = ft === "f32" ? v : `f32(${v})`;
  // rf16 rounds to nearest even first, so the conversion to WGSL f16 is exact.
  return to === "f16"
    ? (sty(to) === "f16" ? `f16(rf16(${f}))` : `rf16(${f})`)
    : to === "bf16"
    ? `rbf16(${f})`
    : f;
}

/** Rounds an f32 result to f16 or bf16 (nearest even), as the CPU backend stores them. */
export const ROUND16 = /* wgsl */ `
// NaN and infinity from private variables: Tint rejects constant expressions that evaluate to them.
var<private> BITS_NAN: u32 = 0x7fc00000u;
var<private> BITS_INF: u32 = 0x7f800000u;
fn nan_() -> f32 { return bitcast<f32>(BITS_NAN); }
fn inf_() -> f32 { return bitcast<f32>(BITS_INF); }
fn isnan_(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn rbf16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  if (isnan_(x)) { return bitcast<f32>((b | 0x400000u) & 0xffff0000u); }
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}
fn rf16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let sgn = b & 0x80000000u;
  let ex = (b >> 23u) & 0xffu;
  var mant = b & 0x7fffffu;
  if (ex == 0xffu) { return x; }
  let e = i32(ex) - 112;
  let inf = bitcast<f32>(sgn | 0x7f800000u);
  if (e >= 31) { return inf; }
  var h: u32;
  if (e <= 0) {
    if (e < -10) { return bitcast<f32>(sgn); }
    mant = mant | 0x800000u;
    let sh = u32(14 - e);
    let half = 1u << (sh - 1u);
    let rem = mant & ((1u << sh) - 1u);
    var m = mant >> sh;
    if (rem > half || (rem == half && (m & 1u) == 1u)) { m = m + 1u; }
    h = m;
  } else {
    var m = mant >> 13u;
    var ee = u32(e);
    let rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (m & 1u) == 1u)) {
      m = m + 1u;
      if (m == 0x400u) { m = 0u; ee = ee + 1u; if (ee >= 31u) { return inf; } }
    }
    h = (ee << 10u) | m;
  }
  let v = unpack2x16float(h).x;
  return select(v, -v, sgn != 0u);
}
`;

/** erf by the same series / continued fraction as the CPU's special.ts, to f32 accuracy. */
export const SPECIAL = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  if (isnan_(x)) { return x; }
  let ax = abs(x);
  var r: f32;
  if (ax < 3.0) {
    let x2 = ax * ax;
    var term = ax;
    var s = ax;
    for (var n = 0; n < 80; n++) {
      term = term * (2.0 * x2) / f32(2 * n + 3);
      s = s + term;
      if (term < s * 1e-9) { break; }
    }
    r = 1.1283791670955126 * exp(-x2) * s;
  } else if (ax > 6.0) {
    r = 1.0;
  } else {
    var f = ax;
    for (var n = 60; n >= 1; n--) { f = ax + (f32(n) / 2.0) / f; }
    r = 1.0 - exp(-ax * ax) / (1.7724538509055159 * f);
  }
  return select(r, -r, x < 0.0);
}
fn tanh_(x: f32) -> f32 {
  if (isnan_(x)) { return x; }
  return tanh(clamp(x, -15.0, 15.0));
}
fn isint_(b: f32) -> bool { return floor(b) == b && abs(b) < 3.4e38; }
fn pow_(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (isnan_(a) || isnan_(b)) { return nan_(); }
  if (a == 0.0) {
    let odd = isint_(b) && abs(b) < 16777216.0 && (i32(b) & 1) == 1;
    if (b > 0.0) { return select(0.0, a, odd); }
    let inf = inf_();
    return select(inf, select(inf, -inf, bitcast<u32>(a) == 0x80000000u), odd);
  }
  // log2 of a subnormal from its integer mantissa: llvmpipe's log2 stops near -127 there.
  let ab = bitcast<u32>(a) & 0x7fffffffu;
  let la = select(log2(abs(a)), log2(f32(ab)) - 149.0, ab < 0x00800000u);
  let r = exp2(b * la);
  if (a > 0.0) { return r; }
  if (!isint_(b)) { return nan_(); }
  let odd = abs(b) < 16777216.0 && (i32(b) & 1) == 1;
  return select(r, -r, odd);
}
`;

/** Declarations of storage bindings: inputs read-only, then the outputs, then `prm` (u32 parameters). */
export function bindings(inputs: DType[], outputs: DType[], atomicOut = false): string {
  const lines: string[] = [];
  if ([...inputs, ...outputs].some((d) => sty(d) === "f16")) lines.push("enable f16;");
  inputs.forEach((d, i) =>
    lines.push(`@group(0) @binding(${i}) var<storage, read> in${i}: array<${sty(d)}>;`)
  );
  outputs.forEach((d, i) => {
    const ty = atomicOut ? `atomic<${d === "i32" ? "i32" : "u32"}>` : sty(d);
    lines.push(
      `@group(0) @binding(${inputs.length + i}) var<storage, read_write> out${i}: array<${ty}>;`,
    );
  });
  lines.push(
    `@group(0) @binding(${inputs.length + outputs.length}) var<storage, read> prm: array<u32>;`,
  );
  return lines.join("\n") + "\n" + ROUND16;
}
