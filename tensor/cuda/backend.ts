/**
 * The cuda backend: the contract of tensor/backend.ts on an NVIDIA GPU through our own FFI
 * bindings. Buffers are blocks of the caching allocator; every kernel is queued on one stream and
 * readback synchronises it. Elementwise kernels are generated per expression and dtypes, the rest
 * come from one fixed module; both are compiled by NVRTC once per process. Matmul goes to cuBLAS
 * (f32 by default; TF32 or bf16 compute with f32 accumulation by option).
 */
import type { AdamHyper, Backend, Buf, View } from "../backend.ts";
import { allocStorage, byteSize, type DType, type StorageArray } from "../dtype.ts";
import { contiguousStrides, type Shape, sizeOf } from "../shape.ts";
import type { Block } from "./allocator.ts";
import type { GemmDType, MatmulPrecision } from "./cublas.ts";
import { planGemm } from "./gemm_plan.ts";
import {
  BINARY_C,
  castC,
  ewKey,
  ewSource,
  type EwSpec,
  UNARY_C,
  WHERE_C,
} from "./kernels/elementwise.ts";
import { SUFFIX } from "./kernels/prelude.ts";
import { indexDigits, KEY_BYTES } from "./kernels/select.ts";
import { arg, type KernelArg } from "./params.ts";
import {
  blocksFor,
  planElementwise,
  planReduce,
  type ReducePlan,
  splitParts,
  type StridedPart,
} from "./plan.ts";
import {
  type CudaRuntime,
  cudaRuntime,
  cudaUnavailableReason,
  MAIN,
  requireRuntime,
} from "./runtime.ts";

/** A device buffer: an allocator block (ptr 0 for empty buffers). */
export type CudaBuf = Block;

const blk = (b: Buf) => b as CudaBuf;
/** The device address of element `offset` of a view. */
const addr = (v: View) => blk(v.buf).ptr + BigInt(v.offset * byteSize(v.dtype));
const dims = (xs: readonly number[]) => arg.dims(xs);

let precisionOverride: MatmulPrecision | null = null;

/** How f32 matmuls run on cuda from now on (also $SPARSECODER_CUDA_MATMUL): f32, tf32 or bf16 (f32 accumulation). */
export function setCudaMatmulPrecision(p: MatmulPrecision): void {
  if (p !== "f32" && p !== "tf32" && p !== "bf16") {
    throw new Error(`setCudaMatmulPrecision: expected f32, tf32 or bf16, got ${JSON.stringify(p)}`);
  }
  precisionOverride = p;
}

function rt(): CudaRuntime {
  return requireRuntime();
}

function allocRaw(dtype: DType, size: number): CudaBuf {
  return rt().allocator.alloc(size * byteSize(dtype));
}

function allocZero(dtype: DType, size: number): CudaBuf {
  const r = rt(), b = r.allocator.alloc(size * byteSize(dtype));
  if (b.bytes > 0) r.driver.memsetD8(b.ptr, 0, size * byteSize(dtype), r.stream);
  return b;
}

const ewModules = new Map<string, string>();

/** Run one elementwise spec: out view (buffer, offset, strides) ← expr(inputs). */
function ew(
  spec: EwSpec,
  shape: Shape,
  out: { buf: CudaBuf; strides: readonly number[]; offset: number },
  inputs: readonly View[],
): void {
  const p = planElementwise(shape, out, inputs);
  if (p.n === 0) return;
  const r = rt(), key = ewKey(spec);
  if (!ewModules.has(key)) ewModules.set(key, ewSource(spec));
  const part = (
    s: StridedPart,
    ptr: bigint,
  ): KernelArg[] => [dims(s.strides), arg.i64(s.offset), arg.ptr(ptr)];
  const args: KernelArg[] = [
    arg.i64(p.n),
    arg.i32(p.shape.length),
    dims(p.shape),
    dims(p.out.strides),
    arg.i64(p.out.offset),
    arg.ptr(out.buf.ptr),
  ];
  p.inputs.forEach((s, i) => args.push(...part(s, blk(inputs[i].buf).ptr)));
  r.launch(
    () => ewModules.get(key)!,
    `ew:${key}`,
    p.kernel,
    [blocksFor(p.n, 256, r.device.sms)],
    256,
    args,
  );
}

