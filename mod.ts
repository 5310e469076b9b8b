/**
 * sparsecoder: purely functional tensors with reverse-mode autodiff. Re-exports only.
 *
 * The root holds what loads no npm package: tensors, ops, backends, autodiff, optimizers and
 * schedules, random keys, saving and loading tensors (.npy, safetensors), synthetic ground-truth
 * data (`synthetic`) and the dictionary-learning API (`sae`). The namespaces that need an npm
 * package are separate entries, loaded only by those who import them:
 * `data/mod.ts` (apache-arrow), `testing/mod.ts` (fast-check), `server/mod.ts` (hono).
 */
export { memoryStats, Tensor } from "./tensor/tensor.ts";
export type { NestedArray } from "./tensor/tensor.ts";
export type { DataArray, DType } from "./tensor/dtype.ts";
export { promote } from "./tensor/dtype.ts";
export type { Shape } from "./tensor/shape.ts";
export { ShapeError } from "./tensor/shape.ts";
export type { Backend, View } from "./tensor/backend.ts";
export {
  availableBackends,
  backendInfo,
  findBackend,
  getBackend,
  registerBackend,
  useBackend,
} from "./tensor/registry.ts";
export {
  setThreads as setCpuThreads,
  threadsReady as cpuThreadsReady,
} from "./tensor/cpu/threads.ts";
export { dispose, disposeReplaced, keep, tidy } from "./tensor/scope.ts";
export {
  arange,
  eye,
  full,
  fullLike,
  ones,
  onesLike,
  scalar,
  tensor,
  zeros,
  zerosLike,
} from "./tensor/ops/create.ts";
export type { CreateOptions, NestedNumbers, TensorLike } from "./tensor/ops/create.ts";
export * from "./tensor/ops/elementwise.ts";
export * from "./tensor/ops/reduce.ts";
export * from "./tensor/ops/shape.ts";
export * from "./tensor/ops/index.ts";
export * from "./tensor/ops/linalg.ts";
export * from "./tensor/ops/sparse.ts";
export { toBackend } from "./tensor/ops/transfer.ts";
export * as random from "./tensor/random.ts";
export { PRNGKey } from "./tensor/random.ts";
export {
  cudaMemoryStats,
  cudaReleaseCached,
  cudaSynchronize,
  setCudaMatmulPrecision,
} from "./tensor/cuda/backend.ts";
export { cudaUnavailableReason } from "./tensor/cuda/runtime.ts";
export { cpuMatmulPrecision, setCpuMatmulPrecision } from "./tensor/cpu/matmul_precision.ts";
export type { CpuMatmulPrecision, CpuPrecisionStatus } from "./tensor/cpu/matmul_precision.ts";
export { initWebGPU, selectBackend } from "./tensor/webgpu/mod.ts";
export type { WebGPUBackend } from "./tensor/webgpu/mod.ts";
export { customVjp, grad, valueAndGrad, vjp } from "./autodiff/grad.ts";
export type { GradOptions } from "./autodiff/grad.ts";
export {
  activation,
  causalSoftmax,
  crossEntropy,
  rowNorm,
  squaredError,
} from "./autodiff/fused_ops.ts";
export type { CrossEntropyOptions, RowNormTaps } from "./autodiff/fused_ops.ts";
export { checkGrads, numericalGrad } from "./autodiff/check.ts";
export type { CheckGradsOptions } from "./autodiff/check.ts";
export * from "./autodiff/tree.ts";
export * from "./autodiff/optim.ts";
export * from "./autodiff/schedule.ts";
export { loadNpy, NpyError, type NpyOptions, saveNpy } from "./data/npy.ts";
export { loadSafetensors, SafetensorsError, saveSafetensors } from "./data/safetensors.ts";
export * as synthetic from "./data/synthetic.ts";
export * as sae from "./sae/mod.ts";
