// VJPs of every differentiable op against central differences (checkGrads, f64), on fast-check
// inputs kept away from kinks and ties; then the transformation API: records, hasAux, argnums,
// vjp, customVjp, stopGradient, higher order, closures, unused and integer inputs.
import fc from "fast-check";
import * as t from "../mod.ts";
import { checkGrads, numericalGrad } from "../autodiff/check.ts";
import { isTraced } from "../autodiff/trace.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import {
  broadcastPairArb,
  broadcastShapesArb,
  bshape,
  distinctNd,
  type Nd,
  ndArb,
  ndOf,
  normAx,
  permArb,
  runs,
  shapeArb,
  size,
  T,
  type ValueOpts,
} from "./ref.ts";

type Tensor = t.Tensor;
type Check = {
  f: (...xs: Tensor[]) => Tensor;
  xs: Tensor[];
  opts?: Parameters<typeof checkGrads>[2];
};

/** One property: every generated case must pass checkGrads. */
function gradProp<A>(
  name: string,
  arb: fc.Arbitrary<A>,
  build: (v: A) => Check | Check[],
  numRuns = 20,
): void {
  test(`grad: ${name}`, () => {
    fc.assert(
      fc.property(arb, (v) =>
        t.tidy(() => {
          for (const c of [build(v)].flat()) checkGrads(c.f, c.xs, c.opts);
        })),
      { numRuns: runs(numRuns) },
    );
  });
}

const small = { maxRank: 3, maxDim: 3 };
const arr = (v: ValueOpts = {}) => ndArb(small, v);
const I32 = (a: Nd): Tensor => T(a, "i32");

/** Distinct values whose absolute values are distinct too (no ties under abs). */
function distinctAbsNd(shape: readonly number[]): fc.Arbitrary<Nd> {
  const n = size(shape);
  return fc.tuple(
    fc.uniqueArray(fc.integer({ min: 1, max: 40 }), { minLength: n, maxLength: n }),
    fc.array(fc.boolean(), { minLength: n, maxLength: n }),
  ).map(([ks, neg]) => ({ shape: [...shape], data: ks.map((k, i) => (neg[i] ? -k : k) / 10) }));
}

/** Values on the grid (k + offset)/2: two arrays with offsets 0.25 and 0.75 never come within 0.25. */
const grid = (shape: readonly number[], offset: number) =>
  fc.array(fc.integer({ min: -4, max: 4 }), { minLength: size(shape), maxLength: size(shape) })
    .map((ks) => ({ shape: [...shape], data: ks.map((k) => (k + offset) / 2) }));

// ---------------------------------------------------------------- elementwise

const UNARY: [string, (x: Tensor) => Tensor, ValueOpts][] = [
  ["neg", t.neg, {}],
  ["exp", t.exp, {}],
  ["log", t.log, { min: 0.1, max: 5 }],
  ["sqrt", t.sqrt, { min: 0.1, max: 5 }],
  ["rsqrt", t.rsqrt, { min: 0.1, max: 5 }],
  ["square", t.square, {}],
  ["abs", t.abs, { awayFromZero: 0.05 }],
  ["relu", t.relu, { awayFromZero: 0.05 }],
  ["sign (zero gradient)", t.sign, { awayFromZero: 0.05 }],
  ["step (zero gradient)", t.step, { awayFromZero: 0.05 }],
  ["heaviside (zero gradient)", t.heaviside, { awayFromZero: 0.05 }],
  ["sigmoid", t.sigmoid, { min: -6, max: 6 }],
  ["tanh", t.tanh, {}],
  ["erf", t.erf, {}],
  ["gelu (erf form)", (x) => t.gelu(x), { min: -4, max: 4 }],
  ["gelu (tanh form)", (x) => t.gelu(x, { approximate: "tanh" }), { min: -4, max: 4 }],
  ["sin", t.sin, {}],
  ["cos", t.cos, {}],
  ["relu of a sum (relu(x)·x)", (x) => t.mul(t.relu(x), x), { awayFromZero: 0.05 }],
];

for (const [name, op, v] of UNARY) {
  gradProp(name, arr(v), (a) => ({ f: op, xs: [T(a)] }), 25);
}

test("grad: sign and step have zero gradient, relu/abs take the one-sided slope", () => {
  const x = t.tensor([-2, -0.5, 0.5, 2], { dtype: "f64" });
  assertClose(t.grad((y: Tensor) => t.sum(t.sign(y)))(x).dataSync(), [0, 0, 0, 0]);
  assertClose(t.grad((y: Tensor) => t.sum(t.step(y)))(x).dataSync(), [0, 0, 0, 0]);
  assertClose(t.grad((y: Tensor) => t.sum(t.relu(y)))(x).dataSync(), [0, 0, 1, 1]);
  assertClose(t.grad((y: Tensor) => t.sum(t.abs(y)))(x).dataSync(), [-1, -1, 1, 1]);
});

