import fc from "fast-check";
import { assertClose, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import { checkGrads } from "../autodiff/check.ts";

/** A random sparse [B, F] pattern with n entries (repeats allowed) and its dense equivalent. */
function randomCoo(seed: number, B: number, F: number, n: number, dtype: t.DType = "f64") {
  const [kr, kc, kv] = t.random.split(t.random.key(seed), 3);
  const rows = t.random.randint(kr, [n], 0, B), cols = t.random.randint(kc, [n], 0, F);
  const values = t.random.normal(kv, [n], { dtype });
  const dense = t.scatterAdd(t.zeros([B * F], dtype), t.add(t.mul(rows, F), cols), values, 0);
  return { coo: { rows, cols, values }, dense: t.reshape(dense, [B, F]) };
}

const dims = fc.record({
  B: fc.integer({ min: 1, max: 6 }),
  F: fc.integer({ min: 1, max: 9 }),
  d: fc.integer({ min: 1, max: 5 }),
  n: fc.integer({ min: 0, max: 20 }),
  seed: fc.nat(10000),
});

test("spmm, spmmT and sddmm equal their dense counterparts", () => {
  fc.assert(
    fc.property(dims, ({ B, F, d, n, seed }) => {
      const { coo, dense } = randomCoo(seed, B, F, n);
      const [k1, k2] = t.random.split(t.random.key(seed + 1));
      const W = t.random.normal(k1, [F, d], { dtype: "f64" }),
        G = t.random.normal(k2, [B, d], { dtype: "f64" });
      assertClose(t.spmm(coo, W, B).dataSync(), t.matmul(dense, W).dataSync(), {
        rtol: 1e-12,
        atol: 1e-12,
      });
      assertClose(t.spmmT(coo, G, F).dataSync(), t.matmul(t.transpose(dense), G).dataSync(), {
        rtol: 1e-12,
        atol: 1e-12,
      });
      const full = t.matmul(G, t.transpose(W));
      const sampled = t.take(t.reshape(full, [-1]), t.add(t.mul(coo.rows, F), coo.cols));
      assertClose(t.sddmm(G, W, coo.rows, coo.cols).dataSync(), sampled.dataSync(), {
        rtol: 1e-12,
        atol: 1e-12,
      });
    }),
    { numRuns: 40 },
  );
});

test("gradients of the sparse products match finite differences (and second order)", () => {
  fc.assert(
    fc.property(dims, ({ B, F, d, n, seed }) => {
      const { coo } = randomCoo(seed, B, F, Math.max(n, 1));
      const [k1, k2] = t.random.split(t.random.key(seed + 2));
      const W = t.random.normal(k1, [F, d], { dtype: "f64" }),
        G = t.random.normal(k2, [B, d], { dtype: "f64" });
      checkGrads((v, w) => t.spmm({ ...coo, values: v }, w, B), [coo.values, W]);
      checkGrads((v, g) => t.spmmT({ ...coo, values: v }, g, F), [coo.values, G]);
      checkGrads((g, w) => t.sddmm(g, w, coo.rows, coo.cols), [G, W]);
      // The backward passes are built from the same products, so they differentiate again.
      checkGrads(
        (v, w) =>
          t.sum(t.grad((ww: t.Tensor) => t.sum(t.square(t.spmm({ ...coo, values: v }, ww, B))))(w)),
        [
          coo.values,
          W,
        ],
      );
    }),
    { numRuns: 20 },
  );
});

test("cooFromRows turns a top-k code into COO; bad inputs are named", async () => {
  const x = t.tensor([[0.1, 3, 2, -1], [5, 0, 0.5, 4]]);
  const [vals, idx] = t.topk(x, 2);
  const coo = t.cooFromRows(idx, vals);
  const W = t.eye(4);
  assertClose(await t.spmm(coo, W, 2).data(), [0, 3, 2, 0, 5, 0, 0, 4]);
  assertThrows(() => t.spmm({ ...coo, rows: t.cast(coo.rows, "f32") }, W, 2), "spmm", "i32");
  // A GPU backend finds a bad index in the kernel and raises it at the next readback.
  assertThrows(() => t.spmm(coo, W, 1).dataSync(), "spmm", "index 1", "1 rows");
  assertThrows(
    () => t.sddmm(t.ones([2, 3]), t.ones([4, 2]), coo.rows, coo.cols),
    "sddmm",
    "[2, 3]",
    "[4, 2]",
  );
});
