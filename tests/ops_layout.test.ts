// Forward values of the layout, indexing, softmax-family and cast ops against plain-JS references,
// on fast-check inputs, in f32 and f64, and ops on strided views.
import fc from "fast-check";
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import {
  alongAxis,
  at,
  axesArb,
  bat,
  bf16Ref,
  BOOL,
  broadcastPairArb,
  bshape,
  expectNd,
  f16Ref,
  FLOATS,
  fromFn,
  I32,
  map,
  type Nd,
  nd,
  ndArb,
  ndOf,
  normAx,
  permArb,
  prop,
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

const sumOf = (v: number[]) => v.reduce((p, q) => p + q, 0);

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
    a.shape.forEach((
      d,
      i,
    ) => (merge[i] && dims.length ? (dims[dims.length - 1] *= d) : dims.push(d)));
    for (const p of ones) dims.splice(Math.min(p, dims.length), 0, 1);
    const target = [...dims];
    const h = hole % Math.max(target.length, 1);
    if (useHole && target.length && size(target.filter((_, i) => i !== h)) !== 0) target[h] = -1;
    return [a, target, dims] as const;
  })
);

prop("forward: reshape (with -1), also of strided views", reshapeArb, ([a, target, dims]) => {
  for (const dt of FLOATS) {
    expectNd(t.reshape(T(a, dt), target), {
      shape: dims,
      data: a.data.map((v) => (dt === "f32" ? Math.fround(v) : v)),
    }, { dtype: dt, rtol: 0, atol: 0 });
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
  ndArb({ minDim: 0, maxRank: 4 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      permArb(a.shape.length),
      fc.array(fc.boolean(), { minLength: a.shape.length, maxLength: a.shape.length }),
    )
  ),
  ([a, perm, neg]) => {
    const r = a.shape.length;
    const p = perm.map((x, i) => (neg[i] ? x - r : x));
    expectNd(t.transpose(T(a), p), transposeRef(a, perm), { rtol: 0, atol: 0 });
    expectNd(t.permute(T(a, "i32"), perm), transposeRef(map(a, Math.trunc), perm), {
      rtol: 0,
      atol: 0,
      dtype: "i32",
    });
    expectNd(t.transpose(T(a)), transposeRef(a, [...Array(r).keys()].reverse()), {
      rtol: 0,
      atol: 0,
    });
    if (r >= 2) {
      expectNd(
        t.swapAxes(T(a), 0, -1),
        transposeRef(a, [r - 1, ...[...Array(r).keys()].slice(1, r - 1), 0]),
        { rtol: 0, atol: 0 },
      );
    }
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
  expectNd(t.squeeze(T(a)), { shape: a.shape.filter((d) => d !== 1), data: a.data }, {
    rtol: 0,
    atol: 0,
  });
  expectNd(t.squeeze(t.expandDims(T(a), e), e), a, { rtol: 0, atol: 0 });
});

/** Python slice semantics for a positive step. */
function sliceIdx(
  d: number,
  start: number | undefined,
  end: number | undefined,
  step: number,
): number[] {
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
      fc.option(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: r, maxLength: r }), {
        nil: undefined,
      }),
    );
  }),
  ([a, k, starts, ends, steps]) => {
    const st = starts.slice(0, k), en = ends.slice(0, k);
    const sel = a.shape.map((d, i) => sliceIdx(d, st[i], en[i], steps?.[i] ?? 1));
    const want = fromFn(sel.map((s) => s.length), (idx) => at(a, idx.map((j, i) => sel[i][j])));
    for (const dt of FLOATS) {
      expectNd(
        t.slice(T(a, dt), st, en, steps),
        map(want, (v) => (dt === "f32" ? Math.fround(v) : v)),
        { dtype: dt, rtol: 0, atol: 0 },
      );
    }
    // sliceAxis on one axis.
    if (a.shape.length > 0) {
      const ax = k % a.shape.length;
      const s1 = starts[ax], e1 = ends[ax];
      const ix = sliceIdx(a.shape[ax], s1, e1, 1);
      const w1 = fromFn(
        a.shape.map((d, i) => (i === ax ? ix.length : d)),
        (idx) => at(a, idx.map((j, i) => (i === ax ? ix[j] : j))),
      );
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
    ).chain(([shape, ax, lens]) =>
      fc.tuple(
        fc.constant(ax),
        fc.tuple(...lens.map((l) => ndOf(shape.map((d, i) => (i === ax ? l : d))))),
      )
    )
  ),
  ([ax, parts]) => {
    const r = parts[0].shape.length;
    const outShape = parts[0].shape.map((
      d,
      i,
    ) => (i === ax ? parts.reduce((s, p) => s + p.shape[ax], 0) : d));
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
    const same = parts.map((p) => ({
      shape: parts[0].shape,
      data: p.data.length === parts[0].data.length ? p.data : parts[0].data,
    }));
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
  ndArb({ minDim: 0, maxRank: 3 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.array(fc.tuple(fc.nat(2), fc.nat(2)), { minLength: 0, maxLength: a.shape.length }),
    )
  ),
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
      expectNd(
        t.pad(T(src, dt), widths as [number, number][]),
        dt === "f32" ? map(wd, Math.fround) : wd,
        { dtype: dt, rtol: 0, atol: 0 },
      );
    }
  },
);

