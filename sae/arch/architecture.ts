/** The interface every dictionary architecture implements, as pure functions over its params. */
import type { Tensor } from "../../tensor/tensor.ts";
import type { Code } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import type { PRNGKey } from "../../tensor/random.ts";
import type { Threshold } from "../threshold.ts";
import type { Batch } from "../../data/sources.ts";

export type { Batch } from "../../data/sources.ts";

/** Training state the loss reads. */
export interface LossContext {
  /** Sparsity warmup factor s(t) ∈ [0, 1] multiplying λ (default 1). */
  l1Scale?: number;
  /** Dead features (bool [d_sae]) and their count, for AuxK; none dead means no AuxK term. */
  dead?: Tensor | null;
  numDead?: number;
  /** Add the ghost-grads term for dead features (ReLU SAEs). */
  ghost?: boolean;
}

/** Loss terms returned beside the total (all scalars but `code` and `xhat`). */
export interface LossAux {
  recon: Tensor;
  sparsity?: Tensor;
  auxk?: Tensor;
  gatedAux?: Tensor;
  ghost?: Tensor;
  code: Code;
  xhat: Tensor;
  /**
   * The kept entries' values as the inference threshold compares them (crosscoders: f·w); default
   * the code's values. [L, n] for a per-input θ (row l: input l's kept entries).
   */
  thresholdValues?: Tensor;
}

export interface Architecture {
  /** Fresh parameters (dictionary_learning's initialisation, see params.ts). */
  init(key: PRNGKey, cfg: SaeConfig): SaeParams;
  /** The training-time code (BatchTopK selects over the batch). */
  encode(p: SaeParams, x: Tensor, cfg: SaeConfig): Code;
  /** The inference code; BatchTopK and Matryoshka use the learned threshold θ instead. */
  encodeInference(p: SaeParams, x: Tensor, cfg: SaeConfig, threshold?: Threshold): Code;
  decode(p: SaeParams, code: Code, cfg: SaeConfig): Tensor;
  loss(p: SaeParams, batch: Batch, cfg: SaeConfig, ctx: LossContext): [Tensor, LossAux];
}
