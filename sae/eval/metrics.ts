/**
 * Evaluation of a dictionary as pure functions over (params, cfg, batches). Each batch is reduced
 * on the backend to a few small tensors (per-row and per-dimension statistics, per-feature firing
 * counts), read back, and merged on the host in f64, so the evaluation set can be any size and
 * device memory stays flat (every per-batch tensor is released by `tidy`/`dispose`).
 *
 * Definitions (SAE-REFERENCE "Evaluation"), with the choices this file makes:
 * - Rows are tokens; for MLSAE every layer's vector is one row (tokens = B·L) and the target is the
 *   per-token standardised input, as the model sees it. Transcoders compare x̂ with batch.y; other
 *   architectures with batch.y when given (as their losses do), else with x.
 * - fraction_variance_explained = 1 − Σ_d Var(r)_d / Σ_d Var(x)_d over all tokens, r = x − x̂.
 *   Variances are merged across batches from per-batch means and centred sums of squares (Chan et
 *   al.), not from raw Σx, Σx²: the same quantity, without catastrophic cancellation when the data
 *   have a large mean (residual streams do). NaN when the target has zero variance.
 * - cosine: a row where ‖x‖ or ‖x̂‖ is 0 scores 0 (torch's cosine_similarity with eps does the same).
 * - l2_ratio: rows with ‖x‖ = 0 are skipped (the ratio is undefined); NaN if every row is zero.
 * - A feature is active on a token when its code value is > 0. dense: firing frequency strictly
 *   greater than denseThreshold (default 0.1, i.e. more than one token in ten).
 * - density_histogram: 50 equal bins of log10(frequency + 1e-10) on the fixed range [−10, 0];
 *   bins are [lo, hi) except the last, which is closed; values outside (frequency 1 gives
 *   log10(1 + 1e-10) > 0) go to the end bins, so the counts always sum to d_sae.
 * - MLSAE per_layer.fvu uses the same definition as fvu (residual variance over the layer's tokens
 *   ÷ the layer's target variance), so it differs from the training loss's MSE_l / Var_l by the
 *   residual's squared mean; latent_layer_distribution is NaN for latents that never fire.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import type { DType } from "../../tensor/dtype.ts";
import { zeros } from "../../tensor/ops/create.ts";
import {
  abs,
  add,
  cast,
  div,
  gt,
  maximum,
  mod,
  mul,
  square,
  sub,
} from "../../tensor/ops/elementwise.ts";
import { scatterAdd } from "../../tensor/ops/index.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { max, mean, norm, sum } from "../../tensor/ops/reduce.ts";
import { reshape, sliceAxis, stack, transpose } from "../../tensor/ops/shape.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import { fmt, ShapeError } from "../../tensor/shape.ts";
import type { Batch } from "../arch/architecture.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import { asCoo, type Code, l0PerRow, toDense } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import { addBatch, type BatchData, newTotals, type Totals } from "./totals.ts";

export interface EvalMetrics {
  /** Rows evaluated (for MLSAE: batch × layers). */
  tokens: number;
  /** Mean over tokens of Σ_d (x − x̂)². */
  mse: number;
  /** Mean ‖x − x̂‖ (unsquared, dictionary_learning's "l2_loss"). */
  l2_loss: number;
  /** 1 − Σ_d Var(x − x̂)_d / Σ_d Var(x_d), variances over all tokens. */
  fraction_variance_explained: number;
  /** 1 − fraction_variance_explained. */
  fvu: number;
  /** Mean non-zero features per token. */
  l0: number;
  /** Mean ‖f‖₁. */
  l1: number;
  /** Mean cosine similarity of x and x̂ (a zero-norm row scores 0). */
  cosine: number;
  /** Mean ‖x̂‖/‖x‖ over rows with ‖x‖ > 0. */
  l2_ratio: number;
  /** E‖x̂‖² / E[x·x̂]. */
  relative_reconstruction_bias: number;
  /** Features active at least once over the evaluation set / d_sae. */
  frac_alive: number;
  /** Features never active. */
  dead: number;
  /** Features firing on more than denseThreshold of tokens. */
  dense: number;
  /** Histogram of log10(firing frequency + 1e-10): edges.length = counts.length + 1. */
  density_histogram: { edges: number[]; counts: number[] };
  /** Firing frequency per feature. */
  feature_density: Float64Array;
  /** MLSAE: per layer. */
  per_layer?: { fvu: number[]; mse: number[]; l0: number[] };
  /** MLSAE: per latent, mean and std of the layer index under p_l = Σ act_l / Σ act. */
  latent_layer_distribution?: { mean: Float64Array; std: Float64Array };
}

