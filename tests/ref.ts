/**
 * Plain-JS reference arrays and fast-check generators shared by the op tests. References are
 * written index-by-index, deliberately unlike the library's strided kernels.
 */
import fc from "fast-check";
import { readFileSync } from "node:fs";
import * as t from "../mod.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { test } from "./harness.ts";

export type Tensor = t.Tensor;

/** A row-major array of plain numbers. */
export interface Nd {
  shape: number[];
  data: number[];
}

export const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

export function ravel(idx: readonly number[], shape: readonly number[]): number {
  let i = 0;
  for (let d = 0; d < shape.length; d++) i = i * shape[d] + idx[d];
  return i;
}

export function fromFn(shape: readonly number[], f: (idx: number[]) => number): Nd {
  const n = size(shape);
  const data = new Array<number>(n);
  for (let i = 0; i < n; i++) data[i] = f(unravel(i, shape));
  return { shape: [...shape], data };
}

export function at(a: Nd, idx: readonly number[]): number {
  return a.data[ravel(idx, a.shape)];
}

export function bshape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const da = a[a.length - n + i] ?? 1, db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`ref: cannot broadcast ${a} and ${b}`);
    return da === 1 ? db : da;
  });
}

/** Element of `a` seen at `idx` of a (larger) broadcast shape. */
export function bat(a: Nd, idx: readonly number[]): number {
  const lead = idx.length - a.shape.length;
  return at(a, a.shape.map((d, i) => (d === 1 ? 0 : idx[lead + i])));
}

export const map = (a: Nd, f: (x: number) => number): Nd => ({
  shape: [...a.shape],
  data: a.data.map(f),
});

export function zip(a: Nd, b: Nd, f: (x: number, y: number) => number): Nd {
  return fromFn(bshape(a.shape, b.shape), (i) => f(bat(a, i), bat(b, i)));
}

export const normAx = (a: number, r: number): number => (a < 0 ? a + r : a);

/** Reduce `axes` (normalised or negative; undefined = all) with `f` over each line's values. */
export function reduceRef(
  a: Nd,
  axes: number[] | undefined,
  keepdims: boolean,
  f: (vals: number[]) => number,
): Nd {
  const r = a.shape.length;
  const ax = axes === undefined ? [...Array(r).keys()] : axes.map((x) => normAx(x, r));
  const outShape = a.shape.filter((_, d) => !ax.includes(d));
  const groups = new Map<number, number[]>();
  for (let i = 0; i < a.data.length; i++) {
    const idx = unravel(i, a.shape).filter((_, d) => !ax.includes(d));
    const k = ravel(idx, outShape);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(a.data[i]);
  }
  const out = fromFn(outShape, (idx) => f(groups.get(ravel(idx, outShape)) ?? []));
  if (keepdims) out.shape = a.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  return out;
}

/** Lines along `axis`, each with a setter, for scans/softmax/topk references. */
export function alongAxis(
  a: Nd,
  axis: number,
  f: (line: number[]) => number[],
  outLen?: number,
): Nd {
  const r = a.shape.length, ax = normAx(axis, r);
  const n = a.shape[ax], m = outLen ?? n;
  const outShape = a.shape.map((d, i) => (i === ax ? m : d));
  const out: Nd = { shape: outShape, data: new Array(size(outShape)).fill(0) };
  const rest = a.shape.filter((_, i) => i !== ax);
  for (let o = 0; o < size(rest); o++) {
    const ri = unravel(o, rest);
    const idxAt = (j: number) => [...ri.slice(0, ax), j, ...ri.slice(ax)];
    const line = Array.from({ length: n }, (_, j) => at(a, idxAt(j)));
    const res = f(line);
    for (let j = 0; j < m; j++) out.data[ravel(idxAt(j), outShape)] = res[j];
  }
  return out;
}

export function transposeRef(a: Nd, perm: number[]): Nd {
  return fromFn(perm.map((p) => a.shape[p]), (idx) => {
    const src = new Array<number>(perm.length);
    perm.forEach((p, i) => (src[p] = idx[i]));
    return at(a, src);
  });
}

/** Matmul of 2-D-or-more arrays (batch dims broadcast); no 1-D promotion. */
export function matmulRef(a: Nd, b: Nd): Nd {
  const ra = a.shape.length, rb = b.shape.length;
  const M = a.shape[ra - 2], K = a.shape[ra - 1], N = b.shape[rb - 1];
  const batch = bshape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  return fromFn([...batch, M, N], (idx) => {
    const bi = idx.slice(0, -2), i = idx[idx.length - 2], j = idx[idx.length - 1];
    let s = 0;
    for (let k = 0; k < K; k++) s += bat(a, [...bi, i, k]) * bat(b, [...bi, k, j]);
    return s;
  });
}

