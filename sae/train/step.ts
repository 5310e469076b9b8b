/**
 * The training step as a function of (state, batch): loss and gradients, constrained Adam, dead
 * feature tracking in tokens, AuxK/ghost grads inputs, BatchTopK threshold, resampling, k
 * annealing. The only I/O is reading back a few scalars (dead count, θ statistic, metrics).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import type { PRNGKey } from "../../tensor/random.ts";
import * as random from "../../tensor/random.ts";
import { ones, zeros } from "../../tensor/ops/create.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import {
  add,
  cast,
  div,
  ge,
  gt,
  minimum,
  mul,
  square,
  step,
  sub,
  where,
} from "../../tensor/ops/elementwise.ts";
import { mean, min, sum, variance } from "../../tensor/ops/reduce.ts";
import { scatterAdd } from "../../tensor/ops/index.ts";
import { reshape, squeeze } from "../../tensor/ops/shape.ts";
import { dispose, disposeReplaced, keep, tidy } from "../../tensor/scope.ts";
import { valueAndGrad } from "../../autodiff/grad.ts";
import {
  adam,
  applyStep,
  chain,
  clipByGlobalNorm,
  type GradientTransformation,
} from "../../autodiff/optim.ts";
import { warmupDecaySchedule } from "../../autodiff/schedule.ts";
import type { Architecture, Batch, LossAux, LossContext } from "../arch/architecture.ts";
import {
  architecture,
  dfcPartition,
  isCrosscoder,
  thresholdInputs,
  usesThreshold,
} from "../arch/registry.ts";
import { asCoo, type Code, l0PerRow } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import { type SaeParams, unitRows } from "../params.ts";
import { fusedColumnVarianceSum, fusedProjectOutRows } from "../../tensor/fused.ts";
import type { TrainConfig } from "./config.ts";
import { geometricMedian } from "./geometric_median.ts";
import { resampleDead } from "./resample.ts";
import { perInputGeometricMedian } from "../crosscoder/crosscoder.ts";
import { maskGradients } from "../crosscoder/grad_mask.ts";
import type { Partition } from "../crosscoder/partition.ts";
import { initialThreshold, mapThreshold, type Threshold, updateThreshold } from "../threshold.ts";
import type { Communicator } from "../../tensor/distributed/communicator.ts";
import {
  averageAcrossRanks,
  averageScalars,
  batchShareOf,
  broadcastFromRoot,
  firedOnAnyRank,
  minAcrossRanks,
} from "./data_parallel.ts";

export interface TrainState {
  step: number;
  params: SaeParams;
  opt: unknown;
  /** Tokens since each feature last fired, clamped at dead_tokens (or the resampling window if longer) (f32 [d_sae]). */
  sinceFired: Tensor;
  numDead: number;
  /** BatchTopK/Matryoshka inference threshold θ (−1 until first set under "dl"); one per input for decoupled crosscoders. */
  threshold: Threshold;
  /** Inputs (and targets) are divided by these while training; folded into saved weights. */
  scale: number;
  scaleOut: number;
  key: PRNGKey;
}

export interface StepMetrics {
  step: number;
  lr: number;
  k: number;
  loss: number;
  recon: number;
  fvu: number;
  l0: number;
  deadFraction: number;
  sparsity?: number;
  auxk?: number;
  ghost?: number;
  gatedAux?: number;
  threshold?: Threshold;
  resampled?: number;
}

export function lrAt(t: TrainConfig, step: number): number {
  return warmupDecaySchedule({
    peak: t.lr,
    warmupSteps: t.warmup_steps,
    totalSteps: t.steps,
    decayStart: t.decay_start ?? undefined,
  })(step);
}

export function kAt(cfg: SaeConfig, t: TrainConfig, step: number): number {
  if (t.k_anneal_steps <= 0 || t.k_start === null) return cfg.k;
  return Math.round(t.k_start + (cfg.k - t.k_start) * Math.min(step / t.k_anneal_steps, 1));
}

function optimizer(t: TrainConfig): GradientTransformation<unknown> {
  const a = adam({
    lr: (s) => lrAt(t, s),
    b1: t.b1,
    b2: t.b2,
    eps: t.eps,
  }) as GradientTransformation<unknown>;
  return t.grad_clip === null
    ? a
    : chain(clipByGlobalNorm(t.grad_clip), a) as GradientTransformation<unknown>;
}

