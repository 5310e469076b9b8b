/**
 * The fused training ops (autodiff/fused_ops.ts): every gradient against central differences in
 * f64 on fast-check inputs, with the native kernels shown to have run; the native f32 and f64
 * kernels against the compositions they replace (kernels taken away); the f32 erf-gelu against
 * f64 within its stated bound; grad of grad through the composition; bad targets and shapes.
 */
import fc from "fast-check";
import * as t from "../mod.ts";
import { checkGrads } from "../autodiff/check.ts";
import type { Activation } from "../tensor/backend.ts";
import { loadNative } from "../tensor/cpu/native.ts";
import { fusedActivation, fusedActivationGrad } from "../tensor/fused.ts";
import { assert, assertClose, assertThrows, test } from "./harness.ts";
import { runs } from "./ref.ts";

type Tensor = t.Tensor;
const status = loadNative();
const KERNELS = {
  ce: ["crossEntropy", "crossEntropyGrad"],
  act: ["activation", "activationGrad"],
  norm: ["rowNorm", "rowNormGrad"],
  attn: ["attnSoftmax", "attnSoftmaxGrad"],
} as const;
type Op = keyof typeof KERNELS;
// deno-lint-ignore no-explicit-any
const fusedTable = () => t.getBackend().fused as Record<string, (...a: any[]) => unknown>;

/** `fn` with op's kernels taken from the backend: the composition runs. */
function composed<R>(op: Op, fn: () => R): R {
  const table = fusedTable(), saved = KERNELS[op].map((k) => table[k]);
  for (const k of KERNELS[op]) delete table[k];
  try {
    return fn();
  } finally {
    KERNELS[op].forEach((k, i) => (table[k] = saved[i]));
  }
}

/** `fn`'s result and how many times op's backward kernel gave a result during it. */
function counted<R>(op: Op, fn: () => R): [R, number] {
  const table = fusedTable(), name = KERNELS[op][1], k = table[name];
  let n = 0;
  table[name] = (...a) => {
    const r = k(...a);
    if (r) n++;
    return r;
  };
  try {
    return [fn(), n];
  } finally {
    table[name] = k;
  }
}

/** Values of a fixed pseudo-random tensor (sin of a scaled index). */
function values(shape: readonly number[], dtype: "f32" | "f64", scale = 1, phase = 0): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, (_, i) => scale * Math.sin(1.7 * i + phase));
  return t.tensor(v, { shape, dtype });
}

/** Gradient checks of `f` on f64 inputs, with the op's backward kernel seen to run (if native). */
function checkFused(op: Op, f: (...xs: Tensor[]) => Tensor, xs: Tensor[], atol = 1e-6): void {
  const [, n] = counted(op, () => checkGrads(f, xs, { rtol: 1e-5, atol }));
  if (status.native) assert(n > 0, `${op}: the backward kernel never ran`);
}

/** Value and gradient of sum(f(x)·w) with the kernels, and with the composition. */
function bothWays(op: Op, f: (x: Tensor) => Tensor, x: Tensor) {
  const w = values(f(x).shape, x.dtype as "f32" | "f64", 1, 0.7);
  const vg = t.valueAndGrad((x: Tensor) => t.sum(t.mul(f(x), w)));
  const run = () => {
    const [v, g] = vg(x);
    return { y: f(x).dataSync(), v: v.dataSync()[0], g: g.dataSync() };
  };
  const [fused, n] = counted(op, run);
  assert(n > 0, `${op}: the backward kernel never ran`);
  return { fused, ref: composed(op, run) };
}

// ---- cross-entropy ------------------------------------------------------------------------

const ceCase = fc.record({
  rows: fc.integer({ min: 1, max: 4 }),
  V: fc.integer({ min: 2, max: 7 }),
  seed: fc.integer({ min: 0, max: 1000 }),
});

test("fused ops: crossEntropy's gradient matches central differences (f64), ignored rows get none", () => {
  fc.assert(
    fc.property(ceCase, ({ rows, V, seed }) =>
      t.tidy(() => {
        const x = values([rows, 2, V], "f64", 3, seed);
        const tg = t.tensor(
          Array.from(
            { length: rows * 2 },
            (_, i) => ((i + seed) % 5 === 0 ? -100 : (i * 7 + seed) % V),
          ),
          { shape: [rows, 2], dtype: "i32" },
        );
        checkFused("ce", (x) => t.crossEntropy(x, tg), [x]);
        // The ignored positions: loss 0 and a zero gradient row.
        const g = t.grad((x: Tensor) => t.sum(t.crossEntropy(x, tg)))(x).dataSync();
        const l = t.crossEntropy(x, tg).dataSync(), ids = tg.dataSync();
        ids.forEach((id, r) => {
          if (id !== -100) return;
          assert(l[r] === 0, `ignored row ${r} has loss ${l[r]}`);
          for (let c = 0; c < V; c++) assert(g[r * V + c] === 0, `ignored row ${r} has a gradient`);
        });
      })),
    { numRuns: runs(15) },
  );
});

