/** Layout ops: views where the layout allows (reshape, permute, slice, broadcast), copies otherwise. */
import { promote } from "../dtype.ts";
import { checkShape, fmt, normAxis, ShapeError, sizeOf } from "../shape.ts";
import { bind1 } from "../prims.ts";
import type { Tensor } from "../tensor.ts";
import { broadcastTo, cast } from "./elementwise.ts";
import { arange } from "./create.ts";

export { broadcastTo };

/** Reshape; one dimension may be -1 and is inferred. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const holes = shape.filter((d) => d === -1).length;
  if (holes > 1) throw new ShapeError(`reshape: at most one -1 allowed, got ${fmt(shape)}`);
  let out = [...shape];
  if (holes === 1) {
    const known = sizeOf(shape.filter((d) => d !== -1));
    if (known === 0 || x.size % known !== 0) {
      throw new ShapeError(
        `reshape: cannot reshape ${fmt(x.shape)} (size ${x.size}) to ${fmt(shape)}`,
      );
    }
    out = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  checkShape("reshape", out);
  if (sizeOf(out) !== x.size) {
    throw new ShapeError(
      `reshape: cannot reshape ${fmt(x.shape)} (size ${x.size}) to ${fmt(shape)}`,
    );
  }
  return bind1("reshape", [x], { shape: out });
}

export const flatten = (x: Tensor): Tensor => reshape(x, [-1]);

/** The same values in a fresh row-major buffer (a copy only when x is a strided view). */
export function contiguous(x: Tensor): Tensor {
  return x.isContiguous() ? x : bind1("unary", [x], { op: "copy" });
}

/** Reorder axes; the default reverses them. A view: no data moves. */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm
    ? perm.map((a) => normAxis("transpose", a, x.ndim, x.shape))
    : [...Array(x.ndim).keys()].reverse();
  if (p.length !== x.ndim || new Set(p).size !== p.length) {
    throw new ShapeError(
      `transpose: ${JSON.stringify(perm)} is not a permutation of the axes of shape ${
        fmt(x.shape)
      }`,
    );
  }
  if (p.every((a, i) => a === i)) return x;
  return bind1("permute", [x], { perm: p });
}
export const permute = transpose;

export function swapAxes(x: Tensor, a: number, b: number): Tensor {
  const p = [...Array(x.ndim).keys()];
  const i = normAxis("swapAxes", a, x.ndim, x.shape), j = normAxis("swapAxes", b, x.ndim, x.shape);
  [p[i], p[j]] = [p[j], p[i]];
  return transpose(x, p);
}

/** The last two axes swapped (matrix transpose of a batch). */
export const mT = (x: Tensor): Tensor => swapAxes(x, -1, -2);