const BINARY: [string, (a: Tensor, b: Tensor) => Tensor, ValueOpts, ValueOpts][] = [
  ["add", t.add, {}, {}],
  ["sub", t.sub, {}, {}],
  ["mul", t.mul, {}, {}],
  ["div", t.div, {}, { awayFromZero: 0.5 }],
  ["pow", t.pow, { min: 0.2, max: 3 }, { min: -2, max: 2 }],
];

for (const [name, op, va, vb] of BINARY) {
  gradProp(
    `${name} with broadcasting`,
    broadcastPairArb(small).chain(([sa, sb]) => fc.tuple(ndOf(sa, va), ndOf(sb, vb))),
    (
      [a, b],
    ) => [{ f: op, xs: [T(a), T(b)] }, { f: (x) => op(x, T(b)), xs: [T(a)] }, {
      f: (y) => op(T(a), y),
      xs: [T(b)],
    }],
    25,
  );
}

gradProp(
  "maximum/minimum with broadcasting, away from ties",
  broadcastPairArb(small).chain(([sa, sb]) => fc.tuple(grid(sa, 0.25), grid(sb, 0.75))),
  (
    [a, b],
  ) => [{ f: t.maximum, xs: [T(a), T(b)] }, { f: t.minimum, xs: [T(b), T(a)] }, {
    f: (x) => t.maximum(x, 0.1),
    xs: [T(a)],
  }],
  25,
);

gradProp(
  "where with three-way broadcasting (no gradient to the condition)",
  broadcastShapesArb(3, small).chain(([sc, sa, sb]) => fc.tuple(ndOf(sc), ndOf(sa), ndOf(sb))),
  ([c, a, b]) => {
    const cond = t.gt(T(c), 0);
    return { f: (x, y) => t.where(cond, x, y), xs: [T(a), T(b)] };
  },
  25,
);

gradProp(
  "clip with number and tensor bounds, away from the bounds",
  broadcastPairArb(small).chain(([sx, sb]) =>
    fc.tuple(
      grid(sx, 0.5),
      fc.array(fc.constantFrom(-1, -0.5, 0), { minLength: size(sb), maxLength: size(sb) }),
      fc.constant(sb),
    )
  ),
  ([x, lo, sb]) => {
    const loT = T({ shape: sb, data: lo });
    const hiT = T({ shape: sb, data: lo.map((v) => v + 1) });
    return [{ f: (y) => t.clip(y, -0.5, 0.5), xs: [T(x)] }, {
      f: (y, l, h) => t.clip(y, l, h),
      xs: [T(x), loT, hiT],
    }];
  },
);

gradProp("cast through f32 and back (looser: f32 rounding in the differences)", arr(), (a) => ({
  f: (x) => t.cast(t.mul(t.cast(x, "f32"), 3), "f64"),
  xs: [T(a)],
  opts: { eps: 1e-2, rtol: 1e-4, atol: 1e-4 },
}));

// ---------------------------------------------------------------- reductions

const redArb = <V>(vals: (shape: number[]) => fc.Arbitrary<V>) =>
  shapeArb(small).chain((shape) => {
    const r = shape.length;
    return fc.tuple(
      vals(shape),
      fc.option(
        fc.subarray([...Array(r).keys()]).map((ax) => ax.map((x, i) => (i % 2 ? x - r : x))),
        { nil: undefined },
      ),
      fc.boolean(),
    );
  });

gradProp(
  "sum and mean over random axes, keepdims",
  redArb((s) => ndOf(s)),
  ([a, axes, keepdims]) => [
    { f: (x) => t.sum(x, axes, { keepdims }), xs: [T(a)] },
    { f: (x) => t.mean(x, axes, { keepdims }), xs: [T(a)] },
  ],
  30,
);

gradProp(
  "max and min over random axes (distinct values)",
  redArb(distinctNd),
  ([a, axes, keepdims]) => [
    { f: (x) => t.max(x, axes, { keepdims }), xs: [T(a)] },
    { f: (x) => t.min(x, axes, { keepdims }), xs: [T(a)] },
  ],
  30,
);

test("grad: max shares the cotangent equally among tied maxima (as JAX)", () => {
  const g = t.grad((x: Tensor) => t.max(x))(t.tensor([1, 3, 3, 2], { dtype: "f64" }));
  assertClose(g.dataSync(), [0, 0.5, 0.5, 0]);
  const gm = t.grad((x: Tensor) => t.sum(t.maximum(x, 1)))(t.tensor([1, 2, 0], { dtype: "f64" }));
  assertClose(gm.dataSync(), [0.5, 1, 0]);
});

