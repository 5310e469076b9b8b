/**
 * cuBLAS (libcublas) through our FFI: one handle on our stream; sgemm/dgemm, their strided-batched
 * forms, and cublasGemmEx / cublasGemmStridedBatchedEx for bf16/f16 data and TF32 or bf16 compute
 * on f32 data. Scalars (alpha, beta) are passed by host pointer (the default pointer mode).
 */
import { type Ffi, type FfiFn, type FfiSig, outI32, outU64 } from "../platform/ffi.ts";
import { makeCheck } from "./errors.ts";
import { loadLibrary } from "./libs.ts";
import type { GemmPlan } from "./gemm_plan.ts";

const I = "i32", P = "u64", B = "buf", L = "i64";
const sig = (args: FfiSig["args"], optional = false): FfiSig => ({ args, ret: I, optional });
const gemmArgs: FfiSig["args"] = [P, I, I, I, I, I, B, P, I, P, I, B, P, I];
const batchedArgs: FfiSig["args"] = [P, I, I, I, I, I, B, P, I, L, P, I, L, B, P, I, L, I];

export const CUBLAS_SIGS: Record<string, FfiSig> = {
  cublasCreate_v2: sig([B]),
  cublasDestroy_v2: sig([P]),
  cublasSetStream_v2: sig([P, P]),
  cublasSetMathMode: sig([P, I]),
  cublasGetVersion_v2: sig([P, B]),
  cublasSgemm_v2: sig(gemmArgs),
  cublasDgemm_v2: sig(gemmArgs),
  cublasSgemmStridedBatched: sig(batchedArgs),
  cublasDgemmStridedBatched: sig(batchedArgs),
  // handle, ta, tb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, compute, algo
  cublasGemmEx: sig([P, I, I, I, I, I, B, P, I, I, P, I, I, B, P, I, I, I, I]),
  // … with strideA/B/C (long long) after each leading dimension and batchCount before compute
  cublasGemmStridedBatchedEx: sig([
    P,
    I,
    I,
    I,
    I,
    I,
    B,
    P,
    I,
    I,
    L,
    P,
    I,
    I,
    L,
    B,
    P,
    I,
    I,
    L,
    I,
    I,
    I,
  ]),
  cublasGetStatusName: { args: [I], ret: "addr", optional: true },
};

/** cudaDataType_t (library_types.h). */
export const DATA_TYPE = { f32: 0, f64: 1, f16: 2, bf16: 14 } as const;
/** cublasComputeType_t (cublas_api.h). */
export const COMPUTE = { f32: 68, f64: 70, f32FastBf16: 75, f32FastTf32: 77 } as const;
export const OP = { N: 0, T: 1 } as const;
export const GEMM_DEFAULT = -1;
/** cublasMath_t: TF32 tensor-op math for the plain sgemm entry points. */
export const MATH = { default: 0, tf32: 3 } as const;

/** How f32 matmuls are computed: plain f32 (default), TF32 tensor cores, or bf16 inputs with f32 accumulation. */
export type MatmulPrecision = "f32" | "tf32" | "bf16";

export type GemmDType = "f32" | "f64" | "f16" | "bf16";

export interface GemmCall {
  plan: GemmPlan;
  dtype: GemmDType;
  precision: MatmulPrecision;
  /** Device addresses of A, B (already offset by the plan's element offsets) and C. */
  a: bigint;
  b: bigint;
  c: bigint;
}

export interface Cublas {
  path: string;
  version: number;
  handle: bigint;
  gemm(call: GemmCall): void;
  destroy(): void;
}

/** Which entry point and types a call uses; exported so the choice is testable without a GPU. */
export function gemmRoute(dtype: GemmDType, precision: MatmulPrecision, batched: boolean):
  | { fn: string; scalar: "f32" | "f64" }
  | { fn: string; scalar: "f32"; dataType: number; compute: number } {
  if (dtype === "f64") {
    return { fn: batched ? "cublasDgemmStridedBatched" : "cublasDgemm_v2", scalar: "f64" };
  }
  const fn = batched ? "cublasGemmStridedBatchedEx" : "cublasGemmEx";
  if (dtype === "f32" && precision === "f32") {
    return { fn: batched ? "cublasSgemmStridedBatched" : "cublasSgemm_v2", scalar: "f32" };
  }
  if (dtype === "f32") {
    return {
      fn,
      scalar: "f32",
      dataType: DATA_TYPE.f32,
      compute: precision === "tf32" ? COMPUTE.f32FastTf32 : COMPUTE.f32FastBf16,
    };
  }
  // 16-bit data: f32 accumulation, output in the same 16-bit type.
  return { fn, scalar: "f32", dataType: DATA_TYPE[dtype], compute: COMPUTE.f32 };
}

