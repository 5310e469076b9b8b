/**
 * BatchTopK's selection through the bf16 screen (fusedAffineBatchTopk, csrc/affine_topk.c): the
 * `total` largest entries of the whole product x·W + b, never written, against the oracle's sums
 * (tests/affine_oracle.ts) flattened and ranked as topk ranks them (larger first, −0 as +0, ties to
 * the lower flat index): the same values, bits and indices on random floats (every blocking tail,
 * total from 1 to a large share of the batch), and against the composition on integers (exact sums,
 * full of ties) whenever the screen answers; a NaN, a traced operand, emulated bf16 or ties beyond
 * the screen send the caller back to the composition; and BatchTopK's encoder and training step
 * give the same bits with the kernel and without; with a column scale (the crosscoder's ranking by
 * f·‖W_dec‖), ranked by fl(pre·s) with pre's values, and the crosscoder's step the same both ways.
 * Under bf16 on AMX tiles: the bf16 GEMM's product (the composition's bits, ties and all) where
 * matmul takes bf16, f32 below BF16_MIN_WORK multiply-adds as matmul keeps it, and the training
 * steps the same with the kernel and without.
 */
import fc from "fast-check";
import * as t from "../mod.ts";
import { fusedAffineBatchTopk } from "../tensor/fused.ts";
import { batchTopkEncode } from "../sae/arch/topk_encode.ts";
import { native } from "../tensor/cpu/native.ts";
import { resolveConfig, type SaeConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { bf16SizedOperands, oracle, randomF32, sameBits } from "./affine_oracle.ts";
import { BF16_MIN_WORK } from "../tensor/cpu/matmul_precision.ts";

/** The total best entries of a flattened [M, N] product: larger first, −0 as +0, lower index first. */
function batchBest(pre: Float32Array, total: number) {
  const order = Array.from({ length: pre.length }, (_, j) => j).sort((a, b) =>
    pre[b] - pre[a] || a - b
  );
  const values = new Float32Array(total), indices = new Int32Array(total);
  for (let q = 0; q < total; q++) values[q] = pre[order[q]], indices[q] = order[q];
  return { values, indices };
}

const tensors = (x: Float32Array, W: Float32Array, b: Float32Array, M: number, K: number) => ({
  x: t.tensor(x, { shape: [M, K] }),
  W: t.tensor(W, { shape: [K, b.length] }),
  b: t.tensor(b),
});

function fused(
  x: Float32Array,
  W: Float32Array,
  b: Float32Array,
  M: number,
  K: number,
  total: number,
) {
  const o = tensors(x, W, b, M, K);
  return fusedAffineBatchTopk(o.x, o.W, o.b, total);
}

/**
 * Integer operands whose rows repeat every 5 and columns every 29 (b too), zero-signed as drawn:
 * every value recurs in blocks of rows × columns, so ties reach across rows, columns and threads.
 */
function repeated(M: number, K: number, N: number, seed: number) {
  const int = (v: number, span: number) => Math.round(v * span) || (v < 0 ? -0 : 0);
  const xr = randomF32(5 * K, seed), wc = randomF32(29 * K, seed + 1), bc = randomF32(29, seed + 2);
  const x = Float32Array.from(
    { length: M * K },
    (_, q) => int(xr[(Math.floor(q / K) % 5) * K + q % K], 2),
  );
  const W = Float32Array.from(
    { length: K * N },
    (_, q) => int(wc[(q % N % 29) * K + Math.floor(q / N)], 2),
  );
  const b = Float32Array.from({ length: N }, (_, c) => int(bc[c % 29], 4));
  return { x, W, b };
}

/**
 * x = 0 and b 1 in every third column (−1 elsewhere): a third of the batch ties at the top, the
 * ties arriving across the whole pass (the tiles go column block by column block), so a list is
 * cut at the tie value while ties with lower flat indices are still to come.
 */
function tieBlock(M: number, K: number, N: number) {
  const b = Float32Array.from({ length: N }, (_, c) => (c % 3 === 0 ? 1 : -1));
  return { x: new Float32Array(M * K), W: randomF32(K * N, 41), b };
}

/** The training state's arrays after `steps` steps on one random batch of `shape`. */
async function stateAfterSteps(cfg: SaeConfig, shape: readonly number[], steps: number) {
  const tc = resolveTrainConfig(cfg, {
    steps: 10,
    batch_size: shape[0],
    geometric_median_init: false,
    normalize_activations: false,
  });
  const x = t.random.normal(t.random.key(7), [...shape]);
  let state = await initTrainState(t.random.key(0), cfg, tc, []);
  for (let i = 0; i < steps; i++) {
    const { state: next } = await trainStep(state, { x }, cfg, tc);
    t.disposeReplaced(stateTensors(state), stateTensors(next));
    state = next;
  }
  const leaves = t.treeLeaves(stateTensors(state)).filter((v) => v instanceof t.Tensor);
  return await Promise.all(
    leaves.map(async (v) => Array.from(await (v as t.Tensor).data() as ArrayLike<number>)),
  );
}

/**
 * `run` with the backend's fused selection and then without it (the composition): both results
 * and how many calls the kernel answered.
 */
async function withAndWithout<T>(run: () => Promise<T> | T): Promise<[T, T, number]> {
  // deno-lint-ignore no-explicit-any
  const table = t.getBackend().fused as Record<string, any>;
  const kernel = table.affineBatchTopk;
  let ran = 0, a: T, c: T;
  table.affineBatchTopk = kernel && ((...args: unknown[]) => {
    const r = kernel(...args);
    if (r) ran++;
    return r;
  });
  try {
    a = await run();
  } finally {
    table.affineBatchTopk = undefined;
  }
  try {
    c = await run();
  } finally {
    table.affineBatchTopk = kernel;
  }
  return [a, c, ran];
}

/** Arrays equal element for element, −0 and NaN bits included. */
function sameArrays(a: ArrayLike<number>[], b: ArrayLike<number>[], what: string) {
  assertEquals(a.length, b.length, `${what}: as many arrays`);
  a.forEach((x, i) => {
    assertEquals(x.length, b[i].length, `${what} ${i}: length`);
    for (let j = 0; j < x.length; j++) {
      if (!Object.is(x[j], b[i][j])) throw new Error(`${what} ${i}[${j}]: ${x[j]} vs ${b[i][j]}`);
    }
  });
}

/** Runs `body` with CPU matmuls in `p`, then restores the precision asked before. */
async function withPrecision<T>(p: "bf16" | "f32", body: () => Promise<T> | T): Promise<T> {
  const prior = t.cpuMatmulPrecision().asked;
  t.setCpuMatmulPrecision(p);
  try {
    return await body();
  } finally {
    t.setCpuMatmulPrecision(prior);
  }
}

// The kernel runs where AVX-512 and AMX tiles are (the bf16 screen); elsewhere the composition.
const amx = native()?.amxBf16() ?? false;
if (!amx) {
  console.log(
    "affine_batch_topk: no AMX-BF16 tiles here (or no native kernels); the tests below check that " +
      "the composition runs",
  );
}

test("fusedAffineBatchTopk: the oracle's bits and ranking on random floats, every blocking tail", () => {
  const cases = [
    [40, 512, 2048, 2560], // K past 448; total 32 a row
    [33, 1000, 700, 1], // K past 896, odd; one winner
    [17, 97, 300, 2000], // a large share of the batch (2000 of 5100)
    [70, 64, 200, 140],
    [9, 33, 257, 50],
  ];
  for (const [M, K, N, total] of cases) {
    const x = randomF32(M * K, 3 + K), W = randomF32(K * N, 4 + N), b = randomF32(N, 5 + total);
    const got = fused(x, W, b, M, K, total);
    const tag = `${M}x${K}x${N} total ${total}`;
    if (!amx) {
      assert(got === null, `${tag}: no kernel here, the composition runs`);
      continue;
    }
    assert(got !== null, `${tag}: answered through the screen`);
    const want = batchBest(oracle(x, W, b, M, K), total);
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), `${tag} indices`);
    sameBits(got[0].dataSync() as Float32Array, want.values, `${tag} values`);
  }
});

