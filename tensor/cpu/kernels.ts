/** CPU kernels beyond plain elementwise maps: reductions, indexing, top-k, scans, matmul. */
import type { Shape } from "../shape.ts";
import { contiguousStrides } from "../shape.ts";
import { mapStrided, reduceStrided, type StridedArg } from "./strided.ts";
import { type FloatArray, gemmTs } from "./gemm.ts";
import { type Blas, loadBlas } from "./blas.ts";
import { BF16_MIN_WORK, cpuMatmulPrecision } from "./matmul_precision.ts";
import { encode16 } from "../dtype.ts";
import { giveArray, takeArray } from "./pool.ts";
import { native } from "./native.ts";
import { threadCap } from "./threads.ts";
import { runtime } from "../platform/runtime.ts";

type Num = Float32Array | Float64Array | Int32Array | Uint8Array;

export interface NumView {
  arr: Num;
  shape: Shape;
  strides: readonly number[];
  offset: number;
}

function prod(s: Shape): number {
  let n = 1;
  for (const d of s) n *= d;
  return n;
}

/** Element offsets of a strided view, in row-major order of its shape. */
export function stridedOffsets(
  shape: Shape,
  strides: readonly number[],
  offset: number,
): Float64Array {
  const n = prod(shape);
  const out = new Float64Array(n);
  if (n === 0) return out;
  const nd = shape.length;
  if (nd === 0) {
    out[0] = offset;
    return out;
  }
  const idx = new Int32Array(nd);
  let o = offset;
  const last = shape[nd - 1], sl = strides[nd - 1];
  for (let i = 0; i < n;) {
    for (let j = 0; j < last; j++, i++) out[i] = o + j * sl;
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      o += strides[d];
      if (idx[d] < shape[d]) break;
      idx[d] = 0;
      o -= strides[d] * shape[d];
    }
  }
  return out;
}

/** Base offsets of every line along `axis` (the other axes in row-major order). */
export function lineOffsets(
  v: { shape: Shape; strides: readonly number[]; offset: number },
  axis: number,
): Float64Array {
  const shape = v.shape.filter((_, d) => d !== axis);
  const strides = v.strides.filter((_, d) => d !== axis);
  return stridedOffsets(shape, strides, v.offset);
}

const arg = (v: NumView): StridedArg => ({ arr: v.arr, strides: v.strides, offset: v.offset });

export function reduce(
  op: "sum" | "max" | "min",
  x: NumView,
  axes: readonly number[],
  out: Num,
): void {
  const outShape = x.shape.filter((_, d) => !axes.includes(d));
  const cs = contiguousStrides(outShape);
  const virt: number[] = [];
  let k = 0;
  x.shape.forEach((_, d) => virt.push(axes.includes(d) ? 0 : cs[k++]));
  const acc = new Float64Array(prod(outShape));
  const init = op === "sum" ? 0 : op === "max" ? -Infinity : Infinity;
  acc.fill(init);
  const expr = op === "sum"
    ? "acc + a"
    : op === "max"
    ? "(a > acc || a !== a ? a : acc)"
    : "(a < acc || a !== a ? a : acc)";
  reduceStrided(expr, x.shape, acc, virt, arg(x));
  out.set(acc);
}

export function argReduce(
  op: "argmax" | "argmin",
  x: NumView,
  axis: number,
  out: Int32Array,
): void {
  const n = x.shape[axis], s = x.strides[axis], a = x.arr;
  const bases = lineOffsets(x, axis);
  const max = op === "argmax";
  for (let r = 0; r < bases.length; r++) {
    let best = 0, bv = a[bases[r]];
    for (let j = 1; j < n && bv === bv; j++) {
      const v = a[bases[r] + j * s];
      if (v !== v || (max ? v > bv : v < bv)) {
        best = j;
        bv = v;
      }
    }
    out[r] = best;
  }
}

export function checkIndex(op: string, i: number, n: number): void {
  if (!(i >= 0 && i < n)) {
    throw new RangeError(`${op}: index ${i} is out of range for an axis of size ${n}`);
  }
}

export function gather(x: NumView, idx: NumView, axis: number, out: Num): void {
  const xs = x.strides.map((s, d) => (d === axis ? 0 : s));
  const xo = stridedOffsets(idx.shape, xs, x.offset);
  const io = stridedOffsets(idx.shape, idx.strides, idx.offset);
  const n = x.shape[axis], sa = x.strides[axis];
  for (let i = 0; i < xo.length; i++) {
    const j = idx.arr[io[i]];
    checkIndex("gather", j, n);
    out[i] = x.arr[xo[i] + j * sa];
  }
}

