/** Training hyperparameters, with dictionary_learning's defaults per architecture. */
import { ConfigError, type SaeConfig } from "../config.ts";
import { architecture, isCrosscoder } from "../arch/registry.ts";
import { isTopkFamily } from "../arch/architecture.ts";

export interface TrainConfig {
  steps: number;
  batch_size: number;
  seed: number;
  lr: number;
  /** Linear warmup from 0, then constant, then linear decay to 0 from `decay_start` (if set). */
  warmup_steps: number;
  decay_start: number | null;
  /** "constrained": decoder-parallel gradient removed, rows renormalised after each step (DL). */
  optimizer: "constrained_adam" | "adam";
  b1: number;
  b2: number;
  eps: number;
  /** Global-norm clip before the step (TopK family: 1.0), or null. */
  grad_clip: number | null;
  /** λ ramps linearly from 0 over these steps. */
  sparsity_warmup_steps: number;
  /** A feature is dead after this many tokens without firing (DL, sparsify: 10M). */
  dead_tokens: number;
  /** Resample features dead for resample_steps/2 steps every resample_steps steps (ReLU, Gated). */
  resample_steps: number | null;
  /** Ghost grads for dead features (ReLU SAEs; the corrected exp(pre-activation) form). */
  ghost_grads: boolean;
  /** BatchTopK θ: "dl" (0.999/0.001 from threshold_start_step, first update copies) or "saelens" (0.99/0.01 from step 0, θ₀ = 0). */
  threshold_ema: "dl" | "saelens";
  threshold_start_step: number;
  /** Anneal k linearly from k_start to cfg.k over these steps (0: off). */
  k_anneal_steps: number;
  k_start: number | null;
  /** Initialise b_dec to the geometric median of the first batch (TopK family, DL and MLSAE). */
  geometric_median_init: boolean;
  /** Scale inputs so that mean‖x‖² = 1 (estimated on the first batches) and fold the factor into the saved weights. */
  normalize_activations: boolean;
}

export type TrainConfigInput = Partial<TrainConfig>;

/** dictionary_learning's TopK rate: 2e-4 / √(F / 2^14). */
export const topkLr = (F: number): number => 2e-4 / Math.sqrt(F / 2 ** 14);

export function resolveTrainConfig(cfg: SaeConfig, t: TrainConfigInput = {}): TrainConfig {
  const a = architecture(cfg.arch), own = a.defaults;
  const topk = isTopkFamily(a);
  const cross = isCrosscoder(cfg);
  const steps = t.steps ?? 1000;
  const out: TrainConfig = {
    steps,
    batch_size: t.batch_size ?? 2048,
    seed: t.seed ?? 0,
    lr: t.lr ?? own.lr ?? (topk ? topkLr(cfg.d_sae) : 1e-3),
    warmup_steps: t.warmup_steps ?? Math.min(1000, Math.floor(steps / 10)),
    decay_start: t.decay_start === undefined ? Math.floor(steps * 0.8) : t.decay_start,
    optimizer: t.optimizer ?? own.optimizer?.(cfg) ?? "constrained_adam",
    b1: t.b1 ?? own.b1 ?? 0.9,
    b2: t.b2 ?? 0.999,
    eps: t.eps ?? 1e-8,
    grad_clip: t.grad_clip === undefined ? (topk ? 1 : null) : t.grad_clip,
    sparsity_warmup_steps: t.sparsity_warmup_steps ??
      (topk ? 0 : Math.min(2000, Math.floor(steps / 5))),
    dead_tokens: t.dead_tokens ?? 10_000_000,
    resample_steps: t.resample_steps ?? null,
    ghost_grads: t.ghost_grads ?? false,
    threshold_ema: t.threshold_ema ?? "dl",
    threshold_start_step: t.threshold_start_step ?? Math.min(1000, Math.floor(steps / 10)),
    k_anneal_steps: t.k_anneal_steps ?? 0,
    k_start: t.k_start ?? null,
    geometric_median_init: t.geometric_median_init ?? own.geometric_median_init ?? topk,
    normalize_activations: t.normalize_activations ?? true,
  };
  for (const f of ["steps", "batch_size"] as const) {
    if (!Number.isInteger(out[f]) || out[f] <= 0) {
      throw new ConfigError(`train config: ${f} must be a positive integer, got ${out[f]}`);
    }
  }
  if (!(out.lr > 0)) throw new ConfigError(`train config: lr must be > 0, got ${out.lr}`);
  if (
    out.decay_start !== null &&
    !(out.decay_start >= out.warmup_steps && out.decay_start < out.steps)
  ) {
    throw new ConfigError(
      `train config: need warmup_steps <= decay_start < steps, got ${out.warmup_steps}, ${out.decay_start}, ${out.steps}`,
    );
  }
  if (cross && out.optimizer === "constrained_adam") {
    throw new ConfigError(
      `train config: ${cfg.arch} trains with plain adam (decoder norms weight the code; a unit-norm constraint would fight it)`,
    );
  }
  if (cross && out.resample_steps) {
    throw new ConfigError(
      `train config: resampling is not implemented for ${cfg.arch}; dead features are handled by AuxK`,
    );
  }
  if (out.ghost_grads && !a.ghostGrads) {
    throw new ConfigError(`train config: ghost_grads applies to relu SAEs, not ${cfg.arch}`);
  }
  if (out.k_anneal_steps > 0 && !(out.k_start !== null && out.k_start >= cfg.k)) {
    throw new ConfigError(
      `train config: k annealing needs k_start >= k (${out.k_start} vs ${cfg.k})`,
    );
  }
  return out;
}
