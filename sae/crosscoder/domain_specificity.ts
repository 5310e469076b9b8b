/**
 * Domain specificity of a crosscoder's features across two models (model diffing): does the part
 * of the dictionary that belongs to model B (a DFC's B-exclusive set, or the features whose decoder
 * lives in B only) fire on the text of the domain B was finetuned on more than on the rest?
 *
 * Per feature i, from firing counts on the domain's tokens and on the rest's:
 *   freq_D(i) = fired_D(i) / tokens_D,   freq_R(i) = fired_R(i) / tokens_R,
 *   ratio(i)  = freq_D(i) / max(freq_R(i), 1 / tokens_R)
 * The floor counts a feature never seen on the rest as if it fired there once, so every ratio is
 * finite and a feature seen a handful of times on either side gets a modest one. A feature is alive
 * when it fired at least once on either side; per set of features we report over the alive ones the
 * mean and median ratio, the share whose ratio exceeds 2, and the pooled ratio
 * (Σ freq_D) / (Σ freq_R) (the set's firing taken as a whole; Infinity when it never fires on the rest).
 */
import { featureOwner, type Partition } from "./partition.ts";

/** Tokens each feature fired on, over `tokens` tokens. */
export interface FiringCounts {
  fired: ArrayLike<number>;
  tokens: number;
}

export interface FeatureRatios {
  freqDomain: Float64Array;
  freqRest: Float64Array;
  ratio: Float64Array;
  /** Fired at least once on either side. */
  alive: Uint8Array;
}

/** Per-feature frequencies on the domain and the rest, and the floored ratio. */
export function featureRatios(domain: FiringCounts, rest: FiringCounts): FeatureRatios {
  const F = domain.fired.length;
  if (rest.fired.length !== F) {
    throw new RangeError(
      `featureRatios: ${F} features counted on the domain, ${rest.fired.length} on the rest`,
    );
  }
  for (const [name, c] of [["domain", domain], ["rest", rest]] as const) {
    if (!(Number.isFinite(c.tokens) && c.tokens > 0)) {
      throw new RangeError(
        `featureRatios: the ${name} needs a positive token count, got ${c.tokens}`,
      );
    }
  }
  const freqDomain = new Float64Array(F), freqRest = new Float64Array(F);
  const ratio = new Float64Array(F), alive = new Uint8Array(F);
  const floor = 1 / rest.tokens;
  for (let i = 0; i < F; i++) {
    freqDomain[i] = domain.fired[i] / domain.tokens;
    freqRest[i] = rest.fired[i] / rest.tokens;
    ratio[i] = freqDomain[i] / Math.max(freqRest[i], floor);
    alive[i] = domain.fired[i] > 0 || rest.fired[i] > 0 ? 1 : 0;
  }
  return { freqDomain, freqRest, ratio, alive };
}

/** A named set of features. */
export interface FeatureSet {
  name: string;
  features: readonly number[];
}

/** For two models: "A-exclusive", "B-exclusive", "shared" from a DFC partition. */
export function partitionSets(p: Partition): FeatureSet[] {
  if (p.exclusive.length !== 2) {
    throw new RangeError(
      `partitionSets: a partition of ${p.exclusive.length} exclusive sets; domain specificity compares two models`,
    );
  }
  const owner = featureOwner(p);
  const sets: FeatureSet[] = [
    { name: "A-exclusive", features: [] },
    { name: "B-exclusive", features: [] },
    { name: "shared", features: [] },
  ];
  for (let i = 0; i < p.features; i++) {
    (sets[owner[i] < 0 ? 2 : owner[i]].features as number[]).push(i);
  }
  return sets;
}

/**
 * From relative decoder norms r = ‖W_dec[B]‖/(‖W_dec[A]‖ + ‖W_dec[B]‖): "A-only" r < threshold,
 * "B-only" r > 1 − threshold, "shared" between, "no decoder" where r is NaN (diffing.ts's buckets).
 */
export function relativeNormSets(relative: ArrayLike<number>, threshold = 0.1): FeatureSet[] {
  if (!(threshold >= 0 && threshold < 0.5)) {
    throw new RangeError(`relativeNormSets: threshold must be in [0, 0.5), got ${threshold}`);
  }
  const [a, b, s, none]: number[][] = [[], [], [], []];
  for (let i = 0; i < relative.length; i++) {
    const r = relative[i];
    (Number.isNaN(r) ? none : r < threshold ? a : r > 1 - threshold ? b : s).push(i);
  }
  return [
    { name: "A-only", features: a },
    { name: "B-only", features: b },
    { name: "shared", features: s },
    ...(none.length ? [{ name: "no decoder", features: none }] : []),
  ];
}

