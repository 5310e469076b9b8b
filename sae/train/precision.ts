/**
 * `--matmul-precision`: how a run's large matmuls are computed, on whichever backend it runs. The
 * CPU has f32 and bf16 (OpenBLAS's sbgemm or the native kernels' AMX tiles, falling back to f32
 * with the reason where neither can run); CUDA has f32, tf32 and bf16; WebGPU computes in f32 only.
 */
import { setCpuMatmulPrecision } from "../../tensor/cpu/matmul_precision.ts";
import { setCudaMatmulPrecision } from "../../tensor/cuda/backend.ts";

export const MATMUL_PRECISIONS = ["f32", "tf32", "bf16"] as const;
export type MatmulPrecisionName = typeof MATMUL_PRECISIONS[number];

export interface PrecisionChoice {
  asked: MatmulPrecisionName;
  /** What runs; differs from `asked` only on a fallback, which `reason` explains. */
  running: string;
  reason: string;
  /** The CPU's bf16 engine when bf16 runs: "sbgemm" (OpenBLAS) or "amx" (the native kernels). */
  via?: string;
}

/** Set `asked` on `backend` (its name); a mode the backend has no such thing as is an error. */
export function applyMatmulPrecision(asked: string, backend: string): PrecisionChoice {
  if (!(MATMUL_PRECISIONS as readonly string[]).includes(asked)) {
    throw new RangeError(
      `--matmul-precision: expected ${MATMUL_PRECISIONS.join(", ")}, got ${asked}`,
    );
  }
  const p = asked as MatmulPrecisionName;
  if (backend === "cuda") {
    setCudaMatmulPrecision(p);
    return { asked: p, running: p, reason: "" };
  }
  if (backend === "cpu") {
    if (p === "tf32") {
      throw new RangeError(
        "--matmul-precision tf32 is a CUDA mode; the CPU backend has f32 and bf16",
      );
    }
    const s = setCpuMatmulPrecision(p);
    return { asked: p, running: s.running, reason: s.reason, ...(s.via ? { via: s.via } : {}) };
  }
  if (p !== "f32") {
    throw new RangeError(`--matmul-precision ${p}: the ${backend} backend computes in f32 only`);
  }
  return { asked: p, running: p, reason: "" };
}