// ---------------------------------------------------------------- indexing

prop(
  "forward: take with multi-dimensional indices along a random axis",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1 }).chain((a) =>
    fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }).chain((ax) => {
      const d = a.shape[normAx(ax, a.shape.length)];
      return fc.tuple(
        fc.constant(a),
        fc.constant(ax),
        shapeArb({ maxRank: 2, minDim: 0 }).chain((s) =>
          ndOf(s, { int: true, min: 0, max: d - 1 })
        ),
      );
    })
  ),
  ([a, ax, idx]) => {
    const p = normAx(ax, a.shape.length);
    const shape = [...a.shape.slice(0, p), ...idx.shape, ...a.shape.slice(p + 1)];
    const k = idx.shape.length;
    const want = fromFn(
      shape,
      (i) => at(a, [...i.slice(0, p), at(idx, i.slice(p, p + k)), ...i.slice(p + k)]),
    );
    for (const dt of FLOATS) {
      expectNd(t.take(T(a, dt), I32(idx), ax), dt === "f32" ? map(want, Math.fround) : want, {
        dtype: dt,
        rtol: 0,
        atol: 0,
      });
    }
  },
);

prop(
  "forward: takeAlongAxis/gather with broadcast index dims",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }),
      fc.array(fc.constantFrom("both", "x1", "idx1"), {
        minLength: a.shape.length,
        maxLength: a.shape.length,
      }),
      fc.integer({ min: 0, max: 4 }),
    ).chain(([a0, ax, ones, m]) => {
      const p = normAx(ax, a0.shape.length);
      // Off the axis, either side may have size 1 and is broadcast to the other (a stride-0 view).
      const xs = a0.shape.map((d, i) => (i !== p && ones[i] === "x1" ? 1 : d));
      const is = a0.shape.map((d, i) => (i === p ? m : ones[i] === "idx1" ? 1 : d));
      return fc.tuple(
        ndOf(xs),
        fc.constant(ax),
        ndOf(is, { int: true, min: 0, max: a0.shape[p] - 1 }),
      );
    })
  ),
  ([a, ax, idx]) => {
    const p = normAx(ax, a.shape.length);
    const shape = a.shape.map((d, i) => (i === p ? idx.shape[p] : Math.max(d, idx.shape[i])));
    const want = fromFn(
      shape,
      (i) => at(a, i.map((v, d) => (d === p ? bat(idx, i) : a.shape[d] === 1 ? 0 : v))),
    );
    for (const dt of FLOATS) {
      expectNd(
        t.takeAlongAxis(T(a, dt), I32(idx), ax),
        dt === "f32" ? map(want, Math.fround) : want,
        { dtype: dt, rtol: 0, atol: 0 },
      );
      expectNd(t.gather(T(a, dt), I32(idx), ax), dt === "f32" ? map(want, Math.fround) : want, {
        dtype: dt,
        rtol: 0,
        atol: 0,
      });
    }
  },
);

