/**
 * Every architecture by name, and the questions the rest of the code asks of a config's
 * architecture, answered from its descriptor. Architecture files (and what they import) must not
 * import this module or take values from ../config.ts, which reaches them through here: the
 * registry's table reads each architecture's record when it loads.
 */
import type { Architecture } from "./architecture.ts";
import { readsInputs } from "./architecture.ts";
import type { SaeConfig } from "../config.ts";
import type { Partition } from "../crosscoder/partition.ts";
import { reluSae } from "./relu.ts";
import { gatedSae } from "./gated.ts";
import { topkSae } from "./topk.ts";
import { batchTopkSae } from "./batchtopk.ts";
import { jumpReluSae } from "./jumprelu.ts";
import { matryoshkaSae } from "./matryoshka.ts";
import { transcoder } from "./transcoder.ts";
import { mlsae } from "./mlsae.ts";
import { crosscoder } from "../crosscoder/crosscoder.ts";
import { batchTopkCrosscoder } from "../crosscoder/batchtopk_crosscoder.ts";
import { dfc } from "../crosscoder/dfc.ts";

export const ARCHITECTURES = {
  relu: reluSae,
  gated: gatedSae,
  topk: topkSae,
  batchtopk: batchTopkSae,
  jumprelu: jumpReluSae,
  matryoshka: matryoshkaSae,
  transcoder,
  mlsae,
  crosscoder,
  "batchtopk-crosscoder": batchTopkCrosscoder,
  dfc,
} satisfies Record<string, Architecture>;

export type ArchName = keyof typeof ARCHITECTURES;
export const ARCHS = Object.keys(ARCHITECTURES) as readonly ArchName[];

export function architecture(name: ArchName): Architecture {
  const a: Architecture | undefined = ARCHITECTURES[name];
  if (!a) {
    throw new TypeError(
      `unknown architecture ${JSON.stringify(name)}; known: ${
        Object.keys(ARCHITECTURES).join(", ")
      }`,
    );
  }
  return a;
}

/** The crosscoder family: architectures whose batches hold L inputs sharing one code. */
export const CROSSCODER_ARCHS: readonly ArchName[] = ARCHS.filter((a) =>
  readsInputs(ARCHITECTURES[a])
);
export const isCrosscoderArch = (arch: string): boolean =>
  (CROSSCODER_ARCHS as readonly string[]).includes(arch);
export const isCrosscoder = (cfg: Pick<SaeConfig, "arch">): boolean => isCrosscoderArch(cfg.arch);

/** Architectures whose inference uses a tracked threshold θ (saved beside the weights). */
export const usesThreshold = (cfg: Pick<SaeConfig, "arch">): boolean =>
  architecture(cfg.arch).thresholdUse === "learned";

/**
 * Whether θ is one value per input: a learned θ of a crosscoder whose "decoupled" code norm
 * selects each input's entries on their own.
 */
export const perInputThreshold = (cfg: Pick<SaeConfig, "arch" | "code_norm">): boolean =>
  usesThreshold(cfg) && isCrosscoder(cfg) && cfg.code_norm === "decoupled";

/** The number of θ values of a per-input θ, or null for a single θ. */
export const thresholdInputs = (cfg: SaeConfig): number | null =>
  perInputThreshold(cfg) ? cfg.n_inputs ?? 1 : null;

/** The feature partition a config describes (DFC; null for the other architectures). */
export function dfcPartition(cfg: SaeConfig): Partition | null {
  return architecture(cfg.arch).partition?.(cfg) ?? null;
}
