/**
 * Model-diffing views of a crosscoder over two (or more) models: per feature, the relative decoder
 * norm r_i = ‖W_dec[B,i]‖ / (‖W_dec[A,i]‖ + ‖W_dec[B,i]‖) (0: only A uses it, 1: only B, ½:
 * both equally), its histogram, counts of effectively exclusive features, and for a DFC how each
 * partition set's features are used (alive, firing frequency, activation mass, relative norms).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { norm } from "../../tensor/ops/reduce.ts";
import { fmt, ShapeError } from "../../tensor/shape.ts";
import { featureOwner, type Partition } from "./partition.ts";

/** ‖W_dec[l, i]‖ for every input l and feature i, as L arrays of F. */
export async function decoderNorms(W_dec: Tensor): Promise<Float64Array[]> {
  if (W_dec.ndim !== 3) {
    throw new ShapeError(
      `decoderNorms: W_dec must be [inputs, features, d], got ${fmt(W_dec.shape)}`,
    );
  }
  const [L, F] = W_dec.shape;
  const n = norm(W_dec, -1);
  const v = await n.data();
  n.dispose();
  return Array.from({ length: L }, (_, l) => Float64Array.from(v.subarray(l * F, (l + 1) * F)));
}

/** r_i = ‖W_dec[b,i]‖ / (‖W_dec[a,i]‖ + ‖W_dec[b,i]‖); NaN where both norms are 0. */
export async function relativeDecoderNorms(
  W_dec: Tensor,
  o: { a?: number; b?: number } = {},
): Promise<Float64Array> {
  const norms = await decoderNorms(W_dec);
  const a = o.a ?? 0, b = o.b ?? 1;
  for (const [name, i] of [["a", a], ["b", b]] as const) {
    if (!Number.isInteger(i) || i < 0 || i >= norms.length) {
      throw new RangeError(
        `relativeDecoderNorms: ${name} = ${i} is not an input index (W_dec has ${norms.length} inputs)`,
      );
    }
  }
  return norms[0].map((_, i) => {
    const s = norms[a][i] + norms[b][i];
    return s > 0 ? norms[b][i] / s : NaN;
  });
}

export interface Histogram {
  /** bins + 1 edges; bin j is [edges[j], edges[j+1]), the last one closed. */
  edges: number[];
  counts: number[];
  /** Values that were NaN (features with no decoder at all). */
  nan: number;
  /** Values outside [lo, hi]. */
  outside: number;
}

export function histogram(
  values: ArrayLike<number>,
  o: { bins?: number; lo?: number; hi?: number } = {},
): Histogram {
  const bins = o.bins ?? 20, lo = o.lo ?? 0, hi = o.hi ?? 1;
  if (!Number.isInteger(bins) || bins < 1 || !(hi > lo)) {
    throw new RangeError(
      `histogram: need an integer bins >= 1 and hi > lo, got bins ${bins}, [${lo}, ${hi}]`,
    );
  }
  const counts = new Array<number>(bins).fill(0);
  let nan = 0, outside = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) nan++;
    else if (v < lo || v > hi) outside++;
    else counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
  }
  return {
    edges: Array.from({ length: bins + 1 }, (_, j) => lo + ((hi - lo) * j) / bins),
    counts,
    nan,
    outside,
  };
}

/** Features with r < threshold count as A-only, r > 1 − threshold as B-only, the rest as shared (default threshold 0.1). */
export function exclusiveCounts(
  relative: ArrayLike<number>,
  threshold = 0.1,
): { onlyA: number; onlyB: number; shared: number; noDecoder: number } {
  if (!(threshold >= 0 && threshold < 0.5)) {
    throw new RangeError(`exclusiveCounts: threshold must be in [0, 0.5), got ${threshold}`);
  }
  let onlyA = 0, onlyB = 0, shared = 0, noDecoder = 0;
  for (let i = 0; i < relative.length; i++) {
    const r = relative[i];
    if (Number.isNaN(r)) noDecoder++;
    else if (r < threshold) onlyA++;
    else if (r > 1 - threshold) onlyB++;
    else shared++;
  }
  return { onlyA, onlyB, shared, noDecoder };
}

export interface PartitionUsage {
  /** "exclusive 0", "exclusive 1", …, "shared". */
  set: string;
  features: number;
  /** Features of the set that fired at least once. */
  alive: number;
  /** Mean over the set's features of the fraction of tokens on which they fired. */
  meanFrequency: number;
  /** The set's share of the total activation mass Σ f. */
  activationShare: number;
  /** Mean relative decoder norm (input 1 vs input 0) over the set's features with a decoder. */
  meanRelativeNorm: number;
}

/** How each partition set's features are used, from per-feature firing counts and activation sums (evaluateCrosscoder). */
export function partitionUsage(
  p: Partition,
  usage: { fired: ArrayLike<number>; activation: ArrayLike<number>; tokens: number },
  relative?: ArrayLike<number>,
): PartitionUsage[] {
  if (usage.fired.length !== p.features) {
    throw new RangeError(
      `partitionUsage: ${usage.fired.length} features counted, the partition has ${p.features}`,
    );
  }
  const owner = featureOwner(p);
  let total = 0;
  for (let i = 0; i < p.features; i++) total += usage.activation[i];
  const sets = [...p.exclusive.map((_, l) => l), -1];
  return sets.map((s) => {
    let n = 0, alive = 0, freq = 0, act = 0, rel = 0, nRel = 0;
    for (let i = 0; i < p.features; i++) {
      if (owner[i] !== s) continue;
      n++;
      if (usage.fired[i] > 0) alive++;
      freq += usage.fired[i] / usage.tokens;
      act += usage.activation[i];
      if (relative && !Number.isNaN(relative[i])) {
        rel += relative[i];
        nRel++;
      }
    }
    return {
      set: s < 0 ? "shared" : `exclusive ${s}`,
      features: n,
      alive,
      meanFrequency: n ? freq / n : 0,
      activationShare: total > 0 ? act / total : 0,
      meanRelativeNorm: nRel ? rel / nRel : NaN,
    };
  });
}
