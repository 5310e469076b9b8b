// Forward values of the arithmetic ops (unary, binary, reductions, matmul) against plain-JS
// references, on fast-check inputs, in f32 and f64. Layout, indexing and casts: ops_layout.test.ts.
import fc from "fast-check";
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import {
  axesArb,
  bat,
  BOOL,
  broadcastPairArb,
  broadcastShapesArb,
  bshape,
  erfRef,
  expectNd,
  FLOATS,
  fromFn,
  I32,
  map,
  matmulRef,
  type Nd,
  nd,
  ndArb,
  ndOf,
  normAx,
  prop,
  reduceRef,
  size,
  T,
  tol,
  transposeRef,
  zip,
} from "./ref.ts";

type Tensor = t.Tensor;

// ---------------------------------------------------------------- unary

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const geluErf = (x: number) => 0.5 * x * (1 + erfRef(x / Math.SQRT2));
const geluTanh = (x: number) =>
  0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

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
  {
    name: "gelu (tanh form)",
    op: (x) => t.gelu(x, { approximate: "tanh" }),
    ref: geluTanh,
    min: -6,
    max: 6,
    scale: 10,
  },
];

for (const c of UNARY) {
  prop(
    `forward: ${c.name} on random shapes (f32, f64)`,
    ndArb({ minDim: 0, maxRank: 3 }, { min: c.min, max: c.max }),
    (a) => {
      for (const dt of FLOATS) {
        const x = T(a, dt);
        const want = map(nd(x), c.ref); // reference from the values as stored
        // erfRef carries ~1e-10 of its own error, so f64 erf-based checks use 1e-7 (as asked).
        const f64tol = c.ref === erfRef || c.ref === geluErf
          ? { rtol: 1e-7, atol: 1e-7 }
          : tol("f64");
        expectNd(c.op(x), want, {
          msg: `${c.name} ${dt}`,
          dtype: dt,
          ...(dt === "f64" ? f64tol : tol(dt, c.scale ?? 1)),
        });
      }
    },
  );
}

test("forward: erf and gelu at known values", () => {
  const xs = [0, 0.5, 1, 2, 3, -1, 4, -6];
  const erfKnown = [
    0,
    0.5204998778130465,
    0.8427007929497149,
    0.9953222650189527,
    0.9999779095030014,
    -0.8427007929497149,
    0.9999999845827421,
    -1,
  ];
  assertClose(t.erf(t.tensor(xs, { dtype: "f64" })).dataSync(), erfKnown, {
    rtol: 1e-14,
    atol: 1e-15,
  });
  assertClose(xs.map(erfRef), erfKnown, { rtol: 1e-7, atol: 1e-7, msg: "the test's own erf" });
  // gelu(1) = 0.5·(1 + erf(1/√2)) = Φ(1) = 0.8413447460685429.
  assertClose(t.gelu(t.tensor([1, -1, 0], { dtype: "f64" })).dataSync(), [
    0.8413447460685429,
    -0.15865525393145707,
    0,
  ], { rtol: 1e-14, atol: 1e-15 });
  // tanh form at 1: 0.5·(1 + tanh(√(2/π)·1.044715)) = 0.8411919906082768
  assertClose(t.gelu(t.tensor([1], { dtype: "f64" }), { approximate: "tanh" }).dataSync(), [
    0.8411919906082768,
  ], { rtol: 1e-14 });
});

