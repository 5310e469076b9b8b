/**
 * Logit effects: the direct path of data/lm/direct_logits.ts checked against the models
 * themselves. A vector added at mlp.hook_post (attn.hook_z) changes hook_mlp_out (hook_attn_out)
 * by exactly its image under the map's matrix; with the final norm's scale held at 1 (a hook on
 * ln_final.hook_scale), logits are linear in the last residual stream and change by exactly the
 * map's logits — the only part of the final norm the map drops is that scale. logitEffects' top
 * tokens are those of the model's own logit change.
 */
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import { root } from "./lm_fixtures.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { add, mul, sub } from "../tensor/ops/elementwise.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { mean } from "../tensor/ops/reduce.ts";
import { mT, reshape } from "../tensor/ops/shape.ts";
import { onesLike } from "../tensor/ops/create.ts";
import { loadModel, runWithCache, runWithHooks } from "../data/lm/model.ts";
import { directLogitMap } from "../data/lm/direct_logits.ts";
import { logitEffects, topEntries } from "../sae/eval/logit_effects.ts";

function rand(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from(
    { length: n },
    () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5,
  );
}

const TOKENS = [[1, 5, 9, 2, 7, 3], [4, 4, 8, 6, 1, 2]];

/** The hook-space vector v through the map's matrices (to the residual stream). */
function throughMatrices(v: Tensor, map: ReturnType<typeof directLogitMap>): Tensor {
  let x = reshape(v, [1, -1]);
  for (const m of map.toResidual) x = m.gamma ? mul(matmul(x, m.w), m.gamma) : matmul(x, m.w);
  return reshape(x, [-1]);
}

for (const family of ["gpt2", "gpt_neox", "llama", "qwen2"]) {
  test(`direct logits (${family}): W_out, W_O and the final norm as the model applies them`, async () => {
    const model = await loadModel(root + family);
    const tokens = tensor(TOKENS, { dtype: "i32" });
    const L = model.cfg.nLayer, d = model.cfg.dModel;
    const last = `blocks.${L - 1}.`;
    for (
      const [hook, out] of [["mlp.hook_post", "hook_mlp_out"], ["attn.hook_z", "hook_attn_out"]]
    ) {
      const name = `blocks.0.${hook}`;
      const clean = runWithCache(model, tokens, [name, `blocks.0.${out}`]).cache;
      const shape = clean[name].shape.slice(2);
      const width = shape.reduce((a, b) => a * b, 1);
      const v = tensor(rand(width, 7), { shape: [width] });
      const pushed = runWithCache(model, tokens, [`blocks.0.${out}`], {
        hooks: { [name]: (a) => add(a, reshape(v, shape)) },
      }).cache[`blocks.0.${out}`];
      const map = directLogitMap(model, name);
      const want = throughMatrices(v, map).dataSync() as Float32Array;
      const delta = sub(pushed, clean[`blocks.0.${out}`]).dataSync() as Float32Array;
      for (let p = 0; p < delta.length / d; p++) {
        assertClose(delta.subarray(p * d, (p + 1) * d), want, {
          rtol: 1e-3,
          atol: 1e-4,
          msg: `${family} ${hook} position ${p}`,
        });
      }
    }
    // Final norm with its scale held at 1: logits are affine in the last residual stream.
    const v = tensor(rand(d, 11), { shape: [d] });
    const one = { "ln_final.hook_scale": (s: Tensor) => onesLike(s) };
    const base = runWithHooks(model, tokens, one);
    const moved = runWithHooks(model, tokens, {
      ...one,
      [last + "hook_resid_post"]: (a: Tensor) => add(a, v),
    });
    const map = directLogitMap(model, last + "hook_resid_post");
    assertEquals(map.through, "direct");
    const c = map.center ? sub(v, mean(v)) : v;
    const want = matmul(reshape(mul(c, map.gamma), [1, d]), mT(map.unembed))
      .dataSync() as Float32Array;
    const delta = sub(moved, base).dataSync() as Float32Array;
    const V = want.length;
    for (let p = 0; p < delta.length / V; p++) {
      assertClose(delta.subarray(p * V, (p + 1) * V), want, { rtol: 1e-3, atol: 1e-4 });
    }
    // logitEffects: the same logits less their mean, its top tokens the largest of them.
    const e = await logitEffects(reshape(v, [1, d]), map, 3);
    const mu = want.reduce((a, b) => a + b, 0) / V;
    const order = Array.from(want.keys()).sort((a, b) => want[b] - want[a]);
    assertEquals(Array.from(e.upIds), order.slice(0, 3));
    assertEquals(Array.from(e.downIds), order.slice(-3).reverse());
    assertClose(e.up, order.slice(0, 3).map((i) => want[i] - mu), { rtol: 1e-3, atol: 1e-4 });
  });
}

test("direct logits: hooks off the direct path are refused by name; Gemma-2 folds its post-norms", async () => {
  const gpt2 = await loadModel(root + "gpt2");
  assertThrows(() => directLogitMap(gpt2, "blocks.0.mlp.hook_pre"), "mlp.hook_pre does not reach");
  assertThrows(() => directLogitMap(gpt2, "blocks.7.mlp.hook_post"), "blocks.7.mlp.hook_post");
  const gemma = await loadModel(root + "gemma2");
  const m = directLogitMap(gemma, "blocks.1.mlp.hook_post");
  assert(m.toResidual[0].gamma !== undefined && !m.center, m.through);
  assertEquals(m.toResidual[0].w.shape, [gemma.cfg.dMlp, gemma.cfg.dModel]);
});

test("topEntries: the k largest or smallest, ties to the lower id", () => {
  const row = Float32Array.of(3, -1, 3, 7, -1, 0);
  const ids = new Int32Array(3), vals = new Float32Array(3);
  topEntries(row, 3, false, ids, vals, 0);
  assertEquals([Array.from(ids), Array.from(vals)], [[3, 0, 2], [7, 3, 3]]);
  topEntries(row, 3, true, ids, vals, 0);
  assertEquals([Array.from(ids), Array.from(vals)], [[1, 4, 5], [-1, -1, 0]]);
});
