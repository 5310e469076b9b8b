/**
 * Host-side totals of an evaluation: what `evaluate` keeps between batches, merged in f64 batch by
 * batch (row by row, in order, so the sums are the same for the same batches).
 */
import type { DataArray } from "../../tensor/dtype.ts";

/** One batch's reductions, read back to the host. */
export interface BatchData {
  /** [6, N]: ‖r‖², ‖x‖², ‖x̂‖², x·x̂, ‖f‖₁, L0 per row (r = target − x̂). */
  rows: DataArray;
  /** [4, L, d]: per layer and dimension, mean and centred Σ² of the target, then of r. */
  dims: DataArray;
  /** [F]: tokens on which each feature is active. */
  fired: DataArray;
  /** [L, F]: Σ activation per layer (MLSAE only). */
  layerAct: DataArray | undefined;
}

/** Streaming mean / centred sum of squares per (layer, dimension), merged batch by batch. */
export class Moments {
  n: Float64Array; // tokens per layer
  mean: Float64Array;
  m2: Float64Array;
  constructor(readonly layers: number, readonly d: number) {
    this.n = new Float64Array(layers);
    this.mean = new Float64Array(layers * d);
    this.m2 = new Float64Array(layers * d);
  }
  /** Chan et al.'s pairwise update: exact for any split of the data into batches. */
  merge(nb: number, meanB: ArrayLike<number>, m2B: ArrayLike<number>): void {
    const { d } = this;
    for (let l = 0; l < this.layers; l++) {
      const na = this.n[l], n = na + nb;
      for (let j = 0; j < d; j++) {
        const i = l * d + j;
        const delta = meanB[i] - this.mean[i];
        this.mean[i] += (delta * nb) / n;
        this.m2[i] += m2B[i] + (delta * delta * na * nb) / n;
      }
      this.n[l] = n;
    }
  }
  /** Σ_d of the centred sums of squares for one layer, or all layers pooled (l = -1). */
  totalM2(l: number): number {
    if (l >= 0) {
      let s = 0;
      for (let j = 0; j < this.d; j++) s += this.m2[l * this.d + j];
      return s;
    }
    // Pool layers per dimension with the same pairwise rule.
    let s = 0;
    for (let j = 0; j < this.d; j++) {
      let n = 0, mu = 0, m2 = 0;
      for (let l = 0; l < this.layers; l++) {
        const nb = this.n[l], i = l * this.d + j;
        if (nb === 0) continue;
        const tot = n + nb, delta = this.mean[i] - mu;
        mu += (delta * nb) / tot;
        m2 += this.m2[i] + (delta * delta * n * nb) / tot;
        n = tot;
      }
      s += m2;
    }
    return s;
  }
}

/** Everything kept between batches: sums over rows, per-layer sums, firing counts, moments. */
export interface Totals {
  /** Layers per token (1 unless MLSAE), fixed by the first batch. */
  layers: number;
  tokens: number;
  /** Σ over rows of ‖r‖², ‖r‖, ‖x̂‖², x·x̂, ‖f‖₁, L0, cosine, and of ‖x̂‖/‖x‖ over nRatio rows. */
  r2: number;
  rNorm: number;
  xh2: number;
  xXh: number;
  l1: number;
  l0: number;
  cos: number;
  ratio: number;
  nRatio: number;
  /** Per layer: Σ‖r‖² and Σ L0. */
  layerR2: Float64Array;
  layerL0: Float64Array;
  /** [L, F]: Σ activation per layer (MLSAE only). */
  layerAct: Float64Array | null;
  /** [F]: tokens on which each feature fired. */
  fired: Float64Array;
  /** Per layer and dimension: moments of the target and of the residual. */
  xMom: Moments;
  rMom: Moments;
}

export function newTotals(layers: number, d: number, F: number, isMl: boolean): Totals {
  return {
    layers,
    tokens: 0,
    r2: 0,
    rNorm: 0,
    xh2: 0,
    xXh: 0,
    l1: 0,
    l0: 0,
    cos: 0,
    ratio: 0,
    nRatio: 0,
    layerR2: new Float64Array(layers),
    layerL0: new Float64Array(layers),
    layerAct: isMl ? new Float64Array(layers * F) : null,
    fired: new Float64Array(F),
    xMom: new Moments(layers, d),
    rMom: new Moments(layers, d),
  };
}

/** Merge one batch of N rows into the totals (row by row, in order, so sums are reproducible). */
export function addBatch(tot: Totals, b: BatchData, N: number, d: number, F: number): void {
  const { rows, dims } = b, layers = tot.layers;
  for (let i = 0; i < N; i++) {
    const r2 = rows[i],
      x2 = rows[N + i],
      xh2 = rows[2 * N + i],
      xxh = rows[3 * N + i],
      l0 = rows[5 * N + i];
    tot.r2 += r2;
    tot.rNorm += Math.sqrt(r2);
    tot.xh2 += xh2;
    tot.xXh += xxh;
    tot.l1 += rows[4 * N + i];
    tot.l0 += l0;
    const den = Math.sqrt(x2 * xh2);
    if (den > 0) tot.cos += xxh / den;
    if (x2 > 0) {
      tot.ratio += Math.sqrt(xh2 / x2);
      tot.nRatio++;
    }
    const l = i % layers;
    tot.layerR2[l] += r2;
    tot.layerL0[l] += l0;
  }
  // dims is [mean_x, m2_x, mean_r, m2_r], each [L, d].
  const nb = N / layers, block = layers * d;
  tot.xMom.merge(nb, dims.subarray(0, block), dims.subarray(block, 2 * block));
  tot.rMom.merge(nb, dims.subarray(2 * block, 3 * block), dims.subarray(3 * block, 4 * block));
  for (let j = 0; j < F; j++) tot.fired[j] += b.fired[j];
  const la = b.layerAct, layerAct = tot.layerAct;
  if (la && layerAct) { for (let j = 0; j < la.length; j++) layerAct[j] += la[j]; }
  tot.tokens += N;
}
