/**
 * Core benchmarks (mitata): matmul 1024³ f32 through the op (OpenBLAS), raw OpenBLAS on the same
 * arrays, and the TypeScript kernel; elementwise add and a sum over 1M elements; the fixed cost of
 * an op on tiny tensors. Prints mitata's table, then GFLOP/s and the op/raw BLAS ratio.
 *   deno run -A bench/core.bench.ts [--json]        bun bench/core.bench.ts [--json]
 */
import { bench, do_not_optimize, group, run } from "mitata";
import * as t from "../mod.ts";
import { loadBlas } from "../tensor/cpu/blas.ts";
import { gemmTs } from "../tensor/cpu/gemm.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const n = 1024;
const [ka, kb, kx, ky] = t.random.split(t.random.key(0), 4);
const A = t.random.normal(ka, [n, n]), B = t.random.normal(kb, [n, n]);
const a = A.dataSync() as Float32Array, b = B.dataSync() as Float32Array;
const c = new Float32Array(n * n);
const blas = loadBlas().blas;

group("matmul 1024x1024x1024 f32", () => {
  bench("op matmul (BLAS path)", () => t.tidy(() => do_not_optimize(t.matmul(A, B))));
  if (blas) {
    bench(
      "raw OpenBLAS sgemm",
      () => blas.sgemm(false, false, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n),
    );
  }
  bench("TypeScript gemm", () => gemmTs(false, false, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n));
});

const X = t.random.normal(kx, [1 << 20]), Y = t.random.normal(ky, [1 << 20]);
group("1M elements f32", () => {
  bench("add", () => t.tidy(() => do_not_optimize(t.add(X, Y))));
  bench("sum", () => t.tidy(() => do_not_optimize(t.sum(X))));
});

const s1 = t.tensor([1, 2, 3]), s2 = t.tensor([4, 5, 6]);
group("per-op overhead, 3 elements", () => {
  bench("tiny add", () => t.tidy(() => do_not_optimize(t.add(s1, s2))));
  bench(
    "matmul 1x3 @ 3x1",
    () => t.tidy(() => do_not_optimize(t.matmul(t.reshape(s1, [1, 3]), t.reshape(s2, [3, 1])))),
  );
});

const res = await run({ format: json ? "quiet" : "mitata" } as Parameters<typeof run>[0]);
const avg = (name: string): number | undefined => {
  for (
    const bm of (res as unknown as {
      benchmarks: { alias: string; runs: { stats?: { avg: number } }[] }[];
    }).benchmarks
  ) {
    if (bm.alias === name) return bm.runs[0]?.stats?.avg;
  }
};
const gflops = (ns?: number) => (ns ? (2 * n ** 3) / ns : NaN);
const op = gflops(avg("op matmul (BLAS path)")),
  raw = gflops(avg("raw OpenBLAS sgemm")),
  ts = gflops(avg("TypeScript gemm"));
const summary = {
  runtime,
  blas: loadBlas().reason,
  matmul_op_gflops: op,
  matmul_raw_blas_gflops: blas ? raw : null,
  op_over_raw: blas ? op / raw : null,
  matmul_ts_gflops: ts,
  add_1m_us: (avg("add") ?? NaN) / 1e3,
  sum_1m_us: (avg("sum") ?? NaN) / 1e3,
  tiny_add_us: (avg("tiny add") ?? NaN) / 1e3,
};
if (json) console.log(JSON.stringify(summary));
else {
  console.log(
    `\nmatmul 1024³ f32: op ${op.toFixed(1)} GFLOP/s, raw OpenBLAS ${
      raw.toFixed(1)
    } GFLOP/s (op/raw ${(op / raw).toFixed(3)}), TypeScript ${ts.toFixed(2)} GFLOP/s`,
  );
}
