/**
 * The optimiser step's fused native kernels against the compositions they replace: Adam applied
 * to the parameter (clipping's gradient scale, weight decay and unit decoder rows folded in) bit
 * for bit, the tiled transpose bit for bit, the sum of squares (another summation order) within
 * one rounding of sum(square(x)) in f32 (n·2⁻⁵² relative in f64), and the column-variance sum
 * (FVU's terms) within f32 rounding of the exact value; f32 and f64, one thread and several.
 */
import fc from "fast-check";
import { assert, assertEquals, test } from "./harness.ts";
import { loadNative, setNativeKernels } from "../tensor/cpu/native.ts";
import * as t from "../mod.ts";
import {
  applyStep,
  chain,
  clipByGlobalNorm,
  type GradientTransformation,
} from "../autodiff/optim.ts";
import {
  fusedAdamApply,
  fusedColumnVarianceSum,
  fusedProjectOutRows,
  fusedSumSquares,
} from "../tensor/fused.ts";
import { unitRows } from "../sae/params.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { runs } from "./ref.ts";

const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: fused step kernels: ${status.reason}`);
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}[${i}]: fused ${a[i]}, composed ${b[i]}`);
  }
}

/** `run` with the native kernels off (every fused kernel declines: the compositions run). */
function composed<T>(run: () => T): T {
  const was = setNativeKernels(false);
  try {
    return run();
  } finally {
    setNativeKernels(was);
  }
}

type P = { W: t.Tensor; b: t.Tensor; D: t.Tensor };

/** The fused kernel's value (it must run: a null would make the comparison vacuous). */
function fusedFvuTerm(x: t.Tensor, y: t.Tensor | null): number {
  const r = fusedColumnVarianceSum(x, y);
  assert(r !== null, "the fused column-variance sum ran");
  return r!.dataSync()[0];
}

/** Params, gradients and non-trivial moments (after one plain Adam step) of the given sizes. */
function fixture(R: number, C: number, seed: number, dtype: "f32" | "f64") {
  const k = t.random.split(t.random.key(seed), 4);
  const params: P = {
    W: t.random.normal(k[0], [R, C], { dtype }),
    b: t.random.normal(k[1], [C], { dtype }),
    D: unitRows(t.random.normal(k[2], [R, C], { dtype })),
  };
  const grads: P = {
    W: t.mul(t.random.normal(k[3], [R, C], { dtype }), 3),
    b: t.random.normal(k[1], [C], { dtype }),
    D: t.random.normal(k[0], [R, C], { dtype }),
  };
  return { params, grads };
}

const host = (p: P, s: unknown) =>
  [p.W, p.b, p.D, ...t.treeLeaves(s).filter((x) => x instanceof t.Tensor)].map((x) =>
    (x as t.Tensor).dataSync()
  );

test("fused Adam step (gradient scale, weight decay, unit rows) gives the composition's bits", () => {
  if (!status.native) return;
  fc.assert(
    fc.property(
      // 600 × 512 rows reach the multi-threaded path (≥ 2^18 elements).
      fc.constantFrom([1, 1], [3, 5], [7, 64], [33, 17], [600, 512]),
      fc.boolean(),
      fc.boolean(),
      fc.constantFrom(null, 0.25, 1),
      fc.integer({ min: 0, max: 1000 }),
      ([R, C], f64, decay, scale, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const { params, grads } = fixture(R, C, seed, dtype);
        const opt = t.adam({ lr: 1e-2, weightDecay: decay ? 0.1 : 0 });
        // A second step, so the moments are not zero.
        const state = opt.update(grads, opt.init(params), params)[1];
        const gradScale = scale === null ? undefined : t.scalar(scale, dtype);
        const o = { gradScale, unitRows: { leaves: new Set([params.D]), rows: unitRows } };
        const step = () => host(...applyStep(opt, grads, state, params, o));
        const want = composed(step), got = step();
        // The fused kernel did run (the comparison is not the composition against itself).
        const h = { b1: 0.9, b2: 0.999, eps: 1e-8, c2: 1, scale: -1, decay: 0 };
        const o1 = { decay: false, unitRows: true };
        assert(fusedAdamApply(params.D, grads.D, params.D, params.D, null, h, o1), "fused ran");
        ["W", "b", "D", "mu W", "mu b", "mu D", "nu W", "nu b", "nu D"].forEach((w, i) =>
          sameBits(got[i], want[i], `${dtype} ${R}x${C} ${w}`)
        );
        // Unit rows really are unit rows.
        const norms = t.norm(params.D, -1).dataSync();
        assert(norms.every((n) => Math.abs(n - 1) < 1e-5), "D's rows start at unit norm");
      },
    ),
    { numRuns: runs(40) },
  );
});

