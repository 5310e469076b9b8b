/**
 * The native sum of squares adds in one fixed order (csrc/sum_squares.h: blocks of 1024 elements,
 * eight lanes each, the blocks in order), checked bit for bit against that order written here in
 * TypeScript, on one thread and several; the decoder-gradient projection and the transposed
 * sparse product (∂W_enc) hand back Σ of their result's squares with those bits, which
 * fusedSumSquares takes once instead of a pass of its own; and a training step (clipping by the
 * global norm, constrained decoder) gives the same bits with the by-products and without.
 */
import fc from "fast-check";
import * as t from "../mod.ts";
import { loadNative } from "../tensor/cpu/native.ts";
import { fusedProjectOutRows, fusedSpmmTransposed, fusedSumSquares } from "../tensor/fused.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { cpuHas, runs } from "./ref.ts";

const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: sums of squares on the way: ${status.reason}`);
}
// The transposed sparse product is AVX2 code: elsewhere it declines (and hands back nothing).
const avx2 = status.native !== null && cpuHas("avx2");

/** csrc/sum_squares.h's order: each square rounded to the dtype, the sums in double. */
function blockOrderSumSquares(x: ArrayLike<number>, f32: boolean): number {
  const round = f32 ? Math.fround : (v: number) => v;
  let total = 0;
  for (let b = 0; b < x.length; b += 1024) {
    const s = [0, 0, 0, 0, 0, 0, 0, 0];
    for (let i = b; i < Math.min(b + 1024, x.length); i++) s[(i - b) & 7] += round(x[i] * x[i]);
    total += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
  return round(total);
}

/** Counts the backend's standalone sum-of-squares calls while `run` runs. */
function countingSumSquares<T>(run: () => T): { result: T; calls: number } {
  // deno-lint-ignore no-explicit-any
  const table = t.getBackend().fused as Record<string, any>;
  const k = table.sumSquares;
  let calls = 0;
  table.sumSquares = (...a: unknown[]) => (calls++, k(...a));
  try {
    return { result: run(), calls };
  } finally {
    table.sumSquares = k;
  }
}

function withThreads<T>(n: number, run: () => T): T {
  const before = t.setCpuThreads(n);
  try {
    return run();
  } finally {
    t.setCpuThreads(before);
  }
}

test("native sum of squares adds in sum_squares.h's block order, bit for bit, on any thread count", () => {
  if (!status.native) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5000 }),
      fc.boolean(),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 0, max: 1000 }),
      (n, f64, threads, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const x = t.mul(t.random.normal(t.random.key(seed), [n], { dtype }), 1 + seed);
        const got = withThreads(threads, () => fusedSumSquares(x));
        assert(got !== null, "the native sum of squares ran");
        const want = blockOrderSumSquares(x.dataSync(), !f64);
        assert(
          Object.is(got.dataSync()[0], want),
          `[${n}] ${dtype}: ${got.dataSync()[0]} vs ${want}`,
        );
      },
    ),
    { numRuns: runs(60) },
  );
  // Several threads over many blocks, the last one partial; and NaN stays NaN.
  const x = t.random.normal(t.random.key(3), [1000, 1030]);
  const got = withThreads(2, () => fusedSumSquares(x)!.dataSync()[0]);
  assert(Object.is(got, blockOrderSumSquares(x.dataSync(), true)), "1000x1030 on two threads");
  const nan = t.where(t.eq(t.arange(3000), 2500), NaN, 1);
  assert(Number.isNaN(fusedSumSquares(nan)!.dataSync()[0]), "a NaN element gives NaN");
});

test("the decoder-gradient projection hands back Σ out² with the standalone bits, taken once", () => {
  if (!status.native) return;
  for (
    const [R, C, f64, threads] of [[600, 512, false, 2], [33, 37, false, 3], [9, 129, true, 2], [
      1,
      5,
      false,
      1,
    ]] as const
  ) {
    const dtype = f64 ? "f64" : "f32";
    const [k1, k2] = t.random.split(t.random.key(R + C));
    const g = t.random.normal(k1, [R, C], { dtype }), w = t.random.normal(k2, [R, C], { dtype });
    const out = withThreads(threads, () => fusedProjectOutRows(g, w));
    assert(out !== null, "the fused projection ran");
    const first = countingSumSquares(() => fusedSumSquares(out)!.dataSync()[0]);
    assertEquals(first.calls, 0, `${R}x${C}: the projection's sum was taken, no pass of its own`);
    const again = countingSumSquares(() => fusedSumSquares(out)!.dataSync()[0]);
    assertEquals(again.calls, 1, `${R}x${C}: a second ask sums afresh`);
    assert(
      Object.is(first.result, again.result),
      `${R}x${C} ${dtype}: ${first.result} vs ${again.result}`,
    );
    assert(Object.is(first.result, blockOrderSumSquares(out.dataSync(), !f64)), "the block order");
  }
});