gradProp(
  "variance (ddof 0 and 1)",
  redArb((s) => ndOf(s)).filter(([a, axes]) =>
    (axes ?? [...a.shape.keys()]).reduce((n, x) => n * a.shape[normAx(x, a.shape.length)], 1) > 1
  ),
  ([a, axes, keepdims]) => [
    { f: (x) => t.variance(x, axes, { keepdims }), xs: [T(a)] },
    { f: (x) => t.var(x, axes, { keepdims, ddof: 1 }), xs: [T(a)] },
  ],
  30,
);

gradProp(
  "norm ord 1, 2 and Infinity (no zeros, distinct magnitudes)",
  redArb(distinctAbsNd),
  ([a, axes, keepdims]) => [
    { f: (x) => t.norm(x, axes, { keepdims }), xs: [T(a)] },
    { f: (x) => t.norm(x, axes, { keepdims, ord: 1 }), xs: [T(a)] },
    { f: (x) => t.norm(x, axes, { keepdims, ord: Infinity }), xs: [T(a)] },
  ],
  30,
);

gradProp(
  "logsumexp over random axes, also with large offsets",
  redArb((s) => ndOf(s)).chain((v) => fc.tuple(fc.constant(v), fc.constantFrom(0, 500, -500))),
  ([[a, axes, keepdims], off]) => ({
    f: (x) => t.logsumexp(t.add(x, off), axes, { keepdims }),
    xs: [T(a)],
  }),
  30,
);

const axisArb = <V>(vals: (shape: number[]) => fc.Arbitrary<V>) =>
  shapeArb({ ...small, minRank: 1 }).chain((shape) =>
    fc.tuple(vals(shape), fc.integer({ min: -shape.length, max: shape.length - 1 }))
  );

gradProp("softmax and logSoftmax along a random axis", axisArb((s) => ndOf(s)), ([a, ax]) => [
  { f: (x) => t.softmax(x, ax), xs: [T(a)] },
  { f: (x) => t.logSoftmax(x, ax), xs: [T(a)] },
], 30);

gradProp(
  "cumsum forward and reverse",
  axisArb((s) => ndOf(s)).chain((v) => fc.tuple(fc.constant(v), fc.boolean())),
  ([[a, ax], reverse]) => ({
    f: (x) => t.cumsum(x, ax, { reverse }),
    xs: [T(a)],
  }),
  30,
);

gradProp(
  "topk values (distinct values), k = 0..n",
  shapeArb({ ...small, minRank: 1 }).chain((s) =>
    fc.tuple(distinctNd(s), fc.integer({ min: 0, max: s[s.length - 1] }))
  ),
  ([a, k]) => ({ f: (x) => t.topk(x, k)[0], xs: [T(a)] }),
  30,
);

// ---------------------------------------------------------------- matmul

gradProp(
  "matmul: 2-D, batched with broadcast batch dims, 1-D operands, transposed views",
  fc.record({
    batch: broadcastPairArb({ maxRank: 2, maxDim: 2 }),
    M: fc.integer({ min: 1, max: 3 }),
    K: fc.integer({ min: 1, max: 3 }),
    N: fc.integer({ min: 1, max: 3 }),
    kind: fc.constantFrom("plain", "transA", "transB", "oneA", "oneB", "both1"),
  }).chain((c) => {
    const { M, K, N } = c;
    const [ba, bb] = c.batch;
    const shapes: Record<string, [number[], number[]]> = {
      plain: [[...ba, M, K], [...bb, K, N]],
      transA: [[...ba, K, M], [...bb, K, N]],
      transB: [[...ba, M, K], [...bb, N, K]],
      oneA: [[K], [...bb, K, N]],
      oneB: [[...ba, M, K], [K]],
      both1: [[K], [K]],
    };
    const [sa, sb] = shapes[c.kind];
    return fc.tuple(fc.constant(c.kind), ndOf(sa), ndOf(sb));
  }),
  ([kind, a, b]) => ({
    f: (x, y) => t.matmul(kind === "transA" ? t.mT(x) : x, kind === "transB" ? t.mT(y) : y),
    xs: [T(a), T(b)],
  }),
  30,
);

// ---------------------------------------------------------------- layout and indexing

gradProp(
  "reshape (with -1), transpose, expandDims, squeeze, broadcastTo",
  fc.tuple(
    ndArb({ maxRank: 3, maxDim: 3 }).chain((a) =>
      fc.tuple(
        fc.constant(a),
        permArb(a.shape.length),
        fc.integer({ min: -(a.shape.length + 1), max: a.shape.length }),
      )
    ),
    broadcastPairArb(small).chain(([s1, s2]) => fc.tuple(ndOf(s2), fc.constant(s1))),
  ),
  ([[a, perm, ax], [b, to]]) => {
    const full = bshape(b.shape, to);
    const cases: Check[] = [
      { f: (x) => t.reshape(x, [-1]), xs: [T(a)] },
      { f: (x) => t.reshape(t.transpose(x, perm), [...a.shape].reverse()), xs: [T(a)] },
      { f: (x) => t.transpose(x, perm), xs: [T(a)] },
      { f: (x) => t.squeeze(t.expandDims(x, ax)), xs: [T(a)] },
    ];
    cases.push({ f: (x) => t.broadcastTo(x, full), xs: [T(b)] });
    return cases;
  },
  30,
);