test("a fused step of chain(clip, adam) equals its update, applyUpdates and unitRows", () => {
  if (!status.native) return;
  for (const [R, C] of [[5, 7], [600, 512]]) {
    const { params, grads } = fixture(R, C, R, "f32");
    // A small max norm so clipping scales the gradients.
    const opt = chain(clipByGlobalNorm(0.5), t.adam({ lr: 1e-3 })) as GradientTransformation<
      unknown
    >;
    assert(opt.step !== undefined, "chain(clip, adam) steps in one pass");
    const state = opt.init(params);
    const o = { unitRows: { leaves: new Set([params.D]), rows: unitRows } };
    const [p1, s1] = applyStep(opt, grads, state, params, o);
    const [u, s2] = opt.update(grads, state, params);
    const p2 = t.applyUpdates(params, u) as P;
    p2.D = unitRows(p2.D);
    const a = host(p1, s1), b = host(p2, s2);
    a.forEach((x, i) => sameBits(x, b[i], `${R}x${C} leaf ${i}`));
    // Clipping did act: the first moment is 0.1 · the scaled gradient, smaller than 0.1 · g.
    const mu = t.treeLeaves(s1).filter((x) => x instanceof t.Tensor)[0] as t.Tensor;
    assert(
      t.max(t.abs(mu)).dataSync()[0] < 0.1 * t.max(t.abs(grads.W)).dataSync()[0] * 0.999,
      "clipping scaled the gradients",
    );
  }
});

test("fused sum of squares is within one rounding of sum(square(x)); the tiled transpose is exact", () => {
  if (!status.native) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 1, max: 700 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 1000 }),
      (R, C, f64, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const x = t.mul(t.random.normal(t.random.key(seed), [R, C], { dtype }), 1 + seed);
        const got = fusedSumSquares(x)!.dataSync()[0];
        const want = composed(() => t.sum(t.square(x)).dataSync()[0]);
        // f32: one rounding (the double sums agree far closer); f64: the summation order, n·2⁻⁵².
        const ulp = want * (f64 ? R * C * 2 ** -52 : 2 ** -23);
        assert(Math.abs(got - want) <= ulp, `${R}x${C} ${dtype}: ${got} vs ${want}`);
        const tr = () => [t.contiguous(t.transpose(x)).dataSync()];
        sameBits(tr()[0], composed(tr)[0], `transpose ${R}x${C}`);
      },
    ),
    { numRuns: runs(40) },
  );
  // A large case (several threads, many tiles) with a partial tile at both edges.
  const x = t.random.normal(t.random.key(9), [1000, 1030]);
  const tr = () => [t.contiguous(t.transpose(x)).dataSync()];
  sameBits(tr()[0], composed(tr)[0], "transpose 1000x1030");
  const ss = Array.from(x.dataSync() as Float32Array).reduce((s, v) => s + Math.fround(v * v), 0);
  assert(
    Math.abs(fusedSumSquares(x)!.dataSync()[0] - ss) <= ss * 2 ** -23,
    "sum of squares 1000x1030",
  );
});

