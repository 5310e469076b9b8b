/**
 * Running per-dimension mean and variance (Welford), over chunks of rows, in f64. A chunk is
 * reduced on its own (two passes over data already in cache) and merged with Chan et al.'s
 * parallel formula, which is as stable as the one-row-at-a-time update and far fewer operations.
 * States are plain records; update and merge return new ones.
 */

export interface WelfordState {
  count: number;
  mean: Float64Array;
  /** Sum of squared deviations from the mean, per dimension. */
  m2: Float64Array;
}

export function welfordInit(d: number): WelfordState {
  return { count: 0, mean: new Float64Array(d), m2: new Float64Array(d) };
}

/** Merge two states (order does not matter up to rounding). */
export function welfordMerge(a: WelfordState, b: WelfordState): WelfordState {
  if (a.mean.length !== b.mean.length) {
    throw new RangeError(`welfordMerge: widths ${a.mean.length} and ${b.mean.length} differ`);
  }
  if (b.count === 0) return a;
  if (a.count === 0) return b;
  const n = a.count + b.count, d = a.mean.length;
  const mean = new Float64Array(d), m2 = new Float64Array(d);
  const wb = b.count / n, cross = (a.count * b.count) / n;
  for (let j = 0; j < d; j++) {
    const delta = b.mean[j] - a.mean[j];
    mean[j] = a.mean[j] + delta * wb;
    m2[j] = a.m2[j] + b.m2[j] + delta * delta * cross;
  }
  return { count: n, mean, m2 };
}

/** The statistics of `rows` rows of width d laid out row-major in `x`. */
export function welfordOf(x: ArrayLike<number>, rows: number, d: number): WelfordState {
  const s = welfordInit(d);
  if (rows === 0) return s;
  if (x.length < rows * d) {
    throw new RangeError(`welfordOf: ${x.length} values cannot hold ${rows} rows of width ${d}`);
  }
  const { mean, m2 } = s;
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    for (let j = 0; j < d; j++) mean[j] += x[o + j];
  }
  for (let j = 0; j < d; j++) mean[j] /= rows;
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    for (let j = 0; j < d; j++) {
      const e = x[o + j] - mean[j];
      m2[j] += e * e;
    }
  }
  return { count: rows, mean, m2 };
}

/** Fold a chunk of rows into a running state. */
export function welfordUpdate(s: WelfordState, x: ArrayLike<number>, rows: number): WelfordState {
  return welfordMerge(s, welfordOf(x, rows, s.mean.length));
}

export interface Moments {
  count: number;
  mean: number[];
  /** Population variance (divides by n), as normalisation uses. */
  variance: number[];
}

export function welfordFinish(s: WelfordState): Moments {
  const n = s.count;
  return {
    count: n,
    mean: Array.from(s.mean),
    variance: Array.from(s.m2, (v) => (n > 0 ? v / n : 0)),
  };
}

/** A state back from its JSON form (as stored in schema metadata). */
export function welfordFromJson(
  v: { count: number; mean: number[]; m2: number[] },
  d: number,
  where: string,
): WelfordState {
  const ok = v && Number.isSafeInteger(v.count) && v.count >= 0 && Array.isArray(v.mean) &&
    Array.isArray(v.m2) && v.mean.length === d && v.m2.length === d;
  if (!ok) throw new RangeError(`${where}: statistics must be {count, mean[${d}], m2[${d}]}`);
  return { count: v.count, mean: Float64Array.from(v.mean), m2: Float64Array.from(v.m2) };
}

export function welfordToJson(s: WelfordState): { count: number; mean: number[]; m2: number[] } {
  return { count: s.count, mean: Array.from(s.mean), m2: Array.from(s.m2) };
}
