/**
 * BatchTopK CrossCoder (crosscoder_learning): the k·B largest entries of the batch are chosen on
 * the decoder-norm-scaled code f·w (w from code_norm), and the unscaled f is kept. Inference keeps
 * f where f·w > θ, θ tracked by the training step on the scaled values (as for BatchTopK SAEs).
 * AuxK fits the flattened L·d residual with the dead features' code. b_dec starts at each input's
 * geometric median (train/step.ts), and k annealing is the SAE step's.
 *
 * With code_norm "decoupled" each input l selects on its own: the k·B largest f·‖W_dec[l, i]‖ of
 * the batch form input l's code, which input l alone decodes (x̂_l = code_l W_dec[l] + b_dec[l]),
 * and θ is one value per input. A feature may so be on for one input and off for another.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { arange, tensor } from "../../tensor/ops/create.ts";
import {
  add,
  cast,
  floorDiv,
  gt,
  mod,
  mul,
  relu,
  stopGradient,
  sub,
} from "../../tensor/ops/elementwise.ts";
import { topk } from "../../tensor/ops/index.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { concat, expandDims, reshape, sliceAxis, take } from "../../tensor/ops/shape.ts";
import type { Coo } from "../../tensor/ops/sparse.ts";
import {
  type Architecture,
  type LossAux,
  type LossContext,
  targetOrInput,
} from "../arch/architecture.ts";
import type { Code } from "../code.ts";
import type { SaeConfig } from "../config.ts";
import type { SaeParams } from "../params.ts";
import { type BatchShare, batchTopk, type Select, sparseEncoder } from "../arch/topk_encode.ts";
import { auxTerm, encodeWithAux, topkFamilyLoss } from "../arch/topk.ts";
import {
  codeWeights,
  crosscoderRecon,
  crosscoderShapes,
  decodeCrosscoder,
  decodeShared,
  flatInput,
  initCrosscoder,
  perInputWeights,
} from "./crosscoder.ts";
import { resolveCrosscoderFields } from "./config.ts";
import { perInput, single, type Threshold } from "../threshold.ts";

/**
 * The `total` entries of the batch with the largest f·w, keeping f = ReLU(pre) as the values.
 * With w ≥ 0, ranking pre·w picks the same positive entries as ReLU(pre)·w (ties among
 * non-positive ones may pick other indices, which carry zero value and zero gradient) and saves
 * a pass over [B, F].
 */
export function scaledBatchTopkSelect(
  pre: Tensor,
  w: Tensor,
  total: number,
  share?: BatchShare,
): Coo {
  const F = pre.shape[1];
  const flatPre = reshape(pre, [-1]);
  const [, flat] = batchTopk(reshape(mul(pre, w), [-1]), total, share);
  return { rows: floorDiv(flat, F), cols: mod(flat, F), values: relu(take(flatPre, flat, 0)) };
}

/** scaledBatchTopkSelect as a selection the encoder may fuse with its GEMM (on one rank). */
export const scaledBatchTopkSelectOf = (w: Tensor, total: number, share?: BatchShare): Select =>
  Object.assign(
    (pre: Tensor) => scaledBatchTopkSelect(pre, w, total, share),
    !share || share.ranks === 1 ? { batchTopk: total, batchScale: w } : {},
  );

/**
 * Decoupled selection: for each input l, the `total` entries of the batch with the largest
 * f·wL[l] (wL [L, F]), values f. Entries come input by input, `total` each, so entry j belongs to
 * input ⌊j / total⌋ (entryInputs).
 */
export function decoupledBatchTopkSelect(pre: Tensor, wL: Tensor, total: number): Coo {
  const [L, F] = wL.shape;
  const picks: Tensor[] = [];
  for (let l = 0; l < L; l++) {
    picks.push(topk(reshape(mul(pre, reshape(sliceAxis(wL, 0, l, l + 1), [F])), [-1]), total)[1]);
  }
  const flat = concat(picks);
  return {
    rows: floorDiv(flat, F),
    cols: mod(flat, F),
    values: relu(take(reshape(pre, [-1]), flat, 0)),
  };
}

/** The input of each entry of decoupledBatchTopkSelect's result (i32 [L·total]). */
export const entryInputs = (inputs: number, total: number, like: Tensor): Tensor =>
  floorDiv(arange(0, inputs * total, 1, "i32", like.backend), total);

/** One selection and one θ per input. */
const decoupled = (cfg: SaeConfig) => cfg.code_norm === "decoupled";

/** The decoupled code and, when features are dead, AuxK's shared code over them, from one encoder matmul. */
function encodeDecoupled(
  p: SaeParams,
  xf: Tensor,
  cfg: SaeConfig,
  ctx: LossContext,
  wL: Tensor,
): { code: Code & { kind: "inputs" }; aux: Coo | null } {
  const [L, d, F] = p.W_enc.shape;
  if (ctx.batchShare && ctx.batchShare.ranks > 1) {
    // Each input's entries are laid out `total` apiece (entryInputs); a rank's share would vary.
    throw new Error(
      `${cfg.arch} with code_norm "decoupled": data-parallel training does not gather the per-input batch top-k across ranks; train it on one process`,
    );
  }
  const total = cfg.k * xf.shape[0];
  const encP = { ...p, W_enc: reshape(p.W_enc, [L * d, F]) };
  const { main, aux } = encodeWithAux(
    encP,
    xf,
    cfg,
    ctx,
    (pre) => decoupledBatchTopkSelect(pre, wL, total),
  );
  return {
    code: {
      kind: "inputs",
      coo: main,
      input: entryInputs(L, total, main.values),
      batch: xf.shape[0],
      inputs: L,
    },
    aux,
  };
}

