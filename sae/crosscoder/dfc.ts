/**
 * Dedicated-feature crosscoder (DFC): a BatchTopK CrossCoder whose features are partitioned
 * (partition.ts) into one exclusive set per input and a shared set. Forbidden entries are zero at
 * initialisation (initCrosscoder masks them), the training step masks every gradient before the
 * optimizer (grad_mask.ts), and so Adam's moments and the weights of those entries stay exactly
 * zero. The shared b_enc and the per-input b_dec are not masked.
 */
import type { Architecture } from "../arch/architecture.ts";
import { batchTopkCrosscoder } from "./batchtopk_crosscoder.ts";

export const dfc: Architecture = { ...batchTopkCrosscoder };
export { dfcPartition } from "./config.ts";
