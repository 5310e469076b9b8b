/**
 * The squared error (autodiff/fused_ops.ts squaredError, an SAE's reconstruction loss): its value
 * and the gradients of both operands, alone or in a larger loss, are the bits of the composition
 * mean(sum(square(sub(x, y)), -1)) it replaces, in f32 and f64, on matrices and 3-D tensors, on
 * one thread and several, with the forward and backward kernels seen to run; the composition runs where the
 * kernel is missing, and the gradient stays right against central differences.
 */
import fc from "fast-check";
import * as t from "../mod.ts";
import { checkGrads } from "../autodiff/check.ts";
import { loadNative } from "../tensor/cpu/native.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runs } from "./ref.ts";

type Tensor = t.Tensor;
const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: squared error's kernel (the composition runs instead): ${status.reason}`);
}

// deno-lint-ignore no-explicit-any
const fusedTable = () => t.getBackend().fused as Record<string, (...a: any[]) => unknown>;

/** `fn`'s result and how many times the backward (and forward) kernel gave a result during it. */
function counted<R>(fn: () => R): [R, number, number] {
  const table = fusedTable(), k = table.squaredErrorGrad, kf = table.squaredErrorRows;
  let n = 0, nf = 0;
  table.squaredErrorGrad = (...a) => {
    const r = k(...a);
    if (r) n++;
    return r;
  };
  table.squaredErrorRows = (...a) => {
    const r = kf(...a);
    if (r) nf++;
    return r;
  };
  try {
    return [fn(), n, nf];
  } finally {
    table.squaredErrorGrad = k;
    table.squaredErrorRows = kf;
  }
}

const composition = (x: Tensor, y: Tensor) => t.mean(t.sum(t.square(t.sub(x, y)), -1));

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}[${i}]: fused ${a[i]}, composed ${b[i]}`);
  }
}

/** Loss and gradients of both operands of `scale`·err(x, y) (+ a term in y when `extra`). */
function lossAndGrads(
  err: (x: Tensor, y: Tensor) => Tensor,
  x: Tensor,
  y: Tensor,
  scale: number,
  extra: boolean,
  which: [boolean, boolean],
) {
  const f = (p: { x?: Tensor; y?: Tensor }) => {
    const xx = p.x ?? x, yy = p.y ?? y;
    const e = t.mul(err(xx, yy), scale);
    return extra ? t.add(e, t.mean(t.mul(yy, yy))) : e;
  };
  const params = { ...(which[0] ? { x } : {}), ...(which[1] ? { y } : {}) };
  return t.valueAndGrad(f)(params) as [Tensor, { x?: Tensor; y?: Tensor }];
}

test("squaredError gives the composition's loss and gradient bits", async () => {
  await fc.assert(
    fc.asyncProperty(
      // 300 × 700 reaches the multi-threaded kernel; [3, 2, 5] is a crosscoder's [B, L, d].
      fc.constantFrom([1, 1], [7, 5], [3, 2, 5], [64, 33], [300, 700]),
      fc.boolean(),
      fc.constantFrom(1, 0.37, -2.5),
      fc.boolean(),
      fc.constantFrom<[boolean, boolean]>([true, true], [false, true], [true, false]),
      fc.integer({ min: 0, max: 1000 }),
      async (shape, f64, scale, extra, which, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const [k1, k2] = t.random.split(t.random.key(seed), 2);
        const x = t.random.normal(k1, shape, { dtype });
        const y = t.mul(t.random.normal(k2, shape, { dtype }), 0.5);
        const [[lf, gf], n, nf] = counted(() =>
          lossAndGrads(t.squaredError, x, y, scale, extra, which)
        );
        const [lc, gc] = lossAndGrads(composition, x, y, scale, extra, which);
        if (status.native) {
          assertEquals(n, which.filter(Boolean).length, "backward kernel calls");
          assertEquals(nf, 1, "forward kernel calls");
        }
        sameBits(await lf.data(), await lc.data(), "loss");
        for (const name of ["x", "y"] as const) {
          assertEquals(gf[name] === undefined, gc[name] === undefined, `${name}'s gradient`);
          if (gc[name]) sameBits(await gf[name]!.data(), await gc[name]!.data(), `∂${name}`);
        }
        t.dispose([x, y, lf, lc, gf, gc]);
      },
    ),
    { numRuns: runs(40) },
  );
});

test("squaredError: the same bits on one thread and several", async () => {
  if (!status.native) return;
  const x = t.random.normal(t.random.key(3), [512, 600]);
  const y = t.random.normal(t.random.key(4), [512, 600]);
  const grads = async () => {
    const [, g] = lossAndGrads(t.squaredError, x, y, 1, false, [true, true]);
    return [await g.x!.data(), await g.y!.data()];
  };
  const many = await grads();
  const before = t.setCpuThreads(1);
  try {
    const one = await grads();
    sameBits(one[0], many[0], "∂x (1 thread)"), sameBits(one[1], many[1], "∂y (1 thread)");
  } finally {
    t.setCpuThreads(before);
  }
  // And the kernel's values are ∓2·(x − y)/rows: a wrong sign or factor would fail here.
  const [, g] = lossAndGrads(t.squaredError, x, y, 1, false, [true, true]);
  const r = await t.sub(x, y).data(), dy = await g.y!.data();
  for (let i = 0; i < r.length; i += 997) {
    assert(Math.abs(dy[i] + (2 * r[i]) / 512) <= 1e-6 * Math.abs(r[i]) + 1e-12, `∂y[${i}]`);
  }
});

test("squaredError composes without the kernel and checks against central differences", () => {
  const x = t.random.normal(t.random.key(5), [6, 4], { dtype: "f64" });
  const y = t.random.normal(t.random.key(6), [6, 4], { dtype: "f64" });
  const table = fusedTable(), k = table.squaredErrorGrad;
  const kf = table.squaredErrorRows;
  delete table.squaredErrorGrad;
  delete table.squaredErrorRows;
  try {
    const [l] = lossAndGrads(t.squaredError, x, y, 1, false, [true, true]);
    assertEquals(l.dtype, "f64");
    checkGrads((a: Tensor, b: Tensor) => t.squaredError(a, b), [x, y], { rtol: 1e-6 });
  } finally {
    table.squaredErrorGrad = k;
    table.squaredErrorRows = kf;
  }
  const [, n] = counted(() =>
    checkGrads((a: Tensor, b: Tensor) => t.squaredError(a, b), [x, y], { rtol: 1e-6 })
  );
  if (status.native) assert(n > 0, "the backward kernel never ran");
});
