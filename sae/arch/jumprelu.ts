/**
 * JumpReLU SAE (Rajamanoharan et al. 2024; dictionary_learning defaults): pre = x·W_enc + b_enc
 * (no b_dec on the input), f = pre·H(pre − θ) with a per-feature threshold θ.
 * loss = ‖x − x̂‖² + λ·s(t)·(L0/target − 1)². H has no gradient, so θ learns through
 * straight-through estimators with a rectangle kernel of bandwidth ε:
 * ∂θ of the JumpReLU = −(θ/ε)·rect((pre − θ)/ε)·g, ∂θ of the step = −(1/ε)·rect((pre − θ)/ε)·g.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { customVjp } from "../../autodiff/grad.ts";
import {
  abs,
  add,
  cast,
  div,
  gt,
  lt,
  mul,
  neg,
  square,
  sub,
} from "../../tensor/ops/elementwise.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";
import { type Architecture, saeShapes, targetOrInput } from "./architecture.ts";
import { full, zeros } from "../../tensor/ops/create.ts";
import { type Code, decodeWith } from "../code.ts";
import { reconstruction } from "./losses.ts";
import { preActivations } from "./topk_encode.ts";
import { initParams } from "../params.ts";

/** rect((pre − θ)/ε): 1 strictly inside the window of half-width ε/2 around θ. */
const rect = (pre: Tensor, theta: Tensor, eps: number) =>
  cast(lt(abs(div(sub(pre, theta), eps)), 0.5), pre.dtype);

export function jumpRelu(pre: Tensor, theta: Tensor, eps: number): Tensor {
  return customVjp(
    (x: Tensor, th: Tensor) =>
      [mul(x, cast(gt(x, th), x.dtype)), { x, th }] as [Tensor, { x: Tensor; th: Tensor }],
    (
      { x, th },
      g,
    ) => [
      mul(g, cast(gt(x, th), x.dtype)),
      sum(mul(mul(neg(div(th, eps)), rect(x, th, eps)), g), 0),
    ],
    "jumpRelu",
  )(pre, theta);
}

/** H(pre − θ) with the straight-through gradient to θ only. */
export function jumpStep(pre: Tensor, theta: Tensor, eps: number): Tensor {
  return customVjp(
    (x: Tensor, th: Tensor) =>
      [cast(gt(x, th), x.dtype), { x, th }] as [Tensor, { x: Tensor; th: Tensor }],
    ({ x, th }, g) => [null, sum(mul(mul(rect(x, th, eps), -1 / eps), g), 0)],
    "jumpStep",
  )(pre, theta);
}

export const jumpReluSae: Architecture = {
  sparsity: "jumprelu",
  thresholdUse: "parameter",
  input: "rows",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "jumprelu",
  defaults: {
    reference: "dictionary_learning (SAELens uses ε 0.05)",
    l1_coefficient: 1,
    apply_b_dec_to_input: false,
    lr: 7e-5,
    b1: 0,
  },
  paramShapes: (cfg) => saeShapes(cfg, { b_enc: [cfg.d_sae], threshold: [cfg.d_sae] }),
  target: targetOrInput,
  init: (key, cfg) =>
    initParams(key, cfg, {
      own: (c) => ({
        b_enc: zeros([c.d_sae]),
        threshold: full([c.d_sae], c.jumprelu_init_threshold),
      }),
    }),
  encode(p, x, cfg): Code {
    const pre = preActivations(x, p.W_enc, p.b_enc!, cfg.apply_b_dec_to_input ? p.b_dec : null);
    return { kind: "dense", f: jumpRelu(pre, p.threshold!, cfg.jumprelu_bandwidth) };
  },
  encodeInference: (p, x, cfg) => jumpReluSae.encode(p, x, cfg),
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x, y }, cfg, ctx) {
    const pre = preActivations(x, p.W_enc, p.b_enc!, cfg.apply_b_dec_to_input ? p.b_dec : null);
    const f = jumpRelu(pre, p.threshold!, cfg.jumprelu_bandwidth);
    const xhat = decodeWith({ kind: "dense", f }, p.W_dec, p.b_dec);
    const recon = reconstruction(y ?? x, xhat);
    const l0 = mean(sum(jumpStep(pre, p.threshold!, cfg.jumprelu_bandwidth), -1));
    const sparsity = square(sub(div(l0, cfg.jumprelu_target_l0), 1));
    const loss = add(recon, mul(sparsity, cfg.l1_coefficient * (ctx.l1Scale ?? 1)));
    return [loss, { recon, sparsity, code: { kind: "dense", f }, xhat }];
  },
};
