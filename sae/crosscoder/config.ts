/** Configuration fields of the crosscoder family (crosscoder, batchtopk-crosscoder, dfc) and their defaults. */
import type { SaeConfigInput } from "../config.ts";
import { makePartition, PartitionError } from "./partition.ts";

/**
 * Weight w_i of feature i in the sparsity penalty and the BatchTopK selection (crosscoder_learning's
 * CodeNormalization): "crosscoder" Σ_l ‖W_dec[l,i]‖ (default), "sae" √(Σ_l ‖W_dec[l,i]‖²),
 * "mixed" α_sae·sae + α_cc·crosscoder (1.0 and 0.1), "none" 1, "decoupled" per-input weights
 * ‖W_dec[l,i]‖ — with one code shared by all inputs, as here, it sums to the "crosscoder" value.
 */
export type CodeNorm = "crosscoder" | "sae" | "mixed" | "none" | "decoupled";
export const CODE_NORMS: readonly CodeNorm[] = ["crosscoder", "sae", "mixed", "none", "decoupled"];

export interface CrosscoderFields {
  /** Number of inputs L (layers of one model, or one layer of L models). */
  n_inputs: number;
  code_norm: CodeNorm;
  code_norm_alpha_sae: number;
  code_norm_alpha_cc: number;
  /** "squared": mean Σ_{l,d}(x − x̂)² (dictionary_learning, SAELens; default); "unsquared": mean ‖x − x̂‖ over the flattened L·d vector (crosscoder_learning's default). */
  crosscoder_recon: "squared" | "unsquared";
  /** DFC: exclusive share p_l of each input (partition sizes floor(F·p_l)); default 0.05 each. */
  dfc_shares: number[];
}

/**
 * Defaults and validation; the thrower is config.ts's ConfigError (passed in: config.ts reaches the
 * architectures through the registry). `partitioned` (DFC): the shares must make a partition.
 */
export function resolveCrosscoderFields(
  c: SaeConfigInput,
  fail: (msg: string) => never,
  o: { partitioned?: boolean } = {},
): CrosscoderFields {
  const L = c.n_inputs ?? (c.dfc_shares ? c.dfc_shares.length : 2);
  if (!Number.isInteger(L) || L < 1) {
    fail(`sae config: n_inputs must be a positive integer, got ${JSON.stringify(c.n_inputs)}`);
  }
  const code_norm = c.code_norm ?? "crosscoder";
  if (!CODE_NORMS.includes(code_norm)) {
    fail(
      `sae config: code_norm must be one of ${CODE_NORMS.join(", ")}, got ${
        JSON.stringify(code_norm)
      }`,
    );
  }
  const recon = c.crosscoder_recon ?? "squared";
  if (recon !== "squared" && recon !== "unsquared") {
    fail(
      `sae config: crosscoder_recon must be "squared" or "unsquared", got ${JSON.stringify(recon)}`,
    );
  }
  const shares = c.dfc_shares ?? Array.from({ length: L }, () => 0.05);
  if (!Array.isArray(shares) || shares.length !== L) {
    fail(
      `sae config: dfc_shares must have one share per input (${L}), got ${JSON.stringify(shares)}`,
    );
  }
  if (o.partitioned) {
    try {
      makePartition(c.d_sae, shares);
    } catch (e) {
      if (e instanceof PartitionError) fail(`sae config: dfc_shares: ${e.message}`);
      throw e;
    }
  }
  if (c.apply_b_dec_to_input) {
    fail(
      `sae config: crosscoders encode x without subtracting b_dec (apply_b_dec_to_input must be false)`,
    );
  }
  return {
    n_inputs: L,
    code_norm,
    code_norm_alpha_sae: c.code_norm_alpha_sae ?? 1,
    code_norm_alpha_cc: c.code_norm_alpha_cc ?? 0.1,
    crosscoder_recon: recon,
    dfc_shares: shares,
  };
}
