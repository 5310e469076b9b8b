// OpenBLAS (any CBLAS) through the platform's FFI, under Deno and Bun.
// Loading is optional: loadBlas() never throws and explains why BLAS is absent.

import { checkGemmArgs, gemmTs } from "./gemm.ts";
import { readEnv, setNativeEnv } from "../platform/env.ts";
import {
  type Ffi,
  type FfiFn,
  type FfiSig,
  getFfi,
  NO_FFI,
  openFirst,
  triedText,
} from "../platform/ffi.ts";

export interface Blas {
  /** The library file that was opened. */
  path: string;
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    aOff: number,
    lda: number,
    B: Float32Array,
    bOff: number,
    ldb: number,
    beta: number,
    C: Float32Array,
    cOff: number,
    ldc: number,
  ): void;
  dgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float64Array,
    aOff: number,
    lda: number,
    B: Float64Array,
    bOff: number,
    ldb: number,
    beta: number,
    C: Float64Array,
    cOff: number,
    ldc: number,
  ): void;
  /**
   * C = alpha·op(A)·op(B) + beta·C with A and B in bf16 (Uint16Array bit patterns) and f32
   * accumulation (OpenBLAS's cblas_sbgemm); null when the library lacks it.
   */
  sbgemm:
    | ((
      transA: boolean,
      transB: boolean,
      M: number,
      N: number,
      K: number,
      alpha: number,
      A: Uint16Array,
      lda: number,
      B: Uint16Array,
      ldb: number,
      beta: number,
      C: Float32Array,
      cOff: number,
      ldc: number,
    ) => void)
    | null;
  /** out = x rounded to bf16, n elements (OpenBLAS's cblas_sbstobf16); null when absent. */
  toBf16: ((x: Float32Array, out: Uint16Array, n: number) => void) | null;
  /** openblas_get_num_threads() if the library has it, else -1. */
  threads(): number;
  /** openblas_set_num_threads(n) if the library has it; otherwise nothing. */
  setThreads(n: number): void;
}

export interface BlasStatus {
  blas: Blas | null;
  /** "loaded <path>", or why BLAS is absent. */
  reason: string;
}

const CblasRowMajor = 101;
const CblasNoTrans = 111;
const CblasTrans = 112;

const DEFAULT_PATHS = [
  "libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "libopenblas.so",
  "libcblas.so.3",
];

// blasint is 32-bit in the standard (non-ILP64) OpenBLAS/CBLAS builds.
// (order, transA, transB, M, N, K, alpha, A*, lda, B*, ldb, beta, C*, ldc)
const gemmSig = (f: "f32" | "f64"): FfiSig => ({
  args: ["i32", "i32", "i32", "i32", "i32", "i32", f, "buf", "i32", "buf", "i32", f, "buf", "i32"],
  ret: "void",
});

const SIGS: Record<string, FfiSig> = {
  cblas_sgemm: gemmSig("f32"),
  cblas_dgemm: gemmSig("f64"),
  // Only in OpenBLAS builds with BUILD_BFLOAT16 (not Debian's 0.3.21, for one).
  cblas_sbgemm: {
    args: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buf",
      "i32",
      "buf",
      "i32",
      "f32",
      "buf",
      "i32",
    ],
    ret: "void",
    optional: true,
  },
  cblas_sbstobf16: { args: ["i32", "buf", "i32", "buf", "i32"], ret: "void", optional: true },
  // Absent (null) in non-OpenBLAS CBLAS libraries.
  openblas_get_num_threads: { args: [], ret: "i32", optional: true },
  openblas_set_num_threads: { args: ["i32"], ret: "void", optional: true },
};

