/** The CPU backend: TypeScript kernels on typed arrays, matmul through OpenBLAS when found. */
import type { Backend, BinaryOp, UnaryOp, View } from "../backend.ts";
import { decode16, type DType, encode16, type StorageArray } from "../dtype.ts";
import { contiguousStrides, type Shape, sizeOf } from "../shape.ts";
import { mapStrided } from "./strided.ts";
import { allocShared, giveArray, takeArray, takeShared } from "./pool.ts";
import { allShared, ranges, runJobs, threadCap, threads } from "./threads.ts";
import { loadNative, native } from "./native.ts";
import * as K from "./kernels.ts";
import * as S from "./sparse.ts";
import { perType, typeKey } from "./specialize.ts";
import { trainKernels } from "./train_fused.ts";
import { gatherRows, scatterAddRows } from "./rows.ts";

type F = Float32Array | Float64Array;
import { loadBlas } from "./blas.ts";
import { BF16_MIN_WORK, cpuMatmulPrecision } from "./matmul_precision.ts";
import { readEnv } from "../platform/env.ts";

type Num = Float32Array | Float64Array | Int32Array | Uint8Array;

const UNARY: Record<UnaryOp, string> = {
  neg: "-a",
  abs: "Math.abs(a)",
  sign: "(a !== a ? a : +(a > 0) - +(a < 0))",
  exp: "Math.exp(a)",
  log: "Math.log(a)",
  sqrt: "Math.sqrt(a)",
  rsqrt: "1 / Math.sqrt(a)",
  sigmoid: "1 / (1 + Math.exp(-a))",
  tanh: "Math.tanh(a)",
  erf: "H.erf(a)",
  // Comparisons as +(cond) compile branch-free; a data-dependent ternary mispredicts half the time.
  relu: "(a === -Infinity ? 0 : +(a > 0) * a + 0)",
  step: "+(a > 0)",
  sin: "Math.sin(a)",
  cos: "Math.cos(a)",
  floor: "Math.floor(a)",
  ceil: "Math.ceil(a)",
  not: "+(a === 0)",
  copy: "a",
};

const BINARY: Record<BinaryOp, string> = {
  add: "a + b",
  sub: "a - b",
  mul: "a * b",
  div: "a / b",
  pow: "Math.pow(a, b)",
  floordiv: "Math.floor(a / b)",
  // Python's sign convention: the result takes the divisor's sign.
  mod: "(a - b * Math.floor(a / b))",
  max: "(a > b || a !== a ? a : b)",
  min: "(a < b || a !== a ? a : b)",
  gt: "+(a > b)",
  ge: "+(a >= b)",
  lt: "+(a < b)",
  le: "+(a <= b)",
  eq: "+(a === b)",
  ne: "+(a !== b)",
  // Operands of and/or are already cast to bool (0/1).
  and: "(a & b)",
  or: "(a | b)",
};

const is16 = (d: DType): d is "f16" | "bf16" => d === "f16" || d === "bf16";

/** A view whose array holds computable numbers: 16-bit floats are decoded to f32 first. */
function num(v: View): K.NumView {
  const arr = v.buf as StorageArray;
  return {
    arr: is16(v.dtype) ? decode16(v.dtype as "f16" | "bf16", arr as Uint16Array) : arr as Num,
    shape: v.shape,
    strides: v.strides,
    offset: v.offset,
  };
}

/** Run `fill` into a computable array for `dtype`, then return storage (encoding 16-bit floats). */
function produce(dtype: DType, size: number, fill: (out: Num) => void): StorageArray {
  if (is16(dtype)) {
    const tmp = new Float32Array(size);
    fill(tmp);
    return encode16(dtype, tmp);
  }
  const out = takeArray(dtype, size) as Num;
  fill(out);
  return out;
}

function castExpr(from: DType, to: DType): string {
  if (to === "i32" && from !== "i32" && from !== "bool") return "(a !== a ? 0 : Math.trunc(a))";
  if (to === "bool") return "(a !== 0 ? 1 : 0)";
  return "a";
}

function map(expr: string, shape: Shape, dtype: DType, views: View[]): StorageArray {
  const n = sizeOf(shape);
  const args = views.map(num).map((v) => ({ arr: v.arr, strides: v.strides, offset: v.offset }));
  return produce(
    dtype,
    n,
    (out) => mapStrided(expr, shape, out, contiguousStrides(shape), 0, args),
  );
}

/** Below this much work (elements, or multiply-adds) a kernel runs on one thread. */
const PARALLEL_MIN = 1 << 18;

const isFloat = (a: unknown): a is F => a instanceof Float32Array || a instanceof Float64Array;
/** Whether every array is a float array of one width (the native kernels take f32 or f64). */
const sameFloat = (first: unknown, ...rest: unknown[]) =>
  isFloat(first) && rest.every((a) => a?.constructor === first.constructor);
