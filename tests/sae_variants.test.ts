import { assert, assertClose, test } from "./harness.ts";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { topkSae } from "../sae/arch/topk.ts";
import { reluSae } from "../sae/arch/relu.ts";
import { unitRows } from "../sae/params.ts";
import { projectDecoderGrad } from "../sae/train/step.ts";
import { ARCHITECTURES, isCrosscoderArch } from "../sae/arch/registry.ts";

/** f64 SAE parameters and inputs from one seed. */
function randomSae(seed: number, d: number, F: number, B: number) {
  const ks = t.random.split(t.random.key(seed), 5);
  const p = {
    W_enc: t.random.normal(ks[0], [d, F], { dtype: "f64" }),
    b_enc: t.random.normal(ks[1], [F], { dtype: "f64", std: 0.1 }),
    W_dec: t.random.normal(ks[2], [F, d], { dtype: "f64" }),
    b_dec: t.random.normal(ks[3], [d], { dtype: "f64", std: 0.1 }),
  };
  return { p, x: t.random.normal(ks[4], [B, d], { dtype: "f64" }) };
}

/** SAELens's TopK AuxK written densely: dead pre-activations (no ReLU), decoded with b_dec, scaled, α = 1. */
function denseSaeLensLoss(
  p: Record<string, t.Tensor>,
  x: t.Tensor,
  k: number,
  dead: t.Tensor,
  numDead: number,
  kAuxCfg: number,
): t.Tensor {
  const F = p.W_enc.shape[1];
  const pre = t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc);
  const mask = (idx: t.Tensor) =>
    t.stopGradient(t.cast(t.gt(t.sum(t.oneHot(idx, F), 1), 0), pre.dtype));
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
  const d = 6, F = 12, B = 5, k = 3;
  const { p, x } = randomSae(11, d, F, B);
  const dead = t.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0], { dtype: "bool" });
  for (const auxk_k of [3, 8]) {
    const cfg = resolveConfig({
      arch: "topk",
      d_in: d,
      d_sae: F,
      k,
      auxk_variant: "saelens",
      auxk_k,
    });
    const ours = (q: typeof p) => topkSae.loss(q, { x }, cfg, { dead, numDead: 5 })[0];
    const [vo, go] = t.valueAndGrad(ours)(p);
    const [vd, gd] = t.valueAndGrad((q: typeof p) => denseSaeLensLoss(q, x, k, dead, 5, auxk_k))(p);
    assertClose(vo.dataSync(), vd.dataSync(), { rtol: 1e-12 });
    for (const n of ["W_enc", "b_enc", "W_dec", "b_dec"] as const) {
      assertClose(go[n].dataSync(), gd[n].dataSync(), { rtol: 1e-10, atol: 1e-12, msg: n });
    }
  }
});

test("ghost grads: added only with dead features, and only dead encoder columns receive its gradient", async () => {
  const d = 5, F = 8, B = 6;
  const { p, x } = randomSae(5, d, F, B);
  const cfg = resolveConfig({ arch: "relu", d_in: d, d_sae: F, l1_coefficient: 0 });
  const deadFlags = [0, 1, 0, 0, 1, 0, 0, 0];
  const dead = t.tensor(deadFlags, { dtype: "bool" });
  const plain = (q: typeof p) => reluSae.loss(q, { x }, cfg, {})[0];
  const ghosted = (q: typeof p) => reluSae.loss(q, { x }, cfg, { ghost: true, dead, numDead: 2 });
  // No dead features: no ghost term.
  assertClose(
    reluSae.loss(p, { x }, cfg, { ghost: true, dead, numDead: 0 })[0].dataSync(),
    plain(p).dataSync(),
  );
  // The reference formula, written out: exp(pre) of dead features, decoded, rescaled to half the residual norm.
  const pre = t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc);
  const xhat = t.add(t.matmul(t.relu(pre), p.W_dec), p.b_dec);
  const e = await t.sub(x, xhat).data();
  const xg = await t.matmul(t.mul(t.exp(pre), t.cast(dead, "f64")), p.W_dec).data();
  let ghostMse = 0, mse = 0;
  for (let b = 0; b < B; b++) {
    let ne = 0, ng = 0;
    for (let j = 0; j < d; j++) (ne += e[b * d + j] ** 2), (ng += xg[b * d + j] ** 2);
    const s = Math.sqrt(ne) / (2 * Math.sqrt(ng) + 1e-6);
    for (let j = 0; j < d; j++) ghostMse += (xg[b * d + j] * s - e[b * d + j]) ** 2;
    mse += ne;
  }
  ghostMse /= B, mse /= B;
  const [, aux] = ghosted(p);
  assertClose(aux.ghost!.dataSync(), [ghostMse * (mse / (ghostMse + 1e-6))], { rtol: 1e-10 });
  // Gradient of the ghost term alone reaches only dead features' encoder columns and biases.
  const g = t.grad((q: typeof p) => ghosted(q)[1].ghost!)(p);
  const gW = await g.W_enc.data(), gb = await g.b_enc.data();
  for (let f = 0; f < F; f++) {
    const colNorm = Math.hypot(...Array.from({ length: d }, (_, j) => gW[j * F + f]));
    if (deadFlags[f]) assert(colNorm > 0 && gb[f] !== 0, `dead feature ${f} gets ghost gradient`);
    else assert(colNorm === 0 && gb[f] === 0, `alive feature ${f} gets none`);
  }
});

test("fused row kernels (unit rows, decoder-gradient projection) equal their compositions", () => {
  const [k1, k2] = t.random.split(t.random.key(4));
  for (const dtype of ["f32", "f64"] as const) {
    const w = t.random.normal(k1, [7, 5], { dtype }), g = t.random.normal(k2, [7, 5], { dtype });
    // A transposed copy read back through a transpose is the same matrix as a strided view: not fusable.
    const view = (x: t.Tensor) => t.transpose(t.contiguous(t.transpose(x)));
    const tol = dtype === "f32" ? { rtol: 1e-5, atol: 1e-6 } : { rtol: 1e-12, atol: 1e-14 };
    assert(!view(w).isContiguous(), "the view takes the composite path");
    assertClose(unitRows(w).dataSync(), unitRows(view(w)).dataSync(), tol);
    assertClose(
      projectDecoderGrad(w, g).dataSync(),
      projectDecoderGrad(view(w), view(g)).dataSync(),
      tol,
    );
    // The projection leaves no component along the rows.
    const along = t.sum(t.mul(projectDecoderGrad(w, g), w), -1).dataSync();
    assertClose(along, new Array(7).fill(0), { atol: dtype === "f32" ? 1e-5 : 1e-12 });
  }
});

test("every architecture has init, encode, encodeInference, decode and loss", () => {
  for (const [name, a] of Object.entries(ARCHITECTURES)) {
    if (isCrosscoderArch(name)) continue; // [L, d, F] shapes: tests/crosscoder_arch.test.ts
    for (const f of ["init", "encode", "encodeInference", "decode", "loss"] as const) {
      assert(typeof a[f] === "function", `${name}.${f}`);
    }
    const cfg = resolveConfig({
      arch: name as keyof typeof ARCHITECTURES,
      d_in: 4,
      d_sae: 6,
      k: 2,
      ...(name === "transcoder" ? { d_out: 3 } : {}),
    });
    const p = a.init(t.random.key(0), cfg);
    assert(
      p.W_enc.shape.join() === "4,6" && p.W_dec.shape.join() === `6,${cfg.d_out}`,
      `${name}.init shapes`,
    );
  }
});
