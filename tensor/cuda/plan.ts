/**
 * Launch planning, pure and GPU-free (unit-tested): which elementwise kernel a set of views needs,
 * with dimensions merged where every view is contiguous across them (fewer divisions per element,
 * and ranks above the kernels' limit still run); how a reduction splits into kept and reduced
 * axes; grid sizes.
 */
import { MAX_DIMS } from "./params.ts";

export interface StridedPart {
  strides: readonly number[];
  offset: number;
}

/** Drop size-1 axes and merge neighbours that are contiguous in every view. */
export function collapse(
  shape: readonly number[],
  views: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const keep = shape.map((d, i) => (d !== 1 ? i : -1)).filter((i) => i >= 0);
  const outShape: number[] = [];
  const outStrides: number[][] = views.map(() => []);
  for (const d of keep) {
    const last = outShape.length - 1;
    if (last >= 0 && views.every((s, v) => outStrides[v][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      views.forEach((s, v) => (outStrides[v][last] = s[d]));
    } else {
      outShape.push(shape[d]);
      views.forEach((s, v) => outStrides[v].push(s[d]));
    }
  }
  return { shape: outShape, strides: outStrides };
}

/** One past the largest element offset a view reaches (strides are non-negative here). */
export function extent(
  shape: readonly number[],
  strides: readonly number[],
  offset: number,
): number {
  let e = offset;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] > 0) e += (shape[d] - 1) * Math.abs(strides[d]);
  }
  return e + 1;
}

export interface EwPlan {
  kernel: "ew_flat" | "ew_strided32" | "ew_strided64";
  n: number;
  shape: number[];
  out: StridedPart;
  inputs: StridedPart[];
}

const I32_LIMIT = 2 ** 31 - 1;

/** The kernel and (collapsed) dims for writing `out` from `inputs`, all views of `shape`. */
export function planElementwise(
  shape: readonly number[],
  out: StridedPart,
  inputs: readonly StridedPart[],
): EwPlan {
  const n = shape.reduce((a, b) => a * b, 1);
  const c = collapse(shape, [out.strides, ...inputs.map((v) => v.strides)]);
  if (c.shape.length > MAX_DIMS) {
    throw new RangeError(
      `cuda: a view of ${shape.length} dimensions that do not merge exceeds the kernels' limit of ${MAX_DIMS}`,
    );
  }
  const parts = [out, ...inputs].map((v, i) => ({ strides: c.strides[i], offset: v.offset }));
  const flat = c.shape.length <= 1 &&
    parts.every((p) => c.shape.length === 0 || p.strides[0] === 1);
  // 32-bit loop counters must not overflow when a thread steps past n by one grid stride.
  const small = n <= I32_LIMIT - 2 ** 24 &&
    parts.every((p) => extent(c.shape, p.strides, p.offset) <= I32_LIMIT);
  return {
    kernel: flat ? "ew_flat" : small ? "ew_strided32" : "ew_strided64",
    n,
    shape: c.shape,
    out: parts[0],
    inputs: parts.slice(1),
  };
}

export interface ReducePlan {
  nOut: number;
  kept: { shape: number[]; strides: number[] };
  reduced: { shape: number[]; strides: number[] };
  rn: number;
  /** A warp per output (the reduced axes hold the unit stride, or outputs are few) or a thread per output. */
  warp: boolean;
  /**
   * Chunks each output's elements are split into (a warp each, partials combined by a second
   * kernel) when the outputs alone are too few warps to fill the GPU; 1: no split.
   */
  parts: number;
}

/** Elements a split reduction's chunk holds at least (32 per lane), and the most chunks. */
const MIN_PART = 1024, MAX_PARTS = 1024;

/**
 * Chunks to split each of `nOut` reductions of `rn` elements into, a warp each, so that together
 * they fill the GPU (32 warps per SM) while each chunk keeps at least MIN_PART elements.
 */
export function splitParts(nOut: number, rn: number, sms: number): number {
  const fill = Math.ceil((sms * 32) / Math.max(nOut, 1));
  return Math.max(1, Math.min(fill, Math.floor(rn / MIN_PART), MAX_PARTS));
}

/** Split x's axes into kept (indexing the contiguous output, in order) and reduced. */
export function planReduce(
  shape: readonly number[],
  strides: readonly number[],
  axes: readonly number[],
  sms: number,
): ReducePlan {
  const keptAxes = shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const pick = (ds: number[]) => collapse(ds.map((d) => shape[d]), [ds.map((d) => strides[d])]);
  const k = pick(keptAxes), r = pick([...axes]);
  const nOut = keptAxes.reduce((a, d) => a * shape[d], 1);
  const rn = axes.reduce((a, d) => a * shape[d], 1);
  if (k.shape.length > MAX_DIMS || r.shape.length > MAX_DIMS) {
    throw new RangeError(`cuda reduce: too many unmergeable dimensions (limit ${MAX_DIMS})`);
  }
  const unitReduced = r.strides[0].some((s, i) => Math.abs(s) === 1 && r.shape[i] > 1);
  const warp = rn > 1 && (unitReduced || nOut < sms * 64);
  const parts = warp ? splitParts(nOut, rn, sms) : 1;
  return {
    nOut,
    kept: { shape: k.shape, strides: k.strides[0] },
    reduced: { shape: r.shape, strides: r.strides[0] },
    rn,
    warp,
    parts,
  };
}

/** Blocks for a grid-stride loop over n items: enough to fill the GPU, no more. */
export function blocksFor(n: number, threads: number, sms: number): number {
  return Math.max(1, Math.min(Math.ceil(n / threads), sms * 32));
}
