/**
 * Dedicated-feature crosscoder (DFC): a BatchTopK CrossCoder whose features are partitioned
 * (partition.ts) into one exclusive set per input and a shared set. Forbidden entries are zero at
 * initialisation (initCrosscoder masks them), the training step masks every gradient before the
 * optimizer (grad_mask.ts), and so Adam's moments and the weights of those entries stay exactly
 * zero. The shared b_enc and the per-input b_dec are not masked.
 */
import type { Architecture } from "../arch/architecture.ts";
import type { SaeConfig } from "../config.ts";
import { batchTopkCrosscoder } from "./batchtopk_crosscoder.ts";
import { initCrosscoder } from "./crosscoder.ts";
import { resolveCrosscoderFields } from "./config.ts";
import { makePartition, type Partition } from "./partition.ts";

const partition = (cfg: SaeConfig): Partition => makePartition(cfg.d_sae, cfg.dfc_shares!);

export const dfc: Architecture = {
  ...batchTopkCrosscoder,
  saelensName: "dfc",
  defaults: {
    ...batchTopkCrosscoder.defaults,
    reference: "dfc_learning's layout and sizes (exclusive shares 0.05 each)",
  },
  resolve: (c, fail) => resolveCrosscoderFields(c, fail, { partitioned: true }),
  partition,
  init: (key, cfg) => initCrosscoder(key, cfg, { partition: partition(cfg) }),
};
