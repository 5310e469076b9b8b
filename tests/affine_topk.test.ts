/**
 * The TopK encoder's GEMM and top-k in one pass (fusedAffineTopk, csrc/affine_topk.c) against an
 * oracle written here: each entry b + Σ_chunks (Σ_k x·W by one f32 fused multiply-add per term,
 * in order, from zero), K split into chunks as OpenBLAS's SkylakeX sgemm splits it (448 at a time,
 * a remainder above 448 halved), then the k largest, ties to the lower index, −0 equal to +0.
 * Exact bits, on random floats (tails of every blocking: rows not a multiple of 12, columns not a
 * multiple of 32, K past 256, 448 and 896, odd, k = 1 and k = N, W transposed) and on integers,
 * whose sums are exact in any order and full of ties, against the
 * composition topk(x·W + b). A NaN, a traced operand or emulated bf16 sends the caller back to
 * the composition; the encoder gives the composition's code either way. Under bf16 on AMX tiles:
 * each value within f32 summation of the bf16-rounded operands' exact product, and the selection
 * the k best of those exact values up to that tolerance; a product too small for matmul to take
 * bf16 (under BF16_MIN_WORK multiply-adds) keeps f32, the oracle's bits, as matmul does.
 */
import fc from "fast-check";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { scriptCommand } from "../tensor/platform/process.ts";
import * as t from "../mod.ts";
import { fusedAffineTopk } from "../tensor/fused.ts";
import { topkEncode } from "../sae/arch/topk_encode.ts";
import { native, setNativeKernels } from "../tensor/cpu/native.ts";
import { bf16ToF32, f32ToBf16 } from "../tensor/dtype.ts";
import { BF16_MIN_WORK } from "../tensor/cpu/matmul_precision.ts";
import { bf16SizedOperands, oracle, randomF32, sameBits } from "./affine_oracle.ts";

/** The k best of each row: larger first, −0 as +0, ties to the lower index. */
function topkRows(pre: Float32Array, M: number, N: number, k: number) {
  const values = new Float32Array(M * k), indices = new Int32Array(M * k);
  for (let i = 0; i < M; i++) {
    const row = pre.subarray(i * N, (i + 1) * N);
    const order = Array.from({ length: N }, (_, j) => j).sort((a, b) => row[b] - row[a] || a - b);
    for (let q = 0; q < k; q++) values[i * k + q] = row[order[q]], indices[i * k + q] = order[q];
  }
  return { values, indices };
}

/** Runs the fused kernel on these operands, or says why this build has none. */
function fused(
  x: Float32Array,
  W: Float32Array,
  b: Float32Array,
  M: number,
  K: number,
  k: number,
  wT: boolean,
) {
  const N = b.length;
  const w = wT
    ? t.transpose(t.tensor(transposeOf(W, K, N), { shape: [N, K] }))
    : t.tensor(W, { shape: [K, N] });
  return fusedAffineTopk(t.tensor(x, { shape: [M, K] }), w, t.tensor(b), k);
}

function transposeOf(W: Float32Array, K: number, N: number): Float32Array {
  const out = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) out[j * K + k] = W[k * N + j];
  return out;
}

// The kernel is built only where the compiler targets AVX-512; elsewhere the composition runs.
const here = fused(new Float32Array(1), new Float32Array(1), new Float32Array(1), 1, 1, 1, false);
if (!here) {
  console.log(
    "affine_topk: no fused kernel on this machine (no AVX-512 or no native kernels); " +
      "the bit tests below check only that the composition runs",
  );
}

