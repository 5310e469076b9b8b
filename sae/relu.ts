/**
 * ReLU SAE with an L1 penalty (dictionary_learning "standard"; defaults from it):
 * f = ReLU((x − b_dec)·W_enc + b_enc), x̂ = f·W_dec + b_dec,
 * loss = ‖x − x̂‖² + λ·s(t)·L1, L1 plain or decoder-norm weighted (cfg.l1_variant).
 */
import type { Tensor } from "../tensor/tensor.ts";
import { add, mul, relu } from "../tensor/ops/elementwise.ts";
import type { Architecture } from "./architecture.ts";
import { type Code, decodeWith } from "./code.ts";
import { l1Penalty, reconstruction } from "./losses.ts";
import type { SaeParams } from "./params.ts";
import { preActivations } from "./topk_encode.ts";
import type { SaeConfig } from "./config.ts";

export function reluCode(p: SaeParams, x: Tensor, cfg: SaeConfig): Tensor {
  return relu(preActivations(x, p.W_enc, p.b_enc!, cfg.apply_b_dec_to_input ? p.b_dec : null));
}

export const reluSae: Architecture = {
  encode: (p, x, cfg): Code => ({ kind: "dense", f: reluCode(p, x, cfg) }),
  encodeInference: (p, x, cfg): Code => ({ kind: "dense", f: reluCode(p, x, cfg) }),
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x, y }, cfg, ctx) {
    const f = reluCode(p, x, cfg);
    const xhat = decodeWith({ kind: "dense", f }, p.W_dec, p.b_dec);
    const recon = reconstruction(y ?? x, xhat);
    const sparsity = l1Penalty(f, p.W_dec, cfg.l1_variant);
    const loss = add(recon, mul(sparsity, cfg.l1_coefficient * (ctx.l1Scale ?? 1)));
    return [loss, { recon, sparsity, code: { kind: "dense", f }, xhat }];
  },
};
