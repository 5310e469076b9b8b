/**
 * Language models from Hugging Face checkpoints (GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Gemma-2) as
 * pure functions with TransformerLens's hook points. Re-exports only; reached as `lm` from the
 * `sparsecoder/data` entry.
 */
export {
  FAMILIES,
  type Family,
  forward,
  hookNames,
  type LanguageModel,
  loadModel,
  type ModelInfo,
  modelInfo,
  readModelType,
  runWithCache,
  type RunWithCacheOptions,
  runWithHooks,
} from "./model.ts";
export type { ForwardOptions, HookFn, Tokens } from "./common.ts";
export { processingSteps, processWeights, type ProcessWeightsOptions } from "./process_weights.ts";
export { LmConfigError } from "./config.ts";
export { LmLoadError } from "./load.ts";
export { runInBatches } from "./commands.ts";
export {
  HarvestError,
  type HarvestResult,
  type HarvestStoreOptions,
  harvestToStore,
} from "./harvest_store.ts";