/** `out` already holds a contiguous copy of base. */
export function scatterAdd(
  out: Num,
  outShape: Shape,
  idx: NumView,
  upd: NumView,
  axis: number,
): void {
  const os = contiguousStrides(outShape);
  const oo = stridedOffsets(idx.shape, os.map((s, d) => (d === axis ? 0 : s)), 0);
  const io = stridedOffsets(idx.shape, idx.strides, idx.offset);
  const uo = stridedOffsets(upd.shape, upd.strides, upd.offset);
  const n = outShape[axis], sa = os[axis];
  for (let i = 0; i < oo.length; i++) {
    const j = idx.arr[io[i]];
    checkIndex("scatterAdd", j, n);
    out[oo[i] + j * sa] += upd.arr[uo[i]];
  }
}

/** Whether (va, ia) ranks below (vb, ib) in top-k order: NaN highest, then larger, ties to the lower index. */
export function ranksBelow(va: number, ia: number, vb: number, ib: number): boolean {
  return va !== va ? (vb !== vb && ia > ib) : vb !== vb || va < vb || (va === vb && ia > ib);
}

/** Insert (v, i) into a min-heap (the lowest-ranked entry at the root) of `size` entries. */
export function heapPush(
  hv: Float64Array,
  hi: Int32Array,
  size: number,
  v: number,
  i: number,
): void {
  let c = size;
  while (c > 0) {
    const up = (c - 1) >> 1;
    if (!ranksBelow(v, i, hv[up], hi[up])) break;
    hv[c] = hv[up], hi[c] = hi[up], c = up;
  }
  hv[c] = v, hi[c] = i;
}

/** Put (v, i) at the root of a heap of `size` entries and sift it down. */
export function heapReplaceRoot(
  hv: Float64Array,
  hi: Int32Array,
  size: number,
  v: number,
  i: number,
): void {
  let c = 0;
  for (;;) {
    const l = 2 * c + 1;
    if (l >= size) break;
    const m = l + 1 < size && ranksBelow(hv[l + 1], hi[l + 1], hv[l], hi[l]) ? l + 1 : l;
    if (!ranksBelow(hv[m], hi[m], v, i)) break;
    hv[c] = hv[m], hi[c] = hi[m], c = m;
  }
  hv[c] = v, hi[c] = i;
}

/**
 * Top-k per line of the last axis with a size-k min-heap: O(n log k) per row. Once the heap is
 * full, an entry can enter only by beating the root (the k-th best so far), so most of the scan
 * is one comparison per entry.
 *
 * Two spellings of the same algorithm (same results, bit for bit), one per JavaScript engine:
 * over [2048, 8192] with k = 32, V8 ran the scan at 42 ms with the sift in a helper but at 85 ms
 * with it inline, and JavaScriptCore the other way round (36 ms inline, 60 ms through the helper).
 */
function topkSiftCalled(x: NumView, k: number, values: Num, indices: Int32Array): void {
  const axis = x.shape.length - 1;
  const n = x.shape[axis], s = x.strides[axis], a = x.arr;
  const bases = lineOffsets(x, axis);
  if (a.length > 0x7fffffff) {
    throw new RangeError(
      `topk: arrays of more than 2^31 - 1 elements are not supported on the cpu backend (got ${a.length})`,
    );
  }
  const hv = new Float64Array(k), hi = new Int32Array(k);
  for (let r = 0; r < bases.length; r++) {
    // Offsets come as doubles (lineOffsets); as int32 the scan's index stays an integer in V8's
    // fully optimised code (as a double it ran at half speed). Typed arrays stay below 2^31 here.
    const b = bases[r] | 0;
    for (let j = 0; j < k; j++) heapPush(hv, hi, j, a[b + j * s], j);
    let root = hv[0];
    for (let j = k, p = b + k * s; j < n; j++, p += s) {
      const v = a[p];
      // A later index loses ties, and nothing beats a NaN root.
      if (v <= root || root !== root) continue;
      heapReplaceRoot(hv, hi, k, v, j);
      root = hv[0];
    }
    heapDrain(hv, hi, k, values, indices, r * k);
  }
}

