/**
 * Dictionary configuration: one record for every architecture, with per-architecture defaults
 * taken from the architecture's descriptor. Field names are cfg.json's (snake_case).
 */

import type { CrosscoderFields } from "./crosscoder/config.ts";
import { architecture, type ArchName, ARCHS } from "./arch/registry.ts";
import { isTopkFamily } from "./arch/architecture.ts";

export type { ArchName };

/** Crosscoders (crosscoder/config.ts) add their fields; the other architectures leave them unset. */
export interface SaeConfig extends Partial<CrosscoderFields> {
  arch: ArchName;
  d_in: number;
  d_sae: number;
  /** Output width (transcoders decode to another space); d_in otherwise. */
  d_out: number;
  /** Active features per row (TopK family; BatchTopK keeps k·B per batch). */
  k: number;
  /** λ of the sparsity penalty (ReLU, Gated, JumpReLU). */
  l1_coefficient: number;
  /** ReLU: "plain" λ·mean‖f‖₁ (dictionary_learning "standard") or "decoder_norm" λ·mean Σ fᵢ‖W_dec[i]‖ (SAELens, DL April update). */
  l1_variant: "plain" | "decoder_norm";
  /** Subtract b_dec from the input before encoding (false for JumpReLU after DL, and transcoders). */
  apply_b_dec_to_input: boolean;
  /** JumpReLU: straight-through bandwidth ε (DL 0.001, SAELens 0.05), initial threshold, target L0. */
  jumprelu_bandwidth: number;
  jumprelu_init_threshold: number;
  jumprelu_target_l0: number;
  /** Matryoshka: sizes of the nested feature groups (sum d_sae) and their loss weights. */
  matryoshka_groups: number[];
  matryoshka_weights: number[];
  /**
   * AuxK (TopK family): "dl" (dictionary_learning, default: post-ReLU dead code, bias-free decode,
   * normalised by the residual's variance, α = 1/32) or "saelens" (pre-activation code, decoded
   * with b_dec, scaled by min(#dead/k_aux, 1), not normalised, α = 1); k_aux defaults to d_in/2.
   */
  auxk_variant: "dl" | "saelens";
  auxk_alpha: number;
  auxk_k: number;
  /** Unknown fields of a loaded cfg.json, kept so a round trip loses nothing. */
  extra: Record<string, unknown>;
}

export type SaeConfigInput = Partial<SaeConfig> & Pick<SaeConfig, "arch" | "d_in" | "d_sae">;

export class ConfigError extends Error {
  override name = "ConfigError";
}

function posInt(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(
      `sae config: ${field} must be a positive integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Fill defaults (the architecture's descriptor names the reference each follows) and validate.
 */
export function resolveConfig(c: SaeConfigInput): SaeConfig {
  if (!ARCHS.includes(c.arch)) {
    throw new ConfigError(
      `sae config: arch must be one of ${ARCHS.join(", ")}, got ${JSON.stringify(c.arch)}`,
    );
  }
  const a = architecture(c.arch), own = a.defaults;
  const fail = (m: string): never => {
    throw new ConfigError(m);
  };
  const d_in = posInt("d_in", c.d_in), d_sae = posInt("d_sae", c.d_sae);
  const topkFamily = isTopkFamily(a);
  const k = c.k ?? (topkFamily ? Math.min(32, d_sae) : 0);
  if (topkFamily && (posInt("k", k) > d_sae)) {
    throw new ConfigError(`sae config: k = ${k} exceeds d_sae = ${d_sae}`);
  }
  const groups = c.matryoshka_groups ?? own.matryoshka_groups?.(d_sae) ?? [];
  const weights = c.matryoshka_weights ?? groups.map(() => 1 / Math.max(groups.length, 1));
  const cfg: SaeConfig = {
    arch: c.arch,
    d_in,
    d_sae,
    d_out: posInt("d_out", c.d_out ?? d_in),
    k,
    l1_coefficient: c.l1_coefficient ?? own.l1_coefficient ?? 0.1,
    l1_variant: c.l1_variant ?? "plain",
    apply_b_dec_to_input: c.apply_b_dec_to_input ?? own.apply_b_dec_to_input ?? true,
    jumprelu_bandwidth: c.jumprelu_bandwidth ?? 0.001,
    jumprelu_init_threshold: c.jumprelu_init_threshold ?? 0.001,
    jumprelu_target_l0: c.jumprelu_target_l0 ?? 20,
    matryoshka_groups: groups,
    matryoshka_weights: weights,
    auxk_variant: c.auxk_variant ?? "dl",
    auxk_alpha: c.auxk_alpha ?? (c.auxk_variant === "saelens" ? 1 : 1 / 32),
    auxk_k: c.auxk_k ?? Math.max(1, Math.floor(d_in / 2)),
    extra: c.extra ?? {},
    ...(a.resolve ? a.resolve(c, fail) : {}),
  };
  a.check?.(cfg, fail);
  if (weights.length !== groups.length) {
    throw new ConfigError(
      `sae config: matryoshka_weights has ${weights.length} entries for ${groups.length} groups`,
    );
  }
  if (cfg.auxk_variant !== "dl" && cfg.auxk_variant !== "saelens") {
    throw new ConfigError(
      `sae config: auxk_variant must be "dl" or "saelens", got ${JSON.stringify(cfg.auxk_variant)}`,
    );
  }
  if (!(cfg.jumprelu_bandwidth > 0)) {
    throw new ConfigError(
      `sae config: jumprelu_bandwidth must be > 0, got ${cfg.jumprelu_bandwidth}`,
    );
  }
  return cfg;
}
