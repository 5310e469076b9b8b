// GEMM throughput: gemmTs vs OpenBLAS vs a naive triple loop.
// deno run -A bench/gemm_rate.ts    |    bun bench/gemm_rate.ts
import { type FloatArray, gemmTs } from "../tensor/cpu/gemm.ts";
import { loadBlas } from "../tensor/cpu/blas.ts";
import { runtimeVersion } from "../tensor/platform/runtime.ts";

type Gemm = typeof gemmTs;

function random(T: Float32ArrayConstructor | Float64ArrayConstructor, n: number): FloatArray {
  const x = new T(n);
  for (let i = 0; i < n; i++) x[i] = Math.random() * 2 - 1;
  return x;
}

/** Best-of-`runs` GFLOP/s for an n^3 product, after one warm-up call. */
function rate(
  label: string,
  fn: Gemm,
  T: Float32ArrayConstructor | Float64ArrayConstructor,
  n: number,
  transA = false,
  transB = false,
  runs = 4,
): void {
  const A = random(T, n * n), B = random(T, n * n), C = new T(n * n);
  const once = () => fn(transA, transB, n, n, n, 1, A, 0, n, B, 0, n, 0, C, 0, n);
  once();
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    once();
    best = Math.min(best, performance.now() - t0);
  }
  const gflops = (2 * n * n * n) / (best * 1e6);
  console.log(
    `${label.padEnd(34)} ${String(n).padStart(5)}^3  ${gflops.toFixed(2).padStart(7)} GFLOP/s  (${
      best.toFixed(1)
    } ms)`,
  );
}

/** Textbook i-j-p loop, no blocking or packing (ignores trans flags; only run untransposed). */
const naive: Gemm = (_tA, _tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) => {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let p = 0; p < K; p++) s += A[aOff + i * lda + p] * B[bOff + p * ldb + j];
      const k = cOff + i * ldc + j;
      C[k] = alpha * s + (beta === 0 ? 0 : beta * C[k]);
    }
  }
};

const runtime = runtimeVersion();
console.log(`runtime: ${runtime}`);

rate("naive f32", naive, Float32Array, 512, false, false, 2);
rate("gemmTs f32 NN", gemmTs, Float32Array, 1024);
rate("gemmTs f32 TN", gemmTs, Float32Array, 1024, true, false, 2);
rate("gemmTs f32 NT", gemmTs, Float32Array, 1024, false, true, 2);
rate("gemmTs f64 NN", gemmTs, Float64Array, 1024, false, false, 2);

const { blas, reason } = loadBlas();
if (blas) {
  console.log(`BLAS: ${reason}, threads=${blas.threads()}`);
  rate("BLAS sgemm NN", blas.sgemm as Gemm, Float32Array, 1024, false, false, 8);
  rate("BLAS dgemm NN", blas.dgemm as Gemm, Float64Array, 1024, false, false, 8);
} else {
  console.log(`BLAS: absent (${reason})`);
}