test("fusedAffineTopk: the oracle's bits and selection on random floats, every blocking tail", () => {
  const cases: [number, number, number, number, boolean][] = [
    [1, 1, 1, 1, false],
    [5, 7, 9, 3, false],
    [13, 256, 100, 5, true],
    [25, 300, 70, 32, false],
    [12, 513, 40, 40, true],
    [14, 1000, 48, 6, false],
    [30, 64, 33, 1, false],
    // k = 17 (a partial vector), k = 128 and 129, 256 (the most the candidate lists take).
    [26, 40, 300, 17, false],
    [9, 70, 400, 128, true],
    [11, 64, 500, 129, false],
    [8, 33, 300, 256, false],
  ];
  for (const [M, K, N, k, wT] of cases) {
    const x = randomF32(M * K, 11 + M), W = randomF32(K * N, 23 + K), b = randomF32(N, 37 + N);
    const want = topkRows(oracle(x, W, b, M, K), M, N, k);
    const got = fused(x, W, b, M, K, k, wT);
    if (!got) {
      assert(!here, `${M}x${K}x${N} k ${k}: no fused result where the kernel exists`);
      continue;
    }
    assertEquals(got[0].shape, [M, k]);
    assertEquals(got[1].dtype, "i32");
    const tag = `${M}x${K}·${K}x${N}${wT ? "ᵀ" : ""} k ${k}`;
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), `${tag} indices`);
    sameBits(got[0].dataSync() as Float32Array, want.values, `${tag} values`);
  }
});

test("f32 through the bf16 screen (AMX): the oracle's bits; a near-tie row summed in full; near-ties everywhere and odd operands decline it", () => {
  const nat = native();
  if (!here || !nat?.amxBf16()) {
    console.log(
      "affine_topk screen: no AMX-BF16 tiles here; the f32 kernel answers (tested above)",
    );
    return;
  }
  const check = (
    x: Float32Array,
    W: Float32Array,
    b: Float32Array,
    M: number,
    K: number,
    k: number,
  ) => {
    const before = nat.topkScreened();
    const got = fused(x, W, b, M, K, k, false)!;
    const want = topkRows(oracle(x, W, b, M, K), M, b.length, k);
    const tag = `${M}x${K}x${b.length} k ${k}`;
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), `${tag} indices`);
    sameBits(got[0].dataSync() as Float32Array, want.values, `${tag} values`);
    return nat.topkScreened() - before;
  };
  // Random operands at several k and K (past 448 and 896, odd): the screen answers, to the bit.
  const cases = [[40, 512, 2048, 32], [33, 1000, 700, 64], [17, 97, 300, 1], [9, 64, 200, 20]];
  for (const [M, K, N, k] of cases) {
    const x = randomF32(M * K, 3 + K), W = randomF32(K * N, 4 + N), b = randomF32(N, 5 + k);
    assertEquals(check(x, W, b, M, K, k), 1, `${M}x${K}x${N} k ${k}: answered through the screen`);
  }
  // One row whose best columns are 100 copies of one column (the others point away from it): more
  // columns tie with its k-th than its list holds, so that row alone is summed in full.
  {
    const M = 40, K = 64, N = 512, k = 8, copies = 100, row = 5;
    const u = randomF32(K, 13), W = randomF32(K * N, 14), x = randomF32(M * K, 15);
    for (let q = 0; q < K; q++) for (let j = 0; j < copies; j++) W[q * N + j] = u[q];
    const uu = u.reduce((s, v) => s + v * v, 0);
    for (let r = 0; r < M; r++) {
      const xr = x.subarray(r * K, (r + 1) * K);
      if (r === row) xr.set(u.map((v) => 4 * v));
      const dot = xr.reduce((s, v, q) => s + v * u[q], 0);
      if (r !== row && dot > 0) {
        xr.forEach((v, q) => (xr[q] = Math.fround(v - (2 * dot * u[q]) / uu)));
      }
    }
    const full = nat.topkFullRows();
    assertEquals(check(x, W, new Float32Array(N), M, K, k), 1, "one near-tie row: still screened");
    assertEquals(nat.topkFullRows() - full, 1, "one near-tie row: that row summed in full");
  }
  // Two distinct columns, each 256 times, in every row: more rows cannot be vouched for than the
  // screen sums in full, so it declines and the f32 kernel answers.
  const M = 6, K = 64, N = 512, k = 40;
  const x = randomF32(M * K, 8), two = randomF32(K * 2, 9), W = new Float32Array(K * N);
  for (let q = 0; q < K; q++) for (let j = 0; j < N; j++) W[q * N + j] = two[q * 2 + (j >> 8)];
  const b = new Float32Array(N);
  assertEquals(check(x, W, b, M, K, k), 0, "near-ties: declined");
  // A subnormal operand is outside the screen's bound (AMX reads it as zero): declined.
  const xs = randomF32(M * K, 10);
  xs[3] = 1e-40;
  assertEquals(
    check(xs, randomF32(K * N, 11), randomF32(N, 12), M, K, 8),
    0,
    "subnormal: declined",
  );
});

