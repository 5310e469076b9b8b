/**
 * Each feature's activation distribution, streamed in bounded memory and exactly: a histogram and
 * a few sample contexts from each activation interval ("quantile" samples, as SAE-Vis shows them).
 *
 * Both cut (0, M] into equal parts, M being the feature's running maximum rounded up to a power of
 * two: bin j of n holds v with ⌈v·n/M⌉ − 1 = j, i.e. (j·M/n, (j+1)·M/n]. When a larger value
 * arrives M doubles (as often as needed) and bins 2j and 2j+1 merge into bin j: every value lies
 * in one old bin wholly inside one new bin, so the counts equal a histogram made after the fact
 * with the final M (v·n is exact in f64 and M/n a power of two, so no value changes bin by
 * rounding). A feature's bins end up spanning between its maximum and twice its maximum.
 *
 * Samples: in each interval the `samples` firings with the smallest key are kept, key = a hash of
 * (seed, row, position, slice, feature) — bottom-k sampling, a uniform sample without replacement
 * that does not depend on the order of the stream, and merging two intervals is taking the
 * smallest keys of both. Ties in the key go to the earlier firing (row, position, slice).
 */
import {
  type ContextWindow,
  fillSlot,
  type Firing,
  moveSlot as moveContext,
  type TopContexts,
} from "./feature_contexts.ts";

export interface DistributionShape {
  /** Histogram bins per feature (even, ≥ 2; 0: none). */
  bins: number;
  /** Sample intervals per feature (even, ≥ 2; 0: none) and contexts kept per interval. */
  intervals: number;
  samples: number;
  seed: number;
}

export interface FeatureDistribution extends TopContexts {
  /** [F] M: the bins cover (0, M]; 0 while the feature has not fired. */
  scale: Float64Array;
  /** [F, bins] firings per bin. */
  hist: Float64Array;
  /** [F, intervals] firings per interval. */
  counts: Float64Array;
  /**
   * [F, intervals, samples] each sample's key (Infinity: empty); the slot fields of TopContexts
   * (activation, place, label, window) are [F, intervals, samples] and [F, intervals, samples, W].
   */
  keys: Float64Array;
}

export function checkDistributionShape(d: DistributionShape): void {
  for (const [name, v] of [["bins", d.bins], ["intervals", d.intervals]] as const) {
    if (!(Number.isInteger(v) && v >= 0 && v % 2 === 0)) {
      throw new RangeError(`feature distribution: ${name} must be an even integer >= 0, got ${v}`);
    }
  }
  if (!(Number.isInteger(d.samples) && d.samples >= 0)) {
    throw new RangeError(`feature distribution: samples must be an integer >= 0, got ${d.samples}`);
  }
}

export function emptyDistribution(
  F: number,
  d: DistributionShape,
  w: ContextWindow,
): FeatureDistribution {
  const n = F * d.intervals * d.samples, W = w.before + 1 + w.after;
  return {
    scale: new Float64Array(F),
    hist: new Float64Array(F * d.bins),
    counts: new Float64Array(F * d.intervals),
    keys: new Float64Array(n).fill(Infinity),
    values: new Float32Array(n).fill(-Infinity),
    rows: new Int32Array(n).fill(-1),
    positions: new Int32Array(n).fill(-1),
    slices: new Int32Array(n).fill(-1),
    labels: new Int32Array(n).fill(-1),
    tokens: new Int32Array(n * W).fill(-1),
    acts: new Float32Array(n * W),
  };
}

/** The smallest power of two ≥ v (v > 0). */
export function powerOfTwoAbove(v: number): number {
  let m = 2 ** Math.ceil(Math.log2(v));
  if (m < v) m *= 2;
  else if (m / 2 >= v) m /= 2;
  return m;
}

/** The bin of v among n equal bins of (0, M]: ⌈v·n/M⌉ − 1. */
export const binOf = (v: number, n: number, M: number): number => Math.ceil((v * n) / M) - 1;

/** A 32-bit hash of the firing (murmur3's finaliser over the mixed words): the sample key. */
export function sampleKey(
  seed: number,
  row: number,
  pos: number,
  slice: number,
  f: number,
): number {
  let h = mix(seed >>> 0, row);
  h = mix(h, pos);
  h = mix(h, slice);
  return mix(h, f) >>> 0;
}

