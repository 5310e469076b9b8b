/**
 * Activation data and file formats: the `sparsecoder/data` entry (loads apache-arrow, so the root
 * mod.ts does not re-export it). Re-exports only.
 */
export * from "./arrow_store.ts";
export { ArrowIpcError } from "./arrow_ipc.ts";
export * from "./shuffle_buffer.ts";
export * from "./welford.ts";
export * from "./row_stream.ts";
export * from "./formats.ts";
export * from "./sources.ts";
export * from "./memmap_cache.ts";
export * from "./saelens_cache.ts";
export { loadTorch, parseTorch, stateDictOf, TorchFileError, torchTensor } from "./torch_pt.ts";
export type { TorchTensorRef } from "./torch_pt.ts";
export { PickleError, unpickle } from "./pickle.ts";
export type { PyValue, UnpickleOptions } from "./pickle.ts";
export { readZip, ZipError } from "./zip.ts";
export { decodeF8 } from "./float8.ts";
export * as synthetic from "./synthetic.ts";
export { loadNpy, NpyError, type NpyOptions, parseNpy, saveNpy, serializeNpy } from "./npy.ts";
export {
  loadSafetensors,
  type ParsedSafetensors,
  parseSafetensors,
  type SafetensorsEntry,
  SafetensorsError,
  saveSafetensors,
  serializeSafetensors,
  toTensor,
  type ToTensorOptions,
} from "./safetensors.ts";
export { writeFileAtomic, writeJsonAtomic } from "./atomic.ts";
export * as lm from "./lm/mod.ts";
export * as text from "./text/mod.ts";
