// fusedRowNorms, a crosscoder's per-input decoder norms in one pass: the bits of norm(x, -1) =
// sqrt(sum(square(x), -1)) for f32 and f64, 1-D to 3-D, rows that are not a multiple of the eight
// the kernel runs side by side, squares that overflow f32 or vanish below it, NaN and zero rows,
// natively and in the TypeScript fallback (SPARSECODER_NATIVE=0 runs this file that way).
import fc from "fast-check";
import * as t from "../mod.ts";
import { fusedRowNorms } from "../tensor/fused.ts";
import { assert, assertEquals, test } from "./harness.ts";

const bits = (x: t.Tensor) => Array.from(x.dataSync() as ArrayLike<number>, String);

test("fusedRowNorms: norm(x, -1)'s bits on random shapes and values, f32 and f64", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 0, maxLength: 2 }),
      fc.integer({ min: 1, max: 70 }),
      fc.constantFrom("f32" as const, "f64" as const),
      fc.integer({ min: 0, max: 1000 }),
      (lead, n, dtype, seed) => {
        const shape = [...lead, n];
        // Spread over many binades: sums whose double accumulation order matters.
        const x = t.mul(
          t.random.normal(t.random.key(seed), shape, { dtype }),
          t.exp(t.random.normal(t.random.key(seed + 1), shape, { dtype, std: 3 })),
        );
        const got = fusedRowNorms(x);
        if (t.getBackend().name !== "cpu") return got === null;
        assert(got !== null, "the CPU backend fuses it");
        assertEquals(got.shape, lead, "shape");
        assertEquals(bits(got), bits(t.norm(x, -1)), `${dtype} ${shape}`);
        return true;
      },
    ),
    { numRuns: 60 },
  );
});

test("fusedRowNorms: overflowing, vanishing, NaN and zero rows as the composition gives them", () => {
  const rows = [
    [3e20, 1, 2], // the square overflows f32: Infinity
    [1e-30, -1e-30, 0], // squares below f32's range: 0
    [NaN, 1, 1],
    [0, -0, 0],
    [-Infinity, 2, 3],
  ];
  for (const dtype of ["f32", "f64"] as const) {
    const x = t.tensor(rows.flat(), { shape: [5, 3], dtype });
    const got = fusedRowNorms(x);
    if (!got) continue;
    assertEquals(bits(got), bits(t.norm(x, -1)), dtype);
    // Rows of no elements: norm 0 each.
    const empty = fusedRowNorms(t.zeros([4, 0], dtype));
    assertEquals(empty ? bits(empty) : null, ["0", "0", "0", "0"], `${dtype}, empty rows`);
  }
});