prop(
  "forward: scatterAdd accumulates repeated indices",
  ndArb({ minRank: 1, maxRank: 3, minDim: 1, maxDim: 3 }).chain((base) =>
    fc.tuple(
      fc.constant(base),
      fc.integer({ min: -base.shape.length, max: base.shape.length - 1 }),
      fc.integer({ min: 0, max: 6 }),
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
  ([base, ax, idx, upd]) => {
    const p = normAx(ax, base.shape.length);
    const want = { shape: [...base.shape], data: [...base.data] };
    for (let i = 0; i < idx.data.length; i++) {
      const ii = unravel(i, idx.shape);
      ii[p] = idx.data[i];
      const o = ii.reduce((acc, v, d) => acc * base.shape[d] + v, 0);
      want.data[o] += upd.data[i];
    }
    for (const dt of FLOATS) {
      expectNd(t.scatterAdd(T(base, dt), I32(idx), T(upd, dt), ax), want, {
        dtype: dt,
        ...tol(dt, 4),
      });
    }
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
  fc.integer({ min: 1, max: 5 }).chain((n) =>
    fc.tuple(
      fc.constant(n),
      ndArb({ maxRank: 2, minDim: 0 }, { int: true, min: -1, max: n }),
      fc.constantFrom<t.DType>("f32", "f64", "i32", "bool"),
    )
  ),
  ([n, idx, dt]) => {
    const want = fromFn([...idx.shape, n], (i) => +(at(idx, i.slice(0, -1)) === i[i.length - 1]));
    expectNd(t.oneHot(I32(idx), n, dt), want, { dtype: dt, rtol: 0, atol: 0 });
  },
);

prop(
  "forward: topk sorted descending, ties to the lower index, k = 0..n",
  shapeArb({ minRank: 1, maxRank: 3, minDim: 0, maxDim: 6 }).chain((s) =>
    fc.tuple(
      ndOf(s, { int: true, min: -3, max: 3 }),
      fc.integer({ min: 0, max: s[s.length - 1] }),
      fc.boolean(),
    )
  ),
  ([a, k, frac]) => {
    const vals = frac ? map(a, (v) => v / 4 + 0.125) : a; // small integer range: many ties
    const order = (line: number[]) =>
      line.map((v, i) => [v, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, k);
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
    const order = (line: number[]) =>
      line.map((v, i) => [v, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, k);
    const [v, i] = t.topk(t.transpose(T(a)), k);
    expectNd(v, alongAxis(rows, 1, (l) => order(l).map((p) => p[0]), k), { rtol: 0, atol: 0 });
    expectNd(i, alongAxis(rows, 1, (l) => order(l).map((p) => p[1]), k), {
      rtol: 0,
      atol: 0,
      dtype: "i32",
    });
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
    fc.tuple(
      fc.constant(a),
      fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }),
      fc.constantFrom(0, 1000, -1000, 1e6),
      axesArb(a.shape.length),
      fc.boolean(),
    )
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
      const o = dt === "f64"
        ? { rtol: 1e-12, atol: 1e-12 + Math.abs(offset) * 2 ** -50 }
        : { rtol: 1e-5, atol: 1e-5 + Math.abs(offset) * 2 ** -22 };
      expectNd(t.softmax(x, ax), s, { dtype: dt, ...tol(dt, 10), msg: "softmax" });
      expectNd(t.logSoftmax(x, ax), lsm, { dtype: dt, ...o, msg: "logSoftmax" });
      expectNd(t.logsumexp(x, axes, { keepdims }), reduceRef(xa, axes, keepdims, lseRef), {
        dtype: dt,
        ...o,
        msg: "logsumexp",
      });
      // Sums to one along the axis.
      expectNd(t.sum(t.softmax(x, ax), ax), reduceRef(s, [ax], false, () => 1), { ...tol(dt, 10) });
    }
  },
);

test("forward: logsumexp/softmax with -Infinity entries and all -Infinity rows", () => {
  const x = t.tensor([[-Infinity, -Infinity], [0, -Infinity], [1000, 1000]], { dtype: "f64" });
  assertClose(t.logsumexp(x, -1).dataSync(), [-Infinity, 0, 1000 + Math.log(2)], { rtol: 1e-15 });
  assertClose(t.logsumexp(x, 0).dataSync(), [
    lseRef([-Infinity, 0, 1000]),
    lseRef([-Infinity, -Infinity, 1000]),
  ], { rtol: 1e-15 });
  assertClose(t.softmax(x, -1).dataSync().slice(2), [1, 0, 0.5, 0.5]);
  assertClose(t.logSoftmax(x, -1).dataSync().slice(2), [0, -Infinity, -Math.log(2), -Math.log(2)], {
    rtol: 1e-15,
  });
  assertClose(t.logsumexp(t.tensor([1e308, 1e308], { dtype: "f64" })).dataSync(), [
    1e308 + Math.log(2),
  ]);
  assertClose(t.logsumexp(t.tensor([88, 89, 90], { dtype: "f32" })).dataSync(), [
    lseRef([88, 89, 90]),
  ], { rtol: 1e-6 });
});

prop(
  "forward: cumsum forward and reverse on random axes (float, i32, bool)",
  ndArb({ minRank: 1, maxRank: 3, minDim: 0 }).chain((a) =>
    fc.tuple(
      fc.constant(a),
      fc.integer({ min: -a.shape.length, max: a.shape.length - 1 }),
      fc.boolean(),
    )
  ),
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
      expectNd(t.cumsum(x, ax, { reverse }), alongAxis(nd(x), ax, scan), {
        dtype: dt,
        ...tol(dt, 10),
      });
    }
    const ia = map(a, Math.round);
    expectNd(t.cumsum(I32(ia), ax, { reverse }), alongAxis(ia, ax, scan), {
      dtype: "i32",
      rtol: 0,
      atol: 0,
    });
    const ba = map(a, (v) => +(v > 0));
    expectNd(t.cumsum(BOOL(ba), ax, { reverse }), alongAxis(ba, ax, scan), {
      dtype: "i32",
      rtol: 0,
      atol: 0,
    });
  },
);

