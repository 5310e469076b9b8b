// Forward values of every op against plain-JS references, on fast-check inputs, in f32 and f64.
import fc from "fast-check";
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import {
  alongAxis,
  at,
  axesArb,
  bat,
  bf16Ref,
  broadcastPairArb,
  broadcastShapesArb,
  bshape,
  erfRef,
  expectNd,
  f16Ref,
  FLOATS,
  fromFn,
  map,
  matmulRef,
  type Nd,
  nd,
  ndArb,
  ndOf,
  normAx,
  permArb,
  RUNS,
  runs,
  reduceRef,
  shapeArb,
  size,
  T,
  tol,
  transposeRef,
  unravel,
  zip,
} from "./ref.ts";

type Tensor = t.Tensor;

/** A fast-check property as one test; each run inside tidy so nothing outlives it. */
function prop<A>(name: string, arb: fc.Arbitrary<A>, fn: (v: A) => void, numRuns = RUNS.numRuns): void {
  test(name, () => {
    fc.assert(fc.property(arb, (v) => t.tidy(() => fn(v))), { numRuns: runs(numRuns) });
  });
}

const I32 = (a: Nd): Tensor => T(a, "i32");
const BOOL = (a: Nd): Tensor => T(a, "bool");

// ---------------------------------------------------------------- unary

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const geluErf = (x: number) => 0.5 * x * (1 + erfRef(x / Math.SQRT2));
const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

interface UnaryCase {
  name: string;
  op: (x: Tensor) => Tensor;
  ref: (x: number) => number;
  min?: number;
  max?: number;
  /** Composite ops round more than once in f32. */
  scale?: number;
}

const UNARY: UnaryCase[] = [
  { name: "neg", op: t.neg, ref: (x) => -x },
  { name: "abs", op: t.abs, ref: Math.abs },
  { name: "sign", op: t.sign, ref: Math.sign },
  { name: "exp", op: t.exp, ref: Math.exp, min: -20, max: 20 },
  { name: "log", op: t.log, ref: Math.log, min: 1e-3, max: 100 },
  { name: "sqrt", op: t.sqrt, ref: Math.sqrt, min: 0, max: 100 },
  { name: "rsqrt", op: t.rsqrt, ref: (x) => 1 / Math.sqrt(x), min: 1e-3, max: 100 },
  { name: "square", op: t.square, ref: (x) => x * x },
  { name: "relu", op: t.relu, ref: (x) => (x > 0 ? x : 0) },
  { name: "sigmoid", op: t.sigmoid, ref: sigmoid, min: -30, max: 30 },
  { name: "tanh", op: t.tanh, ref: Math.tanh },
  { name: "step", op: t.step, ref: (x) => (x > 0 ? 1 : 0) },
  { name: "heaviside", op: t.heaviside, ref: (x) => (x > 0 ? 1 : 0) },
  { name: "erf", op: t.erf, ref: erfRef, min: -5, max: 5 },
  { name: "sin", op: t.sin, ref: Math.sin },
  { name: "cos", op: t.cos, ref: Math.cos },
  { name: "gelu (erf form)", op: (x) => t.gelu(x), ref: geluErf, min: -6, max: 6, scale: 10 },
  { name: "gelu (tanh form)", op: (x) => t.gelu(x, { approximate: "tanh" }), ref: geluTanh, min: -6, max: 6, scale: 10 },
];

for (const c of UNARY) {
  prop(`forward: ${c.name} on random shapes (f32, f64)`, ndArb({ minDim: 0, maxRank: 3 }, { min: c.min, max: c.max }), (a) => {
    for (const dt of FLOATS) {
      const x = T(a, dt);
      const want = map(nd(x), c.ref); // reference from the values as stored
      // erfRef carries ~1e-10 of its own error, so f64 erf-based checks use 1e-7 (as asked).
      const f64tol = c.ref === erfRef || c.ref === geluErf ? { rtol: 1e-7, atol: 1e-7 } : tol("f64");
      expectNd(c.op(x), want, { msg: `${c.name} ${dt}`, dtype: dt, ...(dt === "f64" ? f64tol : tol(dt, c.scale ?? 1)) });
    }
  });
}

test("forward: erf and gelu at known values", () => {
  const xs = [0, 0.5, 1, 2, 3, -1, 4, -6];
  const erfKnown = [0, 0.5204998778130465, 0.8427007929497149, 0.9953222650189527, 0.9999779095030014, -0.8427007929497149, 0.9999999845827421, -1];
  assertClose(t.erf(t.tensor(xs, { dtype: "f64" })).dataSync(), erfKnown, { rtol: 1e-14, atol: 1e-15 });
  assertClose(xs.map(erfRef), erfKnown, { rtol: 1e-7, atol: 1e-7, msg: "the test's own erf" });
  // gelu(1) = 0.5·(1 + erf(1/√2)) = Φ(1) = 0.8413447460685429.
  assertClose(t.gelu(t.tensor([1, -1, 0], { dtype: "f64" })).dataSync(), [0.8413447460685429, -0.15865525393145707, 0], { rtol: 1e-14, atol: 1e-15 });
  // tanh form at 1: 0.5·(1 + tanh(√(2/π)·1.044715)) = 0.8411919906082768
  assertClose(t.gelu(t.tensor([1], { dtype: "f64" }), { approximate: "tanh" }).dataSync(), [0.8411919906082768], { rtol: 1e-14 });
});

test("forward: unary special values", () => {
  const v = (op: (x: Tensor) => Tensor, xs: number[]) => Array.from(op(t.tensor(xs, { dtype: "f64" })).dataSync());
  assertClose(v(t.log, [0, -1, Infinity]), [-Infinity, NaN, Infinity]);
  assertClose(v(t.sqrt, [-1, 0, Infinity]), [NaN, 0, Infinity]);
  assertClose(v(t.rsqrt, [0, Infinity]), [Infinity, 0]);
  assertClose(v(t.exp, [1000, -1000, -Infinity]), [Infinity, 0, 0]);
  assertClose(v(t.sigmoid, [1000, -1000, 0]), [1, 0, 0.5]);
  assertClose(v(t.tanh, [Infinity, -Infinity, 1000]), [1, -1, 1]);
  assertClose(v(t.relu, [NaN, -Infinity, Infinity, -0]), [NaN, 0, Infinity, 0]);
  assertClose(v(t.sign, [0, NaN, -Infinity, 1e-300]), [0, NaN, -1, 1]);
  assertClose(v(t.step, [0, -0, NaN, 1e-300]), [0, 0, 0, 1]);
  assertClose(v(t.abs, [-Infinity, -0]), [Infinity, 0]);
});

prop("forward: integer and bool unary ops keep or promote dtypes", ndArb({ minDim: 0 }, { int: true, min: -5, max: 5 }), (a) => {
  const x = I32(a);
  expectNd(t.neg(x), map(a, (v) => -v), { dtype: "i32" });
  expectNd(t.abs(x), map(a, Math.abs), { dtype: "i32" });
  expectNd(t.sign(x), map(a, Math.sign), { dtype: "i32" });
  expectNd(t.relu(x), map(a, (v) => Math.max(v, 0)), { dtype: "i32" });
  expectNd(t.step(x), map(a, (v) => (v > 0 ? 1 : 0)), { dtype: "i32" });
  expectNd(t.square(x), map(a, (v) => v * v), { dtype: "i32" });
  expectNd(t.exp(x), map(a, Math.exp), { dtype: "f32", ...tol("f32") });
  expectNd(t.sqrt(t.abs(x)), map(a, (v) => Math.sqrt(Math.abs(v))), { dtype: "f32", ...tol("f32") });
  const b = BOOL(map(a, (v) => (v > 0 ? 1 : 0)));
  expectNd(t.neg(b), map(a, (v) => (v > 0 ? -1 : 0)), { dtype: "i32" });
  expectNd(t.logicalNot(b), map(a, (v) => (v > 0 ? 0 : 1)), { dtype: "bool" });
});

