import fc from "fast-check";
import { assertClose, assertEquals, test } from "./harness.ts";
import * as t from "../mod.ts";
import { batchTopkEncode, sparseDecode, topkEncode } from "../sae/arch/topk_encode.ts";
import { checkGrads } from "../autodiff/check.ts";

/** The dense formulation the Python references use: mask the ReLU code to its top k, decode with a matmul. */
function denseReconstruction(
  x: t.Tensor,
  p: Record<string, t.Tensor>,
  k: number,
  bDecIn: boolean,
): t.Tensor {
  const pre = t.add(t.matmul(bDecIn ? t.sub(x, p.b_dec) : x, p.W_enc), p.b_enc);
  const [, idx] = t.topk(pre, k);
  const mask = t.stopGradient(t.cast(t.gt(t.sum(t.oneHot(idx, pre.shape[1]), 1), 0), pre.dtype));
  return t.add(t.matmul(t.mul(t.relu(pre), mask), p.W_dec), p.b_dec);
}

function setup(seed: number, B: number, d: number, F: number) {
  const ks = t.random.split(t.random.key(seed), 5);
  return {
    x: t.random.normal(ks[0], [B, d], { dtype: "f64" }),
    p: {
      W_enc: t.random.normal(ks[1], [d, F], { dtype: "f64" }),
      b_enc: t.random.normal(ks[2], [F], { dtype: "f64", std: 0.1 }),
      W_dec: t.random.normal(ks[3], [F, d], { dtype: "f64" }),
      b_dec: t.random.normal(ks[4], [d], { dtype: "f64", std: 0.1 }),
    },
  };
}

const shapes = fc.record({
  B: fc.integer({ min: 1, max: 5 }),
  d: fc.integer({ min: 1, max: 6 }),
  F: fc.integer({ min: 2, max: 12 }),
  seed: fc.nat(1000),
  bDecIn: fc.boolean(),
})
  .chain((s) => fc.record({ s: fc.constant(s), k: fc.integer({ min: 1, max: s.F }) }));

test("topkEncode + sparseDecode equal the dense masked formulation, values and gradients", () => {
  fc.assert(
    fc.property(shapes, ({ s: { B, d, F, seed, bDecIn }, k }) => {
      const { x, p } = setup(seed, B, d, F);
      const sparse = (q: typeof p, xx: t.Tensor) =>
        sparseDecode(
          topkEncode(xx, q.W_enc, q.b_enc, bDecIn ? q.b_dec : null, k),
          q.W_dec,
          q.b_dec,
        );
      assertClose(sparse(p, x).dataSync(), denseReconstruction(x, p, k, bDecIn).dataSync(), {
        rtol: 1e-12,
        atol: 1e-12,
      });
      const w = t.random.normal(t.random.key(seed + 7), [B, d], { dtype: "f64" });
      const lossS = (q: typeof p, xx: t.Tensor) => t.sum(t.mul(sparse(q, xx), w));
      const lossD = (q: typeof p, xx: t.Tensor) =>
        t.sum(t.mul(denseReconstruction(xx, q, k, bDecIn), w));
      const [gs, gxs] = t.grad(lossS, { argnums: [0, 1] })(p, x);
      const [gd, gxd] = t.grad(lossD, { argnums: [0, 1] })(p, x);
      for (const name of ["W_enc", "b_enc", "W_dec", "b_dec"] as const) {
        assertClose(gs[name].dataSync(), gd[name].dataSync(), {
          rtol: 1e-10,
          atol: 1e-10,
          msg: name,
        });
      }
      assertClose(gxs.dataSync(), gxd.dataSync(), { rtol: 1e-10, atol: 1e-10, msg: "x" });
    }),
    { numRuns: 40 },
  );
});

test("topkEncode gradients match finite differences; exactly k entries per row", () => {
  const { x, p } = setup(3, 4, 5, 9);
  checkGrads((W, b, bd, Wd) => sparseDecode(topkEncode(x, W, b, bd, 3), Wd, bd), [
    p.W_enc,
    p.b_enc,
    p.b_dec,
    p.W_dec,
  ]);
  const code = topkEncode(x, p.W_enc, p.b_enc, p.b_dec, 3);
  assertEquals(code.values.shape, [4, 3]);
  assertEquals(new Set(Array.from(code.indices.dataSync()).slice(0, 3)).size, 3);
});

test("batchTopkEncode equals the dense batch-masked formulation, values and gradients", () => {
  fc.assert(
    fc.property(shapes, ({ s: { B, d, F, seed, bDecIn }, k }) => {
      const { x, p } = setup(seed, B, d, F);
      const total = Math.min(k * B, B * F);
      const sparse = (q: typeof p) => {
        const coo = batchTopkEncode(x, q.W_enc, q.b_enc, bDecIn ? q.b_dec : null, total);
        return t.add(t.spmm(coo, q.W_dec, B), q.b_dec);
      };
      const dense = (q: typeof p) => {
        const pre = t.add(t.matmul(bDecIn ? t.sub(x, q.b_dec) : x, q.W_enc), q.b_enc);
        const [, flat] = t.topk(t.reshape(pre, [-1]), total);
        const mask = t.stopGradient(
          t.reshape(t.cast(t.gt(t.sum(t.oneHot(flat, B * F), 0), 0), "f64"), [B, F]),
        );
        return t.add(t.matmul(t.mul(t.relu(pre), mask), q.W_dec), q.b_dec);
      };
      assertClose(sparse(p).dataSync(), dense(p).dataSync(), { rtol: 1e-12, atol: 1e-12 });
      const w = t.random.normal(t.random.key(seed + 9), [B, d], { dtype: "f64" });
      const gs = t.grad((q: typeof p) => t.sum(t.mul(sparse(q), w)))(p);
      const gd = t.grad((q: typeof p) => t.sum(t.mul(dense(q), w)))(p);
      for (const name of ["W_enc", "b_enc", "W_dec", "b_dec"] as const) {
        assertClose(gs[name].dataSync(), gd[name].dataSync(), {
          rtol: 1e-10,
          atol: 1e-10,
          msg: name,
        });
      }
    }),
    { numRuns: 30 },
  );
});