function topkSiftInline(x: NumView, k: number, values: Num, indices: Int32Array): void {
  const axis = x.shape.length - 1;
  const n = x.shape[axis], s = x.strides[axis], a = x.arr;
  const bases = lineOffsets(x, axis);
  if (a.length > 0x7fffffff) {
    throw new RangeError(
      `topk: arrays of more than 2^31 - 1 elements are not supported on the cpu backend (got ${a.length})`,
    );
  }
  const hv = new Float64Array(k), hi = new Int32Array(k);
  for (let r = 0; r < bases.length; r++) {
    // Offsets come as doubles (lineOffsets); as int32 the scan's index stays an integer in V8's
    // fully optimised code (as a double it ran at half speed). Typed arrays stay below 2^31 here.
    const b = bases[r] | 0;
    for (let j = 0; j < k; j++) heapPush(hv, hi, j, a[b + j * s], j);
    let root = hv[0];
    for (let j = k, p = b + k * s; j < n; j++, p += s) {
      const v = a[p];
      if (v <= root || root !== root) continue;
      // heapReplaceRoot, with ranksBelow spelled out.
      let c = 0;
      for (;;) {
        const l = 2 * c + 1;
        if (l >= k) break;
        let m = l;
        if (l + 1 < k) {
          const v1 = hv[l + 1], v0 = hv[l];
          if (
            v1 !== v1
              ? (v0 !== v0 && hi[l + 1] > hi[l])
              : v0 !== v0 || v1 < v0 || (v1 === v0 && hi[l + 1] > hi[l])
          ) m = l + 1;
        }
        const vm = hv[m];
        if (!(vm !== vm ? (v !== v && hi[m] > j) : v !== v || vm < v || (vm === v && hi[m] > j))) {
          break;
        }
        hv[c] = vm, hi[c] = hi[m], c = m;
      }
      hv[c] = v, hi[c] = j;
      root = hv[0];
    }
    heapDrain(hv, hi, k, values, indices, r * k);
  }
}

/** Pop the heap's lowest-ranked entry repeatedly, filling [at, at + k) of the outputs from the back. */
export function heapDrain(
  hv: Float64Array,
  hi: Int32Array,
  k: number,
  values: Num,
  indices: Int32Array,
  at: number,
): void {
  for (let t = k - 1; t >= 0; t--) {
    values[at + t] = hv[0];
    indices[at + t] = hi[0];
    heapReplaceRoot(hv, hi, t, hv[t], hi[t]);
  }
}

export const topk = runtime === "bun" ? topkSiftInline : topkSiftCalled;

export const TOPK_DEPS = { lineOffsets, heapPush, heapReplaceRoot, heapDrain };

export function cumsum(x: NumView, axis: number, reverse: boolean, out: Num): void {
  const n = x.shape[axis], s = x.strides[axis];
  const os = contiguousStrides(x.shape);
  const bases = lineOffsets(x, axis);
  const obases = lineOffsets({ shape: x.shape, strides: os, offset: 0 }, axis);
  const so = os[axis];
  for (let r = 0; r < bases.length; r++) {
    let acc = 0;
    for (let t = 0; t < n; t++) {
      const j = reverse ? n - 1 - t : t;
      acc += x.arr[bases[r] + j * s];
      out[obases[r] + j * so] = acc;
    }
  }
}

/** Copy `x` into the window of a contiguous `out` of `outShape` starting at `start`. */
export function copyInto(out: Num, outShape: Shape, start: readonly number[], x: NumView): void {
  const os = contiguousStrides(outShape);
  let off = 0;
  start.forEach((v, d) => (off += v * os[d]));
  mapStrided("a", x.shape, out, os, off, [arg(x)]);
}

// ---- matmul ----

/** How a matrix view maps onto a GEMM operand: transposed or not, with its leading dimension. */
function gemmLayout(
  sRow: number,
  sCol: number,
  rows: number,
  cols: number,
): { trans: boolean; ld: number } | null {
  if ((sCol === 1 || cols === 1) && (rows === 1 || sRow >= cols)) {
    return { trans: false, ld: rows === 1 ? Math.max(cols, 1) : sRow };
  }
  if ((sRow === 1 || rows === 1) && (cols === 1 || sCol >= rows)) {
    return { trans: true, ld: cols === 1 ? Math.max(rows, 1) : sCol };
  }
  return null;
}

/** Smaller products than this skip the FFI call, whose fixed cost dominates there. */
const BLAS_MIN_WORK = 64;
/**
 * Below this many multiply-adds OpenBLAS runs single-threaded: waking its workers costs more than
 * they save, and idle workers spin in sched_yield, which showed up as most of the system time of a
 * training run with small matrices.
 */
const BLAS_THREAD_WORK = 1 << 22;
let blasThreads = 0, maxThreads = 0;

function threadsFor(blas: NonNullable<ReturnType<typeof loadBlas>["blas"]>, work: number): void {
  if (maxThreads === 0) maxThreads = blasThreads = Math.max(1, blas.threads());
  const want = work >= BLAS_THREAD_WORK ? maxThreads : 1;
  if (want !== blasThreads) {
    blas.setThreads(want);
    blasThreads = want;
  }
}

/**
 * out = a·b over the batch, or out += a·b with `accumulate` (BLAS's beta = 1: whatever `out`
 * holds, e.g. a bias written into each row, is the sum's starting value).
 */