prop(
  "forward: clip with number and broadcast tensor bounds",
  broadcastPairArb({ minDim: 0 }).chain(([s1, s2]) =>
    fc.tuple(ndOf(s1), ndOf(s2, { min: -1, max: 0 }), ndOf(s2, { min: 0, max: 1 }))
  ),
  ([a, lo, hi]) => {
    for (const dt of FLOATS) {
      const x = T(a, dt);
      expectNd(
        t.clip(x, -0.5, 0.5),
        map(nd(x), (v) => Math.min(Math.max(v, dt === "f32" ? Math.fround(-0.5) : -0.5), 0.5)),
        { dtype: dt, rtol: 0, atol: 0 },
      );
      const want = fromFn(
        bshape(a.shape, lo.shape),
        (i) => Math.min(Math.max(bat(nd(x), i), bat(nd(T(lo, dt)), i)), bat(nd(T(hi, dt)), i)),
      );
      expectNd(t.clip(x, T(lo, dt), T(hi, dt)), want, { dtype: dt, rtol: 0, atol: 0 });
    }
    expectNd(
      t.clip(I32(map(a, Math.round)), -1, 1),
      map(a, (v) => Math.min(Math.max(Math.round(v), -1), 1)),
      { dtype: "i32" },
    );
  },
);

// ---------------------------------------------------------------- f16 / bf16 and casts