test("fusedAffineBatchTopk: threads that share their cut keep every winner when most lie in later rows", () => {
  // M·N past the backend's threshold for several threads: each thread owns a band of rows and
  // publishes the m-th best lower bound it holds; the later rows' larger values must not cut the
  // earlier rows' winners (the cut is the least published bound, never the largest).
  const M = 256, K = 64, N = 1024;
  const x = Float32Array.from(randomF32(M * K, 61), (v, q) => (q >= (M / 2) * K ? 1.5 * v : v));
  const W = randomF32(K * N, 62), b = randomF32(N, 63);
  const pre = oracle(x, W, b, M, K);
  for (const total of [4096, 4097, 20000]) {
    const got = fused(x, W, b, M, K, total);
    if (!amx) {
      assert(got === null, "no kernel here, the composition runs");
      continue;
    }
    assert(got !== null, `total ${total}: answered through the screen`);
    const want = batchBest(pre, total);
    const early = want.indices.filter((i) => i < (M / 2) * N).length;
    assert(early > total / 10, `total ${total}: the earlier rows hold winners too (${early})`);
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), `total ${total} indices`);
    sameBits(got[0].dataSync() as Float32Array, want.values, `total ${total} values`);
  }
});

test("fusedAffineBatchTopk with a column scale: ranked by fl(pre·s) as the crosscoder ranks, pre's values", () => {
  const cases = [[40, 512, 2048, 2560], [17, 97, 300, 600], [9, 33, 257, 1]];
  for (const [M, K, N, total] of cases) {
    const x = randomF32(M * K, 7 + K), W = randomF32(K * N, 8 + N), b = randomF32(N, 9 + total);
    // Non-negative scales, some zero (their keys tie at 0).
    const s = Float32Array.from(
      randomF32(N, 10 + M),
      (v, c) => (c % 13 === 4 ? 0 : Math.abs(v) + 0.25),
    );
    const o = tensors(x, W, b, M, K);
    const got = fusedAffineBatchTopk(o.x, o.W, o.b, total, t.tensor(s));
    const tag = `${M}x${K}x${N} total ${total}`;
    if (!amx) {
      assert(got === null, `${tag}: no kernel here, the composition runs`);
      continue;
    }
    assert(got !== null, `${tag}: answered through the screen`);
    const pre = oracle(x, W, b, M, K);
    const want = batchBest(pre.map((v, i) => Math.fround(v * s[i % N])), total);
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), `${tag} indices`);
    sameBits(
      got[0].dataSync() as Float32Array,
      Float32Array.from(want.indices, (i) => pre[i]),
      `${tag} values`,
    );
  }
  // A negative or NaN scale is outside what the ranking's bound covers: declined.
  const M = 8,
    K = 16,
    N = 64,
    x = randomF32(M * K, 1),
    W = randomF32(K * N, 2),
    b = randomF32(N, 3);
  const o = tensors(x, W, b, M, K);
  for (const bad of [-1, NaN]) {
    const s = new Float32Array(N).fill(1);
    s[5] = bad;
    assert(fusedAffineBatchTopk(o.x, o.W, o.b, 10, t.tensor(s)) === null, `scale ${bad}: declined`);
  }
});

