/**
 * BatchTopK CrossCoder (crosscoder_learning): the k·B largest entries of the batch are chosen on
 * the decoder-norm-scaled code f·w (w from code_norm), and the unscaled f is kept. Inference keeps
 * f where f·w > θ, θ tracked by the training step on the scaled values (as for BatchTopK SAEs).
 * AuxK fits the flattened L·d residual with the dead features' code. b_dec starts at each input's
 * geometric median (train.ts), and k annealing is the SAE step's.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { add, cast, floorDiv, gt, mod, mul, relu, stopGradient } from "../tensor/ops/elementwise.ts";
import { topk } from "../tensor/ops/index.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { reshape, take } from "../tensor/ops/shape.ts";
import type { Coo } from "../tensor/ops/sparse.ts";
import type { Architecture, LossAux } from "./architecture.ts";
import type { Code } from "./code.ts";
import type { SaeConfig } from "./config.ts";
import type { SaeParams } from "./params.ts";
import { sparseEncoder } from "./topk_encode.ts";
import { topkFamilyLoss } from "./topk.ts";
import { codeWeights, crosscoderRecon, decodeCrosscoder, flatInput, flatParams, initCrosscoder } from "./crosscoder.ts";
import { decodeWith } from "./code.ts";

/**
 * The `total` entries of the batch with the largest f·w, keeping f = ReLU(pre) as the values.
 * With w ≥ 0, ranking pre·w picks the same positive entries as ReLU(pre)·w (ties among
 * non-positive ones may pick other indices, which carry zero value and zero gradient) and saves
 * a pass over [B, F].
 */
export function scaledBatchTopkSelect(pre: Tensor, w: Tensor, total: number): Coo {
  const F = pre.shape[1];
  const flatPre = reshape(pre, [-1]);
  const [, flat] = topk(reshape(mul(pre, w), [-1]), total);
  return { rows: floorDiv(flat, F), cols: mod(flat, F), values: relu(take(flatPre, flat, 0)) };
}

function encodeTrain(p: SaeParams, x: Tensor, cfg: SaeConfig, flat: SaeParams): Code {
  const w = stopGradient(codeWeights(p.W_dec, cfg));
  const xf = flatInput(x, cfg);
  const [coo] = sparseEncoder("batchTopkCrosscoder", xf, flat.W_enc, p.b_enc!, null, [(pre) => scaledBatchTopkSelect(pre, w, cfg.k * x.shape[0])]);
  return { kind: "coo", coo, batch: x.shape[0] };
}

export const batchTopkCrosscoder: Architecture = {
  init: initCrosscoder,
  encode: (p, x, cfg) => encodeTrain(p, x, cfg, flatParams(p)),
  encodeInference(p, x, cfg, threshold) {
    if (threshold === undefined) return batchTopkCrosscoder.encode(p, x, cfg);
    const a = relu(add(matmul(flatInput(x, cfg), reshape(p.W_enc, [-1, cfg.d_sae])), p.b_enc!));
    return { kind: "dense", f: mul(a, cast(gt(mul(a, codeWeights(p.W_dec, cfg)), threshold), a.dtype)) };
  },
  decode: (p, code) => decodeCrosscoder(p, code),
  loss(p, { x }, cfg, ctx) {
    const flat = flatParams(p);
    const w = stopGradient(codeWeights(p.W_dec, cfg));
    const xf = flatInput(x, cfg);
    const [total, aux] = topkFamilyLoss(flat, xf, xf, cfg, ctx, (pre) => scaledBatchTopkSelect(pre, w, cfg.k * x.shape[0]), (code, target) => {
      const xhat = decodeWith(code, flat.W_dec, flat.b_dec);
      return { recon: crosscoderRecon(target, xhat, cfg), xhat };
    });
    const coo = (aux.code as { coo: Coo }).coo;
    // θ lives on the scaled code, like the selection; these are the kept entries' f·w.
    const thresholdValues = mul(stopGradient(coo.values), take(w, coo.cols, 0));
    const out: LossAux = { ...aux, xhat: reshape(aux.xhat, x.shape), thresholdValues };
    return [total, out];
  },
};
