/** The dictionary-learning API, re-exported by ../mod.ts as `sae`. Re-exports only. */
export * from "./config.ts";
export * from "./train/config.ts";
export type * from "./arch/architecture.ts";
export * from "./arch/registry.ts";
export * from "./params.ts";
export * from "./code.ts";
export * from "./arch/losses.ts";
export {
  batchTopkEncode,
  preActivations,
  sparseDecode,
  sparseEncoder,
  topkEncode,
} from "./arch/topk_encode.ts";
export type { TopKCode } from "./arch/topk_encode.ts";
export { jumpRelu, jumpStep } from "./arch/jumprelu.ts";
export { layerFvu, standardize } from "./arch/mlsae.ts";
export { geometricMedian } from "./train/geometric_median.ts";
export { ghostLoss } from "./train/ghost.ts";
export * from "./train/step.ts";
export { isSet as thresholdSet, type Threshold } from "./threshold.ts";
export * from "./train/driver.ts";
// Where batches come from lives in data/; re-exported here, where training uses it.
export * from "../data/sources.ts";
export * from "./train/checkpoint.ts";
export * from "./io/saelens.ts";
export * from "./io/dictionary_formats.ts";
export { convertPath, formatInspection, inspectPath } from "./io/tools.ts";
export type { ConvertOptions, ConvertResult, InspectOptions } from "./io/tools.ts";
export * from "./eval/metrics.ts";
export * from "./eval/splice.ts";
export * from "./eval/downstream.ts";
export * from "./crosscoder/config.ts";
export * from "./crosscoder/crosscoder.ts";
export { batchTopkCrosscoder, scaledBatchTopkSelect } from "./crosscoder/batchtopk_crosscoder.ts";
export { dfc } from "./crosscoder/dfc.ts";
export * from "./crosscoder/partition.ts";
export * from "./crosscoder/grad_mask.ts";
export * from "./crosscoder/io.ts";
export * from "./crosscoder/eval.ts";
export * from "./crosscoder/diffing.ts";
export { pairedData } from "./crosscoder/paired_source.ts";
export * as scae from "./scae/mod.ts";