export interface SetSpecificity {
  set: string;
  features: number;
  alive: number;
  /** Over the alive features: mean and median ratio, share with ratio > `above`. */
  meanRatio: number;
  medianRatio: number;
  shareAbove: number;
  /** (Σ freq_D) / (Σ freq_R) over the set. */
  pooledRatio: number;
  /** Mean firing frequency per feature on the domain and on the rest. */
  meanFreqDomain: number;
  meanFreqRest: number;
}

function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Each set's specificity (ratios above `above`, default 2, count as domain-specific). */
export function setSpecificity(
  r: FeatureRatios,
  sets: readonly FeatureSet[],
  above = 2,
): SetSpecificity[] {
  return sets.map(({ name, features }) => {
    const ratios: number[] = [];
    let fd = 0, fr = 0;
    for (const i of features) {
      if (!(i >= 0 && i < r.ratio.length)) {
        throw new RangeError(
          `setSpecificity: set ${name} holds feature ${i}, outside [0, ${r.ratio.length})`,
        );
      }
      fd += r.freqDomain[i];
      fr += r.freqRest[i];
      if (r.alive[i]) ratios.push(r.ratio[i]);
    }
    const n = features.length;
    return {
      set: name,
      features: n,
      alive: ratios.length,
      meanRatio: ratios.length ? ratios.reduce((a, b) => a + b, 0) / ratios.length : NaN,
      medianRatio: median(ratios),
      shareAbove: ratios.length ? ratios.filter((x) => x > above).length / ratios.length : NaN,
      pooledRatio: fr > 0 ? fd / fr : fd > 0 ? Infinity : NaN,
      meanFreqDomain: n ? fd / n : NaN,
      meanFreqRest: n ? fr / n : NaN,
    };
  });
}

export interface FeatureSpecificity {
  feature: number;
  ratio: number;
  freqDomain: number;
  freqRest: number;
}

/** The `n` alive features of `features` with the highest ratio (ties: more frequent on the domain first). */
export function topByRatio(
  r: FeatureRatios,
  features: readonly number[],
  n: number,
): FeatureSpecificity[] {
  return features.filter((i) => r.alive[i])
    .sort((a, b) => r.ratio[b] - r.ratio[a] || r.freqDomain[b] - r.freqDomain[a] || a - b)
    .slice(0, Math.max(0, n))
    .map((i) => ({
      feature: i,
      ratio: r.ratio[i],
      freqDomain: r.freqDomain[i],
      freqRest: r.freqRest[i],
    }));
}

/** Counts over several token sets taken together (the rest: every other domain). */
export function poolCounts(counts: readonly FiringCounts[]): FiringCounts {
  if (!counts.length) throw new RangeError("poolCounts: no counts to pool");
  const fired = new Float64Array(counts[0].fired.length);
  let tokens = 0;
  for (const c of counts) {
    if (c.fired.length !== fired.length) {
      throw new RangeError(
        `poolCounts: ${c.fired.length} features counted where the first had ${fired.length}`,
      );
    }
    for (let i = 0; i < fired.length; i++) fired[i] += c.fired[i];
    tokens += c.tokens;
  }
  return { fired, tokens };
}

/** Each set's mean firing frequency per feature under `c` (where in the text a set fires). */
export function setFrequencies(
  c: FiringCounts,
  sets: readonly FeatureSet[],
): Record<string, number> {
  return Object.fromEntries(sets.map(({ name, features }) => {
    let s = 0;
    for (const i of features) s += c.fired[i];
    return [name, features.length ? s / features.length / c.tokens : NaN];
  }));
}

/**
 * Features by relative decoder norm in `bins` equal bins over [0, 1] (the last closed), named by
 * their range; empty bins and features without a decoder are left out. Finer than the buckets:
 * whether features that lean towards B fire more on B's domain even when none is one-sided.
 */
export function relativeNormBins(relative: ArrayLike<number>, bins = 10): FeatureSet[] {
  if (!Number.isInteger(bins) || bins < 1) {
    throw new RangeError(`relativeNormBins: bins must be a positive integer, got ${bins}`);
  }
  const members: number[][] = Array.from({ length: bins }, () => []);
  for (let i = 0; i < relative.length; i++) {
    const r = relative[i];
    if (r >= 0 && r <= 1) members[Math.min(bins - 1, Math.floor(r * bins))].push(i);
  }
  const edge = (j: number) => Number((j / bins).toFixed(6));
  return members.flatMap((features, j) =>
    features.length ? [{ name: `r ${edge(j)}–${edge(j + 1)}`, features }] : []
  );
}