// ---------------------------------------------------------------- binary

interface BinaryCase {
  name: string;
  op: (a: t.TensorLike, b: t.TensorLike) => Tensor;
  ref: (a: number, b: number) => number;
  va?: { min?: number; max?: number; int?: boolean };
  vb?: { min?: number; max?: number; int?: boolean };
  bool?: boolean;
}

const CMP = { min: -2, max: 2, int: true };
const BINARY: BinaryCase[] = [
  { name: "add", op: t.add, ref: (a, b) => a + b },
  { name: "sub", op: t.sub, ref: (a, b) => a - b },
  { name: "mul", op: t.mul, ref: (a, b) => a * b },
  { name: "div", op: t.div, ref: (a, b) => a / b },
  { name: "pow", op: t.pow, ref: Math.pow, va: { min: 0.05, max: 3 }, vb: { min: -3, max: 3 } },
  { name: "pow (integer exponents of negative bases)", op: t.pow, ref: Math.pow, va: { min: -3, max: 3 }, vb: { min: -3, max: 3, int: true } },
  { name: "maximum", op: t.maximum, ref: Math.max, va: CMP },
  { name: "minimum", op: t.minimum, ref: Math.min, va: CMP },
  { name: "gt", op: t.gt, ref: (a, b) => +(a > b), va: CMP, vb: CMP, bool: true },
  { name: "ge", op: t.ge, ref: (a, b) => +(a >= b), va: CMP, vb: CMP, bool: true },
  { name: "lt", op: t.lt, ref: (a, b) => +(a < b), va: CMP, vb: CMP, bool: true },
  { name: "le", op: t.le, ref: (a, b) => +(a <= b), va: CMP, vb: CMP, bool: true },
  { name: "eq", op: t.eq, ref: (a, b) => +(a === b), va: CMP, vb: CMP, bool: true },
  { name: "ne", op: t.ne, ref: (a, b) => +(a !== b), va: CMP, vb: CMP, bool: true },
];

for (const c of BINARY) {
  const arb = broadcastPairArb({ minDim: 0, maxRank: 3 }).chain(([sa, sb]) => fc.tuple(ndOf(sa, c.va ?? {}), ndOf(sb, c.vb ?? c.va ?? {})));
  prop(`forward: ${c.name} with broadcasting (f32, f64)`, arb, ([a, b]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt), y = T(b, dt);
      const want = zip(nd(x), nd(y), c.ref);
      expectNd(c.op(x, y), want, { msg: `${c.name} ${dt} [${a.shape}] [${b.shape}]`, dtype: c.bool ? "bool" : dt, ...tol(dt) });
      // A JS number on either side broadcasts as a scalar of the tensor's dtype.
      const s = b.data[0] ?? 2;
      expectNd(c.op(x, s), map(nd(x), (v) => c.ref(v, dt === "f32" ? Math.fround(s) : s)), { msg: `${c.name} ${dt} with a number`, dtype: c.bool ? "bool" : dt, ...tol(dt) });
    }
  });
}

test("forward: argmax/argmin pick the first NaN, as NumPy does", () => {
  assertEquals(Array.from(t.argmax(t.tensor([1, NaN, 3, NaN])).dataSync()), [1]);
  assertEquals(Array.from(t.argmin(t.tensor([NaN, -1])).dataSync()), [0]);
  assertEquals(Array.from(t.argmax(t.tensor([[1, 5], [NaN, 0]]), 0).dataSync()), [1, 0]);
  assertClose(t.max(t.tensor([1, NaN, 3]), 0).dataSync(), [NaN]);
});

test("forward: maximum/minimum propagate NaN; comparisons with NaN are false (ne true)", () => {
  const a = t.tensor([NaN, 1, NaN], { dtype: "f64" }), b = t.tensor([1, NaN, NaN], { dtype: "f64" });
  assertClose(t.maximum(a, b).dataSync(), [NaN, NaN, NaN]);
  assertClose(t.minimum(a, b).dataSync(), [NaN, NaN, NaN]);
  for (const op of [t.gt, t.ge, t.lt, t.le, t.eq]) assertEquals(Array.from(op(a, b).dataSync()), [0, 0, 0]);
  assertEquals(Array.from(t.ne(a, b).dataSync()), [1, 1, 1]);
});

prop(
  "forward: i32 arithmetic and comparisons stay exact",
  broadcastPairArb({ minDim: 0 }).chain(([sa, sb]) => fc.tuple(ndOf(sa, { int: true, min: -50, max: 50 }), ndOf(sb, { int: true, min: -50, max: 50 }))),
  ([a, b]) => {
    const x = I32(a), y = I32(b);
    expectNd(t.add(x, y), zip(a, b, (p, q) => p + q), { dtype: "i32", rtol: 0, atol: 0 });
    expectNd(t.sub(x, y), zip(a, b, (p, q) => p - q), { dtype: "i32", rtol: 0, atol: 0 });
    expectNd(t.mul(x, y), zip(a, b, (p, q) => p * q), { dtype: "i32", rtol: 0, atol: 0 });
    expectNd(t.maximum(x, y), zip(a, b, Math.max), { dtype: "i32", rtol: 0, atol: 0 });
    expectNd(t.minimum(x, y), zip(a, b, Math.min), { dtype: "i32", rtol: 0, atol: 0 });
    expectNd(t.le(x, y), zip(a, b, (p, q) => +(p <= q)), { dtype: "bool" });
    // Integer division is true division in f32.
    expectNd(t.div(x, y), zip(a, b, (p, q) => p / q), { dtype: "f32", ...tol("f32") });
    const pa = map(a, (v) => +(v > 0)), pb = map(b, (v) => +(v > 0));
    expectNd(t.logicalAnd(BOOL(pa), BOOL(pb)), zip(pa, pb, (p, q) => +(p && q)), { dtype: "bool" });
    expectNd(t.logicalOr(BOOL(pa), BOOL(pb)), zip(pa, pb, (p, q) => +(p || q)), { dtype: "bool" });
    expectNd(t.add(BOOL(pa), BOOL(pb)), zip(pa, pb, (p, q) => p + q), { dtype: "i32" });
  },
);

test("forward: dtype promotion of binary ops", () => {
  const mk = (d: t.DType) => t.ones([2], d);
  const cases: [t.DType, t.DType, t.DType][] = [
    ["bool", "bool", "i32"], ["bool", "i32", "i32"], ["i32", "i32", "i32"], ["i32", "f32", "f32"],
    ["i32", "f16", "f16"], ["f16", "bf16", "f32"], ["f16", "f32", "f32"], ["bf16", "f64", "f64"], ["f32", "f64", "f64"],
  ];
  for (const [a, b, want] of cases) {
    assertEquals(t.add(mk(a), mk(b)).dtype, want, `add ${a} ${b}`);
    assertEquals(t.add(mk(b), mk(a)).dtype, want, `add ${b} ${a}`);
    assertEquals(t.promote(a, b), want === "i32" && a === "bool" && b === "bool" ? "bool" : want, `promote ${a} ${b}`);
    assertEquals(t.gt(mk(a), mk(b)).dtype, "bool");
  }
  assertEquals(t.div(mk("i32"), mk("i32")).dtype, "f32");
  assertClose(t.div(t.tensor([7, -7], { dtype: "i32" }), 2).dataSync(), [3.5, -3.5]);
  assertEquals(t.pow(mk("i32"), 2).dtype, "f32");
  // Weak JS numbers: integers keep i32, fractions make f32, floats keep the tensor's dtype.
  assertEquals(t.add(mk("i32"), 2).dtype, "i32");
  assertEquals(t.add(mk("i32"), 1.5).dtype, "f32");
  assertEquals(t.add(mk("f16"), 2.5).dtype, "f16");
  assertEquals(t.add(mk("f64"), 2.5).dtype, "f64");
  assertEquals(t.mul(2, mk("bf16")).dtype, "bf16");
  assertEquals(t.eq(mk("f32"), mk("i32")).dtype, "bool");
  assertEquals(t.argmax(mk("f32")).dtype, "i32");
  assertEquals(t.sum(mk("bool")).dtype, "i32");
  assertEquals(t.mean(mk("i32")).dtype, "f32");
  assertEquals(t.matmul(t.ones([2, 2], "i32"), t.ones([2, 2], "i32")).dtype, "i32");
});

