/**
 * Primitives: the small set of operations that backends implement and autodiff differentiates.
 * Every public op is a composition of these. `bind` runs one and shows it to the installed
 * observer (autodiff's tracing, when autodiff is loaded); this layer records nothing itself.
 */
import type { ArgReduceOp, Backend, BinaryOp, Buf, ReduceOp, UnaryOp } from "./backend.ts";
import { byteSize, type DType } from "./dtype.ts";
import { contiguousStrides, fmt, type Shape, ShapeError, shapesEqual, sizeOf } from "./shape.ts";
import { Storage, Tensor } from "./tensor.ts";

export interface PrimParams {
  unary: { op: UnaryOp };
  binary: { op: BinaryOp };
  where: Record<string, never>;
  cast: { dtype: DType };
  reduce: { op: ReduceOp; axes: readonly number[] };
  argReduce: { op: ArgReduceOp; axis: number };
  matmul: Record<string, never>;
  gather: { axis: number };
  scatterAdd: { axis: number };
  topk: { k: number };
  cumsum: { axis: number; reverse: boolean };
  concat: { axis: number };
  pad: { widths: readonly (readonly [number, number])[] };
  reshape: { shape: Shape };
  permute: { perm: readonly number[] };
  broadcastTo: { shape: Shape };
  slice: { starts: readonly number[]; ends: readonly number[] };
  alias: Record<string, never>;
  spmm: { transpose: boolean; outRows: number };
  sddmm: Record<string, never>;
  custom: {
    name: string;
    backward: (cts: (Tensor | null)[], live: boolean[]) => (Tensor | null)[];
  };
}
export type Prim = keyof PrimParams;

export interface Node<P extends Prim = Prim> {
  prim: P;
  inputs: Tensor[];
  params: PrimParams[P];
  outputs: Tensor[];
}

/**
 * What a higher layer installs to watch primitives, as a transformation sees them (jax's `bind`
 * finding the top trace). Only one is installed: autodiff's tracing, which nests its traces itself.
 */
export interface BindObserver {
  /** Sees every bound primitive once its outputs exist. */
  bound(node: Node): void;
  /**
   * Whether the observer keeps a record of `x` (autodiff: live in a trace). Such a tensor flows
   * only through primitives, never through a fused kernel, which has no rule of its own.
   */
  watches(x: Tensor): boolean;
}

let observer: BindObserver | null = null;

/** Install (or, with null, remove) the observer of `bind`; returns the one it replaces. */
export function observeBind(o: BindObserver | null): BindObserver | null {
  const prev = observer;
  observer = o;
  return prev;
}

/** Whether the installed observer watches `x` (false when none is installed). */
export const isWatched = (x: Tensor): boolean => observer !== null && observer.watches(x);

const COMPARE = new Set<BinaryOp>(["gt", "ge", "lt", "le", "eq", "ne", "and", "or"]);

export function wrap(backend: Backend, buf: Buf, shape: Shape, dtype: DType): Tensor {
  return new Tensor(new Storage(backend, buf, sizeOf(shape) * byteSize(dtype)), shape, dtype);
}

function viewOf(x: Tensor, shape: Shape, strides: readonly number[], offset: number): Tensor {
  return new Tensor(x.storage, shape, x.dtype, strides, offset);
}

/** Strides that reshape `x` without copying, or null when its layout does not allow it. */
function reshapeStrides(x: Tensor, shape: Shape): number[] | null {
  const cs = contiguousStrides(x.shape);
  const dense = x.shape.every((d, i) => d === 1 || cs[i] === x.strides[i]);
  if (dense) return contiguousStrides(shape);
  return sizeOf(shape) === 0 ? null : viewStrides(x.shape, x.strides, shape);
}

/**
 * Strides for `shape` over a strided layout, or null. Runs of old axes whose product equals a run
 * of new axes map onto each other; a run is viewable when its old axes nest (each stride the
 * next one's times its size), as for a slice of heads out of a fused QKV projection.
 */
function viewStrides(
  oldShape: Shape,
  oldStrides: readonly number[],
  shape: Shape,
): number[] | null {
  const dims: number[] = [], strs: number[] = [];
  oldShape.forEach((d, i) => d !== 1 && (dims.push(d), strs.push(oldStrides[i])));
  const out = shape.map(() => 1);
  let oi = 0, ni = 0;
  while (oi < dims.length && ni < shape.length) {
    let oj = oi + 1, nj = ni + 1, op = dims[oi], np = shape[ni];
    while (op !== np) {
      if (np < op) np *= shape[nj++];
      else op *= dims[oj++];
    }
    for (let k = oi; k < oj - 1; k++) if (strs[k] !== dims[k + 1] * strs[k + 1]) return null;
    out[nj - 1] = strs[oj - 1];
    for (let k = nj - 1; k > ni; k--) out[k - 1] = out[k] * shape[k];
    oi = oj, ni = nj;
  }
  return out;
}

type Impl<P extends Prim> = (xs: Tensor[], p: PrimParams[P], b: Backend) => Tensor[];