test("fusedAffineTopk: integer operands (exact sums, many ties) equal topk(x·W + b)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 330 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      fc.boolean(),
      (M, K, N, seed, wT) => {
        const int = (n: number, s: number, span: number) =>
          Float32Array.from(randomF32(n, s), (v) => Math.round(v * span) || (v < 0 ? -0 : 0));
        const x = int(M * K, seed, 2), W = int(K * N, seed + 1, 2), b = int(N, seed + 2, 4);
        const k = 1 + (seed % N);
        const got = fused(x, W, b, M, K, k, wT);
        // Past k = 256 the kernel declines (the composition runs).
        if (!got) return !here || k > 256;
        const xt = t.tensor(x, { shape: [M, K] }), Wt = t.tensor(W, { shape: [K, N] });
        const [v, i] = t.topk(t.add(t.matmul(xt, Wt), t.tensor(b)), k);
        assertEquals(Array.from(got[1].dataSync()), Array.from(i.dataSync()), "indices");
        assertEquals(Array.from(got[0].dataSync()), Array.from(v.dataSync()), "values");
        return true;
      },
    ),
    { numRuns: 40 },
  );
});

test("fusedAffineTopk: null for a NaN, a traced operand or emulated bf16; the encoder composes", () => {
  const M = 6, K = 20, N = 40, k = 4;
  const x = randomF32(M * K, 3), W = randomF32(K * N, 4), b = randomF32(N, 5);
  x[2 * K + 7] = NaN;
  assert(fused(x, W, b, M, K, k, false) === null, "a NaN in x must send the caller back");
  x[2 * K + 7] = 0.5;
  const xt = t.tensor(x, { shape: [M, K] }), Wt = t.tensor(W, { shape: [K, N] }), bt = t.tensor(b);
  let traced: unknown = "not run";
  t.grad((w: t.Tensor) => {
    traced = fusedAffineTopk(xt, w, bt, k);
    return t.sum(w);
  })(Wt);
  assert(traced === null, "a traced W must not take the fused kernel");
  const prior = t.cpuMatmulPrecision().asked;
  const s = t.setCpuMatmulPrecision("bf16", { emulate: true });
  try {
    if (s.running === "bf16-emulated") {
      const big = bf16SizedOperands();
      assert(fused(big.x, big.W, big.b, big.M, big.K, k, false) === null, "emulated bf16 composes");
    }
    // A product this small stays f32 under any precision, in matmul and so here.
    if (here) {
      sameBits(
        fusedAffineTopk(xt, Wt, bt, k)![0].dataSync() as Float32Array,
        topkRows(oracle(x, W, b, M, K), M, N, k).values,
        "a small product under bf16: f32",
      );
    }
  } finally {
    t.setCpuMatmulPrecision(prior);
  }
  // The encoder's code is the same with the fused kernel and with the composition (native off).
  const enc = () => topkEncode(xt, Wt, bt, null, k);
  const a = enc();
  const was = setNativeKernels(false);
  let c;
  try {
    c = enc();
  } finally {
    setNativeKernels(was);
  }
  assertEquals(Array.from(a.indices.dataSync()), Array.from(c.indices.dataSync()), "indices");
  const av = a.values.dataSync(), cv = c.values.dataSync();
  for (let q = 0; q < av.length; q++) {
    assert(
      Math.abs(av[q] - cv[q]) <= 1e-5 * (1 + Math.abs(cv[q])),
      `value ${q}: ${av[q]} vs ${cv[q]}`,
    );
  }
});