export interface EvalOptions {
  /** BatchTopK / Matryoshka inference threshold θ (without it they keep the batch's top k·B). */
  threshold?: number;
  /** Frequency above which a feature counts as dense (default 0.1). */
  denseThreshold?: number;
  /** Encode with encodeInference (default true) or with the training-time encode. */
  useInferenceEncoding?: boolean;
}

export const DEFAULT_DENSE_THRESHOLD = 0.1;
const HIST_BINS = 50, HIST_LO = -10, HIST_HI = 0, DENSITY_EPS = 1e-10;

/** Fixed bin edges, so histograms from different runs line up. */
export const DENSITY_EDGES: readonly number[] = Array.from(
  { length: HIST_BINS + 1 },
  (_, i) => HIST_LO + (i * (HIST_HI - HIST_LO)) / HIST_BINS,
);

// ---- validation -------------------------------------------------------------------------------

function expectShape(what: string, t: Tensor | undefined, expected: number[], names: string): void {
  if (!t) {
    throw new TypeError(`evaluate: ${what} is missing (expected ${names} = ${fmt(expected)})`);
  }
  if (t.ndim !== expected.length || t.shape.some((s, i) => s !== expected[i])) {
    throw new ShapeError(
      `evaluate: ${what} has shape ${fmt(t.shape)}, expected ${names} = ${fmt(expected)}`,
    );
  }
}

function checkParams(p: SaeParams, cfg: SaeConfig): void {
  expectShape("params.W_enc", p.W_enc, [cfg.d_in, cfg.d_sae], "[d_in, d_sae]");
  expectShape("params.W_dec", p.W_dec, [cfg.d_sae, cfg.d_out], "[d_sae, d_out]");
  expectShape("params.b_dec", p.b_dec, [cfg.d_out], "[d_out]");
  if (p.b_enc) expectShape("params.b_enc", p.b_enc, [cfg.d_sae], "[d_sae]");
}

/** The target (what x̂ is compared with) as [rows, d_out], and the layer count (1 unless MLSAE). */
function checkBatch(b: Batch, i: number, cfg: SaeConfig): { layers: number } {
  const { x, y } = b;
  const at = `batch ${i}`;
  const a = architecture(cfg.arch);
  if (a.input === "layers") {
    if (x.ndim !== 3 || x.shape[2] !== cfg.d_in) {
      throw new ShapeError(
        `evaluate: ${at}: x has shape ${
          fmt(x.shape)
        }, expected [batch, layers, d_in = ${cfg.d_in}]`,
      );
    }
    if (y) {
      throw new TypeError(
        `evaluate: ${at}: ${cfg.arch} batches have no targets y (the target is the standardised input)`,
      );
    }
    return { layers: x.shape[1] };
  }
  if (x.ndim !== 2 || x.shape[1] !== cfg.d_in) {
    throw new ShapeError(
      `evaluate: ${at}: x has shape ${fmt(x.shape)}, expected [batch, d_in = ${cfg.d_in}]`,
    );
  }
  if (a.needsTargets && !y) {
    throw new TypeError(
      `evaluate: ${at}: ${cfg.arch} batches need targets y [batch, d_out = ${cfg.d_out}]`,
    );
  }
  const target = y ?? x;
  if (target.ndim !== 2 || target.shape[0] !== x.shape[0] || target.shape[1] !== cfg.d_out) {
    throw new ShapeError(
      `evaluate: ${at}: ${y ? "y" : "x (the target when y is absent)"} has shape ${
        fmt(target.shape)
      }, expected [${x.shape[0]}, d_out = ${cfg.d_out}]`,
    );
  }
  return { layers: 1 };
}

// ---- per-batch reduction on the backend -----------------------------------------------------------

/** Small tensors read back per batch. */
interface BatchTensors {
  /** [6, N]: ‖r‖², ‖x‖², ‖x̂‖², x·x̂, ‖f‖₁, L0 per row (r = target − x̂). */
  rows: Tensor;
  /** [4, L, d]: per layer and dimension, mean and centred Σ² of the target, then of r. */
  dims: Tensor;
  /** [F]: tokens on which each feature is active. */
  fired: Tensor;
  /** [L, F]: Σ activation per layer (MLSAE only). */
  layerAct: Tensor | null;
}

