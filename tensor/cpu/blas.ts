// OpenBLAS (any CBLAS) through FFI, under Deno (Deno.dlopen) and Bun (bun:ffi).
// Loading is optional: loadBlas() never throws and explains why BLAS is absent.

import { checkGemmArgs, gemmTs } from "./gemm.ts";

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

/** Native argument types of cblas_[sd]gemm, in the FFI's spelling of a float and a pointer. */
function gemmSig(f: string, p: string): string[] {
  // (order, transA, transB, M, N, K, alpha, A*, lda, B*, ldb, beta, C*, ldc)
  return ["i32", "i32", "i32", "i32", "i32", "i32", f, p, "i32", p, "i32", f, p, "i32"];
}

// blasint is 32-bit in the standard (non-ILP64) OpenBLAS/CBLAS builds.
type RawGemm = (
  order: number,
  ta: number,
  tb: number,
  M: number,
  N: number,
  K: number,
  alpha: number,
  A: any,
  lda: number,
  B: any,
  ldb: number,
  beta: number,
  C: any,
  ldc: number,
) => void;

interface RawLib {
  sgemm: RawGemm;
  dgemm: RawGemm;
  threads: (() => number) | null;
  setThreads: ((n: number) => void) | null;
  /** Turns (typed array, element offset) into what the raw functions accept as a pointer. */
  arg: (x: Float32Array | Float64Array, off: number) => unknown;
}

const g = globalThis as any;

/**
 * Whether Deno already holds a permission. Checked before use because an
 * ungranted Deno.env.get/Deno.dlopen would prompt on an interactive terminal.
 */
export function denoGranted(desc: Record<string, string>): boolean {
  try {
    return g.Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}

export function readEnv(name: string): string | undefined {
  if (g.Deno) {
    if (!denoGranted({ name: "env", variable: name })) return undefined;
    try {
      return g.Deno.env.get(name) ?? undefined;
    } catch {
      return undefined;
    }
  }
  return g.process?.env?.[name];
}

export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function openDeno(path: string): RawLib {
  const gemmDef = (f: string) => ({ parameters: gemmSig(f, "buffer"), result: "void" });
  const lib = g.Deno.dlopen(path, {
    cblas_sgemm: gemmDef("f32"),
    cblas_dgemm: gemmDef("f64"),
    // Optional: absent (null) in non-OpenBLAS CBLAS libraries.
    openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
    openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  });
  const s = lib.symbols;
  return {
    sgemm: s.cblas_sgemm,
    dgemm: s.cblas_dgemm,
    threads: s.openblas_get_num_threads ?? null,
    setThreads: s.openblas_set_num_threads ?? null,
    // "buffer" takes a view and passes the address of its first element, so a
    // subarray is how an offset is expressed.
    arg: (x, off) => (off === 0 ? x : x.subarray(off)),
  };
}

function openBun(path: string): RawLib {
  // Bun's synchronous require; the specifier is built at runtime so Deno never
  // tries to resolve or type-check "bun:ffi".
  const req = (import.meta as any).require ?? g.require;
  const ffi = req("bun" + ":ffi");
  const gemmDef = (f: string) => ({ args: gemmSig(f, "ptr"), returns: "void" });
  const lib = ffi.dlopen(path, { cblas_sgemm: gemmDef("f32"), cblas_dgemm: gemmDef("f64") });
  let threads: (() => number) | null = null;
  let setThreads: ((n: number) => void) | null = null;
  try {
    // bun:ffi has no optional symbols; probe separately (dlopen is refcounted).
    const s = ffi.dlopen(path, {
      openblas_get_num_threads: { args: [], returns: "i32" },
      openblas_set_num_threads: { args: ["i32"], returns: "void" },
    }).symbols;
    threads = s.openblas_get_num_threads;
    setThreads = s.openblas_set_num_threads;
  } catch {
    threads = null;
  }
  const ptr = ffi.ptr as (x: ArrayBufferView, byteOffset?: number) => number;
  return {
    sgemm: lib.symbols.cblas_sgemm,
    dgemm: lib.symbols.cblas_dgemm,
    threads,
    setThreads,
    // A typed array passed as "ptr" is converted natively (honouring its
    // byteOffset; ~2x cheaper than ptr()); ptr(view, bytes) is relative to the
    // view's start and avoids allocating a subarray. ptr() rejects empty views.
    arg: (x, off) => (off === 0 ? x : ptr(x, off * x.BYTES_PER_ELEMENT)),
  };
}

function makeBlas(path: string, raw: RawLib): Blas {
  const call = <T extends Float32Array | Float64Array>(fn: RawGemm) =>
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
      raw.arg(A, aOff),
      lda,
      raw.arg(B, bOff),
      ldb,
      beta,
      raw.arg(C, cOff),
      ldc,
    );
  };
  return {
    path,
    sgemm: call<Float32Array>(raw.sgemm),
    dgemm: call<Float64Array>(raw.dgemm),
    threads: () => (raw.threads ? Number(raw.threads()) : -1),
    setThreads: (n: number) => raw.setThreads?.(n),
  };
}

/**
 * OpenBLAS's idle threads spin for 2^28 cycles after each call by default, holding the core that
 * our worker threads need next (top-k right after the encoder matmul ran at half speed, 44 ms
 * against 23 ms); 2^4 cycles lets them sleep at once. OpenBLAS reads this when it loads, so it is
 * set before dlopen; a value the user set wins.
 */
function quietBlasThreads(): void {
  if (readEnv("OPENBLAS_THREAD_TIMEOUT") !== undefined) return;
  try {
    if (!g.Deno) g.process.env.OPENBLAS_THREAD_TIMEOUT = "4";
    else if (denoGranted({ name: "env" })) g.Deno.env.set("OPENBLAS_THREAD_TIMEOUT", "4");
  } catch {
    // Without env access the library keeps its default.
  }
}

function tryLoad(): BlasStatus {
  if (readEnv("SPARSECODER_NO_BLAS") === "1") {
    return { blas: null, reason: "disabled by SPARSECODER_NO_BLAS=1" };
  }
  quietBlasThreads();
  const open = g.Deno?.dlopen ? openDeno : g.Bun ? openBun : null;
  if (!open) return { blas: null, reason: "no FFI: runtime is neither Deno nor Bun" };

  const forced = readEnv("SPARSECODER_BLAS");
  // An explicit path is honoured exactly: no silent fallback to another library.
  const paths = forced ? [forced] : DEFAULT_PATHS;
  const errors: string[] = [];
  for (const path of paths) {
    // --allow-ffi may be scoped to some paths, so ask per path.
    if (g.Deno && !denoGranted({ name: "ffi", path })) {
      errors.push(`${path}: Deno FFI permission not granted (run with --allow-ffi or -A)`);
      continue;
    }
    try {
      return { blas: makeBlas(path, open(path)), reason: `loaded ${path}` };
    } catch (e) {
      errors.push(`${path}: ${errText(e)}`);
    }
  }
  const what = forced ? `SPARSECODER_BLAS=${forced} failed` : "no BLAS library found";
  return { blas: null, reason: `${what} (tried ${errors.join("; ")})` };
}

let cached: BlasStatus | undefined;

/** Opens a CBLAS library once (synchronously) and caches the outcome; never throws. */
export function loadBlas(): BlasStatus {
  if (!cached) {
    try {
      cached = tryLoad();
    } catch (e) {
      cached = { blas: null, reason: `BLAS load failed: ${errText(e)}` };
    }
  }
  return cached;
}