prop(
  "forward: where with three-way broadcasting (f32, f64)",
  broadcastShapesArb(3, { minDim: 0 }).chain(([s1, s2, s3]) => fc.tuple(ndOf(s1, CMP), ndOf(s2), ndOf(s3))),
  ([c, a, b]) => {
    for (const dt of FLOATS) {
      const cond = t.gt(T(c, dt), 0);
      const want = fromFn(bshape(bshape(c.shape, a.shape), b.shape), (i) => (bat(c, i) > 0 ? bat(nd(T(a, dt)), i) : bat(nd(T(b, dt)), i)));
      expectNd(t.where(cond, T(a, dt), T(b, dt)), want, { dtype: dt });
    }
    // Two JS numbers and no tensor operand: numbers default to f32, as tensor(1) does.
    expectNd(t.where(t.gt(T(c), 0), 1, -1), map(c, (v) => (v > 0 ? 1 : -1)), { dtype: "f32" });
    expectNd(t.where(t.gt(T(c), 0), I32(map(a, Math.trunc)), -1), fromFn(bshape(c.shape, a.shape), (i) => (bat(c, i) > 0 ? Math.trunc(bat(a, i)) : -1)), { dtype: "i32" });
  },
);

// ---------------------------------------------------------------- reductions

const reduceArb = ndArb({ minDim: 0, maxRank: 4, maxDim: 3 }).chain((a) => fc.tuple(fc.constant(a), axesArb(a.shape.length), fc.boolean()));

const sumOf = (v: number[]) => v.reduce((p, q) => p + q, 0);
const reducedEmpty = (a: Nd, axes: number[] | undefined) =>
  (axes ?? [...a.shape.keys()]).some((x) => a.shape[normAx(x, a.shape.length)] === 0);

prop("forward: sum/mean/max/min over random axes, keepdims (f32, f64)", reduceArb, ([a, axes, keepdims]) => {
  for (const dt of FLOATS) {
    const x = T(a, dt), xa = nd(x);
    expectNd(t.sum(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, sumOf), { dtype: dt, ...tol(dt, 4) });
    expectNd(t.mean(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, (v) => sumOf(v) / v.length), { dtype: dt, ...tol(dt, 4) });
    if (reducedEmpty(a, axes)) {
      assertThrows(() => t.max(x, axes), "max", "empty");
      assertThrows(() => t.min(x, axes), "min", "empty");
    } else {
      expectNd(t.max(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, (v) => Math.max(...v)), { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.min(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, (v) => Math.min(...v)), { dtype: dt, rtol: 0, atol: 0 });
    }
  }
  // Bool sums count; integer sums stay integer.
  const b = map(a, (v) => +(v > 0));
  expectNd(t.sum(BOOL(b), axes, { keepdims }), reduceRef(b, axes, keepdims, sumOf), { dtype: "i32" });
  const ia = map(a, Math.round);
  expectNd(t.sum(I32(ia), axes, { keepdims }), reduceRef(ia, axes, keepdims, sumOf), { dtype: "i32" });
});

prop("forward: variance (ddof 0 and 1) and norm (ord 1, 2, Infinity) (f32, f64)", reduceArb, ([a, axes, keepdims]) => {
  for (const dt of FLOATS) {
    const x = T(a, dt), xa = nd(x);
    const varRef = (ddof: number) => (v: number[]) => {
      const m = sumOf(v) / v.length;
      return sumOf(v.map((q) => (q - m) ** 2)) / (v.length - ddof);
    };
    const loose = dt === "f32" ? { rtol: 1e-4, atol: 1e-5 } : tol("f64", 10);
    expectNd(t.variance(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, varRef(0)), { dtype: dt, ...loose, msg: "var ddof 0" });
    expectNd(t.var(x, axes, { keepdims, ddof: 1 }), reduceRef(xa, axes, keepdims, varRef(1)), { dtype: dt, ...loose, msg: "var ddof 1" });
    expectNd(t.norm(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, (v) => Math.sqrt(sumOf(v.map((q) => q * q)))), { dtype: dt, ...tol(dt, 4) });
    expectNd(t.norm(x, axes, { keepdims, ord: 2 }), reduceRef(xa, axes, keepdims, (v) => Math.hypot(...v)), { dtype: dt, ...tol(dt, 4) });
    expectNd(t.norm(x, axes, { keepdims, ord: 1 }), reduceRef(xa, axes, keepdims, (v) => sumOf(v.map(Math.abs))), { dtype: dt, ...tol(dt, 4) });
    if (!reducedEmpty(a, axes)) {
      expectNd(t.norm(x, axes, { keepdims, ord: Infinity }), reduceRef(xa, axes, keepdims, (v) => Math.max(...v.map(Math.abs))), { dtype: dt, rtol: 0, atol: 0 });
    }
  }
});

prop(
  "forward: argmax/argmin with ties take the first index, i32, negative axes, keepdims",
  ndArb({ minRank: 1, minDim: 0, maxRank: 3 }, CMP).chain((a) =>
    fc.tuple(fc.constant(a), fc.option(fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }), { nil: undefined }), fc.boolean())
  ),
  ([a, axis, keepdims]) => {
    const first = (better: (p: number, q: number) => boolean) => (v: number[]) => v.reduce((bi, q, i) => (better(q, v[bi]) ? i : bi), 0);
    for (const dt of ["f32", "f64", "i32"] as const) {
      const x = T(a, dt);
      const src = axis === undefined ? { shape: [size(a.shape)], data: a.data } : a;
      const ax = axis === undefined ? 0 : axis;
      if (src.shape[normAx(ax, src.shape.length)] === 0) {
        assertThrows(() => t.argmax(x, axis), "argmax", "empty");
        continue;
      }
      const kd = keepdims && axis !== undefined;
      expectNd(t.argmax(x, axis, { keepdims: kd }), reduceRef(src, [ax], kd, first((p, q) => p > q)), { dtype: "i32", rtol: 0, atol: 0 });
      expectNd(t.argmin(x, axis, { keepdims: kd }), reduceRef(src, [ax], kd, first((p, q) => p < q)), { dtype: "i32", rtol: 0, atol: 0 });
    }
  },
);

// ---------------------------------------------------------------- matmul

const dimArb = fc.integer({ min: 0, max: 5 });
const matmulArb = fc.record({
  batch: broadcastPairArb({ maxRank: 2, maxDim: 3, minDim: 1 }),
  M: dimArb,
  K: dimArb,
  N: dimArb,
  transA: fc.boolean(),
  transB: fc.boolean(),
  oneD: fc.constantFrom("none", "a", "b", "both"),
}).chain((c) => {
  const aShape = c.oneD === "a" || c.oneD === "both" ? [c.K] : [...c.batch[0], c.M, c.K];
  const bShape = c.oneD === "b" || c.oneD === "both" ? [c.K] : [...c.batch[1], c.K, c.N];
  return fc.tuple(fc.constant(c), ndOf(aShape), ndOf(bShape));
});