const wideArb = fc.oneof(
  fc.double({ min: -70000, max: 70000, noNaN: true }),
  fc.double({ min: -1, max: 1, noNaN: true }),
  fc.double({ min: -1e-4, max: 1e-4, noNaN: true }),
  fc.double({ min: -1e39, max: 1e39, noNaN: true }),
);

prop(
  "forward: f16/bf16 storage round trip rounds to nearest even",
  fc.array(wideArb, { maxLength: 20 }),
  (vals) => {
    const f16 = t.tensor(vals, { dtype: "f16" }), bf16 = t.tensor(vals, { dtype: "bf16" });
    const got16 = f16.dataSync(), gotB = bf16.dataSync();
    assert(
      got16 instanceof Float32Array && gotB instanceof Float32Array,
      "f16/bf16 read back as f32",
    );
    vals.forEach((v, i) => {
      assertEquals(got16[i], f16Ref(v), `f16 of ${v}`);
      assertEquals(gotB[i], bf16Ref(v), `bf16 of ${v}`);
      // Within half / bfloat precision where representable.
      const fv = Math.fround(v);
      if (Math.abs(fv) >= 2 ** -14 && Math.abs(fv) <= 65504) {
        assert(Math.abs(got16[i] - fv) <= 2 ** -11 * Math.abs(fv), `f16 precision of ${v}`);
      }
      if (Math.abs(fv) >= 2 ** -126 && Number.isFinite(gotB[i])) {
        assert(Math.abs(gotB[i] - fv) <= 2 ** -8 * Math.abs(fv), `bf16 precision of ${v}`);
      }
    });
    const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;
    if (f16round) {
      vals.forEach((v, i) =>
        assertEquals(got16[i], f16round(Math.fround(v)), `f16 of ${v} vs Math.f16round`)
      );
    }
  },
);