function reduceBatch(
  p: SaeParams,
  cfg: SaeConfig,
  b: Batch,
  layers: number,
  opts: EvalOptions,
): BatchTensors {
  const arch = architecture(cfg.arch);
  const code: Code = opts.useInferenceEncoding === false
    ? arch.encode(p, b.x, cfg)
    : arch.encodeInference(p, b.x, cfg, opts.threshold);
  const xhat = arch.decode(p, code, cfg);
  const target = arch.target(b, cfg);
  // f64 data stay f64 (tight tests, f64 runs); everything else reads back as f32.
  const acc: DType = target.dtype === "f64" ? "f64" : "f32";
  const x = cast(target, acc), xh = cast(xhat, acc);
  const N = x.shape[0], d = x.shape[1], F = cfg.d_sae;
  const r = sub(x, xh);

  const coo = code.kind === "dense" ? null : asCoo(code)!;
  const l1 = coo
    ? scatterAdd(zeros([N], acc), coo.rows, cast(abs(coo.values), acc), 0)
    : sum(cast(abs(toDense(code, F)), acc), -1);
  const rowStats = stack([
    sum(square(r), -1),
    sum(square(x), -1),
    sum(square(xh), -1),
    sum(mul(x, xh), -1),
    l1,
    cast(l0PerRow(code), acc),
  ]);

  // Per-layer, per-dimension mean and centred sum of squares; L = 1 outside MLSAE.
  const centred = (v: Tensor) => {
    const v3 = reshape(v, [N / layers, layers, d]);
    const mu = mean(v3, 0, { keepdims: true });
    return [reshape(mu, [layers, d]), sum(square(sub(v3, mu)), 0)];
  };
  const dims = stack([...centred(x), ...centred(r)]);

  let fired: Tensor, layerAct: Tensor | null = null;
  if (coo) {
    const vals = cast(coo.values, acc);
    fired = scatterAdd(zeros([F], acc), coo.cols, cast(gt(vals, 0), acc), 0);
    // Row i of the flattened MLSAE batch is layer i mod L.
    if (arch.input === "layers") {
      layerAct = reshape(
        scatterAdd(zeros([layers * F], acc), add(mul(mod(coo.rows, layers), F), coo.cols), vals, 0),
        [layers, F],
      );
    }
  } else {
    const f = cast(toDense(code, F), acc);
    fired = sum(cast(gt(f, 0), acc), 0);
    if (arch.input === "layers") layerAct = sum(reshape(f, [N / layers, layers, F]), 0);
  }
  return { rows: rowStats, dims, fired, layerAct };
}

// ---- streaming over the batches, and the final record ------------------------------------------

function histogram(freq: Float64Array): { edges: number[]; counts: number[] } {
  const counts = new Array<number>(HIST_BINS).fill(0);
  const width = (HIST_HI - HIST_LO) / HIST_BINS;
  for (const f of freq) {
    const v = Math.log10(f + DENSITY_EPS);
    const bin = Math.min(HIST_BINS - 1, Math.max(0, Math.floor((v - HIST_LO) / width)));
    counts[bin]++;
  }
  return { edges: [...DENSITY_EDGES], counts };
}

/** Reduce one batch on the backend and read the small results back; its tensors are released. */
async function readBatch(
  p: SaeParams,
  cfg: SaeConfig,
  b: Batch,
  layers: number,
  opts: EvalOptions,
): Promise<BatchData> {
  const out = tidy(() => reduceBatch(p, cfg, b, layers, opts));
  try {
    const [rows, dims, fired, layerAct] = await Promise.all([
      out.rows.data(),
      out.dims.data(),
      out.fired.data(),
      out.layerAct?.data(),
    ]);
    return { rows, dims, fired, layerAct };
  } finally {
    dispose(out);
  }
}

/** Stream the batches through the backend into host totals; null when there were none. */
async function accumulate(
  params: SaeParams,
  cfg: SaeConfig,
  batches: Iterable<Batch> | AsyncIterable<Batch>,
  opts: EvalOptions,
): Promise<Totals | null> {
  const F = cfg.d_sae, d = cfg.d_out, isMl = architecture(cfg.arch).input === "layers";
  let tot: Totals | null = null, index = 0;
  for await (const batch of batches) {
    const { layers } = checkBatch(batch, index, cfg);
    if (tot === null || tot.layers === 0) {
      tot = newTotals(layers, d, F, isMl);
    } else if (layers !== tot.layers) {
      throw new ShapeError(
        `evaluate: batch ${index}: x has ${layers} layers, earlier batches had ${tot.layers}`,
      );
    }
    index++;
    const N = batch.x.shape[0] * layers;
    if (N === 0) continue;
    addBatch(tot, await readBatch(params, cfg, batch, layers, opts), N, d, F);
  }
  return tot;
}