test("fused column-variance sum (FVU's terms) is within f32 rounding of the exact value and near the composition", () => {
  if (!status.native) return;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 300 }),
      fc.boolean(),
      fc.double({ min: -3, max: 3, noNaN: true }),
      fc.integer({ min: 0, max: 1000 }),
      (R, C, withY, offset, seed) => {
        const [k1, k2] = t.random.split(t.random.key(seed));
        const x = t.add(t.random.normal(k1, [R, C]), offset);
        const y = withY ? t.mul(t.random.normal(k2, [R, C]), 0.5) : null;
        const got = fusedFvuTerm(x, y);
        // The exact value: the composition in f64 from the same f32 inputs.
        const x64 = t.cast(x, "f64"), y64 = y && t.cast(y, "f64");
        const exact = t.sum(t.variance(y64 ? t.sub(x64, y64) : x64, 0)).dataSync()[0];
        const f32 = composed(() => t.sum(t.variance(y ? t.sub(x, y) : x, 0)).dataSync()[0]);
        const tol = (rel: number) => rel * Math.abs(exact) + 1e-30;
        assert(Math.abs(got - exact) <= tol(2 ** -23), `${R}x${C}: ${got} vs exact ${exact}`);
        assert(Math.abs(got - f32) <= tol(1e-5), `${R}x${C}: ${got} vs composed ${f32}`);
      },
    ),
    { numRuns: runs(40) },
  );
  // Several threads (column ranges) on a step-sized matrix.
  const x = t.add(t.random.normal(t.random.key(5), [2048, 520]), 2);
  const y = t.random.normal(t.random.key(6), [2048, 520]);
  const exact = t.sum(t.variance(t.sub(t.cast(x, "f64"), t.cast(y, "f64")), 0)).dataSync()[0];
  const got = fusedFvuTerm(x, y);
  assert(Math.abs(got - exact) <= exact * 2 ** -23, `2048x520: ${got} vs ${exact}`);
});

test("native add, sub and mul of a matrix and a broadcast row (or of one shape) give the TypeScript ops' bits", () => {
  if (!status.native) return;
  const special = [0, -0, NaN, Infinity, -Infinity, 1e-40, 3.5];
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 40 }),
      fc.boolean(),
      fc.constantFrom("row", "same", "rowFirst"),
      fc.integer({ min: 0, max: 1000 }),
      (R, C, f64, kind, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const [k1, k2] = t.random.split(t.random.key(seed));
        const fill = (x: t.Tensor, o: number) => {
          const v = Float64Array.from(x.dataSync() as ArrayLike<number>);
          for (let i = o; i < v.length; i += 5) v[i] = special[(i + seed) % special.length];
          return t.tensor(v, { shape: x.shape, dtype });
        };
        const x = fill(t.random.normal(k1, [R, C]), 1);
        const y = fill(t.random.normal(k2, kind === "same" ? [R, C] : [C]), 2);
        const s = t.scalar(special[seed % special.length] || 0.37, dtype);
        const run = () =>
          (kind === "rowFirst"
            ? [t.sub(y, x), t.add(y, x), t.mul(y, x), t.mul(s, x)]
            : [t.sub(x, y), t.add(x, y), t.mul(x, y), t.mul(x, s)]).map((r) => r.dataSync());
        const want = composed(run), got = run();
        ["sub", "add", "mul", "mul by a scalar"].forEach((op, i) =>
          sameBits(got[i], want[i], `${op} ${kind} ${R}x${C}`)
        );
      },
    ),
    { numRuns: runs(60) },
  );
});

test("native decoder-gradient projection gives the TypeScript loop's bits (eight rows at a time and one)", () => {
  if (!status.native) return;
  for (
    const [R, C, f64] of [
      [1, 1, false],
      [7, 33, false],
      [19, 37, false],
      [16, 5, false],
      [9, 1, false],
      [5, 9, true],
      [600, 512, false],
    ] as const
  ) {
    const dtype = f64 ? "f64" : "f32";
    const [k1, k2] = t.random.split(t.random.key(R * C));
    const g = t.random.normal(k1, [R, C], { dtype }), w = t.random.normal(k2, [R, C], { dtype });
    const run = () => {
      const r = fusedProjectOutRows(g, w);
      assert(r !== null, "the fused projection ran");
      return r!.dataSync();
    };
    sameBits(run(), composed(run), `projectOutRows ${R}x${C} ${dtype}`);
  }
});