function makeBlas(ffi: Ffi, path: string, fns: Record<string, FfiFn | null>): Blas {
  const call = <T extends Float32Array | Float64Array>(fn: FfiFn) =>
  (
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: T,
    aOff: number,
    lda: number,
    B: T,
    bOff: number,
    ldb: number,
    beta: number,
    C: T,
    cOff: number,
    ldc: number,
  ): void => {
    // Native code has no bounds checks: validate everything first.
    checkGemmArgs(transA, transB, M, N, K, A, aOff, lda, B, bOff, ldb, C, cOff, ldc);
    if (M === 0 || N === 0) return;
    // K = 0 would need (possibly empty, hence null) A/B pointers; C = beta*C is all that is left.
    if (K === 0) {
      gemmTs(transA, transB, M, N, 0, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc);
      return;
    }
    fn(
      CblasRowMajor,
      transA ? CblasTrans : CblasNoTrans,
      transB ? CblasTrans : CblasNoTrans,
      M,
      N,
      K,
      alpha,
      ffi.bufAt(A, aOff),
      lda,
      ffi.bufAt(B, bOff),
      ldb,
      beta,
      ffi.bufAt(C, cOff),
      ldc,
    );
  };
  const sb = fns.cblas_sbgemm, cv = fns.cblas_sbstobf16;
  return {
    path,
    sgemm: call<Float32Array>(fns.cblas_sgemm!),
    dgemm: call<Float64Array>(fns.cblas_dgemm!),
    sbgemm: sb
      ? (transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, cOff, ldc) => {
        // The same layout checks as sgemm's, on the bit patterns' element counts.
        const [a, b] = [A, B] as unknown as Float32Array[];
        checkGemmArgs(transA, transB, M, N, K, a, 0, lda, b, 0, ldb, C, cOff, ldc);
        if (M === 0 || N === 0 || K === 0) throw new RangeError("sbgemm: an empty dimension");
        sb(
          CblasRowMajor,
          transA ? CblasTrans : CblasNoTrans,
          transB ? CblasTrans : CblasNoTrans,
          M,
          N,
          K,
          alpha,
          A,
          lda,
          B,
          ldb,
          beta,
          ffi.bufAt(C, cOff),
          ldc,
        );
      }
      : null,
    toBf16: cv
      ? (x, out, n) => {
        if (!(n >= 0 && n <= x.length && n <= out.length && n < 2 ** 31)) {
          throw new RangeError(`sbstobf16: ${n} elements of ${x.length} into ${out.length}`);
        }
        if (n > 0) cv(n, x, 1, out, 1);
      }
      : null,
    threads: () => (fns.openblas_get_num_threads ? Number(fns.openblas_get_num_threads()) : -1),
    setThreads: (n: number) => void fns.openblas_set_num_threads?.(n),
  };
}

/**
 * OpenBLAS's idle threads spin for 2^28 cycles after each call by default, holding the core that
 * our worker threads need next (top-k right after the encoder matmul ran at half speed, 44 ms
 * against 23 ms); 2^4 cycles lets them sleep at once. OpenBLAS reads this when it loads, so it is
 * set before dlopen; a value the user set wins.
 */
function quietBlasThreads(): void {
  // Without env access the library keeps its default.
  if (readEnv("OPENBLAS_THREAD_TIMEOUT") === undefined) {
    setNativeEnv("OPENBLAS_THREAD_TIMEOUT", "4");
  }
}

function tryLoad(): BlasStatus {
  if (readEnv("SPARSECODER_NO_BLAS") === "1") {
    return { blas: null, reason: "disabled by SPARSECODER_NO_BLAS=1" };
  }
  quietBlasThreads();
  const ffi = getFfi();
  if (!ffi) return { blas: null, reason: NO_FFI };

  const forced = readEnv("SPARSECODER_BLAS");
  // An explicit path is honoured exactly: no silent fallback to another library.
  const o = openFirst(ffi, forced ? [forced] : DEFAULT_PATHS, SIGS);
  if (o.lib) return { blas: makeBlas(ffi, o.lib.path, o.lib.fns), reason: `loaded ${o.lib.path}` };
  const what = forced ? `SPARSECODER_BLAS=${forced} failed` : "no BLAS library found";
  return { blas: null, reason: `${what} (tried ${triedText(o.tried)})` };
}

let cached: BlasStatus | undefined;

/** Opens a CBLAS library once (synchronously) and caches the outcome; never throws. */
export function loadBlas(): BlasStatus {
  if (!cached) {
    try {
      cached = tryLoad();
    } catch (e) {
      cached = {
        blas: null,
        reason: `BLAS load failed: ${e instanceof Error ? e.message : String(e)}`,
      };
    }
  }
  return cached;
}
