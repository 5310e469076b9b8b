/**
 * ReLU SAE with an L1 penalty (dictionary_learning "standard"; defaults from it):
 * f = ReLU((x − b_dec)·W_enc + b_enc), x̂ = f·W_dec + b_dec,
 * loss = ‖x − x̂‖² + λ·s(t)·L1, L1 plain or decoder-norm weighted (cfg.l1_variant).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, mul, relu, sub } from "../../tensor/ops/elementwise.ts";
import { ghostLoss } from "../train/ghost.ts";
import { type Architecture, saeShapes, targetOrInput } from "./architecture.ts";
import { type Code, decodeWith } from "../code.ts";
import { l1Penalty, reconstruction } from "./losses.ts";
import { initParams, type SaeParams } from "../params.ts";
import { preActivations } from "./topk_encode.ts";
import type { SaeConfig } from "../config.ts";

const pre = (p: SaeParams, x: Tensor, cfg: SaeConfig) =>
  preActivations(x, p.W_enc, p.b_enc!, cfg.apply_b_dec_to_input ? p.b_dec : null);

export function reluCode(p: SaeParams, x: Tensor, cfg: SaeConfig): Tensor {
  return relu(pre(p, x, cfg));
}

export const reluSae: Architecture = {
  sparsity: "l1",
  thresholdUse: "none",
  input: "rows",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: true,
  saelensName: "standard",
  defaults: {
    reference: 'dictionary_learning "standard"; decoder-norm L1: SAELens / DL April update',
    // The decoder-norm penalty already weights by ‖W_dec‖, so the decoder is not constrained.
    optimizer: (cfg) => cfg.l1_variant === "decoder_norm" ? "adam" : "constrained_adam",
    geometric_median_init: true,
  },
  paramShapes: (cfg) => saeShapes(cfg),
  target: targetOrInput,
  init: (key, cfg) => initParams(key, cfg, { scale: 0.1 }),
  encode: (p, x, cfg): Code => ({ kind: "dense", f: reluCode(p, x, cfg) }),
  encodeInference: (p, x, cfg): Code => ({ kind: "dense", f: reluCode(p, x, cfg) }),
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x, y }, cfg, ctx) {
    const target = y ?? x;
    const a = pre(p, x, cfg);
    const f = relu(a);
    const xhat = decodeWith({ kind: "dense", f }, p.W_dec, p.b_dec);
    const recon = reconstruction(target, xhat);
    const sparsity = l1Penalty(f, p.W_dec, cfg.l1_variant, true);
    const loss = add(recon, mul(sparsity, cfg.l1_coefficient * (ctx.l1Scale ?? 1)));
    if (!(ctx.ghost && ctx.dead && (ctx.numDead ?? 0) > 0)) {
      return [loss, { recon, sparsity, code: { kind: "dense", f }, xhat }];
    }
    const ghost = ghostLoss(a, sub(target, xhat), p.W_dec, ctx.dead, recon);
    return [add(loss, ghost), { recon, sparsity, ghost, code: { kind: "dense", f }, xhat }];
  },
};