gradProp(
  "slice (negative, clamped, stepped) and sliceAxis",
  ndArb({ minRank: 1, maxRank: 3, maxDim: 4 }).chain((a) => {
    const r = a.shape.length;
    const b = fc.integer({ min: -5, max: 5 });
    return fc.tuple(
      fc.constant(a),
      fc.array(b, { minLength: r, maxLength: r }),
      fc.array(b, { minLength: r, maxLength: r }),
      fc.array(fc.integer({ min: 1, max: 3 }), { minLength: r, maxLength: r }),
    );
  }),
  ([a, s, e, st]) => [
    { f: (x) => t.slice(x, s, e, st), xs: [T(a)] },
    { f: (x) => t.slice(x, s.slice(0, 1)), xs: [T(a)] },
    { f: (x) => t.sliceAxis(x, -1, s[0], e[0]), xs: [T(a)] },
  ],
  30,
);

gradProp(
  "concat and stack (each part an input)",
  shapeArb({ minRank: 1, maxRank: 3, maxDim: 3 }).chain((shape) =>
    fc.tuple(
      fc.integer({ min: 0, max: shape.length - 1 }),
      fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 1, max: 3 }),
    )
      .chain(([ax, lens, k]) =>
        fc.tuple(
          fc.constant(ax),
          fc.tuple(...lens.map((l) => ndOf(shape.map((d, i) => (i === ax ? l : d))))),
          fc.array(ndOf(shape), { minLength: k, maxLength: k }),
        )
      )
  ),
  ([ax, parts, same]) => [
    { f: (...xs) => t.concat(xs, ax), xs: parts.map((p) => T(p)) },
    { f: (...xs) => t.stack(xs, -1), xs: same.map((p) => T(p)) },
    { f: (...xs) => t.stack(xs, 0), xs: same.map((p) => T(p)) },
  ],
  30,
);

gradProp(
  "pad",
  ndArb({ maxRank: 3, maxDim: 3 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.array(fc.tuple(fc.nat(2), fc.nat(2)), { maxLength: a.shape.length }),
    )
  ),
  ([a, w]) => ({ f: (x) => t.pad(x, w as [number, number][]), xs: [T(a)] }),
  30,
);

gradProp(
  "take, takeAlongAxis/gather (repeated indices accumulate)",
  ndArb({ minRank: 1, maxRank: 3, maxDim: 3 }).chain((a) =>
    fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }).chain((ax) => {
      const p = normAx(ax, a.shape.length), d = a.shape[p];
      return fc.tuple(
        fc.constant(a),
        fc.constant(ax),
        shapeArb({ maxRank: 2, maxDim: 4 }).chain((s) =>
          ndOf(s, { int: true, min: 0, max: d - 1 })
        ),
        fc.integer({ min: 0, max: 4 }).chain((m) =>
          ndOf(a.shape.map((x, i) => (i === p ? m : x)), { int: true, min: 0, max: d - 1 })
        ),
        fc.array(fc.boolean(), { minLength: a.shape.length, maxLength: a.shape.length }),
      );
    })
  ),
  ([a, ax, ti, gi, ones]) => {
    // x with size-1 dims off the axis is broadcast against the indices inside takeAlongAxis.
    const p = normAx(ax, a.shape.length);
    const xs = a.shape.map((d, i) => (i !== p && ones[i] ? 1 : d));
    return [
      { f: (x, i) => t.take(x, i, ax), xs: [T(a), I32(ti)] },
      { f: (x, i) => t.takeAlongAxis(x, i, ax), xs: [T(a), I32(gi)] },
      {
        f: (x, i) => t.takeAlongAxis(x, i, ax),
        xs: [T({ shape: xs, data: a.data.slice(0, size(xs)) }), I32(gi)],
      },
    ];
  },
  30,
);

