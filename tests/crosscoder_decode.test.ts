// A crosscoder's shared sparse code decoded through W_dec [L, F, d] in place (decodeShared) against
// the flattened product it replaces (the code times W_dec's [F, L·d] copy, flatDecoder): the same
// bits for x̂, for the values' gradient and for W_dec's (the latter now in W_dec's own layout,
// contiguous), with the backend's per-input sampled product and without it (where it has one), in
// f32 and f64, over the sparse product's two summation orders (source-major when F ≥ 2·B and
// there are ≥ 2·F entries, else by output row), entries out of row order, zero values, and pieces
// of d that are not a multiple of 4 (where the kernel declines).
import * as t from "../mod.ts";
import { decodeShared, flatDecoder } from "../sae/crosscoder/crosscoder.ts";
import { fusedSddmmPerInput } from "../tensor/fused.ts";
import { type Coo, spmm } from "../tensor/ops/sparse.ts";
import { native } from "../tensor/cpu/native.ts";
import { assert, assertEquals, test } from "./harness.ts";

/** A BatchTopK-like code: `perRow` distinct features a row on average, best first (rows mixed). */
function code(B: number, F: number, nnz: number, seed: number, dtype: "f32" | "f64"): Coo {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const seen = new Set<number>(), rows: number[] = [], cols: number[] = [], vals: number[] = [];
  while (rows.length < nnz) {
    const b = Math.floor(next() * B), i = Math.floor(next() * F);
    if (seen.has(b * F + i)) continue;
    seen.add(b * F + i), rows.push(b), cols.push(i);
    vals.push(rows.length % 7 === 3 ? 0 : next() * 2 - 1);
  }
  return {
    rows: t.tensor(Int32Array.from(rows), { dtype: "i32" }),
    cols: t.tensor(Int32Array.from(cols), { dtype: "i32" }),
    values: t.tensor(vals, { dtype }),
  };
}

/** x̂ and the gradients of Σ x̂·G with respect to the values and W_dec, through `decode`. */
function decodeAndGrads(
  decode: (v: t.Tensor, W: t.Tensor) => t.Tensor,
  c: Coo,
  W: t.Tensor,
  G: t.Tensor,
) {
  const [out, back] = t.vjp(decode, c.values, W);
  const [dv, dW] = back(G);
  return { out, dv, dW };
}

const bits = (x: t.Tensor) =>
  Array.from(x.dataSync() as ArrayLike<number>, (v) => Object.is(v, -0) ? "-0" : v);

/** The backend's fused per-input sampled product switched off for `run`. */
function withoutFusedSddmm<T>(run: () => T): T {
  // deno-lint-ignore no-explicit-any
  const table = t.getBackend().fused as Record<string, any>;
  const kernel = table.sddmmPerInput;
  table.sddmmPerInput = undefined;
  try {
    return run();
  } finally {
    table.sddmmPerInput = kernel;
  }
}

const cases: [B: number, L: number, F: number, d: number, nnz: number][] = [
  [64, 2, 512, 16, 1100], // source-major: F ≥ 2B, nnz ≥ 2F
  [40, 3, 24, 12, 300], // by output row
  [9, 1, 50, 8, 30], // one input
  [20, 2, 64, 6, 150], // pieces of 6: no fused kernel
];

for (const dtype of ["f32", "f64"] as const) {
  test(`decodeShared (${dtype}): the flattened product's bits for x̂, ∂values and ∂W_dec, with and without the fused sampled product`, () => {
    let fusedRan = 0;
    for (const [B, L, F, d, nnz] of cases) {
      const tag = `${dtype} B ${B} L ${L} F ${F} d ${d}`;
      const c = code(B, F, nnz, B * 31 + F, dtype);
      const W = t.random.normal(t.random.key(F + d), [L, F, d], { dtype });
      const G = t.random.normal(t.random.key(B + L), [B, L * d], { dtype });
      const flat = decodeAndGrads(
        (v, Wd) => spmm({ ...c, values: v }, flatDecoder(Wd), B),
        c,
        W,
        G,
      );
      const runs = [
        decodeAndGrads((v, Wd) => decodeShared({ ...c, values: v }, Wd, B), c, W, G),
        withoutFusedSddmm(() =>
          decodeAndGrads((v, Wd) => decodeShared({ ...c, values: v }, Wd, B), c, W, G)
        ),
      ];
      for (const [j, r] of runs.entries()) {
        const how = `${tag}${j ? ", composed" : ""}`;
        assertEquals(bits(r.out), bits(flat.out), `${how}: x̂`);
        assertEquals(bits(r.dv), bits(flat.dv), `${how}: ∂values`);
        assertEquals(r.dW.shape, [L, F, d], `${how}: ∂W_dec's shape`);
        assert(r.dW.isContiguous(), `${how}: ∂W_dec in W_dec's layout`);
        assertEquals(bits(r.dW), bits(flat.dW), `${how}: ∂W_dec`);
      }
      if (fusedSddmmPerInput(G, W, c.rows, c.cols)) fusedRan++;
    }
    if (native() && t.getBackend().name === "cpu") {
      assertEquals(fusedRan, 3, "the native per-input sampled product answered every d = 4m case");
    }
  });
}
