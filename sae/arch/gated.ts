/**
 * Gated SAE (Rajamanoharan et al. 2024; dictionary_learning's GatedSAE): z = (x − b_dec)·W_enc,
 * π_gate = z + b_gate, π_mag = exp(r_mag)⊙z + b_mag, f = H(π_gate)·ReLU(π_mag).
 * loss = ‖x − x̂‖² + λ·s(t)·mean‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate)·W_dec + b_dec)‖², where the
 * auxiliary term uses a detached decoder (SAELens keeps it attached).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, exp, mul, relu, step, stopGradient, sub } from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { type Architecture, saeShapes, targetOrInput } from "./architecture.ts";
import { zeros } from "../../tensor/ops/create.ts";
import { type Code, decodeWith } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import { l1Penalty, reconstruction } from "./losses.ts";
import { initParams, type SaeParams } from "../params.ts";

function paths(p: SaeParams, x: Tensor, cfg: SaeConfig): { gate: Tensor; f: Tensor } {
  const z = matmul(cfg.apply_b_dec_to_input ? sub(x, p.b_dec) : x, p.W_enc);
  const gate = add(z, p.b_gate!);
  const mag = relu(add(mul(exp(p.r_mag!), z), p.b_mag!));
  return { gate, f: mul(step(gate), mag) };
}

export const gatedSae: Architecture = {
  sparsity: "gated",
  thresholdUse: "none",
  input: "rows",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "gated",
  defaults: { reference: "dictionary_learning", l1_coefficient: 1, lr: 5e-5, b1: 0 },
  paramShapes: (cfg) =>
    saeShapes(cfg, { b_gate: [cfg.d_sae], b_mag: [cfg.d_sae], r_mag: [cfg.d_sae] }),
  target: targetOrInput,
  init: (key, cfg) =>
    initParams(key, cfg, {
      own: ({ d_sae }) => ({
        b_gate: zeros([d_sae]),
        b_mag: zeros([d_sae]),
        r_mag: zeros([d_sae]),
      }),
    }),
  encode: (p, x, cfg): Code => ({ kind: "dense", f: paths(p, x, cfg).f }),
  encodeInference: (p, x, cfg): Code => ({ kind: "dense", f: paths(p, x, cfg).f }),
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x, y }, cfg, ctx) {
    const target = y ?? x;
    const { gate, f } = paths(p, x, cfg);
    const xhat = decodeWith({ kind: "dense", f }, p.W_dec, p.b_dec);
    const recon = reconstruction(target, xhat);
    const active = relu(gate);
    const sparsity = l1Penalty(active, p.W_dec, "plain", true);
    const gatedAux = reconstruction(
      target,
      add(matmul(active, stopGradient(p.W_dec)), stopGradient(p.b_dec)),
    );
    const loss = add(add(recon, mul(sparsity, cfg.l1_coefficient * (ctx.l1Scale ?? 1))), gatedAux);
    return [loss, { recon, sparsity, gatedAux, code: { kind: "dense", f }, xhat }];
  },
};