gradProp(
  "scatterAdd with respect to base and updates",
  ndArb({ minRank: 1, maxRank: 3, maxDim: 3 }).chain((base) =>
    fc.tuple(
      fc.constant(base),
      fc.integer({ min: -base.shape.length, max: base.shape.length - 1 }),
      fc.integer({ min: 0, max: 4 }),
    ).chain(([base, ax, m]) => {
      const p = normAx(ax, base.shape.length);
      const is = base.shape.map((d, i) => (i === p ? m : d));
      return fc.tuple(
        fc.constant(base),
        fc.constant(ax),
        ndOf(is, { int: true, min: 0, max: base.shape[p] - 1 }),
        ndOf(is),
      );
    })
  ),
  ([base, ax, idx, upd]) => [
    { f: (b, i, u) => t.scatterAdd(b, i, t.mul(u, u), ax), xs: [T(base), I32(idx), T(upd)] },
    // Updates broadcast to the index shape inside scatterAdd: their gradient sums back.
    {
      f: (b, i, u) => t.scatterAdd(b, i, u, ax),
      xs: [T(base), I32(idx), T({ shape: [1], data: [upd.data[0] ?? 1] })],
    },
  ],
  30,
);

gradProp(
  "ops on strided views inside f (transposed, sliced, broadcast)",
  ndArb({ minRank: 2, maxRank: 2, maxDim: 3 }),
  (a) => ({
    f: (x) => {
      const v = t.transpose(x);
      const s = t.sliceAxis(v, 0, 0, 1);
      return t.concat([
        t.flatten(t.mul(t.exp(v), t.broadcastTo(s, v.shape))),
        t.flatten(t.cumsum(t.matmul(v, x), 0)),
      ]);
    },
    xs: [T(a)],
  }),
  20,
);

// ---------------------------------------------------------------- transformations

const f64 = (xs: number[] | number[][], shape?: number[]) =>
  t.tensor(xs as number[], { dtype: "f64", ...(shape ? { shape } : {}) });

test("grad: nested records (objects of arrays of tensors) get gradients of the same structure", () => {
  const params = {
    enc: { W: [f64([[1, 2], [3, 4]]), f64([0.5, -1])] },
    b: f64([2]),
    meta: "not a tensor",
  };
  const x = f64([1, -2]);
  const loss = (p: typeof params, input: Tensor) =>
    t.add(t.sum(t.square(t.add(t.matmul(p.enc.W[0], input), p.enc.W[1]))), t.sum(t.mul(p.b, p.b)));
  const g = t.grad(loss)(params, x);
  assertEquals(Object.keys(g).sort(), ["b", "enc", "meta"]);
  assert(Array.isArray(g.enc.W) && g.enc.W.length === 2, "W stays an array of two");
  assertEquals(g.meta, null);
  // h = W x + c = [1-4+0.5, 3-8-1] = [-2.5, -6]; dL/dW = 2 h xᵀ; dL/dc = 2h; dL/db = 2b.
  assertClose(g.enc.W[0].dataSync(), [-5, 10, -12, 24]);
  assertClose(g.enc.W[1].dataSync(), [-5, -12]);
  assertClose(g.b.dataSync(), [4]);
  // Against central differences, leaf by leaf.
  const leaves = [params.enc.W[0], params.enc.W[1], params.b];
  const grads = [g.enc.W[0], g.enc.W[1], g.b];
  leaves.forEach((leaf, i) => {
    const num = numericalGrad((v) => {
      const p = {
        ...params,
        enc: { W: [i === 0 ? v : params.enc.W[0], i === 1 ? v : params.enc.W[1]] },
        b: i === 2 ? v : params.b,
      };
      return loss(p, x);
    }, leaf);
    assertClose(grads[i].dataSync(), num.dataSync(), { rtol: 1e-6, atol: 1e-6, msg: `leaf ${i}` });
  });
});

test("grad: hasAux returns [grads, aux] and valueAndGrad returns [[value, aux], grads]", () => {
  const f = (x: Tensor) => {
    const y = t.mul(x, x);
    return [t.sum(y), { y, note: "aux" }] as const;
  };
  const x = f64([1, 2, 3]);
  const [g, aux] = t.grad(f, { hasAux: true })(x);
  assertClose(g.dataSync(), [2, 4, 6]);
  assertClose(aux.y.dataSync(), [1, 4, 9]);
  assertEquals(aux.note, "aux");
  const [[v, aux2], g2] = t.valueAndGrad(f, { hasAux: true })(x);
  assertClose(v.dataSync(), [14]);
  assertClose(aux2.y.dataSync(), [1, 4, 9]);
  assertClose(g2.dataSync(), [2, 4, 6]);
  // The aux output is not left attached to a trace: differentiating it again is a fresh start.
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(y, aux.y)))(x).dataSync(), [1, 4, 9]);
});