function encodeTrain(p: SaeParams, x: Tensor, cfg: SaeConfig): Code {
  const xf = flatInput(x, cfg);
  if (decoupled(cfg)) {
    return encodeDecoupled(p, xf, cfg, {}, perInputWeights(stopGradient(p.W_dec))).code;
  }
  const w = codeWeights(stopGradient(p.W_dec), cfg);
  const [coo] = sparseEncoder(
    "batchTopkCrosscoder",
    xf,
    reshape(p.W_enc, [-1, cfg.d_sae]),
    p.b_enc!,
    null,
    [scaledBatchTopkSelectOf(w, cfg.k * x.shape[0])],
  );
  return { kind: "coo", coo, batch: x.shape[0] };
}

/** θ-based inference: f where f·w > θ; decoupled, input l keeps f where f·‖W_dec[l]‖ > θ_l ([B, L, F] code). */
function encodeThreshold(p: SaeParams, x: Tensor, cfg: SaeConfig, threshold: Threshold): Code {
  const a = relu(add(matmul(flatInput(x, cfg), reshape(p.W_enc, [-1, cfg.d_sae])), p.b_enc!));
  if (!decoupled(cfg)) {
    return {
      kind: "dense",
      f: mul(a, cast(gt(mul(a, codeWeights(p.W_dec, cfg)), single(threshold, cfg.arch)), a.dtype)),
    };
  }
  const L = p.W_dec.shape[0];
  const θ = tensor(perInput(threshold, L), {
    dtype: a.dtype,
    shape: [1, L, 1],
    backend: a.backend,
  });
  const f = expandDims(a, 1); // [B, 1, F]
  return {
    kind: "inputsDense",
    f: mul(f, cast(gt(mul(f, expandDims(perInputWeights(p.W_dec), 0)), θ), a.dtype)),
  };
}

function decoupledLoss(
  p: SaeParams,
  x: Tensor,
  cfg: SaeConfig,
  ctx: LossContext,
): [Tensor, LossAux] {
  const [B, L] = x.shape;
  const F = cfg.d_sae;
  const wL = perInputWeights(stopGradient(p.W_dec));
  const xf = flatInput(x, cfg);
  const { code, aux } = encodeDecoupled(p, xf, cfg, ctx, wL);
  const xhat = decodeCrosscoder(p, code);
  const xhatFlat = reshape(xhat, [B, -1]);
  const recon = crosscoderRecon(xf, xhatFlat, cfg);
  // θ_l lives on input l's scaled code: these are the kept entries' f·‖W_dec[l, i]‖, one row per input.
  const { coo, input } = code;
  const thresholdValues = reshape(
    mul(stopGradient(coo.values), take(reshape(wL, [-1]), add(mul(input, F), coo.cols), 0)),
    [L, -1],
  );
  if (!aux) return [recon, { recon, code, xhat, thresholdValues }];
  // AuxK: the dead features' shared code over the flattened L·d residual, as without decoupling.
  const auxk = auxTerm(
    sharedParams(p),
    cfg,
    ctx,
    stopGradient(sub(xf, xhatFlat)),
    aux,
    (c) => decodeShared(c, p.W_dec, B),
  );
  return [add(recon, mul(auxk, cfg.auxk_alpha)), { recon, auxk, code, xhat, thresholdValues }];
}

/**
 * The flattened crosscoder's encoder and biases (flatParams) with W_dec left [L, F, d]: every
 * decode here is decodeShared, which reads it in place.
 */
function sharedParams(p: SaeParams): SaeParams {
  const [L, d, F] = p.W_enc.shape;
  return { ...p, W_enc: reshape(p.W_enc, [L * d, F]), b_dec: reshape(p.b_dec, [L * d]) };
}

export const batchTopkCrosscoder: Architecture = {
  sparsity: "batchtopk",
  thresholdUse: "learned",
  input: "inputs",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "batchtopk_crosscoder",
  defaults: {
    reference: "crosscoder_learning's BatchTopKCrossCoder (DL's TopK lr, AuxK, θ)",
    apply_b_dec_to_input: false,
    optimizer: () => "adam",
  },
  paramShapes: crosscoderShapes,
  target: targetOrInput,
  resolve: (c, fail) => resolveCrosscoderFields(c, fail),
  init: (key, cfg) => initCrosscoder(key, cfg),
  encode: (p, x, cfg) => encodeTrain(p, x, cfg),
  encodeInference: (
    p,
    x,
    cfg,
    threshold,
  ) => (threshold === undefined ? encodeTrain(p, x, cfg) : encodeThreshold(p, x, cfg, threshold)),
  decode: (p, code) => decodeCrosscoder(p, code),
  loss(p, { x }, cfg, ctx) {
    if (decoupled(cfg)) return decoupledLoss(p, x, cfg, ctx);
    const flat = sharedParams(p), B = x.shape[0];
    const w = codeWeights(stopGradient(p.W_dec), cfg);
    const xf = flatInput(x, cfg);
    const decoder = (c: Coo) => decodeShared(c, p.W_dec, B);
    const [total, aux] = topkFamilyLoss(
      flat,
      xf,
      xf,
      cfg,
      ctx,
      scaledBatchTopkSelectOf(w, cfg.k * B, ctx.batchShare),
      (code, target) => {
        const xhat = add(decoder((code as { coo: Coo }).coo), flat.b_dec);
        return { recon: crosscoderRecon(target, xhat, cfg), xhat };
      },
      decoder,
    );
    const coo = (aux.code as { coo: Coo }).coo;
    // θ lives on the scaled code, like the selection; these are the kept entries' f·w.
    const thresholdValues = mul(stopGradient(coo.values), take(w, coo.cols, 0));
    const out: LossAux = { ...aux, xhat: reshape(aux.xhat, x.shape), thresholdValues };
    return [total, out];
  },
};
