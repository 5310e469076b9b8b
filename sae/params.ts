/** Parameter records (SAELens tensor names and shapes) and their initialisation. */
import type { Tensor } from "../tensor/tensor.ts";
import type { PRNGKey } from "../tensor/random.ts";
import * as random from "../tensor/random.ts";
import { zeros } from "../tensor/ops/create.ts";
import { div, mul } from "../tensor/ops/elementwise.ts";
import { norm } from "../tensor/ops/reduce.ts";
import { contiguous, transpose } from "../tensor/ops/shape.ts";
import type { SaeConfig } from "./config.ts";
import { tidy } from "../tensor/scope.ts";
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

/** What an architecture changes in the common initialisation. */
export interface InitOptions {
  /** Decoder rows' norm (dictionary_learning scales its L1-trained ReLU SAE by 0.1). */
  scale?: number;
  /** Draw the encoder independently instead of as the decoder's transpose (transcoders). */
  ownEncoder?: boolean;
  /** The encoder's own parameters (default b_enc [d_sae] zeros). */
  own?: (cfg: SaeConfig) => Partial<SaeParams>;
}

/**
 * dictionary_learning's initialisation: random unit-norm decoder rows × scale, the encoder their
 * transpose (independent and unit-norm when it reads another space), zero biases.
 */
export function initParams(key: PRNGKey, cfg: SaeConfig, o: InitOptions = {}): SaeParams {
  const [kd, ke] = random.split(key);
  const { d_in, d_sae, d_out } = cfg;
  const scale = o.scale ?? 1;
  // The random draws and unscaled rows are freed here, not left to the GC.
  return tidy(() => {
    const W_dec = mul(unitRows(random.normal(kd, [d_sae, d_out])), scale);
    const W_enc = d_out === d_in && !o.ownEncoder
      ? contiguous(transpose(W_dec))
      : contiguous(transpose(mul(unitRows(random.normal(ke, [d_sae, d_in])), scale)));
    const own = o.own ? o.own(cfg) : { b_enc: zeros([d_sae]) };
    return { W_enc, W_dec, b_dec: zeros([d_out]), ...own };
  });
}
