/** Training batches from the paired synthetic generator (several "models" sharing most features): x [B, models, d]. */
import type { PairedSource } from "../../data/synthetic.ts";
import type { DataSource } from "../../data/sources.ts";

export function pairedData(src: PairedSource): DataSource {
  const c = src.config;
  return {
    batch: (i, size) => ({ x: src.batch(i, size).x }),
    describe: () =>
      `synthetic paired: ${c.models} models, d=${c.d}, ${c.nFeatures} true features (${c.exclusive} exclusive per model), seed ${c.seed}`,
    width: c.d,
  };
}