test("grad: argnums as a number and as arrays (any order)", () => {
  const f = (a: Tensor, b: Tensor, c: Tensor) => t.sum(t.mul(t.mul(a, b), t.exp(c)));
  const a = f64([1, 2]), b = f64([3, 4]), c = f64([0, 1]);
  const e = [1, Math.E];
  assertClose(t.grad(f, { argnums: 1 })(a, b, c).dataSync(), [1, 2 * e[1]]);
  const [ga, gc] = t.grad(f, { argnums: [0, 2] })(a, b, c);
  assertClose(ga.dataSync(), [3, 4 * e[1]]);
  assertClose(gc.dataSync(), [3, 8 * e[1]]);
  const [gc2, gb2] = t.grad(f, { argnums: [2, 1] })(a, b, c);
  assertClose(gc2.dataSync(), gc.dataSync());
  assertClose(gb2.dataSync(), [1, 2 * e[1]]);
  const [v, gs] = t.valueAndGrad(f, { argnums: [0] })(a, b, c);
  assertClose(v.dataSync(), [3 + 8 * e[1]]);
  assert(Array.isArray(gs) && gs.length === 1, "an argnums array gives a tuple even of one");
  assertThrows(() => t.grad(f, { argnums: 3 })(a, b, c), "argnums", "3");
});

test("grad: vjp with a non-scalar output, called twice with different cotangents", () => {
  const W = f64([[1, 2, 3], [4, 5, 6]]);
  const x = f64([1, -1, 2]);
  const [y, back] = t.vjp((w: Tensor, v: Tensor) => t.tanh(t.matmul(w, v)), W, x);
  assertEquals(y.shape, [2]);
  const yv = Array.from(y.dataSync());
  const d = yv.map((q) => 1 - q * q);
  for (const ct of [[1, 0], [0.5, -2]]) {
    const [gW, gx] = back(f64(ct)) as Tensor[];
    const u = ct.map((c, i) => c * d[i]);
    assertClose(gW.dataSync(), [u[0] * 1, u[0] * -1, u[0] * 2, u[1] * 1, u[1] * -1, u[1] * 2], {
      msg: `gW for ${ct}`,
    });
    assertClose(gx.dataSync(), [u[0] * 1 + u[1] * 4, u[0] * 2 + u[1] * 5, u[0] * 3 + u[1] * 6], {
      msg: `gx for ${ct}`,
    });
  }
  // A record output takes a record cotangent.
  const [out, back2] = t.vjp((v: Tensor) => ({ s: t.sum(v), d: t.mul(v, 2) }), x);
  assertClose(out.d.dataSync(), [2, -2, 4]);
  const [gx2] = back2({ s: f64([1], []), d: f64([1, 2, 3]) }) as Tensor[];
  assertClose(gx2.dataSync(), [3, 5, 7]);
});

test("grad: customVjp straight-through estimator: forward is step(x), backward passes g", () => {
  const ste = t.customVjp(
    (x: Tensor) => [t.step(x), null] as [Tensor, null],
    (_res, g: Tensor) => [g],
    "ste",
  );
  const x = f64([-1, 0.5, 2]);
  assertClose(ste(x).dataSync(), [0, 1, 1]);
  const w = f64([3, -1, 2]);
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(ste(y), w)))(x).dataSync(), [3, -1, 2]);
  // Without the custom rule, step has zero gradient.
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(t.step(y), w)))(x).dataSync(), [0, 0, 0]);
});

test("grad: customVjp uses the given rule even when it differs from the true gradient", () => {
  const weird = t.customVjp(
    (x: Tensor, y: Tensor) => [t.mul(x, y), { x, y }] as [Tensor, { x: Tensor; y: Tensor }],
    (r, g: Tensor) => [t.mul(g, 7), t.mul(g, r.x)],
    "weird",
  );
  const x = f64([1, 2]), y = f64([3, 4]);
  assertClose(weird(x, y).dataSync(), [3, 8]);
  const [gx, gy] = t.grad((a: Tensor, b: Tensor) => t.sum(weird(a, b)), { argnums: [0, 1] })(x, y);
  assertClose(gx.dataSync(), [7, 7]); // true gradient would be y = [3, 4]
  assertClose(gy.dataSync(), [1, 2]);
  // Composed with ordinary ops on both sides: chain rule through the custom rule.
  const g = t.grad((a: Tensor) => t.sum(t.exp(weird(t.mul(a, 2), y))))(x);
  assertClose(g.dataSync(), [Math.exp(6) * 7 * 2, Math.exp(16) * 7 * 2], { rtol: 1e-12 });
  // A rule returning the wrong number of cotangents is reported by name.
  const bad = t.customVjp(
    (a: Tensor) => [t.mul(a, 1), null] as [Tensor, null],
    () => [],
    "badRule",
  );
  assertThrows(() => t.grad((a: Tensor) => t.sum(bad(a)))(x), "badRule", "0 cotangents", "1 input");
});

test("grad: stopGradient blocks the gradient but keeps the value", () => {
  const x = f64([1, 2, 3]);
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(y, t.stopGradient(y))))(x).dataSync(), [1, 2, 3]);
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(y, y)))(x).dataSync(), [2, 4, 6]);
  assertClose(t.stopGradient(x).dataSync(), [1, 2, 3]);
  assertClose(t.grad((y: Tensor) => t.sum(t.stopGradient(t.exp(y))))(x).dataSync(), [0, 0, 0]);
});

