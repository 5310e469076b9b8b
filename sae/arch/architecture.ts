/**
 * The interface every dictionary architecture implements: pure functions over its params, and a
 * descriptor of the facts the rest of the code asks about it (sparsity kind, threshold use, input
 * layout, parameter shapes, defaults and the reference they follow). Adding an architecture means
 * one file exporting such a record and one entry in registry.ts.
 */
import type { BatchShare } from "./topk_encode.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { Code } from "../code.ts";
import type { SaeConfig, SaeConfigInput } from "../config.ts";
import type { SaeParams } from "../params.ts";
import type { PRNGKey } from "../../tensor/random.ts";
import type { Threshold } from "../threshold.ts";
import type { Batch } from "../../data/sources.ts";
import type { Partition } from "../crosscoder/partition.ts";

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
  /**
   * Data parallel: the batch is this rank's share of the global batch, and a batch-level top-k
   * (BatchTopK, Matryoshka, BatchTopK crosscoders) selects over every rank's share.
   */
  batchShare?: BatchShare;
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

/** How the code is made sparse. */
export type SparsityKind = "l1" | "gated" | "jumprelu" | "topk" | "batchtopk";

/**
 * What inference compares activations with: nothing ("none"), a θ learned during training from
 * the batch top-k's kept values and saved in cfg.json ("learned"), or a per-feature parameter
 * tensor ("parameter", JumpReLU).
 */
export type ThresholdUse = "none" | "learned" | "parameter";

/**
 * What one example of a batch holds: one vector [B, d] ("rows"); L layers [B, L, d], each a
 * separate row of one dictionary ("layers", MLSAE); or L inputs [B, L, d] sharing one code
 * ("inputs", crosscoders).
 */
export type InputLayout = "rows" | "layers" | "inputs";

/**
 * Defaults that differ by architecture (unset: the common default, see resolveConfig and
 * resolveTrainConfig), with the public implementation they follow.
 */
export interface ArchDefaults {
  /** The reference the defaults follow (see the README's table of references). */
  reference: string;
  l1_coefficient?: number;
  apply_b_dec_to_input?: boolean;
  /** Nested group sizes for a d_sae (Matryoshka). */
  matryoshka_groups?: (d_sae: number) => number[];
  lr?: number;
  b1?: number;
  optimizer?: (cfg: SaeConfig) => "constrained_adam" | "adam";
  geometric_median_init?: boolean;
}

/** The facts about an architecture that code outside its file asks. */
export interface ArchDescriptor {
  sparsity: SparsityKind;
  thresholdUse: ThresholdUse;
  input: InputLayout;
  /** Batches must carry targets y (transcoders: x̂ is compared with y, never with x). */
  needsTargets: boolean;
  /** Features form nested groups (matryoshka_groups applies). */
  nestedGroups: boolean;
  /** Ghost grads apply (ReLU SAEs). */
  ghostGrads: boolean;
  /** The "architecture" written to SAELens' cfg.json. */
  saelensName: string;
  defaults: ArchDefaults;
  /** Tensors of the parameter record and their shapes. */
  paramShapes(cfg: SaeConfig): Record<string, number[]>;
  /** What the reconstruction is compared with, [rows, d_out]. */
  target(batch: Batch, cfg: SaeConfig): Tensor;
  /** Architecture-specific config fields, with their defaults; errors go through `fail`. */
  resolve?(c: SaeConfigInput, fail: (msg: string) => never): Partial<SaeConfig>;
  /** Checks of a resolved config beyond the common ones. */
  check?(cfg: SaeConfig, fail: (msg: string) => never): void;
  /** The feature partition a config describes (DFC). */
  partition?(cfg: SaeConfig): Partition;
}

/** TopK family: k active features per row (BatchTopK: k·B per batch), AuxK for dead features. */
export const isTopkFamily = (a: ArchDescriptor): boolean =>
  a.sparsity === "topk" || a.sparsity === "batchtopk";

/** Crosscoders: one code over L inputs, per-input encoder/decoder slices. */
export const readsInputs = (a: ArchDescriptor): boolean => a.input === "inputs";

/** The common training target: y where the batch has it, else x. */
export const targetOrInput = (b: Batch): Tensor => b.y ?? b.x;

/**
 * SAELens' tensors: W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_dec [d_out], then the encoder's
 * own (default b_enc [d_sae]).
 */
export const saeShapes = (
  cfg: SaeConfig,
  own: Record<string, number[]> = { b_enc: [cfg.d_sae] },
): Record<string, number[]> => ({
  W_enc: [cfg.d_in, cfg.d_sae],
  W_dec: [cfg.d_sae, cfg.d_out],
  b_dec: [cfg.d_out],
  ...own,
});

export interface Architecture extends ArchDescriptor {
  /** Fresh parameters (dictionary_learning's initialisation, see params.ts). */
  init(key: PRNGKey, cfg: SaeConfig): SaeParams;
  /** The training-time code (BatchTopK selects over the batch). */
  encode(p: SaeParams, x: Tensor, cfg: SaeConfig): Code;
  /** The inference code; BatchTopK and Matryoshka use the learned threshold θ instead. */
  encodeInference(p: SaeParams, x: Tensor, cfg: SaeConfig, threshold?: Threshold): Code;
  decode(p: SaeParams, code: Code, cfg: SaeConfig): Tensor;
  loss(p: SaeParams, batch: Batch, cfg: SaeConfig, ctx: LossContext): [Tensor, LossAux];
}
