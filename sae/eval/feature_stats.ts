/**
 * Feature statistics over a streamed corpus, in one pass and bounded memory: per feature its top
 * contexts (feature_contexts.ts), activation histogram and interval samples
 * (feature_distribution.ts), firing counts and activation sums — per slice (an MLSAE's layers, a
 * decoupled crosscoder's inputs) and per document label (the corpus's domain) — all of it plain
 * typed arrays. The result depends only on the stream, not on how it was cut into batches, and
 * `state`/`restoreStats` round-trip it exactly, so a resumed pass equals an uninterrupted one.
 */
import {
  type ContextWindow,
  emptyTopContexts,
  type Firing,
  offerTop,
  type ScanBatch,
  type TopContexts,
} from "./feature_contexts.ts";
import {
  checkDistributionShape,
  type DistributionShape,
  emptyDistribution,
  type FeatureDistribution,
  offerDistribution,
} from "./feature_distribution.ts";

export type { ScanBatch };

export interface StatsShape extends ContextWindow, DistributionShape {
  features: number;
  /** Slices per position (1 unless an MLSAE's layers or a decoupled crosscoder's inputs). */
  slices: number;
}

export interface FeatureStats {
  shape: StatsShape;
  top: TopContexts;
  dist: FeatureDistribution;
  /** [F] positions·slices where the feature was > 0, and the sum of its activations there. */
  fires: Float64Array;
  actSum: Float64Array;
  /** [F, S] the same per slice. */
  sliceFires: Float64Array;
  sliceSum: Float64Array;
  /** The document labels seen, in order of first sight; [F, labels] firings per label. */
  labels: string[];
  labelFires: Float64Array;
  /** Positions scanned (those kept by the mask). */
  scanned: number;
}

/** What `add` reads beyond ScanBatch: which positions count, and each one's label id. */
export interface StatsBatch extends ScanBatch {
  /** [R·T] 0 leaves the position out (special tokens, padding, past the token budget). */
  keep?: Uint8Array;
  /** [R·T] the label id (StatsCollector.labelId) of each position, -1 for none. */
  labels?: Int32Array;
}

export interface StatsCollector {
  /** Scan one batch; positions are scanned in order, each with its S slices in order. */
  add(b: StatsBatch): void;
  /** The id of a document label, added on first sight. */
  labelId(name: string): number;
  /** The statistics so far (the collector's own arrays: copy before the next `add` to keep them). */
  result(): FeatureStats;
}

function checkShape(s: StatsShape): void {
  const ints: [string, number, number][] = [
    ["features", s.features, 1],
    ["slices", s.slices, 1],
    ["top", s.top, 1],
    ["before", s.before, 0],
    ["after", s.after, 0],
  ];
  for (const [name, v, min] of ints) {
    if (!(Number.isInteger(v) && v >= min)) {
      throw new RangeError(`featureStats: ${name} must be an integer >= ${min}, got ${v}`);
    }
  }
  checkDistributionShape(s);
}

export function emptyStats(shape: StatsShape): FeatureStats {
  checkShape(shape);
  const F = shape.features;
  return {
    shape,
    top: emptyTopContexts(F, shape),
    dist: emptyDistribution(F, shape, shape),
    fires: new Float64Array(F),
    actSum: new Float64Array(F),
    sliceFires: new Float64Array(F * shape.slices),
    sliceSum: new Float64Array(F * shape.slices),
    labels: [],
    labelFires: new Float64Array(0),
    scanned: 0,
  };
}

/** A collector that starts from `from` (a restored state) or from nothing. */
export function featureStats(shape: StatsShape, from?: FeatureStats): StatsCollector {
  const st = from ?? emptyStats(shape);
  const { features: F, slices: S } = st.shape;
  const labelIds = new Map(st.labels.map((l, i) => [l, i]));
  return {
    labelId(name) {
      let id = labelIds.get(name);
      if (id === undefined) {
        id = st.labels.length;
        const D = id + 1, grown = new Float64Array(F * D);
        for (let f = 0; f < F; f++) grown.set(st.labelFires.subarray(f * id, f * id + id), f * D);
        st.labels.push(name);
        st.labelFires = grown;
        labelIds.set(name, id);
      }
      return id;
    },
    add(b) {
      const R = b.rowIds.length;
      if (R === 0) return;
      const T = b.ids.length / R;
      if (!Number.isInteger(T) || b.codes.length !== b.ids.length * S * F) {
        throw new RangeError(
          `featureStats.add: ${b.ids.length} ids in ${R} rows and ${b.codes.length} codes do not fit [R·T·${S}, ${F}]`,
        );
      }
      for (const [name, a] of [["keep", b.keep], ["labels", b.labels]] as const) {
        if (a && a.length !== b.ids.length) {
          throw new RangeError(
            `featureStats.add: ${name} has ${a.length} entries, ids ${b.ids.length}`,
          );
        }
      }
      const D = st.labels.length, sh = st.shape;
      const x: Firing = { b, T, S, F, f: 0, v: 0, r: 0, t: 0, s: 0, label: -1 };
      for (let r = 0; r < R; r++) {
        for (let t = 0; t < T; t++) {
          const n = r * T + t;
          if (b.keep && !b.keep[n]) continue;
          st.scanned++;
          const label = b.labels ? b.labels[n] : -1;
          for (let s = 0; s < S; s++) {
            const row = (n * S + s) * F;
            for (let f = 0; f < F; f++) {
              const v = b.codes[row + f];
              if (!(v > 0)) continue;
              st.fires[f]++;
              st.actSum[f] += v;
              st.sliceFires[f * S + s]++;
              st.sliceSum[f * S + s] += v;
              if (label >= 0) st.labelFires[f * D + label]++;
              x.f = f, x.v = v, x.r = r, x.t = t, x.s = s, x.label = label;
              offerTop(st.top, sh, x);
              offerDistribution(st.dist, sh, sh, x);
            }
          }
        }
      }
    },
    result: () => st,
  };
}

/** Every array of the state by name, for a checkpoint (restoreStats reads them back). */
export function statsArrays(
  st: FeatureStats,
): Record<string, Float32Array | Float64Array | Int32Array> {
  const out: Record<string, Float32Array | Float64Array | Int32Array> = {
    fires: st.fires,
    act_sum: st.actSum,
    slice_fires: st.sliceFires,
    slice_sum: st.sliceSum,
    label_fires: st.labelFires,
  };
  for (const [k, v] of Object.entries(st.top)) out[`top.${k}`] = v;
  for (const [k, v] of Object.entries(st.dist)) out[`dist.${k}`] = v;
  return out;
}

/**
 * A state from its arrays (statsArrays), shape, labels and scanned count; every array is checked
 * against the shape, so a checkpoint of another run is an error that names the array.
 */
export function restoreStats(
  shape: StatsShape,
  labels: string[],
  scanned: number,
  arrays: Record<string, ArrayLike<number>>,
): FeatureStats {
  const st = emptyStats(shape);
  st.labels = [...labels];
  st.labelFires = new Float64Array(shape.features * labels.length);
  st.scanned = scanned;
  const into = (name: string, target: Float32Array | Float64Array | Int32Array) => {
    const a = arrays[name];
    if (a === undefined) throw new RangeError(`restoreStats: the state has no array ${name}`);
    if (a.length !== target.length) {
      throw new RangeError(
        `restoreStats: ${name} has ${a.length} entries, this shape needs ${target.length}`,
      );
    }
    target.set(a);
  };
  for (const [name, target] of Object.entries(statsArrays(st))) into(name, target);
  return st;
}