export function expandDims(x: Tensor, axis: number): Tensor {
  const a = normAxis("expandDims", axis, x.ndim + 1, x.shape);
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

/** Remove size-1 axes (all of them, or the ones named). */
export function squeeze(x: Tensor, axes?: number | readonly number[]): Tensor {
  const list = axes === undefined
    ? x.shape.flatMap((d, i) => (d === 1 ? [i] : []))
    : (typeof axes === "number" ? [axes] : axes).map((a) =>
      normAxis("squeeze", a, x.ndim, x.shape)
    );
  for (const a of list) {
    if (x.shape[a] !== 1) {
      throw new ShapeError(
        `squeeze: axis ${a} of shape ${fmt(x.shape)} has size ${x.shape[a]}, not 1`,
      );
    }
  }
  return reshape(x, x.shape.filter((_, i) => !list.includes(i)));
}

function clampIndex(i: number, n: number): number {
  if (i < 0) i += n;
  return Math.min(Math.max(i, 0), n);
}

/**
 * Python-style slicing per axis: `starts`/`ends` may be negative, are clamped, and may be shorter
 * than the rank (the rest is taken whole); `steps` > 1 gathers every step-th element.
 */
export function slice(
  x: Tensor,
  starts: readonly number[],
  ends?: readonly (number | undefined)[],
  steps?: readonly number[],
): Tensor {
  if (starts.length > x.ndim) {
    throw new ShapeError(`slice: ${starts.length} starts for shape ${fmt(x.shape)}`);
  }
  const s = x.shape.map((d, i) => clampIndex(starts[i] ?? 0, d));
  const e = x.shape.map((d, i) => Math.max(s[i], clampIndex(ends?.[i] ?? d, d)));
  let out = s.every((v, i) => v === 0 && e[i] === x.shape[i])
    ? x
    : bind1("slice", [x], { starts: s, ends: e });
  steps?.forEach((st, axis) => {
    if (!Number.isInteger(st) || st < 1) {
      throw new RangeError(`slice: step ${st} on axis ${axis} must be a positive integer`);
    }
    if (st > 1) out = take(out, arange(0, out.shape[axis], st), axis);
  });
  return out;
}

/** Elements [start, end) of one axis. */
export function sliceAxis(x: Tensor, axis: number, start: number, end?: number): Tensor {
  const a = normAxis("sliceAxis", axis, x.ndim, x.shape);
  const starts = x.shape.map((_, i) => (i === a ? start : 0));
  const ends = x.shape.map((d, i) => (i === a ? end ?? d : d));
  return slice(x, starts, ends);
}

export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ShapeError("concat: needs at least one tensor");
  const a = normAxis("concat", axis, xs[0].ndim, xs[0].shape);
  for (const x of xs) {
    if (x.ndim !== xs[0].ndim || x.shape.some((d, i) => i !== a && d !== xs[0].shape[i])) {
      throw new ShapeError(
        `concat: shapes ${xs.map((t) => fmt(t.shape)).join(", ")} differ outside axis ${axis}`,
      );
    }
  }
  const dt = xs.map((x) => x.dtype).reduce(promote);
  const parts = xs.map((x) => cast(x, dt)).filter((x) => x.shape[a] > 0);
  if (parts.length === 1) return parts[0];
  if (parts.length === 0) return cast(xs[0], dt);
  return bind1("concat", parts, { axis: a });
}

export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ShapeError("stack: needs at least one tensor");
  for (const x of xs) {
    if (x.ndim !== xs[0].ndim || x.shape.some((d, i) => d !== xs[0].shape[i])) {
      throw new ShapeError(`stack: shapes ${xs.map((t) => fmt(t.shape)).join(", ")} differ`);
    }
  }
  const a = normAxis("stack", axis, xs[0].ndim + 1, xs[0].shape);
  return concat(xs.map((x) => expandDims(x, a)), a);
}

/** Zero padding: widths[d] = [before, after] (missing axes are not padded). */
export function pad(x: Tensor, widths: readonly (readonly [number, number])[]): Tensor {
  if (widths.length > x.ndim) {
    throw new ShapeError(`pad: ${widths.length} widths for shape ${fmt(x.shape)}`);
  }
  const w = x.shape.map((_, i) => widths[i] ?? [0, 0]);
  for (const [lo, hi] of w) {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi < 0) {
      throw new RangeError(
        `pad: widths must be non-negative integers, got ${JSON.stringify(widths)}`,
      );
    }
  }
  if (w.every(([lo, hi]) => lo === 0 && hi === 0)) return x;
  return bind1("pad", [x], { widths: w });
}

/** NumPy's take: the out shape is x.shape[:axis] + indices.shape + x.shape[axis+1:]. */
export function take(x: Tensor, indices: Tensor, axis = 0): Tensor {
  const a = normAxis("take", axis, x.ndim, x.shape);
  if (indices.dtype !== "i32") {
    throw new TypeError(`take: indices must be i32, got ${indices.dtype}`);
  }
  const n = indices.size;
  const flatIdx = reshape(indices, x.shape.map((_, i) => (i === a ? n : 1)));
  const gShape = x.shape.map((d, i) => (i === a ? n : d));
  const g = bind1("gather", [x, broadcastTo(flatIdx, gShape)], { axis: a });
  return reshape(g, [...x.shape.slice(0, a), ...indices.shape, ...x.shape.slice(a + 1)]);
}