/** Reference of NumPy matmul: 1-D operands promoted and squeezed back. */
function npMatmulRef(a: Nd, b: Nd): Nd {
  const a2 = a.shape.length === 1 ? { shape: [1, a.shape[0]], data: a.data } : a;
  const b2 = b.shape.length === 1 ? { shape: [b.shape[0], 1], data: b.data } : b;
  const r = matmulRef(a2, b2);
  const s = [...r.shape];
  if (b.shape.length === 1) s.splice(s.length - 1, 1);
  if (a.shape.length === 1) s.splice(s.length - (b.shape.length === 1 ? 1 : 2), 1);
  return { shape: s, data: r.data };
}

/** The same values as a transposed view: swap the last two axes in the data, then transpose back. */
function asTransposedView(a: Nd, dt: t.DType): Tensor {
  if (a.shape.length < 2) return T(a, dt);
  const r = a.shape.length;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  const v = t.mT(T(transposeRef(a, perm), dt));
  assert(!v.isContiguous() || a.shape[r - 1] <= 1 || a.shape[r - 2] <= 1, "a transposed view should be strided");
  return v;
}

prop("forward: matmul 2-D, batched with broadcast batch dims, 1-D operands, transposed views (f32, f64)", matmulArb, ([c, a, b]) => {
  for (const dt of FLOATS) {
    const x = c.transA ? asTransposedView(a, dt) : T(a, dt);
    const y = c.transB ? asTransposedView(b, dt) : T(b, dt);
    const want = npMatmulRef(nd(T(a, dt)), nd(T(b, dt)));
    expectNd(t.matmul(x, y), want, { msg: `matmul ${dt} [${a.shape}] [${b.shape}] ${c.transA} ${c.transB}`, dtype: dt, ...tol(dt, 10) });
  }
}, 100);

test("forward: matmul of sizes large enough for BLAS, with transposed operands", () => {
  const rnd = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 2);
  for (const dt of FLOATS) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      const M = 37, K = 41, N = 35;
      const a: Nd = { shape: [M, K], data: rnd(M * K, 1) }, b: Nd = { shape: [K, N], data: rnd(K * N, 2) };
      const x = ta ? asTransposedView(a, dt) : T(a, dt);
      const y = tb ? asTransposedView(b, dt) : T(b, dt);
      expectNd(t.matmul(x, y), matmulRef(nd(T(a, dt)), nd(T(b, dt))), { dtype: dt, ...(dt === "f32" ? { rtol: 1e-4, atol: 1e-4 } : tol("f64", 100)) });
    }
  }
});

test("forward: BLAS-sized matmul of offset slices (leading dimension > columns) and broadcast batches", () => {
  const rnd = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.cos(i * 3.7 + seed) * 2);
  for (const dt of FLOATS) {
    const big: Nd = { shape: [45, 50], data: rnd(45 * 50, 3) };
    const bigB: Nd = { shape: [50, 44], data: rnd(50 * 44, 4) };
    // Rows 3..40, columns 5..46 of A; a view with offset and row stride 50.
    const a = t.slice(T(big, dt), [3, 5], [40, 46]);
    const b = t.slice(T(bigB, dt), [2, 1], [43, 40]);
    const aRef = fromFn([37, 41], ([i, j]) => big.data[(i + 3) * 50 + j + 5]);
    const bRef = fromFn([41, 39], ([i, j]) => bigB.data[(i + 2) * 44 + j + 1]);
    const o = dt === "f32" ? { rtol: 1e-4, atol: 1e-4 } : tol("f64", 100);
    expectNd(t.matmul(a, b), matmulRef(nd(T(aRef, dt)), nd(T(bRef, dt))), { dtype: dt, ...o, msg: "offset slices" });
    expectNd(t.matmul(t.mT(b), t.mT(a)), transposeRef(matmulRef(nd(T(aRef, dt)), nd(T(bRef, dt))), [1, 0]), { dtype: dt, ...o, msg: "transposed offset slices" });
    // [2, 1, M, K] @ [3, K, N]: batch dims broadcast (stride-0 views of A).
    const a4: Nd = { shape: [2, 1, 33, 34], data: rnd(2 * 33 * 34, 5) };
    const b3: Nd = { shape: [3, 34, 35], data: rnd(3 * 34 * 35, 6) };
    expectNd(t.matmul(T(a4, dt), T(b3, dt)), matmulRef(nd(T(a4, dt)), nd(T(b3, dt))), { dtype: dt, ...o, msg: "broadcast batch" });
  }
});

prop("forward: integer matmul is exact i32", fc.tuple(dimArb, dimArb, dimArb).chain(([M, K, N]) => fc.tuple(ndOf([M, K], { int: true, min: -9, max: 9 }), ndOf([K, N], { int: true, min: -9, max: 9 }))), ([a, b]) => {
  expectNd(t.matmul(I32(a), I32(b)), matmulRef(a, b), { dtype: "i32", rtol: 0, atol: 0 });
});

// ---------------------------------------------------------------- layout

/** A random shape with the same number of elements: dims merged, 1s inserted, one -1 hole. */
const reshapeArb = ndArb({ minDim: 0, maxRank: 4 }).chain((a) =>
  fc.tuple(
    fc.constant(a),
    fc.array(fc.boolean(), { minLength: a.shape.length, maxLength: a.shape.length }),
    fc.array(fc.nat(4), { maxLength: 2 }),
    fc.nat(6),
    fc.boolean(),
  ).map(([a, merge, ones, hole, useHole]) => {
    const dims: number[] = [];
    a.shape.forEach((d, i) => (merge[i] && dims.length ? (dims[dims.length - 1] *= d) : dims.push(d)));
    for (const p of ones) dims.splice(Math.min(p, dims.length), 0, 1);
    const target = [...dims];
    const h = hole % Math.max(target.length, 1);
    if (useHole && target.length && size(target.filter((_, i) => i !== h)) !== 0) target[h] = -1;
    return [a, target, dims] as const;
  })
);

prop("forward: reshape (with -1), also of strided views", reshapeArb, ([a, target, dims]) => {
  for (const dt of FLOATS) {
    expectNd(t.reshape(T(a, dt), target), { shape: dims, data: a.data.map((v) => (dt === "f32" ? Math.fround(v) : v)) }, { dtype: dt, rtol: 0, atol: 0 });
  }
  // Reshaping a transposed view copies: the row-major order of the view is what counts.
  const r = a.shape.length;
  const tv = t.transpose(T(a));
  const tr = transposeRef(a, [...Array(r).keys()].reverse());
  expectNd(t.reshape(tv, target), { shape: dims, data: tr.data }, { rtol: 0, atol: 0 });
  expectNd(t.flatten(tv), { shape: [size(a.shape)], data: tr.data }, { rtol: 0, atol: 0 });
});