test("forward: unary special values", () => {
  const v = (op: (x: Tensor) => Tensor, xs: number[]) =>
    Array.from(op(t.tensor(xs, { dtype: "f64" })).dataSync());
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

prop(
  "forward: integer and bool unary ops keep or promote dtypes",
  ndArb({ minDim: 0 }, { int: true, min: -5, max: 5 }),
  (a) => {
    const x = I32(a);
    expectNd(t.neg(x), map(a, (v) => -v), { dtype: "i32" });
    expectNd(t.abs(x), map(a, Math.abs), { dtype: "i32" });
    expectNd(t.sign(x), map(a, Math.sign), { dtype: "i32" });
    expectNd(t.relu(x), map(a, (v) => Math.max(v, 0)), { dtype: "i32" });
    expectNd(t.step(x), map(a, (v) => (v > 0 ? 1 : 0)), { dtype: "i32" });
    expectNd(t.square(x), map(a, (v) => v * v), { dtype: "i32" });
    expectNd(t.exp(x), map(a, Math.exp), { dtype: "f32", ...tol("f32") });
    expectNd(t.sqrt(t.abs(x)), map(a, (v) => Math.sqrt(Math.abs(v))), {
      dtype: "f32",
      ...tol("f32"),
    });
    const b = BOOL(map(a, (v) => (v > 0 ? 1 : 0)));
    expectNd(t.neg(b), map(a, (v) => (v > 0 ? -1 : 0)), { dtype: "i32" });
    expectNd(t.logicalNot(b), map(a, (v) => (v > 0 ? 0 : 1)), { dtype: "bool" });
  },
);

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
  {
    name: "pow (integer exponents of negative bases)",
    op: t.pow,
    ref: Math.pow,
    va: { min: -3, max: 3 },
    vb: { min: -3, max: 3, int: true },
  },
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
  const arb = broadcastPairArb({ minDim: 0, maxRank: 3 }).chain(([sa, sb]) =>
    fc.tuple(ndOf(sa, c.va ?? {}), ndOf(sb, c.vb ?? c.va ?? {}))
  );
  prop(`forward: ${c.name} with broadcasting (f32, f64)`, arb, ([a, b]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt), y = T(b, dt);
      const want = zip(nd(x), nd(y), c.ref);
      expectNd(c.op(x, y), want, {
        msg: `${c.name} ${dt} [${a.shape}] [${b.shape}]`,
        dtype: c.bool ? "bool" : dt,
        ...tol(dt),
      });
      // A JS number on either side broadcasts as a scalar of the tensor's dtype.
      const s = b.data[0] ?? 2;
      expectNd(c.op(x, s), map(nd(x), (v) => c.ref(v, dt === "f32" ? Math.fround(s) : s)), {
        msg: `${c.name} ${dt} with a number`,
        dtype: c.bool ? "bool" : dt,
        ...tol(dt),
      });
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
  const a = t.tensor([NaN, 1, NaN], { dtype: "f64" }),
    b = t.tensor([1, NaN, NaN], { dtype: "f64" });
  assertClose(t.maximum(a, b).dataSync(), [NaN, NaN, NaN]);
  assertClose(t.minimum(a, b).dataSync(), [NaN, NaN, NaN]);
  for (const op of [t.gt, t.ge, t.lt, t.le, t.eq]) {
    assertEquals(Array.from(op(a, b).dataSync()), [0, 0, 0]);
  }
  assertEquals(Array.from(t.ne(a, b).dataSync()), [1, 1, 1]);
});

prop(
  "forward: i32 arithmetic and comparisons stay exact",
  broadcastPairArb({ minDim: 0 }).chain(([sa, sb]) =>
    fc.tuple(ndOf(sa, { int: true, min: -50, max: 50 }), ndOf(sb, { int: true, min: -50, max: 50 }))
  ),
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
    ["bool", "bool", "i32"],
    ["bool", "i32", "i32"],
    ["i32", "i32", "i32"],
    ["i32", "f32", "f32"],
    ["i32", "f16", "f16"],
    ["f16", "bf16", "f32"],
    ["f16", "f32", "f32"],
    ["bf16", "f64", "f64"],
    ["f32", "f64", "f64"],
  ];
  for (const [a, b, want] of cases) {
    assertEquals(t.add(mk(a), mk(b)).dtype, want, `add ${a} ${b}`);
    assertEquals(t.add(mk(b), mk(a)).dtype, want, `add ${b} ${a}`);
    assertEquals(
      t.promote(a, b),
      want === "i32" && a === "bool" && b === "bool" ? "bool" : want,
      `promote ${a} ${b}`,
    );
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
  broadcastShapesArb(3, { minDim: 0 }).chain(([s1, s2, s3]) =>
    fc.tuple(ndOf(s1, CMP), ndOf(s2), ndOf(s3))
  ),
  ([c, a, b]) => {
    for (const dt of FLOATS) {
      const cond = t.gt(T(c, dt), 0);
      const want = fromFn(
        bshape(bshape(c.shape, a.shape), b.shape),
        (i) => (bat(c, i) > 0 ? bat(nd(T(a, dt)), i) : bat(nd(T(b, dt)), i)),
      );
      expectNd(t.where(cond, T(a, dt), T(b, dt)), want, { dtype: dt });
    }
    // Two JS numbers and no tensor operand: numbers default to f32, as tensor(1) does.
    expectNd(t.where(t.gt(T(c), 0), 1, -1), map(c, (v) => (v > 0 ? 1 : -1)), { dtype: "f32" });
    expectNd(
      t.where(t.gt(T(c), 0), I32(map(a, Math.trunc)), -1),
      fromFn(bshape(c.shape, a.shape), (i) => (bat(c, i) > 0 ? Math.trunc(bat(a, i)) : -1)),
      { dtype: "i32" },
    );
  },
);

// ---------------------------------------------------------------- reductions

const reduceArb = ndArb({ minDim: 0, maxRank: 4, maxDim: 3 }).chain((a) =>
  fc.tuple(fc.constant(a), axesArb(a.shape.length), fc.boolean())
);

const sumOf = (v: number[]) => v.reduce((p, q) => p + q, 0);
const reducedEmpty = (a: Nd, axes: number[] | undefined) =>
  (axes ?? [...a.shape.keys()]).some((x) => a.shape[normAx(x, a.shape.length)] === 0);

prop(
  "forward: sum/mean/max/min over random axes, keepdims (f32, f64)",
  reduceArb,
  ([a, axes, keepdims]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt), xa = nd(x);
      expectNd(t.sum(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, sumOf), {
        dtype: dt,
        ...tol(dt, 4),
      });
      expectNd(
        t.mean(x, axes, { keepdims }),
        reduceRef(xa, axes, keepdims, (v) => sumOf(v) / v.length),
        { dtype: dt, ...tol(dt, 4) },
      );
      if (reducedEmpty(a, axes)) {
        assertThrows(() => t.max(x, axes), "max", "empty");
        assertThrows(() => t.min(x, axes), "min", "empty");
      } else {
        expectNd(
          t.max(x, axes, { keepdims }),
          reduceRef(xa, axes, keepdims, (v) => Math.max(...v)),
          { dtype: dt, rtol: 0, atol: 0 },
        );
        expectNd(
          t.min(x, axes, { keepdims }),
          reduceRef(xa, axes, keepdims, (v) => Math.min(...v)),
          { dtype: dt, rtol: 0, atol: 0 },
        );
      }
    }
    // Bool sums count; integer sums stay integer.
    const b = map(a, (v) => +(v > 0));
    expectNd(t.sum(BOOL(b), axes, { keepdims }), reduceRef(b, axes, keepdims, sumOf), {
      dtype: "i32",
    });
    const ia = map(a, Math.round);
    expectNd(t.sum(I32(ia), axes, { keepdims }), reduceRef(ia, axes, keepdims, sumOf), {
      dtype: "i32",
    });
  },
);