/** A fresh contiguous buffer computed elementwise. */
function ewNew(expr: string, outDtype: DType, shape: Shape, inputs: readonly View[]): CudaBuf {
  const buf = allocRaw(outDtype, sizeOf(shape));
  ew({ expr, inputs: inputs.map((v) => v.dtype), out: outDtype }, shape, {
    buf,
    strides: contiguousStrides(shape),
    offset: 0,
  }, inputs);
  return buf;
}

const isContig = (v: View) =>
  v.offset === 0 &&
  v.shape.every((d, i) => d === 1 || v.strides[i] === contiguousStrides(v.shape)[i]);

/** v itself when contiguous from offset 0, else a contiguous copy (fresh: the caller frees it). */
function contiguous(v: View): { v: View; fresh: boolean } {
  if (isContig(v)) return { v, fresh: false };
  const buf = ewNew("a", v.dtype, v.shape, [v]);
  return {
    v: { buf, dtype: v.dtype, shape: v.shape, strides: contiguousStrides(v.shape), offset: 0 },
    fresh: true,
  };
}

function castView(v: View, to: DType): View {
  return {
    buf: ewNew(castC(v.dtype, to), to, v.shape, [v]),
    dtype: to,
    shape: v.shape,
    strides: contiguousStrides(v.shape),
    offset: 0,
  };
}

function release(...bs: CudaBuf[]): void {
  const a = rt().allocator;
  for (const b of bs) a.free(b);
}

function launchMain(
  name: string,
  grid: [number, number?, number?],
  block: number,
  args: KernelArg[],
): void {
  rt().launch(MAIN.source, MAIN.key, name, grid, block, args);
}

const ERR_TEXT: Record<number, string> = { 1: "gather", 2: "scatterAdd", 3: "spmm", 4: "sddmm" };
/** The cpu backend's wording of each index error (sparse products count rows). */
const ERR_RANGE = (code: number, size: number) =>
  code === 3 || code === 4 ? `${size} rows` : `an axis of size ${size}`;

/** Throw the first index error a kernel recorded since the last readback (and clear it). */
function checkDeviceErrors(r: CudaRuntime): void {
  const w = new Int32Array(4);
  r.driver.copyDtoH(w, r.errWord.ptr, r.stream);
  r.driver.streamSync(r.stream);
  if (w[0] === 0) return;
  r.driver.memsetD8(r.errWord.ptr, 0, 16, r.stream);
  throw new RangeError(
    `${ERR_TEXT[w[0]] ?? "kernel"}: index ${w[1]} is out of range for ${
      ERR_RANGE(w[0], w[2])
    } (found on the GPU, reported at this readback)`,
  );
}

function readBack(buf: Buf, dtype: DType, size: number): StorageArray {
  const r = rt(), out = allocStorage(dtype, size);
  if (size > 0) r.driver.copyDtoH(out, blk(buf).ptr, r.stream);
  r.driver.streamSync(r.stream);
  checkDeviceErrors(r);
  return out;
}

/** Dtypes that need widening to f32 (or casting) around kernels that lack them. */
const wideOf = (d: DType): DType => (d === "f16" || d === "bf16" || d === "bool" ? "f32" : d);

/** Run `fn` on views widened to `wide`, then cast its result back to `dtype`. */
function viaWide(
  views: View[],
  dtype: DType,
  wide: DType,
  shape: Shape,
  fn: (vs: View[]) => CudaBuf,
): CudaBuf {
  if (wide === dtype) return fn(views);
  const wv = views.map((v) => (v.dtype === dtype ? castView(v, wide) : v));
  const res = fn(wv);
  const out = ewNew(castC(wide, dtype), dtype, shape, [{
    buf: res,
    dtype: wide,
    shape,
    strides: contiguousStrides(shape),
    offset: 0,
  }]);
  release(res, ...wv.filter((v, i) => v !== views[i]).map((v) => blk(v.buf)));
  return out;
}