/** Inputs as the model sees them during training (scaled; MLSAE standardises per token itself). */
function scaled(batch: Batch, s: TrainState): Batch {
  return {
    x: s.scale === 1 ? batch.x : div(batch.x, s.scale),
    y: batch.y && (s.scaleOut === 1 ? batch.y : div(batch.y, s.scaleOut)),
  };
}

/**
 * A fresh training state. `first` is a batch (or several) used to estimate the normalisation
 * scale √(mean‖x‖²) and the geometric-median b_dec, as dictionary_learning does.
 */
export async function initTrainState(
  key: PRNGKey,
  cfg: SaeConfig,
  t: TrainConfig,
  first: Batch[],
): Promise<TrainState> {
  const [kInit, kRun] = random.split(key);
  const arch = architecture(cfg.arch);
  const params = arch.init(kInit, cfg);
  const meanSquaredNorm = async (x: Tensor) => {
    const m = tidy(() => mean(sum(square(x), -1)));
    try {
      return await m.item();
    } finally {
      m.dispose();
    }
  };
  const rms = async (xs: Tensor[]) =>
    Math.sqrt(
      (await Promise.all(xs.map(meanSquaredNorm))).reduce((a, b) => a + b, 0) / xs.length,
    );
  // A multi-layer SAE standardises each layer's vector itself.
  const normalize = t.normalize_activations && arch.input !== "layers";
  const scale = normalize ? await rms(first.map((b) => b.x)) : 1;
  const scaleOut = normalize && first[0]?.y ? await rms(first.map((b) => b.y!)) : scale;
  const state: TrainState = {
    step: 0,
    params,
    opt: optimizer(t).init(params),
    sinceFired: zeros([cfg.d_sae]),
    numDead: 0,
    threshold: initialThreshold(thresholdInputs(cfg), t.threshold_ema === "dl" ? -1 : 0),
    scale: scale > 0 ? scale : 1,
    scaleOut: scaleOut > 0 ? scaleOut : 1,
    key: kRun,
  };
  if (t.geometric_median_init && first.length) {
    const target = tidy(() => arch.target(scaled(first[0], state), cfg));
    const median = isCrosscoder(cfg)
      ? await perInputGeometricMedian(target)
      : await geometricMedian(target);
    disposeReplaced([target], first); // the target may be the caller's own batch tensor
    params.b_dec.dispose();
    params.b_dec = median;
  }
  return state;
}

/** Which features fired at least once in the batch (bool [d_sae]) and the mean L0, from one pass over the code. */
function activity(code: Code, F: number): { fired: Tensor; l0: Tensor } {
  if (code.kind === "dense") {
    // Counts of 0/1 entries are exact in f32, so BLAS mat-vecs with a ones vector (one
    // multi-threaded read of [B, F] each) replace the strided column and row sums.
    const active = step(code.f);
    const [B, Fd] = active.shape;
    const perFeature = squeeze(matmul(ones([1, B], active.dtype, active.backend), active), 0);
    return {
      fired: gt(perFeature, 0),
      l0: mean(matmul(active, ones([Fd, 1], active.dtype, active.backend))),
    };
  }
  const coo = asCoo(code)!;
  const active = step(coo.values);
  return { fired: gt(scatterAdd(zeros([F]), coo.cols, active, 0), 0), l0: mean(l0PerRow(code)) };
}

/** Remove each decoder row's gradient component along the row (the constraint's tangent space). */
export function projectDecoderGrad(W_dec: Tensor, g: Tensor): Tensor {
  const fused = fusedProjectOutRows(g, W_dec);
  if (fused) return fused;
  const u = unitRows(W_dec);
  return sub(g, mul(sum(mul(g, u), -1, { keepdims: true }), u));
}

/** What a step needs that depends only on the configs, the step number and the batch's size. */
interface StepPlan {
  arch: Architecture;
  /** k this step (annealed) and the config that carries it. */
  k: number;
  stepCfg: SaeConfig;
  /** Rows in the batch (tokens; batch × layers for MLSAE). */
  B: number;
  constrained: boolean;
  opt: GradientTransformation<unknown>;
  /** Tokens a feature must stay silent to be resampled (0 without resampling). */
  resampleWindow: number;
  /** Where the silence counters stop counting. */
  cap: number;
  partition: Partition | null;
  /** The other ranks of a data-parallel job (null: this process trains alone). */
  dp: Communicator | null;
}