prop(
  "forward: transpose/permute with negative axes, default reversal",
  ndArb({ minDim: 0, maxRank: 4 }).chain((a) => fc.tuple(fc.constant(a), permArb(a.shape.length), fc.array(fc.boolean(), { minLength: a.shape.length, maxLength: a.shape.length }))),
  ([a, perm, neg]) => {
    const r = a.shape.length;
    const p = perm.map((x, i) => (neg[i] ? x - r : x));
    expectNd(t.transpose(T(a), p), transposeRef(a, perm), { rtol: 0, atol: 0 });
    expectNd(t.permute(T(a, "i32"), perm), transposeRef(map(a, Math.trunc), perm), { rtol: 0, atol: 0, dtype: "i32" });
    expectNd(t.transpose(T(a)), transposeRef(a, [...Array(r).keys()].reverse()), { rtol: 0, atol: 0 });
    if (r >= 2) expectNd(t.swapAxes(T(a), 0, -1), transposeRef(a, [r - 1, ...[...Array(r).keys()].slice(1, r - 1), 0]), { rtol: 0, atol: 0 });
  },
);

const bcastArb = broadcastPairArb({ minDim: 0, maxRank: 4 }).chain(([s1, s2]) =>
  fc.tuple(ndOf(s1), fc.constant(s2), fc.integer({ min: -(s1.length + 1), max: s1.length }))
);
prop("forward: broadcastTo, expandDims, squeeze", bcastArb, ([a, other, e]) => {
  const full = bshape(a.shape, other);
  expectNd(t.broadcastTo(T(a), full), fromFn(full, (i) => bat(a, i)), { rtol: 0, atol: 0 });
  const r = a.shape.length;
  const ep = e < 0 ? e + r + 1 : e;
  const es = [...a.shape];
  es.splice(ep, 0, 1);
  expectNd(t.expandDims(T(a), e), { shape: es, data: a.data }, { rtol: 0, atol: 0 });
  expectNd(t.squeeze(T(a)), { shape: a.shape.filter((d) => d !== 1), data: a.data }, { rtol: 0, atol: 0 });
  expectNd(t.squeeze(t.expandDims(T(a), e), e), a, { rtol: 0, atol: 0 });
});

/** Python slice semantics for a positive step. */
function sliceIdx(d: number, start: number | undefined, end: number | undefined, step: number): number[] {
  const c = (i: number) => Math.min(Math.max(i < 0 ? i + d : i, 0), d);
  const s = c(start ?? 0), e = c(end ?? d);
  const out: number[] = [];
  for (let i = s; i < e; i += step) out.push(i);
  return out;
}

prop(
  "forward: slice with negative, clamped, partial and stepped bounds",
  ndArb({ minDim: 0, maxRank: 3, maxDim: 5 }).chain((a) => {
    const r = a.shape.length;
    const bound = fc.integer({ min: -7, max: 7 });
    return fc.tuple(
      fc.constant(a),
      fc.integer({ min: 0, max: r }),
      fc.array(bound, { minLength: r, maxLength: r }),
      fc.array(fc.option(bound, { nil: undefined }), { minLength: r, maxLength: r }),
      fc.option(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: r, maxLength: r }), { nil: undefined }),
    );
  }),
  ([a, k, starts, ends, steps]) => {
    const st = starts.slice(0, k), en = ends.slice(0, k);
    const sel = a.shape.map((d, i) => sliceIdx(d, st[i], en[i], steps?.[i] ?? 1));
    const want = fromFn(sel.map((s) => s.length), (idx) => at(a, idx.map((j, i) => sel[i][j])));
    for (const dt of FLOATS) expectNd(t.slice(T(a, dt), st, en, steps), map(want, (v) => (dt === "f32" ? Math.fround(v) : v)), { dtype: dt, rtol: 0, atol: 0 });
    // sliceAxis on one axis.
    if (a.shape.length > 0) {
      const ax = k % a.shape.length;
      const s1 = starts[ax], e1 = ends[ax];
      const ix = sliceIdx(a.shape[ax], s1, e1, 1);
      const w1 = fromFn(a.shape.map((d, i) => (i === ax ? ix.length : d)), (idx) => at(a, idx.map((j, i) => (i === ax ? ix[j] : j))));
      expectNd(t.sliceAxis(T(a), ax - a.shape.length, s1, e1), w1, { rtol: 0, atol: 0 });
    }
  },
);

prop(
  "forward: concat and stack along random axes (with empty parts and dtype promotion)",
  shapeArb({ minRank: 1, maxRank: 3, minDim: 0 }).chain((shape) =>
    fc.tuple(
      fc.constant(shape),
      fc.integer({ min: 0, max: shape.length - 1 }),
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 4 }),
    ).chain(([shape, ax, lens]) => fc.tuple(fc.constant(ax), fc.tuple(...lens.map((l) => ndOf(shape.map((d, i) => (i === ax ? l : d)))))))
  ),
  ([ax, parts]) => {
    const r = parts[0].shape.length;
    const outShape = parts[0].shape.map((d, i) => (i === ax ? parts.reduce((s, p) => s + p.shape[ax], 0) : d));
    const want = fromFn(outShape, (idx) => {
      let j = idx[ax];
      for (const p of parts) {
        if (j < p.shape[ax]) return at(p, idx.map((v, i) => (i === ax ? j : v)));
        j -= p.shape[ax];
      }
      throw new Error("unreachable");
    });
    const negAx = ax - r;
    expectNd(t.concat(parts.map((p) => T(p)), negAx), want, { rtol: 0, atol: 0, dtype: "f64" });
    // Mixed dtypes promote: f32 parts with an f64 part give f64.
    const mixed = t.concat(parts.map((p, i) => T(p, i === 0 ? "f64" : "f32")), ax);
    assertEquals(mixed.dtype, "f64");
    // stack needs equal shapes: reuse the first part's data where a part's length differs.
    const same = parts.map((p) => ({ shape: parts[0].shape, data: p.data.length === parts[0].data.length ? p.data : parts[0].data }));
    for (const sax of [0, r, -1, -(r + 1)]) {
      const sp = normAx(sax, r + 1);
      const sShape = [...parts[0].shape];
      sShape.splice(sp, 0, same.length);
      const sw = fromFn(sShape, (idx) => at(same[idx[sp]], idx.filter((_, i) => i !== sp)));
      expectNd(t.stack(same.map((p) => T(p)), sax), sw, { rtol: 0, atol: 0 });
    }
  },
);

prop(
  "forward: pad with zeros",
  ndArb({ minDim: 0, maxRank: 3 }).chain((a) => fc.tuple(fc.constant(a), fc.array(fc.tuple(fc.nat(2), fc.nat(2)), { minLength: 0, maxLength: a.shape.length }))),
  ([a, widths]) => {
    const w = a.shape.map((_, i) => widths[i] ?? [0, 0]);
    const shape = a.shape.map((d, i) => d + w[i][0] + w[i][1]);
    const want = fromFn(shape, (idx) => {
      const src = idx.map((v, i) => v - w[i][0]);
      return src.every((v, i) => v >= 0 && v < a.shape[i]) ? at(a, src) : 0;
    });
    for (const dt of [...FLOATS, "i32"] as const) {
      const src = dt === "i32" ? map(a, Math.trunc) : a;
      const wd = dt === "i32" ? map(want, Math.trunc) : want;
      expectNd(t.pad(T(src, dt), widths as [number, number][]), dt === "f32" ? map(wd, Math.fround) : wd, { dtype: dt, rtol: 0, atol: 0 });
    }
  },
);

// ---------------------------------------------------------------- indexing

prop(
  "forward: take with multi-dimensional indices along a random axis",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1 }).chain((a) =>
    fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }).chain((ax) => {
      const d = a.shape[normAx(ax, a.shape.length)];
      return fc.tuple(fc.constant(a), fc.constant(ax), shapeArb({ maxRank: 2, minDim: 0 }).chain((s) => ndOf(s, { int: true, min: 0, max: d - 1 })));
    })
  ),
  ([a, ax, idx]) => {
    const p = normAx(ax, a.shape.length);
    const shape = [...a.shape.slice(0, p), ...idx.shape, ...a.shape.slice(p + 1)];
    const k = idx.shape.length;
    const want = fromFn(shape, (i) => at(a, [...i.slice(0, p), at(idx, i.slice(p, p + k)), ...i.slice(p + k)]));
    for (const dt of FLOATS) expectNd(t.take(T(a, dt), I32(idx), ax), dt === "f32" ? map(want, Math.fround) : want, { dtype: dt, rtol: 0, atol: 0 });
  },
);