prop(
  "forward: variance (ddof 0 and 1) and norm (ord 1, 2, Infinity) (f32, f64)",
  reduceArb,
  ([a, axes, keepdims]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt), xa = nd(x);
      const varRef = (ddof: number) => (v: number[]) => {
        const m = sumOf(v) / v.length;
        return sumOf(v.map((q) => (q - m) ** 2)) / (v.length - ddof);
      };
      const loose = dt === "f32" ? { rtol: 1e-4, atol: 1e-5 } : tol("f64", 10);
      expectNd(t.variance(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, varRef(0)), {
        dtype: dt,
        ...loose,
        msg: "var ddof 0",
      });
      expectNd(t.var(x, axes, { keepdims, ddof: 1 }), reduceRef(xa, axes, keepdims, varRef(1)), {
        dtype: dt,
        ...loose,
        msg: "var ddof 1",
      });
      expectNd(
        t.norm(x, axes, { keepdims }),
        reduceRef(xa, axes, keepdims, (v) => Math.sqrt(sumOf(v.map((q) => q * q)))),
        { dtype: dt, ...tol(dt, 4) },
      );
      expectNd(
        t.norm(x, axes, { keepdims, ord: 2 }),
        reduceRef(xa, axes, keepdims, (v) => Math.hypot(...v)),
        { dtype: dt, ...tol(dt, 4) },
      );
      expectNd(
        t.norm(x, axes, { keepdims, ord: 1 }),
        reduceRef(xa, axes, keepdims, (v) => sumOf(v.map(Math.abs))),
        { dtype: dt, ...tol(dt, 4) },
      );
      if (!reducedEmpty(a, axes)) {
        expectNd(
          t.norm(x, axes, { keepdims, ord: Infinity }),
          reduceRef(xa, axes, keepdims, (v) => Math.max(...v.map(Math.abs))),
          { dtype: dt, rtol: 0, atol: 0 },
        );
      }
    }
  },
);