if (!status.native) {
  test("fused ops: kernel comparisons skipped (no native kernels)", () => {
    console.log(`skipped: ${status.reason}`);
  });
} else {
  for (const dtype of ["f32", "f64"] as const) {
    // f64: double throughout, a few roundings apart. f32: the kernel sums e^x in f32 lanes
    // (a relative 2⁻²⁴·V/16 bound) and rounds once, the composition after each op.
    const tol = dtype === "f64" ? { rtol: 1e-12, atol: 1e-14 } : { rtol: 2e-6, atol: 2e-7 };
    test(`fused ops: crossEntropy kernels agree with the composition (${dtype})`, () => {
      const x = values([3, 40, 517], dtype, 6, 0.1);
      const tg = t.tensor(Array.from({ length: 120 }, (_, i) => (i * 131) % 517), {
        shape: [3, 40],
        dtype: "i32",
      });
      const { fused, ref } = bothWays("ce", (x) => t.crossEntropy(x, tg), x);
      assertClose(fused.y, ref.y, { ...tol, msg: "loss" });
      assertClose(fused.g, ref.g, { ...tol, msg: "gradient" });
    });
  }

  test("fused ops: crossEntropy names a target out of range, and a shape mismatch", () => {
    const x = values([2, 3, 5], "f32");
    const bad = t.tensor([[0, 1, 2], [3, 5, 4]], { dtype: "i32" });
    assertThrows(() => t.crossEntropy(x, bad), "target 5 at row 4", "[0, 5)");
    assertThrows(
      () => t.crossEntropy(x, t.tensor([[0, 1], [2, 3]], { dtype: "i32" })),
      "crossEntropy",
      "[2, 3]",
      "[2, 2]",
    );
    assertThrows(() => t.crossEntropy(x, t.zeros([2, 3])), "i32 targets");
  });
}

test("fused ops: grad of grad through crossEntropy (the composition's VJP) matches the composition", () => {
  const x = values([3, 4], "f64", 2), tg = t.tensor([1, 0, 3], { dtype: "i32" });
  const w = values([3, 4], "f64", 1, 0.4);
  // d/dx Σ (∂L/∂x · w): a Hessian-vector product.
  const hvp = () =>
    t.grad((x: Tensor) => t.sum(t.mul(t.grad((x: Tensor) => t.sum(t.crossEntropy(x, tg)))(x), w)))(
      x,
    ).dataSync();
  assertClose(hvp(), composed("ce", hvp), { rtol: 1e-10, atol: 1e-12 });
});

// ---- activations ----------------------------------------------------------------------------

const KINDS: Activation[] = ["gelu", "gelu_tanh", "silu"];

test("fused ops: activation gradients match central differences (f64)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 0, max: 99 }),
      (n, seed) =>
        t.tidy(() => {
          const x = values([n], "f64", 4, seed);
          for (const kind of KINDS) checkFused("act", (x) => t.activation(x, kind), [x]);
        }),
    ),
    { numRuns: runs(10) },
  );
});

if (status.native) {
  test("fused ops: f32 activations and their gradients within the stated bound of f64", () => {
    // gelu_f32 (A&S 7.1.26 erf): |err| ≤ 2.5e-7·max(1, |x|); derivatives ≤ 4e-7 absolute.
    const n = 40001, grid = Array.from({ length: n }, (_, i) => -10 + 20 * i / (n - 1));
    const x32 = t.tensor(grid, { dtype: "f32" }), x64 = t.cast(x32, "f64");
    const one32 = t.onesLike(x32), one64 = t.onesLike(x64);
    for (const kind of KINDS) {
      const y32 = fusedActivation(x32, kind)!.dataSync(),
        y64 = fusedActivation(x64, kind)!
          .dataSync();
      const d32 = fusedActivationGrad(one32, x32, kind)!.dataSync();
      const d64 = fusedActivationGrad(one64, x64, kind)!.dataSync();
      const xs = x64.dataSync();
      for (let i = 0; i < n; i++) {
        const e = Math.abs(y32[i] - y64[i]), bound = 2.5e-7 * Math.max(1, Math.abs(xs[i]));
        assert(e <= bound, `${kind}(${xs[i]}): f32 ${y32[i]} vs f64 ${y64[i]}`);
        assert(
          Math.abs(d32[i] - d64[i]) <= 4e-7,
          `${kind}'(${xs[i]}): f32 ${d32[i]} vs f64 ${d64[i]}`,
        );
      }
    }
  });

  for (const dtype of ["f32", "f64"] as const) {
    const tol = dtype === "f64" ? { rtol: 1e-12, atol: 1e-14 } : { rtol: 1e-6, atol: 5e-7 };
    test(`fused ops: activation kernels agree with the composition (${dtype})`, () => {
      for (const kind of KINDS) {
        const x = values([7, 300], dtype, 5, 0.2);
        const { fused, ref } = bothWays("act", (x) => t.activation(x, kind), x);
        assertClose(fused.y, ref.y, { ...tol, msg: kind });
        assertClose(fused.g, ref.g, { ...tol, msg: `${kind} gradient` });
      }
    });
  }
}