test("fusedAffineTopk under bf16 on AMX tiles: bf16-rounded operands, f32 sums, the k best", () => {
  if (!native()?.amxBf16()) {
    console.log(
      "affine_topk bf16: no AMX-BF16 tiles here; the bf16 request composes (tested above)",
    );
    return;
  }
  const prior = t.cpuMatmulPrecision().asked;
  const s = t.setCpuMatmulPrecision("bf16");
  try {
    assertEquals([s.running, s.via], ["bf16", "amx"]);
    // (products of at least BF16_MIN_WORK multiply-adds: smaller ones stay f32, tested above)
    for (const [M, K, N, k, wT] of [[40, 512, 1024, 32, false], [37, 909, 520, 5, true]] as const) {
      assert(M * K * N >= BF16_MIN_WORK, `${M}x${K}x${N} is large enough for bf16`);
      const x = randomF32(M * K, 5 + K), W = randomF32(K * N, 6 + N), b = randomF32(N, 7);
      const got = fused(x, W, b, M, K, k, wT)!;
      assert(got, `${M}x${K}x${N}: a result`);
      const r = (v: number) => bf16ToF32(f32ToBf16(v));
      const xr = Float64Array.from(x, r), Wr = Float64Array.from(W, r);
      const exact = new Float64Array(M * N), mag = new Float64Array(M * N);
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          let e = b[j], a = Math.abs(b[j]);
          for (let q = 0; q < K; q++) {
            const p = xr[i * K + q] * Wr[q * N + j];
            e += p, a += Math.abs(p);
          }
          exact[i * N + j] = e, mag[i * N + j] = a;
        }
      }
      const v = got[0].dataSync(), idx = got[1].dataSync();
      const tol = (q: number) => (K + 2) * 2 ** -24 * mag[q];
      for (let i = 0; i < M; i++) {
        const chosen = new Set<number>();
        for (let q = 0; q < k; q++) {
          const j = idx[i * k + q], e = exact[i * N + j];
          chosen.add(j);
          assert(Math.abs(v[i * k + q] - e) <= tol(i * N + j), `row ${i} value ${q}`);
          if (q > 0) assert(v[i * k + q] <= v[i * k + q - 1], `row ${i} sorted`);
        }
        // Nothing left out beats the k-th kept by more than the two roundings.
        const kth = exact[i * N + idx[i * k + k - 1]];
        for (let j = 0; j < N; j++) {
          if (chosen.has(j)) continue;
          const slack = tol(i * N + j) + tol(i * N + idx[i * k + k - 1]);
          assert(exact[i * N + j] <= kth + slack, `row ${i}: column ${j} left out`);
        }
      }
    }
  } finally {
    t.setCpuMatmulPrecision(prior);
  }
});

test("SPARSECODER_FUSED_TOPK=0 runs the GEMM then top-k (read at start-up)", async () => {
  await withTempDir("affine-topk-", (dir) => {
    const url = (f: string) => new URL(`../${f}`, import.meta.url).href;
    const probe = join(dir, "probe.ts");
    writeFileSync(
      probe,
      `import * as t from "${url("mod.ts")}";
import { fusedAffineTopk } from "${url("tensor/fused.ts")}";
const r = fusedAffineTopk(t.ones([2, 3]), t.ones([3, 4]), t.zeros([4]), 2);
console.log(r === null ? "composed" : "fused");
`,
    );
    const run = (env: Record<string, string>) => {
      const [cmd, ...args] = scriptCommand(probe);
      const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: "utf8" });
      return `${r.stdout}${r.stderr}`.trim();
    };
    assertEquals(run({ SPARSECODER_FUSED_TOPK: "0" }), "composed");
    assertEquals(run({}), here ? "fused" : "composed");
    return Promise.resolve();
  });
});
