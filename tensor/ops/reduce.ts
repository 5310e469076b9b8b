/** Reductions over axes (negative axes allowed, `keepdims` optional) and the softmax family. */
import type { ReduceOp } from "../backend.ts";
import { isFloat } from "../dtype.ts";
import { fmt, normAxes, normAxis, reducedShape, ShapeError } from "../shape.ts";
import { bind1 } from "../prims.ts";
import type { Tensor } from "../tensor.ts";
import {
  abs,
  add,
  cast,
  div,
  exp,
  isFinite,
  log,
  sqrt,
  square,
  stopGradient,
  sub,
  where,
} from "./elementwise.ts";
import { reshape } from "./shape.ts";

export type Axes = number | readonly number[];
export interface ReduceOptions {
  keepdims?: boolean;
}

function reduce(
  op: ReduceOp,
  name: string,
  x: Tensor,
  axes: Axes | undefined,
  keepdims: boolean,
): Tensor {
  const ax = normAxes(name, axes, x.shape);
  if (op !== "sum" && ax.some((a) => x.shape[a] === 0)) {
    throw new ShapeError(`${name}: cannot reduce an empty axis of shape ${fmt(x.shape)}`);
  }
  const src = op === "sum" && x.dtype === "bool" ? cast(x, "i32") : x;
  const r = ax.length === 0 ? src : bind1("reduce", [src], { op, axes: ax });
  return keepdims ? reshape(r, reducedShape(x.shape, ax, true)) : r;
}

export const sum = (x: Tensor, axes?: Axes, o: ReduceOptions = {}): Tensor =>
  reduce("sum", "sum", x, axes, o.keepdims ?? false);
export const max = (x: Tensor, axes?: Axes, o: ReduceOptions = {}): Tensor =>
  reduce("max", "max", x, axes, o.keepdims ?? false);
export const min = (x: Tensor, axes?: Axes, o: ReduceOptions = {}): Tensor =>
  reduce("min", "min", x, axes, o.keepdims ?? false);

/** Elements per reduced line; also validates the axes under the public op's name. */
function count(op: string, x: Tensor, axes: Axes | undefined): number {
  return normAxes(op, axes, x.shape).reduce((n, a) => n * x.shape[a], 1);
}

export function mean(x: Tensor, axes?: Axes, o: ReduceOptions = {}): Tensor {
  const n = count("mean", x, axes);
  return div(sum(isFloat(x.dtype) ? x : cast(x, "f32"), axes, o), n);
}

/** Variance; `ddof: 1` gives the unbiased estimate. */
export function variance(
  x: Tensor,
  axes?: Axes,
  o: ReduceOptions & { ddof?: number } = {},
): Tensor {
  const n = count("variance", x, axes);
  const xf = isFloat(x.dtype) ? x : cast(x, "f32");
  const c = sub(xf, mean(xf, axes, { keepdims: true }));
  return div(sum(square(c), axes, o), n - (o.ddof ?? 0));
}
export { variance as var };

/** Vector norm over `axes`: ord 2 (default), 1 or Infinity. */
export function norm(
  x: Tensor,
  axes?: Axes,
  o: ReduceOptions & { ord?: 1 | 2 | typeof Infinity } = {},
): Tensor {
  const ord = o.ord ?? 2;
  normAxes("norm", axes, x.shape); // errors name norm, not the sum/max it is built from
  if (ord === 1) return sum(abs(x), axes, o);
  if (ord === Infinity) return max(abs(x), axes, o);
  if (ord !== 2) throw new RangeError(`norm: ord must be 1, 2 or Infinity, got ${ord}`);
  return sqrt(sum(square(x), axes, o));
}

function argReduce(
  op: "argmax" | "argmin",
  x: Tensor,
  axis: number | undefined,
  keepdims: boolean,
): Tensor {
  if (axis === undefined) return argReduce(op, reshape(x, [-1]), 0, false);
  const a = normAxis(op, axis, x.ndim, x.shape);
  if (x.shape[a] === 0) {
    throw new ShapeError(`${op}: cannot reduce an empty axis of shape ${fmt(x.shape)}`);
  }
  const r = bind1("argReduce", [x], { op, axis: a });
  return keepdims ? reshape(r, reducedShape(x.shape, [a], true)) : r;
}

/** Index (i32) of the largest value along `axis` (of the flattened tensor if omitted). */
export const argmax = (x: Tensor, axis?: number, o: ReduceOptions = {}): Tensor =>
  argReduce("argmax", x, axis, o.keepdims ?? false);
export const argmin = (x: Tensor, axis?: number, o: ReduceOptions = {}): Tensor =>
  argReduce("argmin", x, axis, o.keepdims ?? false);

/** log Σ exp(x), shifted by the (gradient-free) max so large inputs do not overflow. */
export function logsumexp(x: Tensor, axes?: Axes, o: ReduceOptions = {}): Tensor {
  const ax = normAxes("logsumexp", axes, x.shape); // errors name logsumexp, not max
  const m = stopGradient(max(x, axes, { keepdims: true }));
  const shift = where(isFinite(m), m, 0);
  const s = log(sum(exp(sub(x, shift)), axes, { keepdims: true }));
  const r = add(s, shift);
  return o.keepdims ? r : reshape(r, reducedShape(x.shape, ax, false));
}

export function softmax(x: Tensor, axis = -1): Tensor {
  normAxis("softmax", axis, x.ndim, x.shape);
  const e = exp(sub(x, stopGradient(max(x, axis, { keepdims: true }))));
  return div(e, sum(e, axis, { keepdims: true }));
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  normAxis("logSoftmax", axis, x.ndim, x.shape);
  return sub(x, logsumexp(x, axis, { keepdims: true }));
}

/** Running sum along `axis` (`reverse` sums from the end). */
export function cumsum(x: Tensor, axis = -1, o: { reverse?: boolean } = {}): Tensor {
  const a = normAxis("cumsum", axis, x.ndim, x.shape);
  const src = x.dtype === "bool" ? cast(x, "i32") : x;
  return bind1("cumsum", [src], { axis: a, reverse: o.reverse ?? false });
}