// ---- row norms -------------------------------------------------------------------------------

const NORMS = [
  { name: "LayerNorm", center: true, plusOne: false, bias: true },
  { name: "RMSNorm", center: false, plusOne: false, bias: false },
  { name: "RMSNorm (1 + w)", center: false, plusOne: true, bias: false },
];

test("fused ops: LayerNorm and RMSNorm gradients (x, w, b) match central differences (f64)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 2, max: 9 }),
      fc.integer({ min: 0, max: 99 }),
      (rows, C, seed) =>
        t.tidy(() => {
          const x = values([rows, C], "f64", 2, seed), w = values([C], "f64", 1, seed + 1);
          const b = values([C], "f64", 0.5, seed + 2);
          for (const n of NORMS) {
            const o = { eps: 1e-5, center: n.center, plusOne: n.plusOne };
            if (n.bias) checkFused("norm", (x, w, b) => t.rowNorm(x, w, b, o), [x, w, b]);
            else checkFused("norm", (x, w) => t.rowNorm(x, w, null, o), [x, w]);
          }
        }),
    ),
    { numRuns: runs(10) },
  );
});

if (status.native) {
  for (const dtype of ["f32", "f64"] as const) {
    const tol = dtype === "f64" ? { rtol: 1e-11, atol: 1e-12 } : { rtol: 1e-5, atol: 2e-6 };
    test(`fused ops: row norm kernels agree with the composition, ∂w and ∂b included (${dtype})`, () => {
      const x = values([4, 30, 64], dtype, 3, 0.3), w = values([64], dtype, 1, 1);
      const b = values([64], dtype, 0.5, 2);
      for (const n of NORMS) {
        const o = { eps: 1e-5, center: n.center, plusOne: n.plusOne };
        const f = (w: Tensor) => t.rowNorm(x, w, n.bias ? b : null, o);
        const { fused, ref } = bothWays("norm", f, w);
        assertClose(fused.g, ref.g, { ...tol, msg: `${n.name} ∂w` });
        const fx = bothWays("norm", (x) => t.rowNorm(x, w, n.bias ? b : null, o), x);
        assertClose(fx.fused.y, fx.ref.y, { ...tol, msg: n.name });
        assertClose(fx.fused.g, fx.ref.g, { ...tol, msg: `${n.name} ∂x` });
      }
    });
  }
}

// ---- causal softmax --------------------------------------------------------------------------

test("fused ops: causalSoftmax's gradient matches central differences (f64), mask and window", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 0, max: 99 }),
      (B, H, T, seed) =>
        t.tidy(() => {
          const raw = values([B, H, T, T], "f64", 2, seed);
          // Key 0 of batch 0 hidden: its first query's row is fully hidden (uniform, no gradient).
          const mask = t.tensor(
            Array.from({ length: B * T }, (_, i) => i !== 0 && (i + seed) % 4 !== 1),
            { shape: [B, T], dtype: "bool" },
          );
          for (const o of [{ window: null, mask: null }, { window: 2, mask }]) {
            const opts = { scale: 0.7, softcap: null, window: o.window };
            checkFused("attn", (r) => t.causalSoftmax(r, o.mask, opts), [raw]);
          }
        }),
    ),
    { numRuns: runs(10) },
  );
});

if (status.native) {
  for (const dtype of ["f32", "f64"] as const) {
    const tol = dtype === "f64" ? { rtol: 1e-12, atol: 1e-14 } : { rtol: 1e-5, atol: 1e-7 };
    test(`fused ops: causalSoftmax kernels agree with the composition (${dtype})`, () => {
      const raw = values([2, 3, 17, 17], dtype, 4, 0.5);
      const mask = t.tensor(Array.from({ length: 34 }, (_, i) => i % 5 !== 2), {
        shape: [2, 17],
        dtype: "bool",
      });
      for (const [m, window] of [[null, null], [mask, null], [mask, 4]] as const) {
        const o = { scale: 0.125, softcap: null, window };
        const { fused, ref } = bothWays("attn", (r) => t.causalSoftmax(r, m, o), raw);
        assertClose(fused.y, ref.y, { ...tol, msg: `pattern (window ${window})` });
        assertClose(fused.g, ref.g, { ...tol, msg: `∂scores (window ${window})` });
      }
    });
  }
}