// ---- special functions, independent of tensor/cpu/special.ts ----

/** erf by its Maclaurin series (|x| < 4: cancellation costs ≤ 6 digits, ~1e-10 left); ±1 beyond,
 * where 1 − erf(4) ≈ 1.5e-8 is below the 1e-7 the tests ask for. */
export function erfRef(x: number): number {
  if (Number.isNaN(x)) return x;
  if (Math.abs(x) >= 4) return Math.sign(x);
  let term = x, s = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    s += add;
    if (Math.abs(add) < 1e-17 * Math.abs(s) && n > 5) break;
  }
  return (2 / Math.sqrt(Math.PI)) * s;
}

/** Round to `mant` explicit mantissa bits, round-half-even, with subnormals below 2^minExp. */
function roundBits(x: number, mant: number, minExp: number, max: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  let e = Math.floor(Math.log2(Math.abs(x)));
  if (2 ** e > Math.abs(x)) e--;
  if (2 ** (e + 1) <= Math.abs(x)) e++;
  const ulp = 2 ** (Math.max(e, minExp) - mant);
  const q = x / ulp;
  let r = Math.floor(q);
  const d = q - r;
  if (d > 0.5 || (d === 0.5 && r % 2 !== 0)) r++;
  const v = r * ulp;
  if (Math.abs(v) > max) return x > 0 ? Infinity : -Infinity;
  return v === 0 ? (x < 0 ? -0 : 0) : v;
}

/** The f16 / bf16 value a number is stored as (conversion goes through f32, as the library's). */
export const f16Ref = (x: number): number => roundBits(Math.fround(x), 10, -14, 65504);
export const bf16Ref = (x: number): number =>
  roundBits(Math.fround(x), 7, -126, (2 - 2 ** -7) * 2 ** 127);

// ---- tensors ----

export const FLOATS = ["f32", "f64"] as const;

export function T(a: Nd, dtype: t.DType = "f64"): Tensor {
  return t.tensor(Float64Array.from(a.data), { shape: a.shape, dtype });
}

export function nd(x: Tensor): Nd {
  return { shape: [...x.shape], data: Array.from(x.dataSync()) };
}

/** Tolerances per dtype for results computed in the dtype's precision. */
export function tol(dtype: t.DType, scale = 1): { rtol: number; atol: number } {
  return dtype === "f64"
    ? { rtol: 1e-12 * scale, atol: 1e-12 * scale }
    : { rtol: 2e-6 * scale, atol: 1e-6 * scale };
}

/** Compare a tensor against a reference: shape exactly, values within tolerance. */
export function expectNd(
  got: Tensor,
  want: Nd,
  opts: { rtol?: number; atol?: number; msg?: string; dtype?: t.DType } = {},
): void {
  const pre = opts.msg ? `${opts.msg}: ` : "";
  if (got.shape.join() !== want.shape.join()) {
    throw new Error(`${pre}shape [${got.shape}] vs expected [${want.shape}]`);
  }
  if (opts.dtype && got.dtype !== opts.dtype) {
    throw new Error(`${pre}dtype ${got.dtype} vs expected ${opts.dtype}`);
  }
  const g = got.dataSync();
  const { rtol, atol } = { ...tol(got.dtype), ...opts };
  for (let i = 0; i < want.data.length; i++) {
    // An f32 result is the reference rounded to f32 (which also overflows like it).
    const a = g[i], e = got.dtype === "f32" ? Math.fround(want.data[i]) : want.data[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!Number.isFinite(e) && a === e) continue;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      throw new Error(
        `${pre}element ${i} (index [${
          unravel(i, want.shape)
        }] of [${want.shape}]): got ${a}, expected ${e}`,
      );
    }
  }
}

// ---- generators ----

export interface ShapeOpts {
  minRank?: number;
  maxRank?: number;
  minDim?: number;
  maxDim?: number;
}

/** Shapes with small dims; 0 appears when minDim is 0, 1 often. */
export function shapeArb(o: ShapeOpts = {}): fc.Arbitrary<number[]> {
  const dim = fc.oneof(
    { weight: 1, arbitrary: fc.constant(Math.max(1, o.minDim ?? 1)) },
    { weight: 4, arbitrary: fc.integer({ min: o.minDim ?? 1, max: o.maxDim ?? 4 }) },
  );
  return fc.array(dim, { minLength: o.minRank ?? 0, maxLength: o.maxRank ?? 3 });
}

