import { assertClose, test } from "./harness.ts";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { topkSae } from "../sae/topk.ts";

/** SAELens's TopK AuxK written densely: dead pre-activations (no ReLU), decoded with b_dec, scaled, α = 1. */
function denseSaeLensLoss(p: Record<string, t.Tensor>, x: t.Tensor, k: number, dead: t.Tensor, numDead: number, kAuxCfg: number): t.Tensor {
  const F = p.W_enc.shape[1];
  const pre = t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc);
  const mask = (idx: t.Tensor) => t.stopGradient(t.cast(t.gt(t.sum(t.oneHot(idx, F), 1), 0), pre.dtype));
  const [, idx] = t.topk(pre, k);
  const xhat = t.add(t.matmul(t.mul(t.relu(pre), mask(idx)), p.W_dec), p.b_dec);
  const recon = t.mean(t.sum(t.square(t.sub(x, xhat)), -1));
  const kAux = Math.min(kAuxCfg, numDead);
  const masked = t.where(dead, pre, -Infinity);
  const [, auxIdx] = t.topk(masked, kAux);
  const auxCode = t.mul(t.where(dead, pre, 0), mask(auxIdx));
  const e = t.stopGradient(t.sub(x, xhat));
  const ehat = t.add(t.matmul(auxCode, p.W_dec), p.b_dec);
  const scale = Math.min(numDead / kAuxCfg, 1);
  return t.add(recon, t.mul(t.mean(t.sum(t.square(t.sub(ehat, e)), -1)), scale));
}

test("AuxK, SAELens variant: loss and gradients equal the dense formulation", () => {
  const ks = t.random.split(t.random.key(11), 5);
  const d = 6, F = 12, B = 5, k = 3;
  const p = {
    W_enc: t.random.normal(ks[0], [d, F], { dtype: "f64" }),
    b_enc: t.random.normal(ks[1], [F], { dtype: "f64", std: 0.1 }),
    W_dec: t.random.normal(ks[2], [F, d], { dtype: "f64" }),
    b_dec: t.random.normal(ks[3], [d], { dtype: "f64", std: 0.1 }),
  };
  const x = t.random.normal(ks[4], [B, d], { dtype: "f64" });
  const dead = t.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0], { dtype: "bool" });
  for (const auxk_k of [3, 8]) {
    const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k, auxk_variant: "saelens", auxk_k });
    const ours = (q: typeof p) => topkSae.loss(q, { x }, cfg, { dead, numDead: 5 })[0];
    const [vo, go] = t.valueAndGrad(ours)(p);
    const [vd, gd] = t.valueAndGrad((q: typeof p) => denseSaeLensLoss(q, x, k, dead, 5, auxk_k))(p);
    assertClose(vo.dataSync(), vd.dataSync(), { rtol: 1e-12 });
    for (const n of ["W_enc", "b_enc", "W_dec", "b_dec"] as const) assertClose(go[n].dataSync(), gd[n].dataSync(), { rtol: 1e-10, atol: 1e-12, msg: n });
  }
});