prop(
  "forward: takeAlongAxis/gather with broadcast index dims",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }),
      fc.array(fc.constantFrom("both", "x1", "idx1"), { minLength: a.shape.length, maxLength: a.shape.length }),
      fc.integer({ min: 0, max: 4 }),
    ).chain(([a0, ax, ones, m]) => {
      const p = normAx(ax, a0.shape.length);
      // Off the axis, either side may have size 1 and is broadcast to the other (a stride-0 view).
      const xs = a0.shape.map((d, i) => (i !== p && ones[i] === "x1" ? 1 : d));
      const is = a0.shape.map((d, i) => (i === p ? m : ones[i] === "idx1" ? 1 : d));
      return fc.tuple(ndOf(xs), fc.constant(ax), ndOf(is, { int: true, min: 0, max: a0.shape[p] - 1 }));
    })
  ),
  ([a, ax, idx]) => {
    const p = normAx(ax, a.shape.length);
    const shape = a.shape.map((d, i) => (i === p ? idx.shape[p] : Math.max(d, idx.shape[i])));
    const want = fromFn(shape, (i) => at(a, i.map((v, d) => (d === p ? bat(idx, i) : a.shape[d] === 1 ? 0 : v))));
    for (const dt of FLOATS) {
      expectNd(t.takeAlongAxis(T(a, dt), I32(idx), ax), dt === "f32" ? map(want, Math.fround) : want, { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.gather(T(a, dt), I32(idx), ax), dt === "f32" ? map(want, Math.fround) : want, { dtype: dt, rtol: 0, atol: 0 });
    }
  },
);

prop(
  "forward: scatterAdd accumulates repeated indices",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1, maxDim: 3 }).chain((base) =>
    fc.tuple(fc.constant(base), fc.integer({ min: -base.shape.length, max: base.shape.length - 1 }), fc.integer({ min: 0, max: 6 })).chain(([base, ax, m]) => {
      const p = normAx(ax, base.shape.length);
      const is = base.shape.map((d, i) => (i === p ? m : d));
      return fc.tuple(fc.constant(base), fc.constant(ax), ndOf(is, { int: true, min: 0, max: base.shape[p] - 1 }), ndOf(is));
    })
  ),
  ([base, ax, idx, upd]) => {
    const p = normAx(ax, base.shape.length);
    const want = { shape: [...base.shape], data: [...base.data] };
    for (let i = 0; i < idx.data.length; i++) {
      const ii = unravel(i, idx.shape);
      ii[p] = idx.data[i];
      const o = ii.reduce((acc, v, d) => acc * base.shape[d] + v, 0);
      want.data[o] += upd.data[i];
    }
    for (const dt of FLOATS) expectNd(t.scatterAdd(T(base, dt), I32(idx), T(upd, dt), ax), want, { dtype: dt, ...tol(dt, 4) });
    // A scalar update broadcasts; counting with ones gives a histogram.
    const counts = t.scatterAdd(t.zeros(base.shape, "i32"), I32(idx), t.ones(idx.shape, "i32"), ax);
    const hist = fromFn(base.shape, (i) => {
      let c = 0;
      for (let k = 0; k < idx.data.length; k++) {
        const ii = unravel(k, idx.shape);
        if (idx.data[k] === i[p] && ii.every((v, d) => d === p || v === i[d])) c++;
      }
      return c;
    });
    expectNd(counts, hist, { dtype: "i32", rtol: 0, atol: 0 });
  },
);

prop(
  "forward: oneHot (out-of-range indices give all-zero rows)",
  fc.integer({ min: 1, max: 5 }).chain((n) => fc.tuple(fc.constant(n), ndArb({ maxRank: 2, minDim: 0 }, { int: true, min: -1, max: n }), fc.constantFrom<t.DType>("f32", "f64", "i32", "bool"))),
  ([n, idx, dt]) => {
    const want = fromFn([...idx.shape, n], (i) => +(at(idx, i.slice(0, -1)) === i[i.length - 1]));
    expectNd(t.oneHot(I32(idx), n, dt), want, { dtype: dt, rtol: 0, atol: 0 });
  },
);

prop(
  "forward: topk sorted descending, ties to the lower index, k = 0..n",
  shapeArb({ minRank: 1, maxRank: 3, minDim: 0, maxDim: 6 }).chain((s) =>
    fc.tuple(ndOf(s, { int: true, min: -3, max: 3 }), fc.integer({ min: 0, max: s[s.length - 1] }), fc.boolean())
  ),
  ([a, k, frac]) => {
    const vals = frac ? map(a, (v) => v / 4 + 0.125) : a; // small integer range: many ties
    const order = (line: number[]) => line.map((v, i) => [v, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, k);
    const r = vals.shape.length;
    const wantV = alongAxis(vals, r - 1, (l) => order(l).map((p) => p[0]), k);
    const wantI = alongAxis(vals, r - 1, (l) => order(l).map((p) => p[1]), k);
    for (const dt of [...FLOATS, "i32"] as const) {
      const [v, i] = t.topk(T(dt === "i32" ? a : vals, dt), k);
      const wv = dt === "i32" ? alongAxis(a, r - 1, (l) => order(l).map((p) => p[0]), k) : wantV;
      const wi = dt === "i32" ? alongAxis(a, r - 1, (l) => order(l).map((p) => p[1]), k) : wantI;
      expectNd(v, wv, { dtype: dt, rtol: 0, atol: 0, msg: `topk values ${dt}` });
      expectNd(i, wi, { dtype: "i32", rtol: 0, atol: 0, msg: `topk indices ${dt}` });
    }
  },
);

prop(
  "forward: topk on long rows (heap paths), strided input",
  fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 60 })).chain(([r, n]) =>
    fc.tuple(ndOf([n, r], { int: true, min: -6, max: 6 }), fc.integer({ min: 0, max: n }))
  ),
  ([a, k]) => {
    // The rows are the columns of a: topk reads a transposed (strided) view.
    const rows = transposeRef(a, [1, 0]);
    const order = (line: number[]) => line.map((v, i) => [v, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, k);
    const [v, i] = t.topk(t.transpose(T(a)), k);
    expectNd(v, alongAxis(rows, 1, (l) => order(l).map((p) => p[0]), k), { rtol: 0, atol: 0 });
    expectNd(i, alongAxis(rows, 1, (l) => order(l).map((p) => p[1]), k), { rtol: 0, atol: 0, dtype: "i32" });
  },
);

test("forward: topk with k = n on distinct values is a full descending sort; NaN ranks first", () => {
  const [v, i] = t.topk(t.tensor([3, 1, 4, 1, 5, 9, 2, 6], { dtype: "f64" }), 8);
  assertEquals(Array.from(v.dataSync()), [9, 6, 5, 4, 3, 2, 1, 1]);
  assertEquals(Array.from(i.dataSync()), [5, 7, 4, 2, 0, 6, 1, 3]);
  const [nv, ni] = t.topk(t.tensor([1, NaN, 2], { dtype: "f64" }), 2);
  assertClose(nv.dataSync(), [NaN, 2]);
  assertEquals(Array.from(ni.dataSync()), [1, 2]);
});

// ---------------------------------------------------------------- softmax family, scans, casts

