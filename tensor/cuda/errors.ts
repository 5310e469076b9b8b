/**
 * Status codes of the CUDA libraries turned into errors that name the failing call. The tables
 * cover the codes we expect to meet; the driver's own cuGetErrorName is preferred when loaded.
 * Values are checked against cuda.h / library_types.h by tests/cuda_ffi.test.ts where gcc is.
 */

export type CudaLibrary = "driver" | "nvrtc" | "cublas" | "nccl";

export class CudaError extends Error {
  override name = "CudaError";
  constructor(readonly call: string, readonly code: number, readonly status: string, detail = "") {
    super(`${call} failed: ${status} (${code})${detail ? `: ${detail}` : ""}`);
  }
}

/** CUresult values (cuda.h). */
export const DRIVER_STATUS: Record<number, string> = {
  0: "CUDA_SUCCESS",
  1: "CUDA_ERROR_INVALID_VALUE",
  2: "CUDA_ERROR_OUT_OF_MEMORY",
  3: "CUDA_ERROR_NOT_INITIALIZED",
  4: "CUDA_ERROR_DEINITIALIZED",
  34: "CUDA_ERROR_STUB_LIBRARY",
  46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
  100: "CUDA_ERROR_NO_DEVICE",
  101: "CUDA_ERROR_INVALID_DEVICE",
  200: "CUDA_ERROR_INVALID_IMAGE",
  201: "CUDA_ERROR_INVALID_CONTEXT",
  209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
  218: "CUDA_ERROR_INVALID_PTX",
  222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
  300: "CUDA_ERROR_INVALID_SOURCE",
  400: "CUDA_ERROR_INVALID_HANDLE",
  500: "CUDA_ERROR_NOT_FOUND",
  600: "CUDA_ERROR_NOT_READY",
  700: "CUDA_ERROR_ILLEGAL_ADDRESS",
  701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
  702: "CUDA_ERROR_LAUNCH_TIMEOUT",
  719: "CUDA_ERROR_LAUNCH_FAILED",
  803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
  804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
  999: "CUDA_ERROR_UNKNOWN",
};

/** nvrtcResult values (nvrtc.h). */
export const NVRTC_STATUS: Record<number, string> = {
  0: "NVRTC_SUCCESS",
  1: "NVRTC_ERROR_OUT_OF_MEMORY",
  2: "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
  3: "NVRTC_ERROR_INVALID_INPUT",
  4: "NVRTC_ERROR_INVALID_PROGRAM",
  5: "NVRTC_ERROR_INVALID_OPTION",
  6: "NVRTC_ERROR_COMPILATION",
  7: "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
  11: "NVRTC_ERROR_INTERNAL_ERROR",
};

/** cublasStatus_t values (cublas_api.h). */
export const CUBLAS_STATUS: Record<number, string> = {
  0: "CUBLAS_STATUS_SUCCESS",
  1: "CUBLAS_STATUS_NOT_INITIALIZED",
  3: "CUBLAS_STATUS_ALLOC_FAILED",
  7: "CUBLAS_STATUS_INVALID_VALUE",
  8: "CUBLAS_STATUS_ARCH_MISMATCH",
  11: "CUBLAS_STATUS_MAPPING_ERROR",
  13: "CUBLAS_STATUS_EXECUTION_FAILED",
  14: "CUBLAS_STATUS_INTERNAL_ERROR",
  15: "CUBLAS_STATUS_NOT_SUPPORTED",
  16: "CUBLAS_STATUS_LICENSE_ERROR",
};

/** ncclResult_t values (nccl.h). */
export const NCCL_STATUS: Record<number, string> = {
  0: "ncclSuccess",
  1: "ncclUnhandledCudaError",
  2: "ncclSystemError",
  3: "ncclInternalError",
  4: "ncclInvalidArgument",
  5: "ncclInvalidUsage",
  6: "ncclRemoteError",
  7: "ncclInProgress",
};

const TABLES: Record<CudaLibrary, Record<number, string>> = {
  driver: DRIVER_STATUS,
  nvrtc: NVRTC_STATUS,
  cublas: CUBLAS_STATUS,
  nccl: NCCL_STATUS,
};

/** The symbolic name of a status code; `lookup` (the library's own, when loaded) wins. */
export function statusName(
  lib: CudaLibrary,
  code: number,
  lookup?: (code: number) => string | null,
): string {
  const own = lookup?.(code);
  return own || TABLES[lib][code] || `unknown ${lib} status`;
}

/**
 * A checker for one library: returns nothing on success (status 0) and throws a CudaError naming
 * the call otherwise. `detail` adds context (sizes, the compile log) only when it fails.
 */
export function makeCheck(lib: CudaLibrary, lookup?: (code: number) => string | null) {
  return (call: string, status: unknown, detail?: () => string): void => {
    const code = Number(status);
    if (code === 0) return;
    throw new CudaError(call, code, statusName(lib, code, lookup), detail ? detail() : "");
  };
}