function planStep(
  state: TrainState,
  batch: Batch,
  cfg: SaeConfig,
  t: TrainConfig,
  dp: Communicator | null,
): StepPlan {
  const arch = architecture(cfg.arch);
  const k = kAt(cfg, t, state.step);
  // Rows of the global batch: every rank holds the same share of it.
  const B = batch.x.shape[0] * (arch.input === "layers" ? batch.x.shape[1] : 1) * (dp?.size ?? 1);
  // Resampling looks for features silent over resample_steps/2 steps; the counters must be able to
  // reach that window even when it is longer than dead_tokens, or nothing is ever resampled.
  const resampleWindow = t.resample_steps ? (t.resample_steps / 2) * B : 0;
  return {
    arch,
    k,
    stepCfg: k === cfg.k ? cfg : { ...cfg, k },
    B,
    constrained: t.optimizer === "constrained_adam",
    opt: optimizer(t),
    resampleWindow,
    cap: Math.max(t.dead_tokens, resampleWindow),
    partition: dfcPartition(cfg),
    dp,
  };
}

/** The tensors one step produces on the backend, before any scalar is read back. */
interface StepTensors {
  params: SaeParams;
  optState: unknown;
  sinceFired: Tensor;
  /** Loss terms, FVU, L0 and the dead count, each a scalar tensor. */
  scalars: Record<string, Tensor>;
  /** The smallest kept positive value (one per input when θ is per input), for θ. */
  minPositive: Tensor | null;
  /** Kept past the step's scope for resampling. */
  xhat: Tensor;
  target: Tensor;
}

/** The loss terms that are reported when an architecture produces them. */
const OPTIONAL_TERMS = ["sparsity", "auxk", "ghost", "gatedAux"] as const;

/** What the loss reads besides params and batch: the L1 warmup and the dead features. */
function lossContext(state: TrainState, t: TrainConfig, plan: StepPlan): LossContext {
  return {
    l1Scale: t.sparsity_warmup_steps > 0 ? Math.min(state.step / t.sparsity_warmup_steps, 1) : 1,
    dead: state.numDead > 0 ? ge(state.sinceFired, t.dead_tokens) : null,
    numDead: state.numDead,
    ghost: t.ghost_grads,
    ...(plan.dp ? { batchShare: batchShareOf(plan.dp) } : {}),
  };
}

/** The loss, its auxiliary outputs and the parameter gradients at the current parameters. */
function lossAndGrads(
  state: TrainState,
  b: Batch,
  plan: StepPlan,
  t: TrainConfig,
): { loss: Tensor; aux: LossAux; grads: SaeParams } {
  const ctx = lossContext(state, t, plan);
  const lossFn = (p: SaeParams) => plan.arch.loss(p, b, plan.stepCfg, ctx);
  const [[loss, aux], grads] = valueAndGrad(lossFn, { hasAux: true })(state.params) as [
    [Tensor, LossAux],
    SaeParams,
  ];
  return { loss, aux, grads };
}

/**
 * The gradient as the optimiser receives it: DFC's forbidden entries masked, and under constrained
 * Adam the decoder gradient projected onto the unit-norm rows' tangent space (clipping, when set,
 * is the optimiser chain's first stage).
 */
function constrainGrads(rawGrads: SaeParams, state: TrainState, plan: StepPlan): SaeParams {
  // DFC: forbidden entries get exactly zero gradient, so they and their Adam moments stay zero.
  const grads = plan.partition ? maskGradients(rawGrads, plan.partition) : rawGrads;
  if (plan.constrained) grads.W_dec = projectDecoderGrad(state.params.W_dec, grads.W_dec);
  return grads;
}

/** The optimiser's update, then (constrained Adam) decoder rows back to unit norm. */
function optimiserStep(
  grads: SaeParams,
  state: TrainState,
  plan: StepPlan,
): { params: SaeParams; optState: unknown } {
  // One pass per leaf where the backend fuses it (clipping's scale, Adam, the update, the rows).
  const [params, optState] = applyStep(plan.opt, grads, state.opt, state.params, {
    ...(plan.constrained
      ? { unitRows: { leaves: new Set([state.params.W_dec]), rows: unitRows } }
      : {}),
  });
  return { params, optState };
}

/** Features whose silence counter has reached dead_tokens (f32 scalar). */
function countDead(sinceFired: Tensor, t: TrainConfig): Tensor {
  return sum(cast(ge(sinceFired, t.dead_tokens), "f32"));
}