test("forward: f16/bf16 special values and limits (async data() too)", async () => {
  const vals = [
    NaN,
    Infinity,
    -Infinity,
    -0,
    65504,
    65519,
    65520,
    2 ** -24,
    2 ** -25,
    2 ** -25 * 1.5,
    1 + 2 ** -11,
    3e38,
    3.4e38,
  ];
  const f16 = t.tensor(vals, { dtype: "f16" }).dataSync(),
    bf16 = t.tensor(vals, { dtype: "bf16" }).dataSync();
  assertClose(f16, [
    NaN,
    Infinity,
    -Infinity,
    0,
    65504,
    65504,
    Infinity,
    2 ** -24,
    0,
    2 ** -24,
    1,
    Infinity,
    Infinity,
  ], { rtol: 0, atol: 0 });
  assert(Object.is(f16[3], -0) && Object.is(bf16[3], -0), "-0 survives");
  assertClose(bf16, vals.map(bf16Ref), { rtol: 0, atol: 0 });
  const viaData = await t.tensor(vals, { dtype: "f16" }).data();
  assert(viaData instanceof Float32Array, "data() widens f16 to f32");
  assertClose(viaData, f16, { rtol: 0, atol: 0 });
  assertClose(await t.transpose(t.tensor([[1.5, 2.25], [3, 1e-3]], { dtype: "bf16" })).data(), [
    1.5,
    3,
    2.25,
    bf16Ref(1e-3),
  ], { rtol: 0, atol: 0 });
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

prop(
  "forward: cast between all dtypes",
  fc.array(
    fc.oneof(fc.double({ min: -1000, max: 1000, noNaN: true }), fc.integer({ min: -3, max: 3 })),
    { maxLength: 12 },
  ),
  (vals) => {
    for (const from of DTYPES) {
      const x = t.tensor(vals, { dtype: from });
      const xv = Array.from(x.dataSync());
      assertClose(xv, vals.map((v) => castRef(v, from)), {
        rtol: 0,
        atol: 0,
        msg: `store as ${from}`,
      });
      for (const to of DTYPES) {
        const y = t.cast(x, to);
        assertEquals(y.dtype, to);
        assertClose(y.dataSync(), xv.map((v) => castRef(v, to)), {
          rtol: 0,
          atol: 0,
          msg: `cast ${from} → ${to}`,
        });
      }
    }
  },
);

prop(
  "forward: arithmetic and reductions on f16/bf16 compute in f32 and round once",
  broadcastPairArb({ minDim: 0 }).chain(([s1, s2]) =>
    fc.tuple(ndOf(s1, { min: -100, max: 100 }), ndOf(s2, { min: -100, max: 100 }))
  ),
  ([a, b]) => {
    for (const [dt, r] of [["f16", f16Ref], ["bf16", bf16Ref]] as const) {
      const x = T(a, dt), y = T(b, dt);
      const xa = nd(x), ya = nd(y);
      expectNd(t.add(x, y), map(zip(xa, ya, (p, q) => p + q), r), { dtype: dt, rtol: 0, atol: 0 });
      expectNd(t.mul(x, y), map(zip(xa, ya, (p, q) => Math.fround(p * q)), r), {
        dtype: dt,
        rtol: 0,
        atol: 0,
      });
      expectNd(t.exp(t.div(x, 100)), map(xa, (p) => r(Math.exp(r(p / 100)))), {
        dtype: dt,
        rtol: 0,
        atol: 0,
      });
      expectNd(t.sum(x), { shape: [], data: [r(sumOf(xa.data))] }, {
        dtype: dt,
        rtol: 2 ** -7,
        atol: 1e-3,
      });
      expectNd(t.maximum(x, y), zip(xa, ya, Math.max), { dtype: dt, rtol: 0, atol: 0 });
    }
  },
);

// ---------------------------------------------------------------- strided views

/** A base array, a view of it (transposed, offset slice, or broadcast) and the view's values. */
const viewArb = ndArb({ minRank: 2, maxRank: 3, minDim: 1, maxDim: 4 }).chain((a) =>
  fc.tuple(
    fc.constant(a),
    fc.constantFrom("transpose", "slice", "broadcast", "slice+transpose"),
    permArb(a.shape.length),
  )
).map(([a, kind, perm]) => {
  const make = (x: Tensor): Tensor => {
    if (kind === "transpose") return t.transpose(x, perm);
    if (kind === "slice") return t.slice(x, x.shape.map((d) => (d > 1 ? 1 : 0)));
    if (kind === "broadcast") {
      return t.broadcastTo(t.sliceAxis(x, 0, 0, 1), [3, ...x.shape.slice(1)]);
    }
    return t.transpose(t.slice(x, x.shape.map((d) => (d > 1 ? 1 : 0))), perm);
  };
  const shift = (s: number[]) => s.map((d) => (d > 1 ? d - 1 : d));
  let ref: Nd;
  if (kind === "transpose") ref = transposeRef(a, perm);
  else if (kind === "broadcast") {
    ref = fromFn([3, ...a.shape.slice(1)], (i) => at(a, [0, ...i.slice(1)]));
  } else {
    const s = fromFn(shift(a.shape), (i) => at(a, i.map((v, d) => (a.shape[d] > 1 ? v + 1 : v))));
    ref = kind === "slice" ? s : transposeRef(s, perm);
  }
  return { a, kind, make, ref };
});

prop(
  "forward: ops on transposed, sliced and broadcast views equal the ops on contiguous copies",
  viewArb,
  ({ a, kind, make, ref }) => {
    for (const dt of FLOATS) {
      const v = make(T(a, dt));
      const c = T(ref, dt);
      assert(c.isContiguous(), "reference copy is contiguous");
      const same = (f: (x: Tensor) => Tensor | Tensor[], what: string, scale = 1) => {
        const fv = f(v), fc_ = f(c);
        const vs = Array.isArray(fv) ? fv : [fv], cs = Array.isArray(fc_) ? fc_ : [fc_];
        vs.forEach((y, i) =>
          expectNd(y, nd(cs[i]), {
            ...tol(dt, scale),
            dtype: cs[i].dtype,
            msg: `${what} on a ${kind} view`,
          })
        );
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
  },
);
