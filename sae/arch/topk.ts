/**
 * TopK SAE (Gao et al. 2024; defaults from dictionary_learning): f keeps the k largest of
 * ReLU((x − b_dec)·W_enc + b_enc) per row; loss = ‖x − x̂‖² + α·AuxK over dead features.
 * Encoding keeps (indices, values); decoding and the backward pass touch only those.
 * The same machinery serves BatchTopK, Matryoshka, transcoders and MLSAE (`selectMain`).
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, mul, stopGradient, sub, where } from "../../tensor/ops/elementwise.ts";
import type { Coo } from "../../tensor/ops/sparse.ts";
import { type Architecture, type LossContext, saeShapes, targetOrInput } from "./architecture.ts";
import { type Code, decodeWith } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import { auxkLoss, auxkLossSaeLens, type Decoder, reconstruction } from "./losses.ts";
import { initParams, type SaeParams } from "../params.ts";
import { rowTopkSelect, type Select, sparseEncoder, topkSelect } from "./topk_encode.ts";

const inputBias = (p: SaeParams, cfg: SaeConfig) => (cfg.apply_b_dec_to_input ? p.b_dec : null);

/** The main code and, when features are dead, AuxK's code over them, from one encoder matmul. */
export function encodeWithAux(
  p: SaeParams,
  x: Tensor,
  cfg: SaeConfig,
  ctx: LossContext,
  selectMain: Select,
): { main: Coo; aux: Coo | null } {
  const kAux = Math.min(cfg.auxk_k, ctx.numDead ?? 0, cfg.d_sae);
  const withAux = cfg.auxk_alpha > 0 && kAux > 0 && ctx.dead != null;
  const selects: Select[] = [selectMain];
  const dl = cfg.auxk_variant === "dl";
  if (withAux) selects.push((pre) => topkSelect(where(ctx.dead!, pre, -Infinity), kAux, dl));
  const [main, aux] = sparseEncoder("encode", x, p.W_enc, p.b_enc!, inputBias(p, cfg), selects);
  return { main, aux: aux ?? null };
}

/** The AuxK term in the configured variant; `decoder` decodes the dead code (p.W_dec by default). */
export function auxTerm(
  p: SaeParams,
  cfg: SaeConfig,
  ctx: LossContext,
  residual: Tensor,
  aux: Coo,
  decoder: Decoder = p.W_dec,
): Tensor {
  if (cfg.auxk_variant === "dl") return auxkLoss(residual, aux, decoder);
  const kAux = Math.min(cfg.auxk_k, ctx.numDead ?? 0, cfg.d_sae);
  return auxkLossSaeLens(
    residual,
    aux,
    decoder,
    p.b_dec,
    Math.min((ctx.numDead ?? 0) / cfg.auxk_k, 1) * (kAux > 0 ? 1 : 0),
  );
}

/**
 * Reconstruction + α·AuxK for any TopK-family selection; `recon` may weight prefixes (Matryoshka)
 * or decode otherwise (crosscoders), and `decoder` then decodes AuxK's dead code.
 */
export function topkFamilyLoss(
  p: SaeParams,
  x: Tensor,
  target: Tensor,
  cfg: SaeConfig,
  ctx: LossContext,
  selectMain: Select,
  recon: (code: Code, target: Tensor) => { recon: Tensor; xhat: Tensor } = (code, t) => {
    const xhat = decodeWith(code, p.W_dec, p.b_dec);
    return { recon: reconstruction(t, xhat), xhat };
  },
  decoder: Decoder = p.W_dec,
) {
  const { main, aux } = encodeWithAux(p, x, cfg, ctx, selectMain);
  const code: Code = { kind: "coo", coo: main, batch: x.shape[0] };
  const r = recon(code, target);
  if (!aux) {
    return [r.recon, { recon: r.recon, code, xhat: r.xhat }] as [
      Tensor,
      { recon: Tensor; code: Code; xhat: Tensor; auxk?: Tensor },
    ];
  }
  const auxk = auxTerm(p, cfg, ctx, stopGradient(sub(target, r.xhat)), aux, decoder);
  return [add(r.recon, mul(auxk, cfg.auxk_alpha)), {
    recon: r.recon,
    auxk,
    code,
    xhat: r.xhat,
  }] as [Tensor, { recon: Tensor; code: Code; xhat: Tensor; auxk?: Tensor }];
}

export const topkSae: Architecture = {
  sparsity: "topk",
  thresholdUse: "none",
  input: "rows",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "topk",
  defaults: { reference: 'dictionary_learning (auxk_variant "saelens": SAELens\' AuxK)' },
  paramShapes: (cfg) => saeShapes(cfg),
  target: targetOrInput,
  init: initParams,
  encode(p, x, cfg): Code {
    const [coo] = sparseEncoder("encode", x, p.W_enc, p.b_enc!, inputBias(p, cfg), [
      rowTopkSelect(cfg.k),
    ]);
    return { kind: "coo", coo, batch: x.shape[0] };
  },
  encodeInference(p, x, cfg) {
    return topkSae.encode(p, x, cfg);
  },
  decode: (p, code) => decodeWith(code, p.W_dec, p.b_dec),
  loss: (p, { x, y }, cfg, ctx) => topkFamilyLoss(p, x, y ?? x, cfg, ctx, rowTopkSelect(cfg.k)),
};