test("∂W_enc's transposed sparse product hands back Σ out² with the standalone bits", () => {
  if (!status.native) return;
  if (!avx2) return console.log("skip: the transposed sparse product needs AVX2 here");
  for (
    const [B, d, F, k, threads] of [[256, 64, 1000, 8, 2], [40, 32, 300, 3, 1], [
      50,
      96,
      2049,
      7,
      3,
    ]]
  ) {
    const rnd = (() => {
      let s = B * 7 + F;
      return () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    })();
    const nnz = B * k;
    const rows = t.tensor(Array.from({ length: nnz }, (_, i) => Math.floor(i / k)), {
      dtype: "i32",
    });
    const cols = t.tensor(Array.from({ length: nnz }, () => Math.floor(rnd() * F)), {
      dtype: "i32",
    });
    const values = t.tensor(Array.from({ length: nnz }, () => rnd()));
    const x = t.tensor(Array.from({ length: B * d }, () => rnd() - 0.5), { shape: [B, d] });
    const out = withThreads(threads, () => fusedSpmmTransposed({ rows, cols, values }, x, F));
    assert(out !== null, `[${d}, ${F}]: the transposed product ran`);
    const first = countingSumSquares(() => fusedSumSquares(out)!.dataSync()[0]);
    assertEquals(first.calls, 0, `[${d}, ${F}]: the product's sum was taken`);
    const again = fusedSumSquares(out)!.dataSync()[0];
    assert(Object.is(first.result, again), `[${d}, ${F}]: ${first.result} vs ${again}`);
  }
});

test("a clipped TopK step with a constrained decoder gives the same bits with the sums on the way and without", async () => {
  const cfg = resolveConfig({ arch: "topk", d_in: 64, d_sae: 256, k: 8 });
  const tc = resolveTrainConfig(cfg, {
    steps: 10,
    batch_size: 128,
    geometric_median_init: false,
    normalize_activations: false,
    grad_clip: 0.5,
  });
  const x = t.random.normal(t.random.key(7), [128, 64]);
  const run = async () => {
    let state = await initTrainState(t.random.key(0), cfg, tc, []);
    for (let i = 0; i < 3; i++) {
      const { state: next } = await trainStep(state, { x }, cfg, tc);
      t.disposeReplaced(stateTensors(state), stateTensors(next));
      state = next;
    }
    const leaves = t.treeLeaves(stateTensors(state)).filter((v) => v instanceof t.Tensor);
    return await Promise.all(leaves.map((v) => (v as t.Tensor).data()));
  };
  // deno-lint-ignore no-explicit-any
  const table = t.getBackend().fused as Record<string, any>;
  const { projectOutRows, spmmTransposed } = table;
  let handed = 0;
  const counting = (k: (...a: unknown[]) => unknown) => (...a: unknown[]) =>
    k(...a.slice(0, -1), (b: unknown) => (handed++, (a.at(-1) as (b: unknown) => void)(b)));
  table.projectOutRows = projectOutRows && counting(projectOutRows);
  table.spmmTransposed = spmmTransposed && counting(spmmTransposed);
  let onTheWay: ArrayLike<number>[];
  try {
    onTheWay = await run();
  } finally {
    table.projectOutRows = projectOutRows, table.spmmTransposed = spmmTransposed;
  }
  if (status.native) assert(handed >= 3, `the step's kernels handed back sums (${handed})`);
  // Without: the same kernels, told no one wants the sum.
  table.projectOutRows = projectOutRows && ((g: unknown, w: unknown) => projectOutRows(g, w));
  table.spmmTransposed = spmmTransposed &&
    ((...a: unknown[]) => spmmTransposed(...a.slice(0, 5)));
  let without: ArrayLike<number>[];
  try {
    without = await run();
  } finally {
    table.projectOutRows = projectOutRows, table.spmmTransposed = spmmTransposed;
  }
  assertEquals(onTheWay.length, without.length);
  onTheWay.forEach((a, i) => {
    for (let j = 0; j < a.length; j++) {
      if (!Object.is(a[j], without[i][j])) {
        throw new Error(`state ${i}[${j}]: ${a[j]} vs ${without[i][j]}`);
      }
    }
  });
});
