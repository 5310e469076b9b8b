/**
 * Multi-layer SAE (Lawson et al. 2024): one TopK dictionary over the residual streams of all L
 * layers, each layer's vector a separate sample. Inputs [B, L, d] are standardised per token
 * (zero mean, unit variance over d, as a LayerNorm without affine), then flattened to [B·L, d].
 * loss = mean over layers of FVU_l (MSE_l / Var_l) + α·AuxK (α = 1/32).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, div, mul, sqrt, square, stopGradient, sub } from "../../tensor/ops/elementwise.ts";
import { mean, sum, variance } from "../../tensor/ops/reduce.ts";
import { reshape } from "../../tensor/ops/shape.ts";
import { fmt, ShapeError } from "../../tensor/shape.ts";
import { type Architecture, saeShapes } from "./architecture.ts";
import { type Code, decodeWith } from "../code.ts";
import { auxTerm, encodeWithAux, topkSae } from "./topk.ts";
import { rowTopkSelect } from "./topk_encode.ts";
import type { SaeConfig } from "../config.ts";
import { initParams } from "../params.ts";

const LN_EPS = 1e-5;

/** Per-token standardisation over the last axis. */
export function standardize(x: Tensor): Tensor {
  const mu = mean(x, -1, { keepdims: true });
  return div(sub(x, mu), sqrt(add(variance(x, -1, { keepdims: true }), LN_EPS)));
}

function flatTokens(x: Tensor, cfg: SaeConfig): Tensor {
  if (x.ndim !== 3 || x.shape[2] !== cfg.d_in) {
    throw new ShapeError(`mlsae: inputs must be [batch, layers, ${cfg.d_in}], got ${fmt(x.shape)}`);
  }
  return reshape(standardize(x), [-1, cfg.d_in]);
}

/** FVU of each layer: Σ‖x − x̂‖² / Σ‖x − x̄‖² over the batch, [L]. */
export function layerFvu(x: Tensor, xhat: Tensor): Tensor {
  const err = sum(square(sub(x, xhat)), [0, 2]);
  const tot = sum(square(sub(x, mean(x, 0, { keepdims: true }))), [0, 2]);
  return div(err, tot);
}

export const mlsae: Architecture = {
  sparsity: "topk",
  thresholdUse: "none",
  input: "layers",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "topk",
  defaults: { reference: "Lawson et al. 2024" },
  paramShapes: (cfg) => saeShapes(cfg),
  /** Each layer's standardised vector, one row each: [B·L, d]. */
  target: (b, cfg) => reshape(standardize(b.x), [-1, cfg.d_in]),
  init: initParams,
  encode: (p, x, cfg): Code => topkSae.encode(p, flatTokens(x, cfg), cfg),
  encodeInference: (p, x, cfg): Code => topkSae.encode(p, flatTokens(x, cfg), cfg),
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss(p, { x }, cfg, ctx) {
    const [B, L, d] = x.shape;
    const xs = flatTokens(x, cfg);
    const { main, aux } = encodeWithAux(p, xs, cfg, ctx, rowTopkSelect(cfg.k));
    const code: Code = { kind: "coo", coo: main, batch: B * L };
    const xhat = decodeWith(code, p.W_dec, p.b_dec);
    const recon = mean(layerFvu(reshape(xs, [B, L, d]), reshape(xhat, [B, L, d])));
    if (!aux) return [recon, { recon, code, xhat }];
    const auxk = auxTerm(p, cfg, ctx, stopGradient(sub(xs, xhat)), aux);
    return [add(recon, mul(auxk, cfg.auxk_alpha)), { recon, auxk, code, xhat }];
  },
};