const IMPLS: { [P in Prim]: Impl<P> } = {
  unary: (
    [x],
    { op },
    b,
  ) => [
    wrap(
      b,
      b.unary(op, x.view(), op === "not" ? "bool" : x.dtype),
      x.shape,
      op === "not" ? "bool" : x.dtype,
    ),
  ],
  binary: ([x, y], { op }, b) => {
    const dt = COMPARE.has(op) ? "bool" : x.dtype;
    return [wrap(b, b.binary(op, x.view(), y.view(), dt), x.shape, dt)];
  },
  where: (
    [c, x, y],
    _,
    b,
  ) => [wrap(b, b.where(c.view(), x.view(), y.view(), x.dtype), x.shape, x.dtype)],
  cast: ([x], { dtype }, b) => [wrap(b, b.cast(x.view(), dtype), x.shape, dtype)],
  reduce: (
    [x],
    { op, axes },
    b,
  ) => [
    wrap(
      b,
      b.reduce(op, x.view(), axes, x.dtype),
      x.shape.filter((_, d) => !axes.includes(d)),
      x.dtype,
    ),
  ],
  argReduce: (
    [x],
    { op, axis },
    b,
  ) => [wrap(b, b.argReduce(op, x.view(), axis), x.shape.filter((_, d) => d !== axis), "i32")],
  matmul: ([x, y], _, b) => {
    const r = x.ndim;
    return [
      wrap(
        b,
        b.matmul(x.view(), y.view(), x.dtype),
        [...x.shape.slice(0, r - 1), y.shape[r - 1]],
        x.dtype,
      ),
    ];
  },
  gather: ([x, i], { axis }, b) => [wrap(b, b.gather(x.view(), i.view(), axis), i.shape, x.dtype)],
  scatterAdd: (
    [x, i, u],
    { axis },
    b,
  ) => [wrap(b, b.scatterAdd(x.view(), i.view(), u.view(), axis), x.shape, x.dtype)],
  topk: ([x], { k }, b) => {
    const shape = [...x.shape.slice(0, -1), k];
    const [v, i] = b.topk(x.view(), k);
    return [wrap(b, v, shape, x.dtype), wrap(b, i, shape, "i32")];
  },
  cumsum: (
    [x],
    { axis, reverse },
    b,
  ) => [wrap(b, b.cumsum(x.view(), axis, reverse), x.shape, x.dtype)],
  concat: (xs, { axis }, b) => {
    const shape = [...xs[0].shape];
    shape[axis] = xs.reduce((s, x) => s + x.shape[axis], 0);
    return [wrap(b, b.concat(xs.map((x) => x.view()), axis, shape), shape, xs[0].dtype)];
  },
  pad: ([x], { widths }, b) => {
    const shape = x.shape.map((d, i) => d + widths[i][0] + widths[i][1]);
    return [wrap(b, b.pad(x.view(), widths, shape), shape, x.dtype)];
  },
  reshape: ([x], { shape }, b) => {
    const st = reshapeStrides(x, shape);
    if (st) return [viewOf(x, shape, st, x.offset)];
    return [wrap(b, b.unary("copy", x.view(), x.dtype), shape, x.dtype)];
  },
  permute: (
    [x],
    { perm },
  ) => [viewOf(x, perm.map((p) => x.shape[p]), perm.map((p) => x.strides[p]), x.offset)],
  broadcastTo: ([x], { shape }) => {
    const lead = shape.length - x.ndim;
    const strides = shape.map((
      d,
      i,
    ) => (i < lead || (x.shape[i - lead] === 1 && d !== 1) ? 0 : x.strides[i - lead]));
    return [viewOf(x, shape, strides, x.offset)];
  },
  slice: ([x], { starts, ends }) => {
    const shape = starts.map((s, d) => ends[d] - s);
    const off = shape.some((d) => d === 0)
      ? x.offset
      : starts.reduce((o, s, d) => o + s * x.strides[d], x.offset);
    return [viewOf(x, shape, x.strides, off)];
  },
  alias: ([x]) => [viewOf(x, x.shape, x.strides, x.offset)],
  spmm: ([r, c, v, m], { transpose, outRows }, b) => {
    const shape = [outRows, m.shape[1]];
    return [
      wrap(b, b.spmm(r.view(), c.view(), v.view(), m.view(), transpose, outRows), shape, m.dtype),
    ];
  },
  sddmm: (
    [x, y, r, c],
    _,
    b,
  ) => [wrap(b, b.sddmm(x.view(), y.view(), r.view(), c.view()), r.shape, x.dtype)],
  custom: () => {
    throw new Error("custom nodes are recorded by customVjp, not bound");
  },
};

/** Run primitive `prim` and show it to the observer, if one is installed. */
export function bind<P extends Prim>(prim: P, inputs: Tensor[], params: PrimParams[P]): Tensor[] {
  const b = inputs[0].backend;
  for (const x of inputs) {
    if (x.backend !== b) {
      throw new Error(
        `${prim}: inputs live on different backends (${b.name} and ${x.backend.name}); move them with toBackend first`,
      );
    }
  }
  const outputs = (IMPLS[prim] as Impl<P>)(inputs, params, b);
  if (observer !== null) observer.bound({ prim, inputs, params, outputs } as Node);
  return outputs;
}

export function bind1<P extends Prim>(prim: P, inputs: Tensor[], params: PrimParams[P]): Tensor {
  return bind(prim, inputs, params)[0];
}

/** Sanity check used by ops whose inputs must already agree exactly (after broadcasting). */
export function assertSameShape(op: string, xs: Tensor[]): void {
  for (const x of xs) {
    if (!shapesEqual(x.shape, xs[0].shape)) {
      throw new ShapeError(`${op}: shapes ${xs.map((t) => fmt(t.shape)).join(" and ")} differ`);
    }
  }
}