prop(
  "forward: argmax/argmin with ties take the first index, i32, negative axes, keepdims",
  ndArb({ minRank: 1, minDim: 0, maxRank: 3 }, CMP).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.option(fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }), { nil: undefined }),
      fc.boolean(),
    )
  ),
  ([a, axis, keepdims]) => {
    const first = (better: (p: number, q: number) => boolean) => (v: number[]) =>
      v.reduce((bi, q, i) => (better(q, v[bi]) ? i : bi), 0);
    for (const dt of ["f32", "f64", "i32"] as const) {
      const x = T(a, dt);
      const src = axis === undefined ? { shape: [size(a.shape)], data: a.data } : a;
      const ax = axis === undefined ? 0 : axis;
      if (src.shape[normAx(ax, src.shape.length)] === 0) {
        assertThrows(() => t.argmax(x, axis), "argmax", "empty");
        continue;
      }
      const kd = keepdims && axis !== undefined;
      expectNd(
        t.argmax(x, axis, { keepdims: kd }),
        reduceRef(src, [ax], kd, first((p, q) => p > q)),
        { dtype: "i32", rtol: 0, atol: 0 },
      );
      expectNd(
        t.argmin(x, axis, { keepdims: kd }),
        reduceRef(src, [ax], kd, first((p, q) => p < q)),
        { dtype: "i32", rtol: 0, atol: 0 },
      );
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
  assert(
    !v.isContiguous() || a.shape[r - 1] <= 1 || a.shape[r - 2] <= 1,
    "a transposed view should be strided",
  );
  return v;
}

prop(
  "forward: matmul 2-D, batched with broadcast batch dims, 1-D operands, transposed views (f32, f64)",
  matmulArb,
  ([c, a, b]) => {
    for (const dt of FLOATS) {
      const x = c.transA ? asTransposedView(a, dt) : T(a, dt);
      const y = c.transB ? asTransposedView(b, dt) : T(b, dt);
      const want = npMatmulRef(nd(T(a, dt)), nd(T(b, dt)));
      expectNd(t.matmul(x, y), want, {
        msg: `matmul ${dt} [${a.shape}] [${b.shape}] ${c.transA} ${c.transB}`,
        dtype: dt,
        ...tol(dt, 10),
      });
    }
  },
  100,
);

test("forward: matmul of sizes large enough for BLAS, with transposed operands", () => {
  const rnd = (n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 2);
  for (const dt of FLOATS) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      const M = 37, K = 41, N = 35;
      const a: Nd = { shape: [M, K], data: rnd(M * K, 1) },
        b: Nd = { shape: [K, N], data: rnd(K * N, 2) };
      const x = ta ? asTransposedView(a, dt) : T(a, dt);
      const y = tb ? asTransposedView(b, dt) : T(b, dt);
      expectNd(t.matmul(x, y), matmulRef(nd(T(a, dt)), nd(T(b, dt))), {
        dtype: dt,
        ...(dt === "f32" ? { rtol: 1e-4, atol: 1e-4 } : tol("f64", 100)),
      });
    }
  }
});

test("forward: BLAS-sized matmul of offset slices (leading dimension > columns) and broadcast batches", () => {
  const rnd = (n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => Math.cos(i * 3.7 + seed) * 2);
  for (const dt of FLOATS) {
    const big: Nd = { shape: [45, 50], data: rnd(45 * 50, 3) };
    const bigB: Nd = { shape: [50, 44], data: rnd(50 * 44, 4) };
    // Rows 3..40, columns 5..46 of A; a view with offset and row stride 50.
    const a = t.slice(T(big, dt), [3, 5], [40, 46]);
    const b = t.slice(T(bigB, dt), [2, 1], [43, 40]);
    const aRef = fromFn([37, 41], ([i, j]) => big.data[(i + 3) * 50 + j + 5]);
    const bRef = fromFn([41, 39], ([i, j]) => bigB.data[(i + 2) * 44 + j + 1]);
    const o = dt === "f32" ? { rtol: 1e-4, atol: 1e-4 } : tol("f64", 100);
    expectNd(t.matmul(a, b), matmulRef(nd(T(aRef, dt)), nd(T(bRef, dt))), {
      dtype: dt,
      ...o,
      msg: "offset slices",
    });
    expectNd(
      t.matmul(t.mT(b), t.mT(a)),
      transposeRef(matmulRef(nd(T(aRef, dt)), nd(T(bRef, dt))), [1, 0]),
      { dtype: dt, ...o, msg: "transposed offset slices" },
    );
    // [2, 1, M, K] @ [3, K, N]: batch dims broadcast (stride-0 views of A).
    const a4: Nd = { shape: [2, 1, 33, 34], data: rnd(2 * 33 * 34, 5) };
    const b3: Nd = { shape: [3, 34, 35], data: rnd(3 * 34 * 35, 6) };
    expectNd(t.matmul(T(a4, dt), T(b3, dt)), matmulRef(nd(T(a4, dt)), nd(T(b3, dt))), {
      dtype: dt,
      ...o,
      msg: "broadcast batch",
    });
  }
});

prop(
  "forward: integer matmul is exact i32",
  fc.tuple(dimArb, dimArb, dimArb).chain(([M, K, N]) =>
    fc.tuple(
      ndOf([M, K], { int: true, min: -9, max: 9 }),
      ndOf([K, N], { int: true, min: -9, max: 9 }),
    )
  ),
  ([a, b]) => {
    expectNd(t.matmul(I32(a), I32(b)), matmulRef(a, b), { dtype: "i32", rtol: 0, atol: 0 });
  },
);
