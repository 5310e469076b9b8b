/**
 * BatchTopK SAE (Bussmann et al. 2024; dictionary_learning defaults): training keeps the k·B
 * largest ReLU'd pre-activations of the whole batch; inference keeps those above a learned
 * threshold θ (tracked by the training step, see train/threshold). AuxK as for TopK.
 */
import { cast, gt, mul, relu } from "../../tensor/ops/elementwise.ts";
import { type Architecture, saeShapes, targetOrInput } from "./architecture.ts";
import { type Code, decodeWith } from "../code.ts";
import { preActivations } from "./topk_encode.ts";
import { batchTopkEncode, batchTopkSelectOf } from "./topk_encode.ts";
import { topkFamilyLoss } from "./topk.ts";
import { initParams } from "../params.ts";
import { single } from "../threshold.ts";

export const batchTopkSae: Architecture = {
  sparsity: "batchtopk",
  thresholdUse: "learned",
  input: "rows",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  // SAELens runs a BatchTopK SAE at inference as a JumpReLU with a uniform θ.
  saelensName: "jumprelu",
  defaults: { reference: 'dictionary_learning (threshold_ema "saelens": SAELens\' θ update)' },
  paramShapes: (cfg) => saeShapes(cfg),
  target: targetOrInput,
  init: initParams,
  encode(p, x, cfg): Code {
    const coo = batchTopkEncode(
      x,
      p.W_enc,
      p.b_enc!,
      cfg.apply_b_dec_to_input ? p.b_dec : null,
      cfg.k * x.shape[0],
    );
    return { kind: "coo", coo, batch: x.shape[0] };
  },
  encodeInference(p, x, cfg, threshold) {
    if (threshold === undefined) return batchTopkSae.encode(p, x, cfg);
    const a = relu(preActivations(x, p.W_enc, p.b_enc!, cfg.apply_b_dec_to_input ? p.b_dec : null));
    return { kind: "dense", f: mul(a, cast(gt(a, single(threshold, "batchtopk")), a.dtype)) };
  },
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss: (p, { x, y }, cfg, ctx) =>
    topkFamilyLoss(
      p,
      x,
      y ?? x,
      cfg,
      ctx,
      batchTopkSelectOf(cfg.k * x.shape[0], ctx.batchShare),
    ),
};