function matmul(a: View, b: View, outDtype: DType): CudaBuf {
  const r = rt(), nd = a.shape.length;
  const outShape = [...a.shape.slice(0, nd - 1), b.shape[nd - 1]];
  const n = sizeOf(outShape);
  const dt = a.dtype;
  if (dt === "i32" || dt === "bool") {
    return viaWide([a, b], dt, "f64", outShape, ([x, y]) => matmul(x, y, "f64"));
  }
  const K = a.shape[nd - 1];
  if (n === 0 || K === 0) return allocZero(outDtype, n);
  let plan = planGemm(a, b);
  const copies: CudaBuf[] = [];
  while ("copy" in plan) {
    const which = plan.copy;
    const c = contiguous(which === "a" ? a : b);
    copies.push(blk(c.v.buf));
    if (which === "a") a = c.v;
    else b = c.v;
    plan = planGemm(a, b);
  }
  const out = allocRaw(outDtype, n);
  const bytes = byteSize(dt);
  r.cublas.gemm({
    plan: plan.plan,
    dtype: dt as GemmDType,
    precision: precisionOverride ?? r.precision,
    a: blk(a.buf).ptr + BigInt(plan.plan.second.offset * bytes),
    b: blk(b.buf).ptr + BigInt(plan.plan.first.offset * bytes),
    c: out.ptr,
  });
  release(...copies);
  return out;
}

function topk(x: View, k: number): [CudaBuf, CudaBuf] {
  const r = rt(), n = x.shape[x.shape.length - 1] ?? 1;
  const rows = n === 0 ? 0 : sizeOf(x.shape) / n;
  if (k === 0 || rows === 0) return [allocRaw(x.dtype, 0), allocRaw("i32", 0)];
  if (x.dtype === "bool") {
    const wide = castView(x, "i32");
    const [v, i] = topk(wide, k);
    const vb = ewNew(castC("i32", "bool"), "bool", [rows * k], [{
      buf: v,
      dtype: "i32",
      shape: [rows * k],
      strides: [1],
      offset: 0,
    }]);
    release(blk(wide.buf), v);
    return [vb, i];
  }
  const { v, fresh } = contiguous(x);
  const sfx = SUFFIX[x.dtype], vd = KEY_BYTES[x.dtype], id = indexDigits(n);
  const state = allocRaw("i32", rows * 4),
    hist = allocZero("i32", rows * 256),
    count = allocZero("i32", rows),
    sel = allocRaw("i32", rows * k);
  const values = allocRaw(x.dtype, rows * k), indices = allocRaw("i32", rows * k);
  const gy = Math.min(rows, 65535);
  // Many blocks per row when rows are few (batch top-k runs over one flattened row).
  const bpr = Math.max(1, Math.min(Math.ceil(n / 1024), Math.ceil((r.device.sms * 8) / rows)));
  const xp = blk(v.buf).ptr;
  launchMain("topk_init", [blocksFor(rows, 256, r.device.sms)], 256, [
    arg.i32(rows),
    arg.i32(k),
    arg.ptr(state.ptr),
  ]);
  for (let pass = 0; pass < vd + id; pass++) {
    launchMain(`topk_hist_${sfx}`, [bpr, gy], 256, [
      arg.i32(pass),
      arg.i32(vd),
      arg.i32(id),
      arg.i32(rows),
      arg.i64(n),
      arg.i32(bpr),
      arg.ptr(xp),
      arg.ptr(state.ptr),
      arg.ptr(hist.ptr),
    ]);
    launchMain("topk_pick", [blocksFor(rows * 32, 256, r.device.sms)], 256, [
      arg.i32(pass),
      arg.i32(vd),
      arg.i32(id),
      arg.i32(rows),
      arg.ptr(state.ptr),
      arg.ptr(hist.ptr),
    ]);
  }
  launchMain(`topk_collect_${sfx}`, [bpr, gy], 256, [
    arg.i32(rows),
    arg.i64(n),
    arg.i32(k),
    arg.i32(bpr),
    arg.ptr(xp),
    arg.ptr(state.ptr),
    arg.ptr(count.ptr),
    arg.ptr(sel.ptr),
  ]);
  launchMain(`topk_rank_${sfx}`, [Math.ceil(k / 256), gy], 256, [
    arg.i32(rows),
    arg.i64(n),
    arg.i32(k),
    arg.ptr(xp),
    arg.ptr(sel.ptr),
    arg.ptr(values.ptr),
    arg.ptr(indices.ptr),
  ]);
  release(state, hist, count, sel, ...(fresh ? [blk(v.buf)] : []));
  return [values, indices];
}