function lseRef(v: number[]): number {
  const m = Math.max(...v);
  if (m === -Infinity) return -Infinity;
  return m + Math.log(sumOf(v.map((q) => Math.exp(q - m))));
}

prop(
  "forward: softmax, logSoftmax, logsumexp on random axes, including huge offsets",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1 }, { min: -5, max: 5 }).chain((a) =>
    fc.tuple(fc.constant(a), fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }), fc.constantFrom(0, 1000, -1000, 1e6), axesArb(a.shape.length), fc.boolean())
  ),
  ([a0, ax, offset, axes, keepdims]) => {
    const a = map(a0, (v) => v + offset);
    for (const dt of FLOATS) {
      const x = T(a, dt), xa = nd(x);
      // Shifted by the max before anything is summed, so the reference keeps full precision.
      const lsm = alongAxis(xa, ax, (l) => {
        const m = Math.max(...l), z = Math.log(sumOf(l.map((q) => Math.exp(q - m))));
        return l.map((q) => q - m - z);
      });
      const s = alongAxis(xa, ax, (l) => {
        const m = Math.max(...l), e = l.map((q) => Math.exp(q - m)), z = sumOf(e);
        return e.map((q) => q / z);
      });
      // Results near the offset carry its rounding (an f32 ulp at 1e6 is 0.0625): tolerance in ulps of it.
      const o = dt === "f64" ? { rtol: 1e-12, atol: 1e-12 + Math.abs(offset) * 2 ** -50 } : { rtol: 1e-5, atol: 1e-5 + Math.abs(offset) * 2 ** -22 };
      expectNd(t.softmax(x, ax), s, { dtype: dt, ...tol(dt, 10), msg: "softmax" });
      expectNd(t.logSoftmax(x, ax), lsm, { dtype: dt, ...o, msg: "logSoftmax" });
      expectNd(t.logsumexp(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, lseRef), { dtype: dt, ...o, msg: "logsumexp" });
      // Sums to one along the axis.
      expectNd(t.sum(t.softmax(x, ax), ax), reduceRef(s, [ax], false, () => 1), { ...tol(dt, 10) });
    }
  },
);

test("forward: logsumexp/softmax with -Infinity entries and all -Infinity rows", () => {
  const x = t.tensor([[-Infinity, -Infinity], [0, -Infinity], [1000, 1000]], { dtype: "f64" });
  assertClose(t.logsumexp(x, -1).dataSync(), [-Infinity, 0, 1000 + Math.log(2)], { rtol: 1e-15 });
  assertClose(t.logsumexp(x, 0).dataSync(), [lseRef([-Infinity, 0, 1000]), lseRef([-Infinity, -Infinity, 1000])], { rtol: 1e-15 });
  assertClose(t.softmax(x, -1).dataSync().slice(2), [1, 0, 0.5, 0.5]);
  assertClose(t.logSoftmax(x, -1).dataSync().slice(2), [0, -Infinity, -Math.log(2), -Math.log(2)], { rtol: 1e-15 });
  assertClose(t.logsumexp(t.tensor([1e308, 1e308], { dtype: "f64" })).dataSync(), [1e308 + Math.log(2)]);
  assertClose(t.logsumexp(t.tensor([88, 89, 90], { dtype: "f32" })).dataSync(), [lseRef([88, 89, 90])], { rtol: 1e-6 });
});

prop(
  "forward: cumsum forward and reverse on random axes (float, i32, bool)",
  ndArb({ minRank: 1, maxRank: 3, minDim: 0 }).chain((a) => fc.tuple(fc.constant(a), fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }), fc.boolean())),
  ([a, ax, reverse]) => {
    const scan = (l: number[]) => {
      const out = new Array<number>(l.length);
      let s = 0;
      for (let k = 0; k < l.length; k++) {
        const j = reverse ? l.length - 1 - k : k;
        out[j] = s += l[j];
      }
      return out;
    };
    for (const dt of FLOATS) {
      const x = T(a, dt);
      expectNd(t.cumsum(x, ax, { reverse }), alongAxis(nd(x), ax, scan), { dtype: dt, ...tol(dt, 10) });
    }
    const ia = map(a, Math.round);
    expectNd(t.cumsum(I32(ia), ax, { reverse }), alongAxis(ia, ax, scan), { dtype: "i32", rtol: 0, atol: 0 });
    const ba = map(a, (v) => +(v > 0));
    expectNd(t.cumsum(BOOL(ba), ax, { reverse }), alongAxis(ba, ax, scan), { dtype: "i32", rtol: 0, atol: 0 });
  },
);

prop(
  "forward: clip with number and broadcast tensor bounds",
  broadcastPairArb({ minDim: 0 }).chain(([s1, s2]) => fc.tuple(ndOf(s1), ndOf(s2, { min: -1, max: 0 }), ndOf(s2, { min: 0, max: 1 }))),
  ([a, lo, hi]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt);
      expectNd(t.clip(x, -0.5, 0.5), map(nd(x), (v) => Math.min(Math.max(v, dt === "f32" ? Math.fround(-0.5) : -0.5), 0.5)), { dtype: dt, rtol: 0, atol: 0 });
      const want = fromFn(bshape(a.shape, lo.shape), (i) => Math.min(Math.max(bat(nd(x), i), bat(nd(T(lo, dt)), i)), bat(nd(T(hi, dt)), i)));
      expectNd(t.clip(x, T(lo, dt), T(hi, dt)), want, { dtype: dt, rtol: 0, atol: 0 });
    }
    expectNd(t.clip(I32(map(a, Math.round)), -1, 1), map(a, (v) => Math.min(Math.max(Math.round(v), -1), 1)), { dtype: "i32" });
  },
);

// ---------------------------------------------------------------- f16 / bf16 and casts

const wideArb = fc.oneof(
  fc.double({ min: -70000, max: 70000, noNaN: true }),
  fc.double({ min: -1, max: 1, noNaN: true }),
  fc.double({ min: -1e-4, max: 1e-4, noNaN: true }),
  fc.double({ min: -1e39, max: 1e39, noNaN: true }),
);

prop("forward: f16/bf16 storage round trip rounds to nearest even", fc.array(wideArb, { maxLength: 20 }), (vals) => {
  const f16 = t.tensor(vals, { dtype: "f16" }), bf16 = t.tensor(vals, { dtype: "bf16" });
  const got16 = f16.dataSync(), gotB = bf16.dataSync();
  assert(got16 instanceof Float32Array && gotB instanceof Float32Array, "f16/bf16 read back as f32");
  vals.forEach((v, i) => {
    assertEquals(got16[i], f16Ref(v), `f16 of ${v}`);
    assertEquals(gotB[i], bf16Ref(v), `bf16 of ${v}`);
    // Within half / bfloat precision where representable.
    const fv = Math.fround(v);
    if (Math.abs(fv) >= 2 ** -14 && Math.abs(fv) <= 65504) assert(Math.abs(got16[i] - fv) <= 2 ** -11 * Math.abs(fv), `f16 precision of ${v}`);
    if (Math.abs(fv) >= 2 ** -126 && Number.isFinite(gotB[i])) assert(Math.abs(gotB[i] - fv) <= 2 ** -8 * Math.abs(fv), `bf16 precision of ${v}`);
  });
  const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;
  if (f16round) vals.forEach((v, i) => assertEquals(got16[i], f16round(Math.fround(v)), `f16 of ${v} vs Math.f16round`));
});