/** Threads for a native kernel of this much work (it starts its own; no worker is involved). */
const nativeThreads = (work: number) => (work >= PARALLEL_MIN ? threadCap() : 1);
const fusedTopkOn = readEnv("SPARSECODER_FUSED_TOPK") !== "0";

/**
 * The precision matmul takes for x [M, K] · W [K, N] (bf16 only through BLAS and from
 * BF16_MIN_WORK multiply-adds, as kernels.ts's matmul decides), so that a fused encoder's product
 * is the composition's at every size.
 */
function matmulPrecisionAt(M: number, K: number, N: number): "f32" | "bf16" | "bf16-emulated" {
  const bf16 = M * K * N >= BF16_MIN_WORK && loadBlas().blas !== null;
  return bf16 ? cpuMatmulPrecision().running : "f32";
}

/**
 * m when a view reads its first m elements contiguously as its trailing axes and repeats them
 * over the leading ones (stride 0): a row broadcast, or the whole array (m = its size); else 0.
 */
function rowPeriod(v: View): number {
  let m = 1, d = v.shape.length - 1;
  for (; d >= 0 && v.shape[d] !== 1 && v.strides[d] === m; d--) m *= v.shape[d];
  for (; d >= 0; d--) if (v.shape[d] !== 1 && v.strides[d] !== 0) return 0;
  return m;
}

/** A 2-D view that reads a contiguous [C, R] matrix as its transpose [R, C]. */
const transposedMatrix = (v: View) =>
  v.shape.length === 2 && v.shape[0] > 1 && v.shape[1] > 1 && v.strides[0] === 1 &&
  v.strides[1] === v.shape[0];

/** A contiguous view's n elements as an array of exactly that length. */
const own = (v: View, n: number): Num => {
  const { arr, offset } = num(v);
  return offset === 0 && arr.length === n ? arr : arr.subarray(offset, offset + n);
};

const contiguous = (v: View) => v.strides.every((s, i) => s === contiguousStrides(v.shape)[i]);

/** A row-wise kernel fn(...arrays, R, C, ...rest) over contiguous [R, C] arrays, rows split among threads. */
function rowJobs(
  fn: "unitRows" | "projectOutRows",
  key: string,
  R: number,
  C: number,
  arrays: F[],
  rest: unknown[],
): void {
  const parts = R * C >= PARALLEL_MIN && allShared(...arrays)
    ? ranges(R, threads())
    : [[0, R] as [number, number]];
  runJobs(
    parts.map(([lo, hi]) => ({
      fn,
      key,
      args: [...arrays.map((a) => a.subarray(lo * C, hi * C)), hi - lo, C, ...rest],
    })),
  );
}

/**
 * The top k of one long row from T column ranges: each range's top k (sorted, ties by lower
 * index) on its own thread, then a merge that prefers the larger value, NaN first, and on ties
 * the earlier range — whose indices are lower — so the result equals the one-thread kernel's.
 */
function topkMerged(
  slice: (lo: number, hi: number) => K.NumView,
  n: number,
  k: number,
  T: number,
  out: Num,
  idx: Int32Array,
): void {
  const parts = ranges(n, T);
  const cand = parts.map(() => ({
    v: takeShared(out instanceof Float64Array ? "f64" : "f32", k) as Float32Array | Float64Array,
    i: takeShared("i32", k) as Int32Array,
  }));
  runJobs(
    parts.map(([lo, hi], p) => ({
      fn: "topk",
      key: typeKey(slice(lo, hi).arr, cand[p].v),
      args: [slice(lo, hi), k, cand[p].v, cand[p].i],
    })),
  );
  const at = parts.map(() => 0);
  for (let j = 0; j < k; j++) {
    let best = -1;
    for (let p = 0; p < parts.length; p++) {
      if (at[p] >= k) continue;
      const v = cand[p].v[at[p]];
      if (best < 0) best = p;
      else {
        const b = cand[best].v[at[best]];
        if ((v !== v && b === b) || v > b) best = p;
      }
    }
    out[j] = cand[best].v[at[best]];
    idx[j] = cand[best].i[at[best]] + parts[best][0];
    at[best]++;
  }
  for (const c of cand) giveArray(c.v), giveArray(c.i);
}

/** out[idx[i]] += upd[i] in index order (kernels.ts's scatterAdd for a vector). */
function scatterAddVector(out: Num, n: number, idx: Num, upd: Num): void {
  for (let i = 0; i < idx.length; i++) {
    const j = idx[i];
    if (!(j >= 0 && j < n)) K.checkIndex("scatterAdd", j, n);
    out[j] += upd[i];
  }
}