test("fusedAffineBatchTopk: integer operands (exact sums, many ties) equal topk(reshape(x·W + b)) when answered", () => {
  let answered = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 20, max: 300 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      (M, K, N, seed) => {
        const int = (n: number, s: number, span: number) =>
          Float32Array.from(randomF32(n, s), (v) => Math.round(v * span) || (v < 0 ? -0 : 0));
        const x = int(M * K, seed, 2), W = int(K * N, seed + 1, 2), b = int(N, seed + 2, 4);
        const total = 1 + (seed % Math.min(M * N, 4 * M));
        const got = fused(x, W, b, M, K, total);
        if (!got) return true; // (ties beyond the screen, or no kernel: the composition runs)
        answered++;
        const o = tensors(x, W, b, M, K);
        const [v, i] = t.topk(t.reshape(t.add(t.matmul(o.x, o.W), o.b), [-1]), total);
        assertEquals(Array.from(got[1].dataSync()), Array.from(i.dataSync()), "indices");
        sameBits(got[0].dataSync() as Float32Array, v.dataSync() as Float32Array, "values");
        return true;
      },
    ),
    { numRuns: 40 },
  );
  if (amx) assert(answered > 0, "the screen answered none of the integer cases");
  // Whole blocks of ties across rows, columns and threads (see repeated, tieBlock).
  const [M, K, N] = [64, 96, 520];
  const r = repeated(M, K, N, 31), ties = tieBlock(M, K, N);
  for (const [ops, total] of [[r, 90], [r, 110], [r, 150], [r, 600], [ties, 3000]] as const) {
    const got = fused(ops.x, ops.W, ops.b, M, K, total);
    if (amx) assert(got, `tie blocks, total ${total}: answered`);
    if (!got) continue;
    const o = tensors(ops.x, ops.W, ops.b, M, K);
    const [v, i] = t.topk(t.reshape(t.add(t.matmul(o.x, o.W), o.b), [-1]), total);
    assertEquals(
      Array.from(got[1].dataSync()),
      Array.from(i.dataSync()),
      `total ${total}: indices`,
    );
    sameBits(
      got[0].dataSync() as Float32Array,
      v.dataSync() as Float32Array,
      `total ${total}: values`,
    );
  }
});