gradProp(
  "second derivatives of elementwise ops match closed forms",
  arr({ min: -2, max: 2 }),
  (a) => {
    const cases: [(x: Tensor) => Tensor, (x: number) => number][] = [
      [t.sin, (x) => -Math.sin(x)],
      [t.exp, Math.exp],
      [(x) => t.mul(x, t.mul(x, x)), (x) => 6 * x],
      [(x) => t.pow(x, 3), (x) => 6 * x],
      [t.tanh, (x) => -2 * Math.tanh(x) * (1 - Math.tanh(x) ** 2)],
      [t.sigmoid, (x) => {
        const s = 1 / (1 + Math.exp(-x));
        return s * (1 - s) * (1 - 2 * s);
      }],
    ];
    const x = T(a);
    for (const [op, d2] of cases) {
      const g1 = (y: Tensor) => t.grad((z: Tensor) => t.sum(op(z)))(y);
      const g2 = t.grad((y: Tensor) => t.sum(g1(y)))(x);
      assertClose(g2.dataSync(), a.data.map(d2), { rtol: 1e-10, atol: 1e-10 });
    }
    // And the gradient of a gradient against differences of the first gradient (Hessian-vector products).
    return [
      { f: (y) => t.grad((z: Tensor) => t.sum(t.mul(t.tanh(z), z)))(y), xs: [x] },
      { f: (y) => t.grad((z: Tensor) => t.logsumexp(t.mul(z, z)))(y), xs: [x] },
      { f: (y) => t.grad((z: Tensor) => t.sum(t.gelu(z)))(y), xs: [x] },
    ];
  },
  15,
);

test("grad: a non-leaf value used by several ops gets every consumer's cotangent (diamonds)", () => {
  // e is consumed by mul directly and through sub; a wrong topological order dropped one path.
  const x = f64([0.5, 0.2]);
  const g = t.grad((y: Tensor) => {
    const e = t.exp(y);
    return t.sum(t.mul(e, t.sub(1, e)));
  })(x);
  assertClose(g.dataSync(), [0.5, 0.2].map((v) => Math.exp(v) * (1 - 2 * Math.exp(v))), {
    rtol: 1e-12,
  });
  assertClose(t.grad((y: Tensor) => t.sum(t.softmax(y)))(x).dataSync(), [0, 0], { atol: 1e-15 });
  // A long chain of diamonds: deep graphs must neither overflow the stack nor lose paths.
  const deep = t.grad((y: Tensor) => {
    let z = y;
    for (let i = 0; i < 3000; i++) z = t.add(t.mul(z, 0.25), t.mul(z, 0.75));
    return t.sum(z);
  })(x);
  assertClose(deep.dataSync(), [1, 1], { rtol: 1e-9 });
});

test("grad: size-0 inputs get size-0 gradients", () => {
  const e = t.zeros([0, 3], "f64");
  const g = t.grad((x: t.Tensor) => t.add(t.sum(t.exp(x)), 1))(e);
  assertEquals(g.shape, [0, 3]);
  const [ga, gb] = t.grad((a: Tensor, b: Tensor) => t.sum(t.matmul(a, b)), { argnums: [0, 1] })(
    t.zeros([2, 0], "f64"),
    t.zeros([0, 3], "f64"),
  );
  assertEquals(ga.shape, [2, 0]);
  assertEquals(gb.shape, [0, 3]);
  const gc = t.grad((a: Tensor) => t.sum(t.concat([a, t.zeros([0], "f64")])))(f64([1, 2]));
  assertClose(gc.dataSync(), [1, 1]);
});

test("grad: customVjp with several outputs; unused output cotangents arrive as zeros", () => {
  const sincos = t.customVjp(
    (x: Tensor) => [[t.sin(x), t.cos(x)], x] as [Tensor[], Tensor],
    (x, [gs, gc]: Tensor[]) => [t.sub(t.mul(gs, t.cos(x)), t.mul(gc, t.sin(x)))],
    "sincos",
  );
  const x = f64([0.3, 1.1]);
  const [s, c] = sincos(x);
  assertClose(s.dataSync(), [Math.sin(0.3), Math.sin(1.1)]);
  assertClose(c.dataSync(), [Math.cos(0.3), Math.cos(1.1)]);
  assertClose(t.grad((y: Tensor) => t.sum(sincos(y)[0]))(x).dataSync(), [
    Math.cos(0.3),
    Math.cos(1.1),
  ]);
  assertClose(t.grad((y: Tensor) => t.sum(t.mul(sincos(y)[1], 2)))(x).dataSync(), [
    -2 * Math.sin(0.3),
    -2 * Math.sin(1.1),
  ]);
  // The rule is built from differentiable ops, so a second derivative flows through it.
  const d2 = t.grad((y: Tensor) => t.sum(t.grad((z: Tensor) => t.sum(sincos(z)[0]))(y)))(x);
  assertClose(d2.dataSync(), [-Math.sin(0.3), -Math.sin(1.1)], { rtol: 1e-12 });
});