export const cpu: Backend = {
  name: "cpu",
  hostMemory: true,
  info() {
    const s = loadBlas(), n = loadNative();
    const mm = s.blas
      ? `matmul through OpenBLAS (${s.blas.path})`
      : `matmul in TypeScript (${s.reason})`;
    return `cpu: ${mm}; ${
      n.native
        ? `native sparse/top-k/Adam kernels (${n.native.path})`
        : `TypeScript kernels only (${n.reason})`
    }`;
  },
  alloc: (dtype, size) => allocShared(dtype, size),
  free: (buf) => giveArray(buf as StorageArray),
  fromHost: (_dtype, data) => data,
  read: (buf, _dtype, size) => Promise.resolve((buf as StorageArray).slice(0, size)),
  readSync: (buf, _dtype, size) => (buf as StorageArray).slice(0, size),

  unary(op, x, outDtype) {
    // A transposed matrix made contiguous: a tiled native transpose (a strided copy writes a new
    // cache line per element).
    if (op === "copy" && outDtype === x.dtype && isFloat(x.buf) && transposedMatrix(x)) {
      const nat = native(), [R, C] = x.shape, n = R * C;
      if (nat && n > 0) {
        const out = takeArray(x.dtype, n) as F;
        nat.transpose(
          own({ ...x, shape: [C, R], strides: [R, 1] }, n) as F,
          C,
          R,
          out,
          nativeThreads(n),
        );
        return out;
      }
    }
    const nat = op === "relu" ? native() : null;
    if (nat && outDtype === x.dtype && contiguous(x) && isFloat(x.buf)) {
      const n = sizeOf(x.shape), out = takeArray(x.dtype, n) as F;
      if (n > 0) nat.relu(own(x, n) as F, out, n, nativeThreads(n));
      return out;
    }
    return map(UNARY[op], x.shape, outDtype, [x]);
  },
  binary(op, a, b, outDtype) {
    const nat = op === "add" || op === "sub" || op === "mul" ? native() : null;
    if (nat && outDtype === a.dtype && sameFloat(a.buf, b.buf)) {
      // A sum, difference or product of one shape or with a broadcast row (a bias) or scalar in
      // one native pass, same bits; a sum or product may take its operands either way round.
      const n = sizeOf(a.shape);
      const [x, y] = contiguous(a) || op === "sub" ? [a, b] : [b, a];
      const m = contiguous(x) ? rowPeriod(y) : 0;
      if (m > 0 && n > 0) {
        const out = takeArray(a.dtype, n) as F;
        nat[op === "add" ? "addRows" : op === "sub" ? "subRows" : "mulRows"](
          own(x, n) as F,
          own({ ...y, shape: [m], strides: [1] }, m) as F,
          out,
          n,
          m,
          nativeThreads(n),
        );
        return out;
      }
    }
    return map(BINARY[op], a.shape, outDtype, [a, b]);
  },
  where: (c, a, b, outDtype) => map("(a ? b : c)", a.shape, outDtype, [c, a, b]),
  cast(x, dtype) {
    // Widening a contiguous 16-bit array is one bit-shift pass (16-bit weights kept in their
    // dtype are widened on every use); the generic path decodes, then copies.
    if (dtype === "f32" && is16(x.dtype) && contiguous(x)) {
      const n = sizeOf(x.shape), src = x.buf as Uint16Array;
      return decode16(
        x.dtype,
        x.offset === 0 && src.length === n ? src : src.subarray(x.offset, x.offset + n),
      );
    }
    return map(castExpr(x.dtype, dtype), x.shape, dtype, [x]);
  },

  reduce(op, x, axes, outDtype) {
    const n = sizeOf(x.shape.filter((_, d) => !axes.includes(d)));
    const nat = op === "sum" ? native() : null;
    const sorted = [...axes].sort((a, b) => a - b);
    if (
      nat && outDtype === x.dtype && contiguous(x) && isFloat(x.buf) && n > 0 &&
      sorted.every((a, i) => i === 0 || a === sorted[i - 1] + 1)
    ) {
      // A contiguous run of axes: the array is [outer, reduced, inner].
      const outer = sizeOf(x.shape.slice(0, sorted[0] ?? 0)),
        inner = sizeOf(x.shape.slice((sorted.at(-1) ?? -1) + 1));
      const out = takeArray(x.dtype, n) as F;
      if (
        nat.sum(
          own(x, sizeOf(x.shape)) as F,
          outer,
          sizeOf(x.shape) / (outer * inner),
          inner,
          out,
          nativeThreads(sizeOf(x.shape)),
        ) === -1
      ) return out;
      giveArray(out);
    }
    return produce(outDtype, n, (out) => K.reduce(op, num(x), axes, out));
  },
  argReduce(op, x, axis) {
    const out = new Int32Array(sizeOf(x.shape) / (x.shape[axis] || 1));
    K.argReduce(op, num(x), axis, out);
    return out;
  },
  matmul(a, b, outDtype) {
    const r = a.shape.length;
    const outShape = [...a.shape.slice(0, r - 1), b.shape[r - 1]];
    const wide = outDtype === "f64" || outDtype === "i32" ? "f64" : "f32";
    const asFloat = (v: View): K.NumView & { arr: Float32Array | Float64Array } => {
      const nv = num(v);
      if (nv.arr instanceof Float32Array && wide === "f32") {
        return nv as K.NumView & { arr: Float32Array };
      }
      if (nv.arr instanceof Float64Array) return nv as K.NumView & { arr: Float64Array };
      return { ...nv, arr: wide === "f64" ? Float64Array.from(nv.arr) : Float32Array.from(nv.arr) };
    };
    const n = sizeOf(outShape);
    const res = takeArray(wide, n) as Float32Array | Float64Array;
    K.matmul(asFloat(a), asFloat(b), res);
    return outDtype === "f32" || outDtype === "f64"
      ? res
      : produce(outDtype, n, (out) => out.set(res));
  },
  gather(x, idx, axis) {
    return produce(x.dtype, sizeOf(idx.shape), (out) => {
      if (!gatherRows(num(x), num(idx), axis, out)) K.gather(num(x), num(idx), axis, out);
    });
  },
  scatterAdd(base, idx, upd, axis) {
    return produce(base.dtype, sizeOf(base.shape), (out) => {
      // A contiguous base (the zeros of a gather's VJP) is one block copy.
      if (contiguous(base) && !is16(base.dtype)) {
        (out as Float32Array).set(own(base, out.length) as Float32Array);
      } else K.copyInto(out, base.shape, base.shape.map(() => 0), num(base));
      const u = num(upd);
      // A vector of sums from contiguous index and update vectors (∂b_enc, features fired): one
      // loop, the generic kernel's order and bits, without its offset tables (2–6 ms → ~0.2 ms
      // for 65,536 entries).
      if (base.shape.length === 1 && contiguous(idx) && contiguous(upd)) {
        scatterAddVector(
          out,
          base.shape[0],
          own(idx, sizeOf(idx.shape)),
          own(upd, sizeOf(upd.shape)),
        );
        return;
      }
      if (scatterAddRows(out, base.shape, num(idx), u, axis)) return;
      perType(K.scatterAdd, typeKey(out, u.arr), {
        stridedOffsets: K.stridedOffsets,
        checkIndex: K.checkIndex,
        contiguousStrides,
      })(out, base.shape, num(idx), u, axis);
    });
  },
  topk(x, k) {
    const n = x.shape[x.shape.length - 1] || 1, rows = sizeOf(x.shape) / n;
    const idx = takeArray("i32", rows * k) as Int32Array;
    const vals = produce(x.dtype, rows * k, (out) => {
      const nx = num(x);
      const key = typeKey(nx.arr, out);
      const nat = native();
      if (
        nat && isFloat(nx.arr) && nx.arr.constructor === out.constructor && contiguous(x) &&
        k >= 1 && k <= n && nx.arr.length < 2 ** 31
      ) {
        const base = nx.offset === 0 ? nx.arr : nx.arr.subarray(nx.offset);
        if (nat.topk(base, rows, n, k, out as F, idx, nativeThreads(sizeOf(x.shape))) === -1) {
          return;
        }
      }
      const T = contiguous(x) && sizeOf(x.shape) >= PARALLEL_MIN && allShared(nx.arr, out, idx)
        ? threads()
        : 1;
      const line = (lo: number, hi: number, at: number, len: number) => ({
        arr: nx.arr,
        shape: [hi - lo, len],
        strides: [n, 1],
        offset: nx.offset + lo * n + at,
      });
      if (T > 1 && rows >= T) {
        // Many rows: threads take row ranges.
        return runJobs(
          ranges(rows, T).map(([lo, hi]) => ({
            fn: "topk",
            key,
            args: [
              line(lo, hi, 0, n),
              k,
              out.subarray(lo * k, hi * k),
              idx.subarray(lo * k, hi * k),
            ],
          })),
        );
      }
      if (T > 1 && n >= 4 * k * T) {
        // Few long rows (BatchTopK's flattened batch): each thread takes the top k of a column
        // range, and the sorted lists merge into the row's top k.
        for (let r = 0; r < rows; r++) {
          topkMerged(
            (lo, hi) => line(r, r + 1, lo, hi - lo),
            n,
            k,
            T,
            out.subarray(r * k, (r + 1) * k),
            idx.subarray(r * k, (r + 1) * k),
          );
        }
        return;
      }
      perType(K.topk, key, K.TOPK_DEPS)(nx, k, out, idx);
    });
    return [vals, idx];
  },
  cumsum(x, axis, reverse) {
    return produce(x.dtype, sizeOf(x.shape), (out) => K.cumsum(num(x), axis, reverse, out));
  },
  concat(xs, axis, outShape) {
    return produce(xs[0].dtype, sizeOf(outShape), (out) => {
      let at = 0;
      // Runs of a contiguous piece are contiguous in the output too: copied whole (memcpy).
      const outBlock = sizeOf(outShape.slice(axis)), inner = sizeOf(outShape.slice(axis + 1));
      for (const x of xs) {
        const block = sizeOf(x.shape.slice(axis)), src = num(x);
        if (contiguous(x) && block >= 64 && src.arr.constructor === out.constructor) {
          const outer = sizeOf(x.shape.slice(0, axis));
          for (let o = 0; o < outer; o++) {
            const from = src.offset + o * block;
            out.set(src.arr.subarray(from, from + block) as never, o * outBlock + at * inner);
          }
        } else K.copyInto(out, outShape, outShape.map((_, d) => (d === axis ? at : 0)), src);
        at += x.shape[axis];
      }
    });
  },
  spmm(rows, cols, vals, dense, transpose, outRows) {
    const d = dense.shape[1];
    return produce(dense.dtype, outRows * d, (out) => {
      // Each array cut to its tensor's size: a leading slice's buffer runs on past it.
      const nnz = sizeOf(vals.shape);
      const args = [
        own(rows, nnz),
        own(cols, nnz),
        own(vals, nnz),
        own(dense, sizeOf(dense.shape)),
      ] as const;
      const nat = native();
      if (nat && nnz > 0 && d > 0 && sameFloat(out, args[2], args[3])) {
        const [dst, src] = (transpose ? [args[1], args[0]] : [args[0], args[1]]) as Int32Array[];
        const inRows = sizeOf(dense.shape) / d;
        const bad = nat.spmm(
          dst,
          src,
          args[2] as F,
          nnz,
          args[3] as F,
          inRows,
          d,
          out as F,
          outRows,
          nativeThreads(nnz * d),
        );
        if (bad >= 0) S.check("spmm", dst[bad], outRows), S.check("spmm", src[bad], inRows);
        if (bad === -1) return;
      }
      out.fill(0);
      const key = typeKey(...args, out);
      // Threads take column ranges: every slice touches only its own columns of `out`.
      const parts = args[2].length * d >= PARALLEL_MIN && allShared(...args, out)
        ? ranges(d, threads(), 4)
        : [[0, d] as [number, number]];
      const order = transpose ? S.byRow(args[1], args[2].length, outRows) : null;
      runJobs(
        parts.map(([c0, c1]) => ({
          fn: "spmm",
          key,
          args: [...args, d, transpose, outRows, out, c0, c1, order],
        })),
      );
    });
  },
  sddmm(a, b, rows, cols) {
    return produce(a.dtype, sizeOf(rows.shape), (out) => {
      const args = [
        own(a, sizeOf(a.shape)),
        own(b, sizeOf(b.shape)),
        num(rows).arr,
        num(cols).arr,
      ] as const;
      const key = typeKey(...args, out), d = a.shape[1], m = out.length;
      const nat = native();
      if (nat && m > 0 && d > 0 && sameFloat(out, args[0], args[1])) {
        const [R, C] = [args[2], args[3]] as Int32Array[],
          na = sizeOf(a.shape) / d,
          nb = sizeOf(b.shape) / d;
        const bad = nat.sddmm(
          args[0] as F,
          na,
          args[1] as F,
          nb,
          R,
          C,
          m,
          d,
          out as F,
          nativeThreads(m * d),
        );
        if (bad >= 0) S.check("sddmm", R[bad], na), S.check("sddmm", C[bad], nb);
        if (bad === -1) return;
      }
      const parts = m * d >= PARALLEL_MIN && allShared(...args, out)
        ? ranges(m, threads())
        : [[0, m] as [number, number]];
      runJobs(
        parts.map(([lo, hi]) => ({
          fn: "sddmm",
          key,
          args: [
            args[0],
            args[1],
            args[2].subarray(lo, hi),
            args[3].subarray(lo, hi),
            d,
            out.subarray(lo, hi),
          ],
        })),
      );
    });
  },
  fused: {
    ...trainKernels({ own, nativeThreads }),
    reluGrad(g, x) {
      const nat = native();
      // Without the native kernel (or for 16-bit floats, or strided views), the rule's g·step(x)
      // as one pass.
      if (!nat || !sameFloat(g.buf, x.buf) || !contiguous(g) || !contiguous(x)) {
        return map("a * +(b > 0)", g.shape, g.dtype, [g, x]);
      }
      const n = sizeOf(g.shape), out = takeArray(g.dtype, n) as F;
      if (n > 0) nat.reluGrad(own(g, n) as F, own(x, n) as F, out, n, nativeThreads(n));
      return out;
    },
    rowNorm(x, w, b, o) {
      const nat = native(), C = x.shape[x.shape.length - 1] ?? 1, n = sizeOf(x.shape);
      if (!nat || !sameFloat(x.buf, w.buf, ...(b ? [b.buf] : [])) || C === 0) return null;
      const out = takeArray(x.dtype, n) as F;
      nat.rowNorm(
        own(x, n) as F,
        own(w, C) as F,
        b ? own(b, C) as F : null,
        out,
        n / C,
        C,
        o.eps,
        o.center,
        o.plusOne,
        nativeThreads(n),
      );
      return out;
    },
    activation(x, kind) {
      const nat = native(), n = sizeOf(x.shape);
      if (!nat || !isFloat(x.buf)) return null;
      const out = takeArray(x.dtype, n) as F;
      const code = kind === "gelu_tanh" ? 0 : kind === "gelu" ? 1 : 2;
      if (n > 0) nat.activation(own(x, n) as F, out, n, code, nativeThreads(n));
      return out;
    },
    attnSoftmax(s, mask, o) {
      const nat = native(), n = sizeOf(s.shape), [B, H, T] = s.shape;
      if (!nat || !isFloat(s.buf) || n === 0) return null;
      const out = takeArray(s.dtype, n) as F;
      nat.attnSoftmax(
        own(s, n) as F,
        out,
        mask ? own(mask, B * T) as Uint8Array : null,
        B * H * T,
        T,
        H,
        o.scale,
        o.softcap ?? 0,
        o.window ?? 0,
        nativeThreads(n),
      );
      return out;
    },
    spmmTransposed(rows, cols, vals, dense, outRows, onSumSquares) {
      const nat = native(), nnz = sizeOf(vals.shape), [inRows, d] = dense.shape;
      if (!nat || nnz === 0 || d === 0 || !sameFloat(own(vals, nnz), own(dense, inRows * d))) {
        return null;
      }
      const out = takeArray(dense.dtype, outRows * d) as F;
      const sumsq = onSumSquares ? takeArray(dense.dtype, 1) as F : null;
      const dst = own(cols, nnz) as Int32Array, src = own(rows, nnz) as Int32Array;
      const r = nat.spmmTransposed(
        dst,
        src,
        own(vals, nnz) as F,
        nnz,
        own(dense, inRows * d) as F,
        inRows,
        d,
        out,
        outRows,
        nativeThreads(nnz * d),
        sumsq,
      );
      if (r >= 0) S.check("spmm", dst[r], outRows), S.check("spmm", src[r], inRows);
      if (r === -1) {
        if (sumsq) onSumSquares!(sumsq);
        return out;
      }
      giveArray(out);
      if (sumsq) giveArray(sumsq);
      if (r === -2) throw new Error(`native spmmTransposed: out of memory for ${nnz} entries`);
      return null;
    },
    sddmmPerInput(a, b, rows, cols) {
      const nat = native(), [L, F, d] = b.shape, m = sizeOf(rows.shape), na = a.shape[0];
      if (!nat || m === 0 || d % 4 !== 0) return null;
      const A = own(a, na * L * d), Bv = own(b, L * F * d);
      if (!sameFloat(A, Bv)) return null;
      const R = own(rows, m) as Int32Array, C = own(cols, m) as Int32Array;
      const out = takeArray(a.dtype, m) as F;
      const bad = nat.sddmm(
        A as F,
        na,
        Bv as F,
        F,
        R,
        C,
        m,
        L * d,
        out,
        nativeThreads(m * L * d),
        L,
        F * d,
      );
      if (bad >= 0) S.check("sddmm", R[bad], na), S.check("sddmm", C[bad], F);
      if (bad === -1) return out;
      giveArray(out);
      return null;
    },
    zeroSpans(x, spans) {
      // Copies between the spans and fills inside them: each element written once, at memcpy speed
      // (natively on every thread: one JavaScript thread's copies took 40–70 ms of a 165 ms DFC step).
      const n = sizeOf(x.shape), src = own(x, n), out = takeArray(x.dtype, n) as Num;
      const nat = native();
      if (nat) {
        nat.zeroSpans(src, out, n, spans, nativeThreads(n));
        return out;
      }
      let at = 0;
      for (let s = 0; s < spans.length; s += 2) {
        out.set(src.subarray(at, spans[s]), at);
        out.fill(0, spans[s], spans[s + 1]);
        at = spans[s + 1];
      }
      out.set(src.subarray(at, n), at);
      return out;
    },
    affine(x, w, b) {
      const [M] = x.shape, N = w.shape[1];
      if (!sameFloat(x.buf, w.buf, b.buf) || M * N === 0) return null;
      // The bias in each row, then the GEMM with beta = 1: BLAS would otherwise zero the output
      // first, so the bias costs that pass's place, not a pass of its own.
      const out = takeArray(x.dtype, M * N) as F, row = own(b, N) as F, nat = native();
      if (nat && sameFloat(row, out)) nat.fillRows(row, out, M, N, nativeThreads(M * N));
      else for (let r = 0; r < M; r++) out.set(row, r * N);
      const view = (v: View) => num(v) as K.NumView & { arr: F };
      K.matmul(view(x), view(w), out, false, true);
      return out;
    },
    affineTopk(x, w, b, k) {
      const nat = native(), [M, Kd] = x.shape, N = w.shape[1];
      // f32: sgemm's sums; bf16 on AMX tiles where matmul would take bf16; emulated
      // bf16 is the composition's alone. SPARSECODER_FUSED_TOPK=0 composes instead (the same bits
      // in f32: for measuring both).
      const precision = matmulPrecisionAt(M, Kd, N);
      if (!nat || precision === "bf16-emulated" || x.dtype !== "f32" || !fusedTopkOn) return null;
      if (!sameFloat(x.buf, w.buf, b.buf) || !contiguous(x) || !contiguous(b)) return null;
      // A [K, 1] or [1, N] view lies in row order whatever its other stride says.
      const rowOrder = contiguous(w) || (Kd === 1 && w.strides[1] === 1) ||
        (N === 1 && w.strides[0] === 1);
      const wT = !rowOrder && transposedMatrix(w);
      if (!wT && !rowOrder) return null;
      // W in bf16 and W transposed (or W packed in f32), from the first 64-byte boundary.
      const room = 1.5 * Math.ceil(Kd / 32) * 32 * Math.ceil(N / 32) * 32 + 16;
      const packed = takeArray("f32", room) as F;
      const values = takeArray("f32", M * k) as F, indices = takeArray("i32", M * k) as Int32Array;
      const r = nat.affineTopk(
        own(x, M * Kd) as F,
        M,
        Kd,
        own(w, Kd * N) as F,
        wT,
        N,
        own(b, N) as F,
        k,
        packed,
        values,
        indices,
        precision === "bf16",
        nativeThreads(M * N),
      );
      giveArray(packed);
      if (r === "done") return [values, indices];
      giveArray(values), giveArray(indices);
      return null;
    },
    affineBatchTopk(x, w, b, total, scale) {
      const nat = native(), [M, Kd] = x.shape, N = w.shape[1];
      // Only where the answer has affine's bits: in f32 the screen's exact sums are sgemm's order;
      // in bf16 the product is the native AMX GEMM's (not OpenBLAS's sbgemm, nor emulated bf16).
      const precision = matmulPrecisionAt(M, Kd, N);
      if (!nat || x.dtype !== "f32" || !fusedTopkOn) return null;
      if (precision !== "f32" && (precision !== "bf16" || cpuMatmulPrecision().via !== "amx")) {
        return null;
      }
      const s = scale ? [scale.buf] : [];
      if (
        !sameFloat(x.buf, w.buf, b.buf, ...s) || !contiguous(x) || !contiguous(w) || !contiguous(b)
      ) {
        return null;
      }
      if (scale && !contiguous(scale)) return null;
      const room = 1.5 * Math.ceil(Kd / 32) * 32 * Math.ceil(N / 32) * 32 + 16;
      const scratch = takeArray("f32", room) as F;
      const values = takeArray("f32", total) as F, indices = takeArray("i32", total) as Int32Array;
      const r = nat.affineBatchTopk(
        own(x, M * Kd) as F,
        M,
        Kd,
        own(w, Kd * N) as F,
        N,
        own(b, N) as F,
        scale ? own(scale, N) as F : null,
        total,
        scratch,
        values,
        indices,
        precision === "bf16",
        nativeThreads(M * N),
      );
      giveArray(scratch);
      if (r === "done") return [values, indices];
      giveArray(values), giveArray(indices);
      return null;
    },
    unitRows(w) {
      const [R, C] = w.shape;
      const W = w.buf as F, out = takeArray(w.dtype, R * C) as F;
      rowJobs("unitRows", typeKey(W, out), R, C, [W, out], []);
      return out;
    },
    rowNorms(x) {
      const n = x.shape[x.shape.length - 1], rows = sizeOf(x.shape.slice(0, -1));
      const X = own(x, rows * n) as F, out = takeArray(x.dtype, rows) as F, nat = native();
      if (nat && rows * n > 0) {
        nat.rowNorms(X, rows, n, out, nativeThreads(rows * n));
        return out;
      }
      // The composition's arithmetic: squares rounded to the dtype, summed in double, one rounding.
      const round = x.dtype === "f32" ? Math.fround : (v: number) => v;
      for (let r = 0; r < rows; r++) {
        let s = 0;
        for (let c = r * n; c < (r + 1) * n; c++) s += round(X[c] * X[c]);
        out[r] = Math.sqrt(round(s));
      }
      return out;
    },
    projectOutRows(g, w, onSumSquares) {
      const [R, C] = w.shape;
      const nat = native(), n = R * C;
      if (nat && n > 0 && sameFloat(g.buf, w.buf)) {
        const out = takeArray(g.dtype, n) as F;
        const sumsq = onSumSquares ? takeArray(g.dtype, 1) as F : null;
        nat.projectOutRows(own(g, n) as F, own(w, n) as F, out, R, C, nativeThreads(n), sumsq);
        if (sumsq) onSumSquares!(sumsq);
        return out;
      }
      const G = g.buf as F, W = w.buf as F, out = takeArray(g.dtype, R * C) as F;
      rowJobs("projectOutRows", typeKey(G, W, out), R, C, [G, W, out], []);
      return out;
    },
    adamApply(param, g, mu, nu, gradScale, h, o) {
      const nat = native(), n = sizeOf(g.shape);
      const G = g.buf, M = mu.buf, V = nu.buf, P = param.buf, S = gradScale?.buf ?? null;
      if (!nat || n === 0 || !sameFloat(G, M, V, P, ...(S ? [S] : []))) return null;
      if (o.unitRows && g.shape.length !== 2) return null;
      // A transposed gradient (∂W_enc as the sparse product makes it) is read in tiles.
      const gT = transposedMatrix(g);
      if (!gT && !contiguous(g)) return null;
      const cols = o.unitRows || gT ? g.shape[1] : n;
      // Rows are the unit of work: without unit rows, rows of 4096 split the elements.
      const C = o.unitRows || gT ? cols : n % 4096 === 0 ? 4096 : n;
      const P2 = takeArray(g.dtype, n) as F,
        M2 = takeArray(g.dtype, n) as F,
        V2 = takeArray(g.dtype, n) as F;
      nat.adamApply(
        own(gT ? { ...g, shape: [g.shape[1], g.shape[0]], strides: [g.shape[0], 1] } : g, n) as F,
        own(mu, n) as F,
        own(nu, n) as F,
        own(param, n) as F,
        gradScale ? own(gradScale, 1) as F : null,
        P2,
        M2,
        V2,
        n / C,
        C,
        h,
        o.decay,
        o.unitRows,
        gT,
        nativeThreads(n),
      );
      return [P2, M2, V2];
    },
    columnVarianceSum(x, y) {
      const nat = native(), [R, C] = x.shape;
      if (!nat || x.shape.length !== 2 || R === 0 || !sameFloat(x.buf, ...(y ? [y.buf] : []))) {
        return null;
      }
      const out = takeArray(x.dtype, 1) as F;
      nat.colVarSum(
        own(x, R * C) as F,
        y ? own(y, R * C) as F : null,
        R,
        C,
        out,
        nativeThreads(R * C),
      );
      return out;
    },
    sumSquares(x) {
      const nat = native(), n = sizeOf(x.shape);
      if (!nat || n === 0 || !isFloat(x.buf)) return null;
      const out = takeArray(x.dtype, 1) as F;
      nat.sumSquares(own(x, n) as F, n, out, nativeThreads(n));
      return out;
    },
    adam(g, mu, nu, param, h) {
      const n = sizeOf(g.shape);
      const G = g.buf as F, M = mu.buf as F, V = nu.buf as F, P = param ? param.buf as F : null;
      const U = takeArray(g.dtype, n) as F,
        M2 = takeArray(g.dtype, n) as F,
        V2 = takeArray(g.dtype, n) as F;
      const nat = native();
      if (nat && n > 0 && sameFloat(G, M, V, U, ...(P ? [P] : []))) {
        nat.adam(G, M, V, P, U, M2, V2, n, h, nativeThreads(n));
        return [U, M2, V2];
      }
      const key = typeKey(G, U) + (P ? ",decay" : "");
      const parts = n >= PARALLEL_MIN && allShared(G, M, V, P, U, M2, V2)
        ? ranges(n, threads(), 16)
        : [[0, n] as [number, number]];
      const cut = (a: F | null, lo: number, hi: number) => a && a.subarray(lo, hi);
      runJobs(parts.map(([lo, hi]) => ({
        fn: "adam",
        key,
        args: [
          ...[G, M, V, P, U, M2, V2].map((a) => cut(a, lo, hi)),
          h.b1,
          h.b2,
          h.eps,
          h.c2,
          h.scale,
          h.decay,
        ],
      })));
      return [U, M2, V2];
    },
  },
  pad(x, widths, outShape) {
    return produce(x.dtype, sizeOf(outShape), (out) => {
      out.fill(0);
      K.copyInto(out, outShape, widths.map((w) => w[0]), num(x));
    });
  },
};