test("fusedAffineBatchTopk: null for a NaN, a traced operand, emulated bf16, or ties beyond the screen", () => {
  const M = 6, K = 20, N = 40, total = 30;
  const x = randomF32(M * K, 3), W = randomF32(K * N, 4), b = randomF32(N, 5);
  x[2 * K + 7] = NaN;
  assert(fused(x, W, b, M, K, total) === null, "a NaN in x must send the caller back");
  x[2 * K + 7] = 0.5;
  const o = tensors(x, W, b, M, K);
  let traced: unknown = "not run";
  t.grad((w: t.Tensor) => {
    traced = fusedAffineBatchTopk(o.x, w, o.b, total);
    return t.sum(w);
  })(o.W);
  assert(traced === null, "a traced W must not take the fused kernel");
  const prior = t.cpuMatmulPrecision().asked;
  const s = t.setCpuMatmulPrecision("bf16", { emulate: true });
  try {
    if (s.running === "bf16-emulated") {
      const big = bf16SizedOperands();
      assert(fused(big.x, big.W, big.b, big.M, big.K, total) === null, "emulated bf16 composes");
    }
  } finally {
    t.setCpuMatmulPrecision(prior);
  }
  // Every column the same: the whole batch ties within the bound, more than the lists hold.
  const same = new Float32Array(K * 512);
  const col = randomF32(K, 6);
  for (let q = 0; q < K; q++) same.fill(col[q], q * 512, (q + 1) * 512);
  assert(
    fused(randomF32(64 * K, 7), same, new Float32Array(512), 64, K, 64) === null,
    "near-ties: declined",
  );
});

test("BatchTopK's encoder and a training step give the same bits with the fused selection and without", async () => {
  const x = t.random.normal(t.random.key(1), [96, 64]);
  const W = t.random.normal(t.random.key(2), [64, 300]);
  const b = t.random.normal(t.random.key(3), [300]);
  const bd = t.random.normal(t.random.key(4), [64]);
  const [enc, encComposed, encRan] = await withAndWithout(() => {
    const coo = batchTopkEncode(x, W, b, bd, 8 * 96);
    return [coo.rows, coo.cols, coo.values].map((v) => Array.from(v.dataSync()));
  });
  assertEquals(enc, encComposed, "the code");
  // BatchTopK's training step, and the crosscoder's, which ranks f·‖W_dec‖ (a column scale).
  const runs = [
    [{ arch: "batchtopk", d_in: 64, d_sae: 256, k: 8 }, [128, 64]],
    [{ arch: "batchtopk-crosscoder", d_in: 32, d_sae: 256, k: 8, n_inputs: 2 }, [64, 2, 32]],
  ] as const;
  let ran = encRan;
  for (const [c, shape] of runs) {
    const [a, b, n] = await withAndWithout(() => stateAfterSteps(resolveConfig(c), shape, 3));
    sameArrays(a, b, `${c.arch} state`), ran += n;
  }
  if (amx) assert(ran >= 7, `the fused selection ran (${ran} calls)`);
});

