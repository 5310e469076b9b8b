/** sparsecoder: purely functional tensors with reverse-mode autodiff. Re-exports only. */
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
export * from "./tensor/ops/create.ts";
export * from "./tensor/ops/elementwise.ts";
export * from "./tensor/ops/reduce.ts";
export * from "./tensor/ops/shape.ts";
export * from "./tensor/ops/index.ts";
export * from "./tensor/ops/linalg.ts";
export * from "./tensor/ops/sparse.ts";
export { customVjp, grad, valueAndGrad, vjp } from "./autodiff/grad.ts";
export { checkGrads, numericalGrad } from "./autodiff/check.ts";
export type { CheckGradsOptions } from "./autodiff/check.ts";
export type { GradOptions } from "./autodiff/grad.ts";
export * from "./autodiff/tree.ts";
export * from "./autodiff/optim.ts";
export * from "./autodiff/schedule.ts";
export * as random from "./tensor/random.ts";
export { PRNGKey } from "./tensor/random.ts";
export * from "./data/atomic.ts";
export * from "./data/safetensors.ts";
export * from "./data/npy.ts";
export * as synthetic from "./data/synthetic.ts";
export * as data from "./data/mod.ts";
export * as sae from "./sae/mod.ts";
export * as testing from "./testing/mod.ts";
export {
  cudaMemoryStats,
  cudaReleaseCached,
  cudaSynchronize,
  setCudaMatmulPrecision,
} from "./tensor/cuda/backend.ts";
export { cudaUnavailableReason } from "./tensor/cuda/runtime.ts";
export { initWebGPU, selectBackend } from "./tensor/webgpu/mod.ts";
export type { WebGPUBackend } from "./tensor/webgpu/mod.ts";
export { toBackend } from "./tensor/ops/transfer.ts";
