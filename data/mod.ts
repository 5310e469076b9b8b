/** Activation data and foreign formats (issue 5), re-exported by ../mod.ts as `data`. Re-exports only. */
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
