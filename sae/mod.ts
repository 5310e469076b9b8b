/** The dictionary-learning API, re-exported by ../mod.ts as `sae`. Re-exports only. */
export * from "./config.ts";
export * from "./train_config.ts";
export type * from "./architecture.ts";
export { architecture, ARCHITECTURES } from "./architectures.ts";
export * from "./params.ts";
export * from "./code.ts";
export * from "./losses.ts";
export {
  batchTopkEncode,
  preActivations,
  sparseDecode,
  sparseEncoder,
  topkEncode,
} from "./topk_encode.ts";
export type { TopKCode } from "./topk_encode.ts";
export { jumpRelu, jumpStep } from "./jumprelu.ts";
export { layerFvu, standardize } from "./mlsae.ts";
export { geometricMedian } from "./geometric_median.ts";
export { ghostLoss } from "./ghost.ts";
export * from "./train.ts";
export { isSet as thresholdSet, type Threshold } from "./threshold.ts";
export * from "./driver.ts";
// Where batches come from lives in data/; re-exported here, where training uses it.
export * from "../data/sources.ts";
export * from "./checkpoint.ts";
export * from "./io.ts";
export * from "./io/dictionary_formats.ts";
export { convertPath } from "./io/convert.ts";
export { formatInspection, inspectPath } from "./io/inspect.ts";
export * from "./metrics.ts";
export * from "./crosscoder_config.ts";
export * from "./crosscoder.ts";
export { batchTopkCrosscoder, scaledBatchTopkSelect } from "./batchtopk_crosscoder.ts";
export { dfc } from "./dfc.ts";
export * from "./partition.ts";
export * from "./grad_mask.ts";
export * from "./crosscoder_io.ts";
export * from "./crosscoder_eval.ts";
export * from "./diffing.ts";
export { pairedData } from "./paired_source.ts";