function reduce(
  op: ReduceOp,
  x: View,
  axes: readonly number[],
  outDtype: DType,
): CudaBuf {
  const r = rt();
  const p = planReduce(x.shape, x.strides, axes, r.device.sms);
  const out = allocRaw(x.dtype, p.nOut);
  if (p.nOut > 0 && p.parts > 1) reduceSplit(p, op, x, out);
  else if (p.nOut > 0) {
    const grid = p.warp
      ? blocksFor(p.nOut * 32, 256, r.device.sms)
      : blocksFor(p.nOut, 256, r.device.sms);
    launchMain(`reduce_${p.warp ? "warp" : "thread"}_${SUFFIX[x.dtype]}`, [grid], 256, [
      ...reduceArgs(p, op, x),
      arg.ptr(out.ptr),
    ]);
  }
  if (outDtype === x.dtype) return out;
  const shape = [p.nOut];
  const c = ewNew(castC(x.dtype, outDtype), outDtype, shape, [{
    buf: out,
    dtype: x.dtype,
    shape,
    strides: [1],
    offset: 0,
  }]);
  release(out);
  return c;
}

type ReduceOp = "sum" | "max" | "min";
const REDUCE_OP: Record<ReduceOp, number> = { sum: 0, max: 1, min: 2 };

/** What every reduce kernel takes first: the op, the outputs and the input's kept/reduced axes. */
function reduceArgs(p: ReducePlan, op: ReduceOp, x: View): KernelArg[] {
  return [
    arg.i32(REDUCE_OP[op]),
    arg.i64(p.nOut),
    arg.i32(p.kept.shape.length),
    dims(p.kept.shape),
    dims(p.kept.strides),
    arg.i32(p.reduced.shape.length),
    dims(p.reduced.shape),
    dims(p.reduced.strides),
    arg.i64(p.rn),
    arg.i64(x.offset),
    arg.ptr(blk(x.buf).ptr),
  ];
}

/** A reduction split in chunks (planReduce's `parts`): partials in f64, then each output's. */
function reduceSplit(p: ReducePlan, op: ReduceOp, x: View, out: CudaBuf): void {
  const r = rt(), sfx = SUFFIX[x.dtype];
  const part = allocRaw("f64", p.nOut * p.parts);
  launchMain(`reduce_split_${sfx}`, [blocksFor(p.nOut * p.parts * 32, 256, r.device.sms)], 256, [
    ...reduceArgs(p, op, x),
    arg.i64(p.parts),
    arg.ptr(part.ptr),
  ]);
  launchMain(`reduce_parts_${sfx}`, [blocksFor(p.nOut * 32, 256, r.device.sms)], 256, [
    arg.i32(REDUCE_OP[op]),
    arg.i64(p.nOut),
    arg.i64(p.parts),
    arg.ptr(part.ptr),
    arg.ptr(out.ptr),
  ]);
  release(part);
}

/** Kept axes of a view (all but `axis`), merged: for kernels that walk one axis per output. */
function keptDims(v: View, axis: number, outStrides?: readonly number[]) {
  const ds = v.shape.map((_, d) => d).filter((d) => d !== axis);
  return {
    shape: ds.map((d) => v.shape[d]),
    strides: ds.map((d) => v.strides[d]),
    ostrides: outStrides ? ds.map((d) => outStrides[d]) : [],
  };
}

function scatterAdd(base: View, idx: View, upd: View, axis: number): CudaBuf {
  const wide = wideOf(base.dtype);
  return viaWide([base, upd], base.dtype, wide, base.shape, ([b, u]) => {
    const r = rt(), n = sizeOf(idx.shape);
    const out = ewNew("a", wide, b.shape, [b]);
    if (n > 0) {
      launchMain(`scatter_add_${SUFFIX[wide]}`, [blocksFor(n, 256, r.device.sms)], 256, [
        arg.i64(n),
        arg.i32(idx.shape.length),
        dims(idx.shape),
        dims(idx.strides),
        arg.i64(idx.offset),
        arg.ptr(blk(idx.buf).ptr),
        dims(u.strides),
        arg.i64(u.offset),
        arg.ptr(blk(u.buf).ptr),
        dims(contiguousStrides(b.shape)),
        arg.i32(axis),
        arg.i64(b.shape[axis]),
        arg.ptr(out.ptr),
        arg.ptr(r.errWord.ptr),
      ]);
    }
    return out;
  });
}