test("forward: f16/bf16 special values and limits (async data() too)", async () => {
  const vals = [NaN, Infinity, -Infinity, -0, 65504, 65519, 65520, 2 ** -24, 2 ** -25, 2 ** -25 * 1.5, 1 + 2 ** -11, 3e38, 3.4e38];
  const f16 = t.tensor(vals, { dtype: "f16" }).dataSync(), bf16 = t.tensor(vals, { dtype: "bf16" }).dataSync();
  assertClose(f16, [NaN, Infinity, -Infinity, 0, 65504, 65504, Infinity, 2 ** -24, 0, 2 ** -24, 1, Infinity, Infinity], { rtol: 0, atol: 0 });
  assert(Object.is(f16[3], -0) && Object.is(bf16[3], -0), "-0 survives");
  assertClose(bf16, vals.map(bf16Ref), { rtol: 0, atol: 0 });
  const viaData = await t.tensor(vals, { dtype: "f16" }).data();
  assert(viaData instanceof Float32Array, "data() widens f16 to f32");
  assertClose(viaData, f16, { rtol: 0, atol: 0 });
  assertClose(await t.transpose(t.tensor([[1.5, 2.25], [3, 1e-3]], { dtype: "bf16" })).data(), [1.5, 3, 2.25, bf16Ref(1e-3)], { rtol: 0, atol: 0 });
});

const DTYPES: t.DType[] = ["f32", "f64", "f16", "bf16", "i32", "bool"];

/** The value `x` (already valid in `from`) takes in dtype `to`. */
function castRef(x: number, to: t.DType): number {
  switch (to) {
    case "f64":
      return x;
    case "f32":
      return Math.fround(x);
    case "f16":
      return f16Ref(x);
    case "bf16":
      return bf16Ref(x);
    case "i32":
      return Number.isNaN(x) ? 0 : Math.trunc(x);
    case "bool":
      return x !== 0 ? 1 : 0;
  }
}

prop("forward: cast between all dtypes", fc.array(fc.oneof(fc.double({ min: -1000, max: 1000, noNaN: true }), fc.integer({ min: -3, max: 3 })), { maxLength: 12 }), (vals) => {
  for (const from of DTYPES) {
    const x = t.tensor(vals, { dtype: from });
    const xv = Array.from(x.dataSync());
    assertClose(xv, vals.map((v) => castRef(v, from)), { rtol: 0, atol: 0, msg: `store as ${from}` });
    for (const to of DTYPES) {
      const y = t.cast(x, to);
      assertEquals(y.dtype, to);
      assertClose(y.dataSync(), xv.map((v) => castRef(v, to)), { rtol: 0, atol: 0, msg: `cast ${from} → ${to}` });
    }
  }
});

prop(
  "forward: arithmetic and reductions on f16/bf16 compute in f32 and round once",
  broadcastPairArb({ minDim: 0 }).chain(([s1, s2]) => fc.tuple(ndOf(s1, { min: -100, max: 100 }), ndOf(s2, { min: -100, max: 100 }))),
  ([a, b]) => {
    for (const [dt, r] of [["f16", f16Ref], ["bf16", bf16Ref]] as const) {
      const x = T(a, dt), y = T(b, dt);
      const xa = nd(x), ya = nd(y);
      expectNd(t.add(x, y), map(zip(xa, ya, (p, q) => p + q), r), { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.mul(x, y), map(zip(xa, ya, (p, q) => Math.fround(p * q)), r), { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.exp(t.div(x, 100)), map(xa, (p) => r(Math.exp(r(p / 100)))), { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.sum(x), { shape: [], data: [r(sumOf(xa.data))] }, { dtype: dt, rtol: 2 ** -7, atol: 1e-3 });
      expectNd(t.maximum(x, y), zip(xa, ya, Math.max), { dtype: dt, rtol: 0, atol: 0 });
    }
  },
);

// ---------------------------------------------------------------- strided views

/** A base array, a view of it (transposed, offset slice, or broadcast) and the view's values. */
const viewArb = ndArb({ minRank: 2, maxRank: 3, minDim: 1, maxDim: 4 }).chain((a) =>
  fc.tuple(fc.constant(a), fc.constantFrom("transpose", "slice", "broadcast", "slice+transpose"), permArb(a.shape.length))
).map(([a, kind, perm]) => {
  const make = (x: Tensor): Tensor => {
    if (kind === "transpose") return t.transpose(x, perm);
    if (kind === "slice") return t.slice(x, x.shape.map((d) => (d > 1 ? 1 : 0)));
    if (kind === "broadcast") return t.broadcastTo(t.sliceAxis(x, 0, 0, 1), [3, ...x.shape.slice(1)]);
    return t.transpose(t.slice(x, x.shape.map((d) => (d > 1 ? 1 : 0))), perm);
  };
  const shift = (s: number[]) => s.map((d) => (d > 1 ? d - 1 : d));
  let ref: Nd;
  if (kind === "transpose") ref = transposeRef(a, perm);
  else if (kind === "broadcast") ref = fromFn([3, ...a.shape.slice(1)], (i) => at(a, [0, ...i.slice(1)]));
  else {
    const s = fromFn(shift(a.shape), (i) => at(a, i.map((v, d) => (a.shape[d] > 1 ? v + 1 : v))));
    ref = kind === "slice" ? s : transposeRef(s, perm);
  }
  return { a, kind, make, ref };
});

prop("forward: ops on transposed, sliced and broadcast views equal the ops on contiguous copies", viewArb, ({ a, kind, make, ref }) => {
  for (const dt of FLOATS) {
    const v = make(T(a, dt));
    const c = T(ref, dt);
    assert(c.isContiguous(), "reference copy is contiguous");
    const same = (f: (x: Tensor) => Tensor | Tensor[], what: string, scale = 1) => {
      const fv = f(v), fc_ = f(c);
      const vs = Array.isArray(fv) ? fv : [fv], cs = Array.isArray(fc_) ? fc_ : [fc_];
      vs.forEach((y, i) => expectNd(y, nd(cs[i]), { ...tol(dt, scale), dtype: cs[i].dtype, msg: `${what} on a ${kind} view` }));
    };
    same((x) => x, "readback");
    same(t.exp, "exp");
    same((x) => t.add(x, t.exp(x)), "add");
    same((x) => t.mul(x, T(fromFn([x.shape[x.ndim - 1]], (i) => i[0] + 1), dt)), "mul broadcast");
    same((x) => t.sum(x, 0), "sum axis 0", 4);
    same((x) => t.sum(x, -1), "sum axis -1", 4);
    same((x) => t.max(x, [0, -1], { keepdims: true }), "max");
    same((x) => t.argmax(x, -1), "argmax");
    same((x) => t.cumsum(x, 0), "cumsum", 4);
    same((x) => t.topk(x, Math.min(2, x.shape[x.ndim - 1])), "topk");
    same((x) => t.cast(x, "f16"), "cast f16");
    same((x) => t.cast(x, "i32"), "cast i32");
    same((x) => t.where(t.gt(x, 0), x, t.neg(x)), "where");
    same((x) => t.concat([x, x], -1), "concat");
    same((x) => t.pad(x, [[1, 0], [0, 2]]), "pad");
    same((x) => t.reshape(x, [-1]), "reshape");
    same((x) => t.softmax(x, 0), "softmax", 4);
    same((x) => t.gather(x, t.zeros(x.shape, "i32"), -1), "gather");
    same((x) => t.take(x, t.tensor([0, 0], { dtype: "i32" }), 0), "take");
    same((x) => t.scatterAdd(x, t.zeros(x.shape, "i32"), x, 0), "scatterAdd", 4);
    same((x) => t.matmul(x, t.mT(x)), "matmul with its own transpose", 10);
    same((x) => t.matmul(t.mT(x), x), "matmul of a transpose", 10);
  }
});