/** The smallest kept positive value, per input when θ is per input (one row each); null without θ. */
function smallestKept(aux: LossAux, cfg: SaeConfig): Tensor | null {
  const coo = asCoo(aux.code);
  const kept = aux.thresholdValues ?? coo?.values;
  return kept && usesThreshold(cfg)
    ? min(where(gt(kept, 0), kept, Infinity), kept.ndim === 2 ? -1 : undefined)
    : null;
}

/** Everything a step computes on the backend (run inside `tidy`). */
function computeStep(
  state: TrainState,
  batch: Batch,
  cfg: SaeConfig,
  t: TrainConfig,
  plan: StepPlan,
): StepTensors {
  const b = scaled(batch, state);
  const { loss, aux, grads: localGrads } = lossAndGrads(state, b, plan, t);
  // Data parallel: the mean of the ranks' gradients, before clipping, masks and the constraint.
  const rawGrads = plan.dp ? averageAcrossRanks(localGrads, plan.dp) : localGrads;
  const grads = constrainGrads(rawGrads, state, plan);
  const { params, optState } = optimiserStep(grads, state, plan);
  const { fired: firedHere, l0 } = activity(aux.code, cfg.d_sae);
  const fired = plan.dp ? firedOnAnyRank(firedHere, plan.dp) : firedHere;
  const sinceFired = where(fired, 0, minimum(add(state.sinceFired, plan.B), plan.cap));
  const target = plan.arch.target(b, cfg);
  // Σ_j var_j of the residual over Σ_j var_j of the target, one fused pass each where the backend has it.
  // (Crosscoders' [B, L, d] as [B, L·d]: the same columns.)
  const rows = (x: Tensor) => (x.ndim > 2 && x.isContiguous() ? reshape(x, [x.shape[0], -1]) : x);
  const varSum = (x: Tensor, y: Tensor | null) =>
    fusedColumnVarianceSum(rows(x), y && rows(y)) ?? sum(variance(y ? sub(x, y) : x, 0));
  const fvu = div(varSum(target, aux.xhat), varSum(target, null));
  const minPositive = smallestKept(aux, cfg);
  const scalars: Record<string, Tensor> = {
    loss,
    recon: aux.recon,
    fvu,
    l0,
    numDead: countDead(sinceFired, t),
  };
  for (const key of OPTIONAL_TERMS) {
    if (aux[key]) scalars[key] = aux[key]!;
  }
  return {
    params,
    optState,
    sinceFired,
    scalars,
    minPositive,
    xhat: keep(aux.xhat),
    target: keep(target),
  };
}

/** Read the step's scalars and θ statistic back to the host, releasing their tensors. */
async function readBack(
  out: StepTensors,
  dp: Communicator | null,
): Promise<{ host: Record<string, number>; minPositive: ArrayLike<number> | null }> {
  const host: Record<string, number> = {};
  for (const [name, v] of Object.entries(out.scalars)) host[name] = await v.item();
  dispose(out.scalars);
  const here = out.minPositive ? await out.minPositive.data() : null;
  out.minPositive?.dispose();
  if (!dp) return { host, minPositive: here };
  // The dead count is the same everywhere already (the counters are global); the rest average.
  const numDead = host.numDead;
  averageScalars(host, dp);
  host.numDead = numDead;
  return { host, minPositive: here && minAcrossRanks(here, dp) };
}

/** θ after this step: SAELens's EMA from step 0, or DL's from threshold_start_step (first copies). */
function nextThreshold(
  threshold: Threshold,
  minPositive: ArrayLike<number> | null,
  step: number,
  t: TrainConfig,
): Threshold {
  if (!minPositive) return threshold;
  if (t.threshold_ema === "saelens") {
    return updateThreshold(threshold, minPositive, (old, v) => 0.99 * old + 0.01 * v);
  }
  if (step >= t.threshold_start_step) {
    return updateThreshold(
      threshold,
      minPositive,
      (old, v) => (old < 0 ? v : 0.999 * old + 0.001 * v),
    );
  }
  return threshold;
}

