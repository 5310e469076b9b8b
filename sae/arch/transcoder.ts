/**
 * Transcoder (dictionary_learning's "MLP stretcher"): a TopK dictionary that encodes one space
 * (e.g. the MLP input) and decodes to another (the MLP output); the loss compares x̂ with the
 * target y, never with x. No b_dec on the input by default (the spaces differ).
 */
import type { Architecture } from "./architecture.ts";
import { initParams } from "../params.ts";
import { topkSae } from "./topk.ts";

export const transcoder: Architecture = {
  ...topkSae,
  needsTargets: true,
  defaults: { reference: 'dictionary_learning\'s "MLP stretcher"', apply_b_dec_to_input: false },
  check(cfg, fail) {
    if (cfg.apply_b_dec_to_input && cfg.d_out !== cfg.d_in) {
      fail(`sae config: apply_b_dec_to_input needs d_out = d_in (${cfg.d_out} vs ${cfg.d_in})`);
    }
  },
  init: (key, cfg) => initParams(key, cfg, { ownEncoder: true }),
  loss(p, batch, cfg, ctx) {
    if (!batch.y) {
      throw new TypeError("transcoder loss: the batch needs targets y (the output activations)");
    }
    if (batch.y.shape[batch.y.ndim - 1] !== cfg.d_out) {
      throw new TypeError(
        `transcoder loss: targets have width ${
          batch.y.shape[batch.y.ndim - 1]
        }, d_out is ${cfg.d_out}`,
      );
    }
    return topkSae.loss(p, batch, cfg, ctx);
  },
};