export function matmul(
  a: NumView & { arr: FloatArray },
  b: NumView & { arr: FloatArray },
  out: FloatArray,
  forceTs = false,
  accumulate = false,
): void {
  const r = a.shape.length;
  const M = a.shape[r - 2], K = a.shape[r - 1], N = b.shape[r - 1];
  const batch = a.shape.slice(0, r - 2);
  const la = gemmLayout(a.strides[r - 2], a.strides[r - 1], M, K);
  const lb = gemmLayout(b.strides[r - 2], b.strides[r - 1], K, N);
  if (!la || !lb) {
    const cA = la ? a : contiguousCopy(a);
    const cB = lb ? b : contiguousCopy(b);
    return matmul(cA, cB, out, forceTs, accumulate);
  }
  const beta = accumulate ? 1 : 0;
  const ao = stridedOffsets(batch, a.strides.slice(0, r - 2), a.offset);
  const bo = stridedOffsets(batch, b.strides.slice(0, r - 2), b.offset);
  const blas = forceTs || M * N * K < BLAS_MIN_WORK ? null : loadBlas().blas;
  if (blas) threadsFor(blas, M * N * K);
  for (let i = 0; i < ao.length; i++) {
    const args = [
      la.trans,
      lb.trans,
      M,
      N,
      K,
      1,
      a.arr,
      ao[i],
      la.ld,
      b.arr,
      bo[i],
      lb.ld,
      beta,
      out,
      i * M * N,
      N,
    ] as const;
    const bf16 = blas && out instanceof Float32Array && M * N * K >= BF16_MIN_WORK
      ? cpuMatmulPrecision().running
      : "f32";
    if (blas && bf16 !== "f32") {
      const A = bf16Operand(
        a.arr as Float32Array,
        ao[i],
        la.ld,
        la.trans ? K : M,
        la.trans ? M : K,
      );
      const B = bf16Operand(
        b.arr as Float32Array,
        bo[i],
        lb.ld,
        lb.trans ? N : K,
        lb.trans ? K : N,
      );
      const C = out as Float32Array, cOff = i * M * N;
      if (bf16 === "bf16" && cpuMatmulPrecision().via === "amx") {
        const packed = takeArray("f32", Math.ceil(K / 32) * 32 * Math.ceil(N / 32) * 16);
        const ok = native()!.gemmBf16(
          A,
          la.trans,
          la.ld,
          B,
          lb.trans,
          lb.ld,
          M,
          N,
          K,
          beta,
          C.subarray(cOff),
          N,
          packed as Float32Array,
          threadCap(),
        );
        giveArray(packed);
        if (!ok) throw new Error("bf16 matmul: the native AMX kernel is not available after all");
      } else if (bf16 === "bf16") {
        const [A16, B16] = [A, B].map((x) => toBf16(blas, x));
        blas.sbgemm!(la.trans, lb.trans, M, N, K, 1, A16, la.ld, B16, lb.ld, beta, C, cOff, N);
      } else {
        const [Ae, Be] = [A, B].map(roundedToBf16);
        blas.sgemm(la.trans, lb.trans, M, N, K, 1, Ae, 0, la.ld, Be, 0, lb.ld, beta, C, cOff, N);
      }
    } else if (blas && out instanceof Float32Array) {
      blas.sgemm(...(args as unknown as Parameters<typeof blas.sgemm>));
    } else if (blas && out instanceof Float64Array) {
      blas.dgemm(...(args as unknown as Parameters<typeof blas.dgemm>));
    } else gemmTs(...args);
  }
}

/** The elements a gemm operand of `rows` rows of `cols` (leading dimension ld) reads from `off`. */
function bf16Operand(x: Float32Array, off: number, ld: number, rows: number, cols: number) {
  return x.subarray(off, off + (rows - 1) * ld + cols);
}

/** x's bf16 bit patterns: OpenBLAS's conversion when it has one, else ours (both round to nearest even). */
function toBf16(blas: Blas, x: Float32Array): Uint16Array {
  if (!blas.toBf16) return encode16("bf16", x);
  const out = new Uint16Array(x.length);
  blas.toBf16(x, out, x.length);
  return out;
}

/** x rounded to bf16 and widened back: the values sbgemm multiplies. */
function roundedToBf16(x: Float32Array): Float32Array {
  const h = encode16("bf16", x), u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}

function contiguousCopy<T extends NumView & { arr: FloatArray }>(v: T): T {
  const arr = new (v.arr.constructor as Float32ArrayConstructor)(prod(v.shape));
  copyInto(arr, v.shape, v.shape.map(() => 0), v);
  return { ...v, arr, strides: contiguousStrides(v.shape), offset: 0 };
}
