/** Every architecture by name. */
import type { Architecture } from "./architecture.ts";
import type { ArchName } from "../config.ts";
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

export const ARCHITECTURES: Record<ArchName, Architecture> = {
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
};

export function architecture(name: ArchName): Architecture {
  const a = ARCHITECTURES[name];
  if (!a) {
    throw new TypeError(
      `unknown architecture ${JSON.stringify(name)}; known: ${
        Object.keys(ARCHITECTURES).join(", ")
      }`,
    );
  }
  return a;
}