test("grad: mixed partials (an outer input used inside an inner grad) and no tape left on inputs", () => {
  const x = f64([2, -1]), y0 = f64([5, 7]);
  // d/dx Σ ∂/∂y (y·x)² = d/dx Σ 2·y·x² = 4·y·x
  const g = t.grad((xx: Tensor) => t.sum(t.grad((y: Tensor) => t.sum(t.square(t.mul(y, xx))))(y0)))(
    x,
  );
  assertClose(g.dataSync(), [4 * 5 * 2, 4 * 7 * -1], { rtol: 1e-12 });
  assert(!isTraced(x) && !isTraced(y0), "inputs carry no trace afterwards");
  // Gradient of the identity and of a function of its output alone.
  assertClose(t.grad((s: Tensor) => s)(f64([3], [])).dataSync(), [1]);
});

test("grad: a closure over a constant tensor", () => {
  const c = f64([[1, 2], [3, 4]]);
  const f = (x: Tensor) => t.sum(t.mul(t.matmul(c, x), x));
  const x = f64([1, -1]);
  // d/dx xᵀCx = (C + Cᵀ)x = [[2,5],[5,8]]·[1,-1] = [-3, -3]
  assertClose(t.grad(f)(x).dataSync(), [-3, -3]);
  assert(!isTraced(c), "the constant is never made live");
  checkGrads(f, [x]);
});

test("grad: unused inputs get zeros of their shape; integer leaves get null", () => {
  const a = f64([1, 2]), b = f64([[1, 2, 3]]);
  const [ga, gb] = t.grad((p: Tensor, _q: Tensor) => t.sum(t.mul(p, p)), { argnums: [0, 1] })(a, b);
  assertClose(ga.dataSync(), [2, 4]);
  assertEquals(gb.shape, [1, 3]);
  assertEquals(gb.dtype, "f64");
  assertClose(gb.dataSync(), [0, 0, 0]);
  const idx = t.tensor([1, 1, 0], { dtype: "i32" });
  const g = t.grad((p: { w: Tensor; idx: Tensor; flag: Tensor }) => t.sum(t.take(p.w, p.idx)))({
    w: a,
    idx,
    flag: t.tensor([true]),
  });
  assertClose(g.w.dataSync(), [1, 2]);
  assertEquals(g.idx, null);
  assertEquals(g.flag, null);
  // An integer positional argument too.
  const [gw, gi] = t.grad((w: Tensor, i: Tensor) => t.sum(t.take(w, i)), { argnums: [0, 1] })(
    a,
    idx,
  );
  assertClose(gw.dataSync(), [1, 2]);
  assertEquals(gi, null);
});

test("grad: f32/f16/bf16 inputs get gradients of their dtype; checkGrads reports the failing element", () => {
  const g = t.grad((x: Tensor) => t.sum(t.exp(x)))(t.tensor([0, 1]));
  assertEquals(g.dtype, "f32");
  assertClose(g.dataSync(), [1, Math.E], { rtol: 1e-6 });
  for (const dt of ["f16", "bf16"] as const) {
    const h = t.grad((x: Tensor) => t.sum(t.mul(x, x)))(t.tensor([0.5, -2, 3], { dtype: dt }));
    assertEquals(h.dtype, dt);
    assertClose(h.dataSync(), [1, -4, 6]);
    // Mixed precision: an f16 leaf used in f32 arithmetic still gets an f16 gradient.
    const m = t.grad((x: Tensor) => t.sum(t.mul(t.cast(x, "f32"), t.tensor([2, 2, 2]))))(
      t.tensor([1, 2, 3], { dtype: dt }),
    );
    assertEquals(m.dtype, dt);
    assertClose(m.dataSync(), [2, 2, 2]);
  }
  // A deliberately wrong rule must be caught, naming input, element and both values.
  const wrong = t.customVjp(
    (x: Tensor) => [t.sin(x), x] as [Tensor, Tensor],
    (x, g: Tensor) => [t.mul(g, t.sin(x))],
    "wrongSin",
  );
  const err = assertThrows(
    () => checkGrads(wrong, [f64([0.3, 0.7])]),
    "input 0",
    "element 0",
    "analytic",
    "numeric",
  );
  assert(/analytic -?[\d.e-]+ vs numeric -?[\d.e-]+/.test(err.message), err.message);
});