function spmm(
  rows: View,
  cols: View,
  vals: View,
  dense: View,
  transpose: boolean,
  outRows: number,
): CudaBuf {
  const d = dense.shape[1], outShape = [outRows, d];
  const wide = dense.dtype === "f64" ? "f64" : "f32";
  return viaWide([vals, dense], dense.dtype, wide, outShape, ([v, m]) => {
    const r = rt(), nnz = sizeOf(rows.shape);
    const out = allocZero(wide, outRows * d);
    if (nnz > 0 && d > 0) {
      launchMain(
        `spmm_${SUFFIX[wide]}`,
        [Math.min(nnz, r.device.sms * 64)],
        Math.min(256, Math.ceil(d / 32) * 32),
        [
          arg.i64(nnz),
          arg.i64(d),
          arg.i32(transpose ? 1 : 0),
          arg.i64(m.shape[0]),
          arg.i64(outRows),
          arg.ptr(addr(rows)),
          arg.ptr(addr(cols)),
          arg.ptr(addr(v)),
          arg.ptr(addr(m)),
          arg.ptr(out.ptr),
          arg.ptr(r.errWord.ptr),
        ],
      );
    }
    return out;
  });
}

function sddmm(a: View, b: View, rows: View, cols: View): CudaBuf {
  const nnz = sizeOf(rows.shape), wide = a.dtype === "f64" ? "f64" : "f32";
  return viaWide([a, b], a.dtype, wide, [nnz], ([x, y]) => {
    const r = rt(), out = allocRaw(wide, nnz);
    if (nnz > 0) {
      launchMain(`sddmm_${SUFFIX[wide]}`, [blocksFor(nnz * 32, 256, r.device.sms)], 256, [
        arg.i64(nnz),
        arg.i64(x.shape[1]),
        arg.i64(x.shape[0]),
        arg.i64(y.shape[0]),
        arg.ptr(addr(x)),
        arg.ptr(addr(y)),
        arg.ptr(addr(rows)),
        arg.ptr(addr(cols)),
        arg.ptr(out.ptr),
        arg.ptr(r.errWord.ptr),
      ]);
    }
    return out;
  });
}

function rowKernel(name: string, views: View[]): CudaBuf {
  const r = rt(), [R, C] = views[0].shape, out = allocRaw(views[0].dtype, R * C);
  if (R * C > 0) {
    launchMain(`${name}_${SUFFIX[views[0].dtype]}`, [Math.min(R, r.device.sms * 16)], 256, [
      arg.i64(R),
      arg.i64(C),
      ...views.map((v) => arg.ptr(addr(v))),
      arg.ptr(out.ptr),
    ]);
  }
  return out;
}

/** Adam's hyperparameters as its kernels take them, after the arrays. */
const adamArgs = (h: AdamHyper, decay: number): KernelArg[] =>
  [h.b1, h.b2, h.eps, h.c2, h.scale, decay].map((v) => arg.f64(v));