/** Resample dead features when this step closes a resampling period; recount the dead if any were. */
async function resampleIfDue(
  next: TrainState,
  out: StepTensors,
  step: number,
  t: TrainConfig,
  plan: StepPlan,
): Promise<{ state: TrainState; resampled?: number }> {
  if (!(t.resample_steps && step % t.resample_steps === t.resample_steps - 1)) {
    return { state: next };
  }
  const local = await resampleDead(next, out.target, out.xhat, plan.resampleWindow, plan.B);
  // The dead set is the same on every rank (global counters) but each drew from its own rows:
  // rank 0's draw wins.
  const r = plan.dp && local.count > 0 ? adoptRoot(local, plan.dp) : local;
  if (r.count === 0) return { state: r.state, resampled: r.count };
  // resampleDead counts features past its window; numDead is defined by dead_tokens.
  const n = tidy(() => countDead(r.state.sinceFired, t));
  const state = { ...r.state, numDead: await n.item() };
  n.dispose();
  return { state, resampled: r.count };
}

/** `r`'s state with rank 0's parameters, moments and counters (the replaced tensors disposed). */
function adoptRoot<R extends { state: TrainState }>(r: R, dp: Communicator): R {
  const mine = { params: r.state.params, opt: r.state.opt, sinceFired: r.state.sinceFired };
  const root = broadcastFromRoot(mine, dp);
  dispose(mine);
  return { ...r, state: { ...r.state, ...root } };
}

/** The step's record for metrics.jsonl and the progress line. */
function stepMetrics(
  step: number,
  host: Record<string, number>,
  threshold: Threshold,
  resampled: number | undefined,
  cfg: SaeConfig,
  t: TrainConfig,
  plan: StepPlan,
): StepMetrics {
  const metrics: StepMetrics = {
    step,
    lr: lrAt(t, step),
    k: plan.k,
    loss: host.loss,
    recon: host.recon,
    fvu: host.fvu,
    l0: host.l0,
    deadFraction: host.numDead / cfg.d_sae,
  };
  for (const key of OPTIONAL_TERMS) {
    if (key in host) metrics[key] = host[key];
  }
  if (usesThreshold(cfg)) metrics.threshold = threshold;
  if (resampled !== undefined) metrics.resampled = resampled;
  return metrics;
}

/**
 * One training step: loss and gradients, gradient constraints, the optimiser update and decoder
 * renormalisation, dead-feature counters, θ, resampling, metrics. Returns the new state (the old
 * one is left to the caller to dispose). With `dp`, this rank's batch is its share of the global
 * batch and the step exchanges what data_parallel.ts lists with the other ranks.
 */
export async function trainStep(
  state: TrainState,
  batch: Batch,
  cfg: SaeConfig,
  t: TrainConfig,
  dp: Communicator | null = null,
): Promise<{ state: TrainState; metrics: StepMetrics }> {
  const plan = planStep(state, batch, cfg, t, dp && dp.size > 1 ? dp : null);
  const out = tidy(() => computeStep(state, batch, cfg, t, plan));
  const { host, minPositive } = await readBack(out, plan.dp);
  const threshold = nextThreshold(state.threshold, minPositive, state.step, t);
  const updated: TrainState = {
    ...state,
    step: state.step + 1,
    params: out.params,
    opt: out.optState,
    sinceFired: out.sinceFired,
    numDead: host.numDead,
    threshold,
  };
  const { state: next, resampled } = await resampleIfDue(updated, out, state.step, t, plan);
  disposeReplaced([out.xhat, out.target], batch); // the target may be the caller's own batch.x
  return {
    state: next,
    metrics: stepMetrics(state.step, host, threshold, resampled, cfg, t, plan),
  };
}

/** The state's tensors, for dispose() once a newer state replaces it. */
export function stateTensors(s: TrainState): unknown[] {
  return [s.params, s.opt, s.sinceFired];
}

/**
 * θ for the saved (folded) weights: crosscoders compare f·w with θ, and folding scales the decoder
 * norms w by scaleOut while f is unchanged; SAE codes are unchanged, so their θ is too.
 */
export function foldedThreshold(s: TrainState, cfg: SaeConfig): Threshold {
  return isCrosscoder(cfg)
    ? mapThreshold(s.threshold, (v) => (v >= 0 ? v * s.scaleOut : v))
    : s.threshold;
}

/** Undo the training-time input scaling in the weights, so the saved dictionary reads raw activations. */
export function foldScale(p: SaeParams, scale: number, scaleOut: number): SaeParams {
  if (scale === 1 && scaleOut === 1) return p;
  return tidy(() => ({
    ...p,
    W_enc: div(p.W_enc, scale),
    W_dec: mul(p.W_dec, scaleOut),
    b_dec: mul(p.b_dec, scaleOut),
  }));
}