export function makeCublas(
  ffi: Ffi,
  path: string,
  fns: Record<string, FfiFn | null>,
  stream: bigint,
): Cublas {
  const f = fns as Record<string, FfiFn>;
  const check = makeCheck(
    "cublas",
    (
      code,
    ) => (fns.cublasGetStatusName
      ? ffi.cString(f.cublasGetStatusName(code) as bigint) || null
      : null),
  );
  const h = outU64();
  check("cublasCreate_v2", f.cublasCreate_v2(h));
  const handle = h[0];
  check("cublasSetStream_v2", f.cublasSetStream_v2(handle, stream));
  const v = outI32();
  check("cublasGetVersion_v2", f.cublasGetVersion_v2(handle, v));
  const one32 = new Float32Array(new ArrayBuffer(4)), zero32 = new Float32Array(new ArrayBuffer(4));
  const one64 = new Float64Array(new ArrayBuffer(8)), zero64 = new Float64Array(new ArrayBuffer(8));
  one32[0] = 1, one64[0] = 1;
  return {
    path,
    version: v[0],
    handle,
    gemm({ plan: p, dtype, precision, a, b, c }) {
      const batched = p.batch > 1;
      const r = gemmRoute(dtype, precision, batched);
      const [alpha, beta] = r.scalar === "f64" ? [one64, zero64] : [one32, zero32];
      const ta = p.first.trans ? OP.T : OP.N, tb = p.second.trans ? OP.T : OP.N;
      const what = () => `m=${p.m} n=${p.n} k=${p.k} batch=${p.batch} ${dtype}/${precision}`;
      let st: unknown;
      if (!("dataType" in r)) {
        st = batched
          ? f[r.fn](
            handle,
            ta,
            tb,
            p.m,
            p.n,
            p.k,
            alpha,
            b,
            p.first.ld,
            BigInt(p.first.batchStride),
            a,
            p.second.ld,
            BigInt(p.second.batchStride),
            beta,
            c,
            p.ldc,
            BigInt(p.strideC),
            p.batch,
          )
          : f[r.fn](
            handle,
            ta,
            tb,
            p.m,
            p.n,
            p.k,
            alpha,
            b,
            p.first.ld,
            a,
            p.second.ld,
            beta,
            c,
            p.ldc,
          );
      } else {
        const t = r.dataType;
        st = batched
          ? f[r.fn](
            handle,
            ta,
            tb,
            p.m,
            p.n,
            p.k,
            alpha,
            b,
            t,
            p.first.ld,
            BigInt(p.first.batchStride),
            a,
            t,
            p.second.ld,
            BigInt(p.second.batchStride),
            beta,
            c,
            t,
            p.ldc,
            BigInt(p.strideC),
            p.batch,
            r.compute,
            GEMM_DEFAULT,
          )
          : f[r.fn](
            handle,
            ta,
            tb,
            p.m,
            p.n,
            p.k,
            alpha,
            b,
            t,
            p.first.ld,
            a,
            t,
            p.second.ld,
            beta,
            c,
            t,
            p.ldc,
            r.compute,
            GEMM_DEFAULT,
          );
      }
      check(r.fn, st, what);
    },
    destroy: () => check("cublasDestroy_v2", f.cublasDestroy_v2(handle)),
  };
}

/** Open cuBLAS and create a handle bound to `stream` (needs a current context); never throws. */
export function loadCublas(
  ffi: Ffi,
  env: (n: string) => string | undefined,
  stream: bigint,
): { cublas: Cublas | null; reason: string } {
  const r = loadLibrary(
    ffi,
    "cublas",
    env,
    CUBLAS_SIGS,
    (path, fns) => makeCublas(ffi, path, fns, stream),
  );
  return { cublas: r.value, reason: r.reason };
}