export const cuda: Backend = {
  name: "cuda",
  hostMemory: false,
  info() {
    const r = cudaRuntime();
    if (!r) return `cuda: unavailable (${cudaUnavailableReason()})`;
    const v = (x: number) => `${Math.floor(x / 1000)}.${(x % 1000) / 10}`;
    return `cuda: ${r.device.name} (sm_${r.device.cc}, ${r.device.sms} SMs), driver API ${
      v(r.driver.version)
    }, NVRTC ${r.nvrtc.version.join(".")}, cuBLAS ${r.cublas.version}; matmul ${
      precisionOverride ?? r.precision
    }`;
  },
  alloc: (dtype, size) => allocZero(dtype, size),
  // A finalizer may free a buffer after its runtime is gone (a test's emulated one): nothing to do then.
  free: (buf) => cudaRuntime()?.allocator.free(blk(buf)),
  fromHost(dtype, data) {
    const r = rt(), b = allocRaw(dtype, data.length);
    if (data.length > 0) r.driver.copyHtoD(b.ptr, data, r.stream);
    return b;
  },
  read: (buf, dtype, size) => Promise.resolve(readBack(buf, dtype, size)),
  readSync: (buf, dtype, size) => readBack(buf, dtype, size),

  unary: (op, x, outDtype) => ewNew(UNARY_C[op], outDtype, x.shape, [x]),
  binary: (op, a, b, outDtype) => ewNew(BINARY_C[op], outDtype, a.shape, [a, b]),
  where: (c, a, b, outDtype) => ewNew(WHERE_C, outDtype, a.shape, [c, a, b]),
  cast: (x, dtype) => ewNew(castC(x.dtype, dtype), dtype, x.shape, [x]),
  reduce,
  argReduce(op, x, axis) {
    const r = rt(), n = x.shape[axis], k = keptDims(x, axis), nOut = sizeOf(k.shape);
    const out = allocRaw("i32", nOut);
    if (nOut > 0) {
      launchMain(`arg_reduce_${SUFFIX[x.dtype]}`, [blocksFor(nOut * 32, 256, r.device.sms)], 256, [
        arg.i32(op === "argmax" ? 1 : 0),
        arg.i64(nOut),
        arg.i32(k.shape.length),
        dims(k.shape),
        dims(k.strides),
        arg.i64(n),
        arg.i64(x.strides[axis]),
        arg.i64(x.offset),
        arg.ptr(blk(x.buf).ptr),
        arg.ptr(out.ptr),
      ]);
    }
    return out;
  },
  matmul,
  gather(x, idx, axis) {
    const r = rt(), n = sizeOf(idx.shape), out = allocRaw(x.dtype, n);
    if (n > 0) {
      launchMain(`gather_${SUFFIX[x.dtype]}`, [blocksFor(n, 256, r.device.sms)], 256, [
        arg.i64(n),
        arg.i32(idx.shape.length),
        dims(idx.shape),
        dims(idx.strides),
        arg.i64(idx.offset),
        arg.ptr(blk(idx.buf).ptr),
        dims(x.strides),
        arg.i64(x.offset),
        arg.i32(axis),
        arg.i64(x.shape[axis]),
        arg.ptr(blk(x.buf).ptr),
        arg.ptr(out.ptr),
        arg.ptr(r.errWord.ptr),
      ]);
    }
    return out;
  },
  scatterAdd,
  topk,
  cumsum(x, axis, reverse) {
    const r = rt(),
      n = x.shape[axis],
      os = contiguousStrides(x.shape),
      k = keptDims(x, axis, os),
      lines = sizeOf(k.shape);
    const out = allocRaw(x.dtype, sizeOf(x.shape));
    if (lines > 0 && n > 0) {
      launchMain(`cumsum_${SUFFIX[x.dtype]}`, [Math.min(lines, r.device.sms * 16)], 256, [
        arg.i64(lines),
        arg.i32(k.shape.length),
        dims(k.shape),
        dims(k.strides),
        dims(k.ostrides),
        arg.i64(n),
        arg.i64(x.strides[axis]),
        arg.i64(os[axis]),
        arg.i32(reverse ? 1 : 0),
        arg.i64(x.offset),
        arg.ptr(blk(x.buf).ptr),
        arg.ptr(out.ptr),
      ]);
    }
    return out;
  },
  concat(xs, axis, outShape) {
    const out = allocRaw(xs[0].dtype, sizeOf(outShape)), os = contiguousStrides(outShape);
    let at = 0;
    for (const x of xs) {
      ew({ expr: "a", inputs: [x.dtype], out: x.dtype }, x.shape, {
        buf: out,
        strides: os,
        offset: at * os[axis],
      }, [x]);
      at += x.shape[axis];
    }
    return out;
  },
  pad(x, widths, outShape) {
    const out = allocZero(x.dtype, sizeOf(outShape)), os = contiguousStrides(outShape);
    const offset = widths.reduce((o, [before], d) => o + before * os[d], 0);
    ew({ expr: "a", inputs: [x.dtype], out: x.dtype }, x.shape, { buf: out, strides: os, offset }, [
      x,
    ]);
    return out;
  },
  spmm,
  sddmm,
  fused: {
    adam(g, mu, nu, param, h) {
      const r = rt(), n = sizeOf(g.shape), dt = g.dtype;
      const [u, m2, v2] = [allocRaw(dt, n), allocRaw(dt, n), allocRaw(dt, n)];
      if (n > 0) {
        launchMain(`adam_${SUFFIX[dt]}`, [blocksFor(n, 256, r.device.sms)], 256, [
          arg.i64(n),
          arg.ptr(addr(g)),
          arg.ptr(addr(mu)),
          arg.ptr(addr(nu)),
          arg.ptr(param ? addr(param) : 0n),
          arg.ptr(u.ptr),
          arg.ptr(m2.ptr),
          arg.ptr(v2.ptr),
          ...adamArgs(h, param ? h.decay : 0),
        ]);
      }
      return [u, m2, v2];
    },
    adamApply(param, g, mu, nu, gradScale, h, o) {
      const n = sizeOf(param.shape), dt = param.dtype;
      const [R, C] = param.shape.length === 2 ? param.shape : [1, n];
      // The gradient as the parameter lies, or its transpose (∂W_enc from the sparse product).
      const gT = param.shape.length === 2 && g.strides[0] === 1 && g.strides[1] === R && R > 1;
      if (!gT && g.strides.some((s, d) => s !== contiguousStrides(g.shape)[d])) return null;
      if (Math.ceil(R / 32) > 65535) return null;
      const [p2, m2, v2] = [allocRaw(dt, n), allocRaw(dt, n), allocRaw(dt, n)];
      if (n > 0) {
        launchMain(`adam_apply_${SUFFIX[dt]}`, [Math.ceil(C / 32), Math.ceil(R / 32)], 256, [
          arg.i64(R),
          arg.i64(C),
          arg.ptr(addr(g)),
          arg.i32(gT ? 1 : 0),
          arg.ptr(gradScale ? addr(gradScale) : 0n),
          arg.ptr(addr(mu)),
          arg.ptr(addr(nu)),
          arg.ptr(addr(param)),
          arg.ptr(p2.ptr),
          arg.ptr(m2.ptr),
          arg.ptr(v2.ptr),
          ...adamArgs(h, o.decay ? h.decay : 0),
        ]);
      }
      if (!o.unitRows) return [p2, m2, v2];
      const rows = rowKernel("unit_rows", [
        { buf: p2, dtype: dt, shape: [R, C], strides: [C, 1], offset: 0 },
      ]);
      release(p2);
      return [rows, m2, v2];
    },
    sumSquares(x) {
      const r = rt(), n = sizeOf(x.shape), sfx = SUFFIX[x.dtype], out = allocZero(x.dtype, 1);
      if (n === 0) return out;
      const parts = splitParts(1, n, r.device.sms);
      const part = allocRaw("f64", parts);
      launchMain(`sum_squares_split_${sfx}`, [blocksFor(parts * 32, 256, r.device.sms)], 256, [
        arg.i64(n),
        arg.i64(parts),
        arg.ptr(addr(x)),
        arg.ptr(part.ptr),
      ]);
      launchMain(`reduce_parts_${sfx}`, [1], 256, [
        arg.i32(0),
        arg.i64(1),
        arg.i64(parts),
        arg.ptr(part.ptr),
        arg.ptr(out.ptr),
      ]);
      release(part);
      return out;
    },
    unitRows: (w) => rowKernel("unit_rows", [w]),
    projectOutRows: (g, w) => rowKernel("project_out_rows", [g, w]),
  },
};

/** Device memory held by this process: the allocator's counts and the driver's free/total. */
export function cudaMemoryStats(): {
  inUse: number;
  cached: number;
  peak: number;
  driverAllocs: number;
  driverFrees: number;
  free: number;
  total: number;
} | null {
  const r = cudaRuntime();
  if (!r) return null;
  return { ...r.allocator.stats(), ...r.driver.memInfo() };
}

/** Give the allocator's cached blocks back to the driver. */
export function cudaReleaseCached(): void {
  cudaRuntime()?.allocator.releaseCached();
}

/** Wait for every queued kernel (for timing; readback already waits). */
export function cudaSynchronize(): void {
  const r = cudaRuntime();
  r?.driver.streamSync(r.stream);
}
