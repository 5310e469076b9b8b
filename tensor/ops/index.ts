/** Indexing: gather/scatter along an axis, one-hot, top-k. */
import type { DType } from "../dtype.ts";
import { broadcastShapes, fmt, normAxis, ShapeError } from "../shape.ts";
import { bind, bind1 } from "../prims.ts";
import type { Tensor } from "../tensor.ts";
import { arange } from "./create.ts";
import { broadcastTo, cast, eq } from "./elementwise.ts";
import { expandDims } from "./shape.ts";

function checkIndices(op: string, idx: Tensor): void {
  if (idx.dtype !== "i32") throw new TypeError(`${op}: indices must be i32, got ${idx.dtype}`);
}

/** Shapes that x and idx broadcast to everywhere except `axis`, where each keeps its own size. */
function alongAxis(
  op: string,
  x: Tensor,
  idx: Tensor,
  axis: number,
): { a: number; xs: number[]; is: number[] } {
  if (idx.ndim !== x.ndim) {
    throw new ShapeError(
      `${op}: indices of shape ${fmt(idx.shape)} must have the rank of ${fmt(x.shape)}`,
    );
  }
  const a = normAxis(op, axis, x.ndim, x.shape);
  const drop = (s: readonly number[]) => s.map((d, i) => (i === a ? 1 : d));
  const common = broadcastShapes(op, drop(x.shape), drop(idx.shape));
  return {
    a,
    xs: common.map((d, i) => (i === a ? x.shape[a] : d)),
    is: common.map((d, i) => (i === a ? idx.shape[a] : d)),
  };
}

/** NumPy's take_along_axis: out[i] = x[i with i_axis := idx[i]]. */
export function takeAlongAxis(x: Tensor, idx: Tensor, axis: number): Tensor {
  checkIndices("takeAlongAxis", idx);
  const { a, xs, is } = alongAxis("takeAlongAxis", x, idx, axis);
  return bind1("gather", [broadcastTo(x, xs), broadcastTo(idx, is)], { axis: a });
}
export const gather = takeAlongAxis;

/** base with updates added at idx along `axis` (repeated indices accumulate). */
export function scatterAdd(base: Tensor, idx: Tensor, updates: Tensor, axis: number): Tensor {
  checkIndices("scatterAdd", idx);
  const a = normAxis("scatterAdd", axis, base.ndim, base.shape);
  if (idx.ndim !== base.ndim || idx.shape.some((d, i) => i !== a && d !== base.shape[i])) {
    throw new ShapeError(
      `scatterAdd: indices ${fmt(idx.shape)} must match base ${
        fmt(base.shape)
      } outside axis ${axis}`,
    );
  }
  const upd = broadcastTo(cast(updates, base.dtype), idx.shape);
  return bind1("scatterAdd", [base, idx, upd], { axis: a });
}

export function oneHot(idx: Tensor, n: number, dtype: DType = "f32"): Tensor {
  checkIndices("oneHot", idx);
  return cast(eq(expandDims(idx, -1), arange(0, n, 1, "i32", idx.backend)), dtype);
}

/** The k largest entries along the last axis, sorted descending, and their i32 indices. */
export function topk(x: Tensor, k: number): [values: Tensor, indices: Tensor] {
  const n = x.shape[x.ndim - 1];
  if (x.ndim === 0) throw new ShapeError("topk: needs at least one axis, got a scalar");
  if (!Number.isInteger(k) || k < 0 || k > n) {
    throw new RangeError(
      `topk: k = ${k} must be an integer in [0, ${n}] for shape ${fmt(x.shape)}`,
    );
  }
  const [v, i] = bind("topk", [x], { k });
  return [v, i];
}