export interface ValueOpts {
  min?: number;
  max?: number;
  /** Keep |x| at least this far from 0 (for kinks). */
  awayFromZero?: number;
  /** Integers only. */
  int?: boolean;
}

function valueArb(v: ValueOpts): fc.Arbitrary<number> {
  const lo = v.min ?? -3, hi = v.max ?? 3;
  if (v.int) return fc.integer({ min: Math.ceil(lo), max: Math.floor(hi) });
  const base = fc.double({ min: lo, max: hi, noNaN: true, noDefaultInfinity: true });
  const away = v.awayFromZero;
  return away ? base.filter((x) => Math.abs(x) >= away) : base;
}

export function ndOf(shape: readonly number[], v: ValueOpts = {}): fc.Arbitrary<Nd> {
  const n = size(shape);
  return fc.array(valueArb(v), { minLength: n, maxLength: n }).map((data) => ({
    shape: [...shape],
    data,
  }));
}

export function ndArb(s: ShapeOpts = {}, v: ValueOpts = {}): fc.Arbitrary<Nd> {
  return shapeArb(s).chain((shape) => ndOf(shape, v));
}

/** Distinct values on a 0.1 grid (no ties, gaps far above finite-difference steps). */
export function distinctNd(shape: readonly number[]): fc.Arbitrary<Nd> {
  const n = size(shape);
  return fc.uniqueArray(fc.integer({ min: -60, max: 60 }), { minLength: n, maxLength: n })
    .map((ks) => ({ shape: [...shape], data: ks.map((k) => k / 10) }));
}

/** k shapes that broadcast together: each is a base shape with dims set to 1 and leading dims dropped. */
export function broadcastShapesArb(k: number, s: ShapeOpts = {}): fc.Arbitrary<number[][]> {
  return shapeArb(s).chain((shape) => {
    const derived = fc.tuple(
      fc.integer({ min: 0, max: shape.length }),
      fc.array(fc.boolean(), { minLength: shape.length, maxLength: shape.length }),
    ).map(([drop, ones]) => shape.map((d, i) => (ones[i] ? 1 : d)).slice(drop));
    // One of them keeps the full shape so the result shape is exercised as generated.
    return fc.tuple(fc.array(derived, { minLength: k - 1, maxLength: k - 1 }), fc.nat(k - 1))
      .map(([others, at]) => [...others.slice(0, at), shape, ...others.slice(at)]);
  });
}

/** A shape and a second one broadcastable with it, in either order. */
export function broadcastPairArb(s: ShapeOpts = {}): fc.Arbitrary<[number[], number[]]> {
  return broadcastShapesArb(2, s).map(([a, b]) => [a, b]);
}

/** A random permutation of 0..n-1. */
export function permArb(n: number): fc.Arbitrary<number[]> {
  return fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n });
}

/** A sorted subset of the axes of rank r, each written positive or negative; or undefined. */
export function axesArb(r: number): fc.Arbitrary<number[] | undefined> {
  const all = [...Array(r).keys()];
  return fc.option(
    fc.subarray(all).chain((ax) =>
      fc.array(fc.boolean(), { minLength: ax.length, maxLength: ax.length }).map((neg) =>
        ax.map((a, i) => (neg[i] ? a - r : a))
      )
    ),
    { nil: undefined },
  );
}

/** Runs per property; FC_RUNS raises it for a longer bug hunt, FC_SEED replays a failure. */
const envRuns = Number(readEnv("FC_RUNS") ?? "");
const envSeed = readEnv("FC_SEED");
export const RUNS = { numRuns: envRuns > 0 ? envRuns : 60 };
/** Scale a per-property default run count by FC_RUNS / 60. */
export const runs = (
  n: number,
): number => (envRuns > 0 ? Math.max(1, Math.round((n * envRuns) / 60)) : n);
if (envSeed !== undefined) fc.configureGlobal({ seed: Number(envSeed) });

/** A fast-check property as one test; each run inside tidy so nothing outlives it. */
export function prop<A>(
  name: string,
  arb: fc.Arbitrary<A>,
  fn: (v: A) => void,
  numRuns = RUNS.numRuns,
): void {
  test(name, () => {
    fc.assert(fc.property(arb, (v) => t.tidy(() => fn(v))), { numRuns: runs(numRuns) });
  });
}

export const I32 = (a: Nd): t.Tensor => T(a, "i32");
export const BOOL = (a: Nd): t.Tensor => T(a, "bool");

/** Whether /proc/cpuinfo lists `flag` (false where it cannot be read): which native paths exist. */
export function cpuHas(flag: string): boolean {
  try {
    return new RegExp(`\\b${flag}\\b`).test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}