test("fusedAffineBatchTopk under bf16 on AMX tiles: the bf16 GEMM's product and topk's ranking, bit for bit", async () => {
  if (!amx) {
    console.log("affine_batch_topk bf16: no AMX-BF16 tiles here; bf16 composes (tested above)");
    return;
  }
  await withPrecision("bf16", () => {
    assertEquals(t.cpuMatmulPrecision().via, "amx");
    /** The composition: topk over the flattened product (ranked by fl(pre·s) with a scale). */
    const composed = (o: ReturnType<typeof tensors>, total: number, s: t.Tensor | null) => {
      const pre = t.add(t.matmul(o.x, o.W), o.b);
      const [, i] = t.topk(t.reshape(s ? t.mul(pre, s) : pre, [-1]), total);
      return [t.take(t.reshape(pre, [-1]), i).dataSync(), i.dataSync()];
    };
    type Operands = { x: Float32Array; W: Float32Array; b: Float32Array };
    const check = (
      ops: Operands,
      M: number,
      K: number,
      total: number,
      s: Float32Array | null,
      tag: string,
    ) => {
      const o = tensors(ops.x, ops.W, ops.b, M, K), st = s && t.tensor(s);
      const got = fusedAffineBatchTopk(o.x, o.W, o.b, total, st);
      if (!got) return false;
      const [v, i] = composed(o, total, st);
      assertEquals(Array.from(got[1].dataSync()), Array.from(i), `${tag} indices`);
      sameBits(got[0].dataSync() as Float32Array, v as Float32Array, `${tag} values`);
      return true;
    };
    // Random floats: every blocking tail (rows past a multiple of 32, columns past one of 32, K
    // odd and past 512), with and without a column scale (some of it zero: keys tie at 0).
    const cases = [[64, 512, 520, 2048], [33, 1001, 521, 1], [70, 600, 410, 9000]];
    for (const [M, K, N, total] of cases) {
      assert(M * K * N >= BF16_MIN_WORK, `${M}x${K}x${N} is large enough for bf16`);
      const x = randomF32(M * K, 11 + K), W = randomF32(K * N, 12 + N), b = randomF32(N, 13);
      const s = Float32Array.from(randomF32(N, 14), (v, c) => (c % 13 === 4 ? 0 : Math.abs(v)));
      for (const sc of [null, s]) {
        const tag = `${M}x${K}x${N} total ${total}${sc ? " scaled" : ""}`;
        assert(check({ x, W, b }, M, K, total, sc, tag), `${tag}: answered`);
      }
    }
    // Integers (exact in bf16, sums exact: ties everywhere), answered unless the ties at the cut
    // overflow the lists.
    let answered = 0;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const M = 64, K = 512, N = 520;
        const int = (n: number, s: number, span: number) =>
          Float32Array.from(randomF32(n, s), (v) => Math.round(v * span) || (v < 0 ? -0 : 0));
        const x = int(M * K, seed, 2), W = int(K * N, seed + 1, 2), b = int(N, seed + 2, 4);
        const total = 1 + (seed % (8 * M));
        if (check({ x, W, b }, M, K, total, null, `integers, seed ${seed}`)) answered++;
        return true;
      }),
      { numRuns: 6 },
    );
    assert(answered > 0, "no integer case answered");
    // Whole blocks of ties (repeated, tieBlock): the tie value recurs across rows and columns, in
    // the order the tiles produce them (not flat order) and at each thread's cut.
    const [M, K, N] = [64, 512, 520];
    const base = repeated(M, K, N, 21), ties = tieBlock(M, K, N);
    for (
      const [o, total] of [[base, 90], [base, 110], [base, 150], [base, 600], [ties, 3000]] as const
    ) {
      const tag = `tie blocks, total ${total}`;
      assert(check(o, M, K, total, null, tag), `${tag}: answered`);
    }
    // Below BF16_MIN_WORK matmul keeps f32, and so does the selection: the oracle's bits.
    const small = [9, 33, 257, 50] as const;
    const x = randomF32(small[0] * small[1], 3), W = randomF32(small[1] * small[2], 4);
    const b = randomF32(small[2], 5);
    const got = fused(x, W, b, small[0], small[1], small[3])!;
    const want = batchBest(oracle(x, W, b, small[0], small[1]), small[3]);
    assertEquals(Array.from(got[1].dataSync()), Array.from(want.indices), "small product: indices");
    sameBits(got[0].dataSync() as Float32Array, want.values, "small product: f32 values");
  });
});

test("BatchTopK's and the crosscoder's training steps under bf16: the same bits with the fused selection and without", async () => {
  if (!amx) {
    console.log("affine_batch_topk bf16 steps: no AMX-BF16 tiles here; bf16 composes");
    return;
  }
  await withPrecision("bf16", async () => {
    // (encoder products of at least BF16_MIN_WORK multiply-adds: 256·256·512 and 256·256·512)
    const runs = [
      [{ arch: "batchtopk", d_in: 256, d_sae: 512, k: 8 }, [256, 256]],
      [{ arch: "batchtopk-crosscoder", d_in: 128, d_sae: 512, k: 8, n_inputs: 2 }, [256, 2, 128]],
    ] as const;
    let ran = 0;
    for (const [c, shape] of runs) {
      const [a, b, n] = await withAndWithout(() => stateAfterSteps(resolveConfig(c), shape, 3));
      sameArrays(a, b, `${c.arch} state under bf16`), ran += n;
    }
    assert(ran >= 6, `the fused selection ran (${ran} calls)`);
  });
});