/** Per-feature firing frequency, and the features that never fired or fire densely. */
function featureStats(
  fired: Float64Array,
  tokens: number,
  denseThreshold: number,
): { feature_density: Float64Array; dead: number; dense: number } {
  const F = fired.length, feature_density = new Float64Array(F);
  let dead = 0, dense = 0;
  for (let j = 0; j < F; j++) {
    feature_density[j] = fired[j] / tokens;
    if (fired[j] === 0) dead++;
    if (feature_density[j] > denseThreshold) dense++;
  }
  return { feature_density, dead, dense };
}

/** The record evaluate returns, from the totals. */
function finalMetrics(tot: Totals, cfg: SaeConfig, denseThreshold: number): EvalMetrics {
  const { tokens, layers: L, xMom, rMom } = tot, F = cfg.d_sae;
  const fve = 1 - rMom.totalM2(-1) / xMom.totalM2(-1);
  const { feature_density, dead, dense } = featureStats(tot.fired, tokens, denseThreshold);
  const m: EvalMetrics = {
    tokens,
    mse: tot.r2 / tokens,
    l2_loss: tot.rNorm / tokens,
    fraction_variance_explained: fve,
    fvu: 1 - fve,
    l0: tot.l0 / tokens,
    l1: tot.l1 / tokens,
    cosine: tot.cos / tokens,
    l2_ratio: tot.nRatio > 0 ? tot.ratio / tot.nRatio : NaN,
    relative_reconstruction_bias: tot.xh2 / tot.xXh,
    frac_alive: (F - dead) / F,
    dead,
    dense,
    density_histogram: histogram(feature_density),
    feature_density,
  };
  if (tot.layerAct) {
    const perLayer = tokens / L;
    m.per_layer = {
      fvu: Array.from({ length: L }, (_, l) => rMom.totalM2(l) / xMom.totalM2(l)),
      mse: Array.from(tot.layerR2, (s) => s / perLayer),
      l0: Array.from(tot.layerL0, (s) => s / perLayer),
    };
    m.latent_layer_distribution = layerDistribution(tot.layerAct, L, F);
  }
  return m;
}

/** The options' dense threshold, after checking both numeric options. */
function checkOptions(opts: EvalOptions): number {
  const denseThreshold = opts.denseThreshold ?? DEFAULT_DENSE_THRESHOLD;
  if (!(denseThreshold >= 0 && denseThreshold <= 1)) {
    throw new RangeError(`evaluate: denseThreshold must be in [0, 1], got ${denseThreshold}`);
  }
  if (opts.threshold !== undefined && !Number.isFinite(opts.threshold)) {
    throw new RangeError(`evaluate: threshold must be a finite number, got ${opts.threshold}`);
  }
  return denseThreshold;
}

/**
 * Evaluate a dictionary over a stream of batches. Batches are not consumed or disposed (the caller
 * owns them); without `threshold`, BatchTopK codes depend on the batch, so results then depend on
 * how the data are batched.
 */
export async function evaluate(
  params: SaeParams,
  cfg: SaeConfig,
  batches: Iterable<Batch> | AsyncIterable<Batch>,
  opts: EvalOptions = {},
): Promise<EvalMetrics> {
  if (isCrosscoder(cfg)) {
    throw new TypeError(
      `evaluate: ${cfg.arch} reads [batch, inputs, d] data; use evaluateCrosscoder (sae/crosscoder/eval.ts)`,
    );
  }
  checkParams(params, cfg);
  const denseThreshold = checkOptions(opts);
  const tot = await accumulate(params, cfg, batches, opts);
  if (!tot || tot.tokens === 0) throw new RangeError("evaluate: the batches hold no tokens");
  return finalMetrics(tot, cfg, denseThreshold);
}

/** For each latent: mean and std of the layer index under p_l = act_l / Σ act (NaN if it never fires). */
function layerDistribution(
  act: Float64Array,
  L: number,
  F: number,
): { mean: Float64Array; std: Float64Array } {
  const mu = new Float64Array(F), sd = new Float64Array(F);
  for (let j = 0; j < F; j++) {
    let s = 0, s1 = 0;
    for (let l = 0; l < L; l++) {
      s += act[l * F + j];
      s1 += l * act[l * F + j];
    }
    if (!(s > 0)) {
      mu[j] = sd[j] = NaN;
      continue;
    }
    const m = s1 / s;
    let v = 0;
    for (let l = 0; l < L; l++) v += (l - m) * (l - m) * act[l * F + j];
    mu[j] = m;
    sd[j] = Math.sqrt(v / s);
  }
  return { mean: mu, std: sd };
}

// ---- MMCS -------------------------------------------------------------------------------------

