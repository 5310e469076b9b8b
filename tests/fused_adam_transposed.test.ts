/**
 * The fused Adam step reading a transposed gradient (∂W_enc as the sparse product makes it, [F, d]
 * viewed as [d, F]) gives the bits of the same step on the gradient made contiguous first, with
 * and without clipping's scale, weight decay and unit rows, on shapes that do and do not fill its
 * 16-row tiles, on one thread and several; the global norm's Σg² over the transposed view stays
 * within one f32 rounding of sum(square(g)) (it sums in storage order).
 */
import fc from "fast-check";
import { assert, assertEquals, test } from "./harness.ts";
import { loadNative } from "../tensor/cpu/native.ts";
import * as t from "../mod.ts";
import { fusedAdamApply, fusedSumSquares } from "../tensor/fused.ts";
import { unitRows } from "../sae/params.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { runs } from "./ref.ts";

const status = loadNative();
if (!status.native) {
  if (readEnv("REQUIRE_NATIVE") === "1") {
    throw new Error(`REQUIRE_NATIVE=1 but the native kernels did not load: ${status.reason}`);
  }
  console.log(`skip: transposed-gradient Adam: ${status.reason}`);
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      throw new Error(`${what}[${i}]: transposed g ${a[i]}, contiguous g ${b[i]}`);
    }
  }
}

test("fused Adam on a transposed gradient gives the bits of the contiguous one", () => {
  if (!status.native) return;
  fc.assert(
    fc.property(
      // 640 × 512 reaches the multi-threaded path; 33 × 70 and 17 × 300 leave partial tiles.
      fc.constantFrom([2, 3], [33, 70], [17, 300], [16, 256], [640, 512]),
      fc.boolean(),
      fc.boolean(),
      fc.boolean(),
      fc.constantFrom(null, 0.25),
      fc.integer({ min: 0, max: 1000 }),
      ([R, C], f64, decay, unit, scale, seed) => {
        const dtype = f64 ? "f64" : "f32";
        const k = t.random.split(t.random.key(seed), 4);
        const p0 = t.random.normal(k[0], [R, C], { dtype });
        const p = unit ? unitRows(p0) : p0;
        // The gradient as the sparse product stores it: [C, R], read as its transpose.
        const gStored = t.mul(t.random.normal(k[1], [C, R], { dtype }), 3);
        const gT = t.transpose(gStored), g = t.contiguous(gT);
        assert(!gT.isContiguous() && g.isContiguous(), "one view transposed, one contiguous");
        const mu = t.mul(t.random.normal(k[2], [R, C], { dtype }), 0.1);
        const nu = t.abs(t.random.normal(k[3], [R, C], { dtype }));
        const h = { b1: 0.9, b2: 0.999, eps: 1e-8, c2: 0.02, scale: -0.01, decay: 1e-3 };
        const gs = scale === null ? null : t.scalar(scale, dtype);
        const o = { decay, unitRows: unit };
        const got = fusedAdamApply(p, gT, mu, nu, gs, h, o);
        const want = fusedAdamApply(p, g, mu, nu, gs, h, o);
        assert(got && want, "the fused kernel ran on both layouts");
        ["param", "mu", "nu"].forEach((w, i) =>
          sameBits(got[i].dataSync(), want[i].dataSync(), `${dtype} ${R}x${C} ${w}`)
        );
        t.dispose([p0, p, gStored, g, mu, nu, got, want, ...(gs ? [gs] : [])]);
      },
    ),
    { numRuns: runs(40) },
  );
});

test("Σg² of a transposed gradient is within one f32 rounding of sum(square(g))", () => {
  if (!status.native) return;
  for (const [R, C, seed] of [[512, 1024, 1], [33, 70, 2], [700, 900, 3]]) {
    const gStored = t.random.normal(t.random.key(seed), [C, R]);
    const gT = t.transpose(gStored);
    const fused = fusedSumSquares(gT);
    assert(fused, "the fused sum of squares ran on the transposed view");
    const got = fused.dataSync()[0];
    const want = t.sum(t.square(t.contiguous(gT))).dataSync()[0];
    // Exact in double (squares of f32 rounded to f32, as the kernel takes them).
    const v = gStored.dataSync();
    let exact = 0;
    for (let i = 0; i < v.length; i++) exact += Math.fround(v[i] * v[i]);
    const ulp = 2 ** (Math.floor(Math.log2(exact)) - 23);
    assert(Math.abs(got - exact) <= ulp, `${R}x${C}: fused ${got}, exact ${exact}`);
    assert(Math.abs(got - want) <= 2 * ulp + 1e-7 * exact, `${R}x${C}: ${got} vs ${want}`);
  }
});
