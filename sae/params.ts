/** Parameter records (SAELens tensor names and shapes) and their initialisation. */
import type { Tensor } from "../tensor/tensor.ts";
import type { PRNGKey } from "../tensor/random.ts";
import * as random from "../tensor/random.ts";
import { full, zeros } from "../tensor/ops/create.ts";
import { div, mul } from "../tensor/ops/elementwise.ts";
import { norm } from "../tensor/ops/reduce.ts";
import { contiguous, transpose } from "../tensor/ops/shape.ts";
import type { SaeConfig } from "./config.ts";
import { fusedUnitRows } from "../tensor/fused.ts";

/** W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc [d_sae], b_dec [d_out], plus per-architecture extras. */
export interface SaeParams {
  W_enc: Tensor;
  W_dec: Tensor;
  b_dec: Tensor;
  /** Absent for Gated SAEs, whose gate and magnitude paths have their own biases. */
  b_enc?: Tensor;
  /** JumpReLU: per-feature threshold θ [d_sae]. */
  threshold?: Tensor;
  /** Gated: gate bias, magnitude bias and log magnitude scale [d_sae]. */
  b_gate?: Tensor;
  b_mag?: Tensor;
  r_mag?: Tensor;
}

/** Rows scaled to unit L2 norm (decoder directions); one fused pass where the backend has it. */
export function unitRows(w: Tensor): Tensor {
  return fusedUnitRows(w) ?? div(w, norm(w, -1, { keepdims: true }));
}

/**
 * dictionary_learning's initialisation: random unit-norm decoder rows (scaled by 0.1 for the
 * L1-trained ReLU SAE), the encoder their transpose, zero biases. Transcoders, whose encoder reads
 * another space, get an independent unit-norm encoder.
 */
export function initParams(key: PRNGKey, cfg: SaeConfig): SaeParams {
  const [kd, ke] = random.split(key);
  const { d_in, d_sae, d_out, arch } = cfg;
  const scale = arch === "relu" ? 0.1 : 1;
  const W_dec = mul(unitRows(random.normal(kd, [d_sae, d_out])), scale);
  const W_enc = d_out === d_in && arch !== "transcoder"
    ? contiguous(transpose(W_dec))
    : contiguous(transpose(mul(unitRows(random.normal(ke, [d_sae, d_in])), scale)));
  const p: SaeParams = { W_enc, W_dec, b_dec: zeros([d_out]) };
  if (arch === "gated") {
    p.b_gate = zeros([d_sae]);
    p.b_mag = zeros([d_sae]);
    p.r_mag = zeros([d_sae]);
  } else p.b_enc = zeros([d_sae]);
  if (arch === "jumprelu") p.threshold = full([d_sae], cfg.jumprelu_init_threshold);
  return p;
}