/**
 * MMCS: mean over the rows of a of the max cosine similarity with any row of b (decoders [F, d]);
 * also returned per row. Rows of zero norm have cosine 0 with everything. The [Fa, Fb] similarity
 * matrix is built `chunkRows` rows of a at a time, so two large dictionaries fit in memory.
 */
export async function mmcs(
  a: Tensor,
  b: Tensor,
  opts: { chunkRows?: number } = {},
): Promise<{ mmcs: number; best: Float32Array }> {
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== b.shape[1]) {
    throw new ShapeError(
      `mmcs: a and b must be [features, d] with the same d, got a ${fmt(a.shape)} and b ${
        fmt(b.shape)
      }`,
    );
  }
  const [Fa] = a.shape, Fb = b.shape[0];
  if (Fa === 0 || Fb === 0) {
    throw new ShapeError(
      `mmcs: a ${fmt(a.shape)} and b ${fmt(b.shape)} need at least one row each`,
    );
  }
  // About 16M similarities per chunk.
  const chunk = Math.max(1, opts.chunkRows ?? Math.floor(2 ** 24 / Fb));
  const unit = (w: Tensor) => div(w, maximum(norm(w, -1, { keepdims: true }), 1e-30));
  const bt = tidy(() => transpose(unit(cast(b, b.dtype === "f64" ? "f64" : "f32"))));
  const best = new Float32Array(Fa);
  let total = 0;
  try {
    for (let s = 0; s < Fa; s += chunk) {
      const m = tidy(() =>
        max(matmul(unit(cast(sliceAxis(a, 0, s, Math.min(Fa, s + chunk)), bt.dtype)), bt), -1)
      );
      try {
        const v = await m.data();
        for (let i = 0; i < v.length; i++) {
          best[s + i] = v[i];
          total += v[i];
        }
      } finally {
        m.dispose();
      }
    }
  } finally {
    bt.dispose();
  }
  return { mmcs: total / Fa, best };
}

// ---- CLI table ----------------------------------------------------------------------------------

const num = (v: number): string => {
  if (Number.isNaN(v)) return "NaN";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6)
    ? v.toExponential(4)
    : v.toFixed(6).replace(/0+$/, "").replace(/\.$/, "");
};

const BLOCKS = " ▁▂▃▄▅▆▇█";

/** A readable two-column table (metric, value) for `sae eval`. */
export function formatMetricsTable(m: EvalMetrics): string {
  const rows: [string, string][] = [
    ["tokens", num(m.tokens)],
    ["mse", num(m.mse)],
    ["l2_loss", num(m.l2_loss)],
    ["fraction_variance_explained", num(m.fraction_variance_explained)],
    ["fvu", num(m.fvu)],
    ["l0", num(m.l0)],
    ["l1", num(m.l1)],
    ["cosine", num(m.cosine)],
    ["l2_ratio", num(m.l2_ratio)],
    ["relative_reconstruction_bias", num(m.relative_reconstruction_bias)],
    ["frac_alive", num(m.frac_alive)],
    ["dead", num(m.dead)],
    ["dense", num(m.dense)],
  ];
  if (m.per_layer) {
    m.per_layer.fvu.forEach((_, l) => {
      rows.push([`layer ${l} fvu`, num(m.per_layer!.fvu[l])], [
        `layer ${l} mse`,
        num(m.per_layer!.mse[l]),
      ], [`layer ${l} l0`, num(m.per_layer!.l0[l])]);
    });
  }
  if (m.latent_layer_distribution) {
    const means = Array.from(m.latent_layer_distribution.mean).filter((v) => !Number.isNaN(v));
    const stds = Array.from(m.latent_layer_distribution.std).filter((v) => !Number.isNaN(v));
    const avg = (xs: number[]) => (xs.length ? xs.reduce((s, v) => s + v, 0) / xs.length : NaN);
    rows.push(["latent mean layer (avg over alive)", num(avg(means))], [
      "latent layer std (avg over alive)",
      num(avg(stds)),
    ]);
  }
  const { edges, counts } = m.density_histogram;
  const top = Math.max(1, ...counts);
  const spark = counts.map((c) =>
    BLOCKS[c === 0 ? 0 : Math.max(1, Math.round((c / top) * (BLOCKS.length - 1)))]
  ).join("");
  rows.push([`log10 density [${edges[0]}, ${edges[edges.length - 1]}]`, spark]);
  const w = Math.max(...rows.map(([k]) => k.length));
  const line = "-".repeat(w) + "  " + "-".repeat(Math.max(5, ...rows.map(([, v]) => v.length)));
  return [`${"metric".padEnd(w)}  value`, line, ...rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`)]
    .join("\n");
}