function mix(h: number, x: number): number {
  h = Math.imul(h ^ x, 0x9e3779b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Sample slot a comes before slot b: smaller key, then the earlier firing. */
function before(d: FeatureDistribution, a: number, b: number): boolean {
  if (d.keys[a] !== d.keys[b]) return d.keys[a] < d.keys[b];
  if (d.rows[a] !== d.rows[b]) return d.rows[a] < d.rows[b];
  if (d.positions[a] !== d.positions[b]) return d.positions[a] < d.positions[b];
  return d.slices[a] < d.slices[b];
}

/** M doubles for feature f: pairs of bins and of intervals merge into the lower half. */
function double(d: FeatureDistribution, shape: DistributionShape, W: number, f: number): void {
  const H = shape.bins, Q = shape.intervals, S = shape.samples;
  for (let j = 0; j < H / 2; j++) {
    d.hist[f * H + j] = d.hist[f * H + 2 * j] + d.hist[f * H + 2 * j + 1];
  }
  d.hist.fill(0, f * H + H / 2, f * H + H);
  for (let j = 0; j < Q / 2; j++) {
    d.counts[f * Q + j] = d.counts[f * Q + 2 * j] + d.counts[f * Q + 2 * j + 1];
  }
  d.counts.fill(0, f * Q + Q / 2, f * Q + Q);
  if (S === 0) return;
  // Interval j takes the S first of the (sorted) samples of intervals 2j and 2j+1. j < 2j, so
  // writing j never overwrites an interval still to be read; the merge goes through a scratch copy.
  const scratch = scratchFor(S, W);
  for (let j = 0; j < Q / 2; j++) {
    let a = (f * Q + 2 * j) * S, b = a + S;
    const aEnd = a + S, bEnd = b + S;
    for (let k = 0; k < S; k++) {
      const takeA = b >= bEnd || (a < aEnd && before(d, a, b));
      moveSlot(d, takeA ? a++ : b++, scratch, k, W);
    }
    for (let k = 0; k < S; k++) moveSlot(scratch, k, d, (f * Q + j) * S + k, W);
  }
  const emptyFrom = (f * Q + Q / 2) * S, end = (f * Q + Q) * S;
  d.keys.fill(Infinity, emptyFrom, end);
  d.values.fill(-Infinity, emptyFrom, end);
  for (const a of [d.rows, d.positions, d.slices, d.labels]) a.fill(-1, emptyFrom, end);
  d.tokens.fill(-1, emptyFrom * W, end * W);
  d.acts.fill(0, emptyFrom * W, end * W);
}

/** One interval's worth of sample slots, reused by every merge of the same shape. */
let scratchCache: { S: number; W: number; d: FeatureDistribution } | null = null;
function scratchFor(S: number, W: number): FeatureDistribution {
  if (scratchCache?.S !== S || scratchCache.W !== W) {
    const shape = { bins: 0, intervals: 1, samples: S, seed: 0 };
    scratchCache = { S, W, d: emptyDistribution(1, shape, { top: 0, before: W - 1, after: 0 }) };
  }
  return scratchCache.d;
}

function moveSlot(
  from: FeatureDistribution,
  i: number,
  to: FeatureDistribution,
  j: number,
  W: number,
): void {
  to.keys[j] = from.keys[i];
  moveContext(from, i, to, j, W);
}

/**
 * A firing for the histogram and the interval samples; firings come in scan order (row, position,
 * slice), so an equal key never displaces an earlier sample.
 */
export function offerDistribution(
  d: FeatureDistribution,
  shape: DistributionShape,
  w: ContextWindow,
  x: Firing,
): void {
  const W = w.before + 1 + w.after, H = shape.bins, Q = shape.intervals, K = shape.samples;
  const { f, v } = x;
  let M = d.scale[f];
  if (M === 0) M = powerOfTwoAbove(v);
  else {
    while (v > M) {
      double(d, shape, W, f);
      M *= 2;
    }
  }
  d.scale[f] = M;
  if (H > 0) d.hist[f * H + binOf(v, H, M)]++;
  if (Q === 0) return;
  const q = binOf(v, Q, M);
  d.counts[f * Q + q]++;
  if (K === 0) return;
  const row = x.b.rowIds[x.r];
  const key = sampleKey(shape.seed, row, x.t, x.s, f);
  const base = (f * Q + q) * K;
  if (!(key < d.keys[base + K - 1])) return;
  let slot = K - 1;
  while (slot > 0 && key < d.keys[base + slot - 1]) slot--;
  for (let j = base + K - 1; j > base + slot; j--) moveSlot(d, j - 1, d, j, W);
  d.keys[base + slot] = key;
  fillSlot(d, base + slot, x, w);
}
