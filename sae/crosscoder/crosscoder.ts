/**
 * CrossCoder (crosscoder_learning; Anthropic's crosscoders): one dictionary over L inputs (layers
 * of one model, or one layer of L models). x [B, L, d]; W_enc [L, d, F], W_dec [L, F, d],
 * b_enc [F], b_dec [L, d];
 *   f = ReLU(Σ_l x_l W_enc[l] + b_enc),  x̂_l = f W_dec[l] + b_dec[l],
 *   loss = recon + λ·s(t)·mean_b Σ_i f_i w_i   (w: the code-norm weighting, config.ts).
 * Σ_l x_l W_enc[l] is one matmul of the flattened [B, L·d] input with W_enc seen as [L·d, F] (a
 * view). Decoding is the single-SAE machinery on the flattened vector with the decoder as [F, L·d]:
 * a sparse code reads W_dec in place (decodeShared), a dense one through that transposed copy.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import type { PRNGKey } from "../../tensor/random.ts";
import * as random from "../../tensor/random.ts";
import { ones, zeros } from "../../tensor/ops/create.ts";
import { add, mul, relu, sqrt, square, sub } from "../../tensor/ops/elementwise.ts";
import { mean, norm, sum } from "../../tensor/ops/reduce.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import {
  concat,
  contiguous,
  reshape,
  sliceAxis,
  stack,
  transpose,
} from "../../tensor/ops/shape.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import { geometricMedian } from "../train/geometric_median.ts";
import { fmt, ShapeError } from "../../tensor/shape.ts";
import { type Architecture, targetOrInput } from "../arch/architecture.ts";
import { asCoo, batchSize, type Code, decodeWith } from "../code.ts";
import { type Coo, sddmm, spmm, spmmT } from "../../tensor/ops/sparse.ts";
import { customVjp } from "../../autodiff/grad.ts";
import { fusedRowNorms, fusedSddmmPerInput } from "../../tensor/fused.ts";
import type { SaeConfig } from "../config.ts";
import { type SaeParams, unitRows } from "../params.ts";
import { resolveCrosscoderFields } from "./config.ts";
import type { Partition } from "./partition.ts";
import { maskParams } from "./grad_mask.ts";
import { reconstruction } from "../arch/losses.ts";

const inputsOf = (cfg: SaeConfig) => cfg.n_inputs ?? 1;

/** Parameter shapes of a crosscoder config. */
export function crosscoderShapes(
  cfg: SaeConfig,
): Record<"W_enc" | "W_dec" | "b_enc" | "b_dec", number[]> {
  const L = inputsOf(cfg), d = cfg.d_in, F = cfg.d_sae;
  return { W_enc: [L, d, F], W_dec: [L, F, d], b_enc: [F], b_dec: [L, d] };
}

/**
 * Decoder rows W_dec[l, i] random with unit norm × scale (0.1 for the L1-trained crosscoder, as
 * dictionary_learning scales its ReLU SAE; 1 by default: the BatchTopK family, crosscoder_learning's
 * norm_init_scale), the encoder their transpose, zero biases; a partition's forbidden entries
 * (DFC) zeroed.
 */
export function initCrosscoder(
  key: PRNGKey,
  cfg: SaeConfig,
  o: { scale?: number; partition?: Partition } = {},
): SaeParams {
  const [L, d, F] = [inputsOf(cfg), cfg.d_in, cfg.d_sae];
  const scale = o.scale ?? 1;
  return tidy(() => {
    let W_dec = reshape(mul(unitRows(random.normal(key, [L * F, d])), scale), [L, F, d]);
    let W_enc = contiguous(transpose(W_dec, [0, 2, 1]));
    if (o.partition) ({ W_enc, W_dec } = maskParams({ W_enc, W_dec }, o.partition));
    return { W_enc, W_dec, b_enc: zeros([F]), b_dec: zeros([L, d]) };
  });
}

/** x [B, L, d] → [B, L·d], with an error naming the expected shape. */
export function flatInput(x: Tensor, cfg: SaeConfig, op = "crosscoder"): Tensor {
  const L = inputsOf(cfg);
  if (x.ndim !== 3 || x.shape[1] !== L || x.shape[2] !== cfg.d_in) {
    throw new ShapeError(
      `${op}: inputs must be [batch, ${L}, ${cfg.d_in}] (batch, inputs, d_in), got ${fmt(x.shape)}`,
    );
  }
  return reshape(x, [x.shape[0], L * cfg.d_in]);
}

/** W_dec [L, F, d] as the flattened crosscoder's [F, L·d] (a copy). */
export function flatDecoder(W_dec: Tensor): Tensor {
  const [L, F, d] = W_dec.shape;
  return reshape(contiguous(transpose(W_dec, [1, 0, 2])), [F, L * d]);
}

/** The crosscoder as a single SAE over the flattened input: W_enc [L·d, F], W_dec [F, L·d], b_dec [L·d]. */
export function flatParams(p: SaeParams): SaeParams {
  const [L, d, F] = p.W_enc.shape;
  return {
    W_enc: reshape(p.W_enc, [L * d, F]),
    W_dec: flatDecoder(p.W_dec),
    b_enc: p.b_enc,
    b_dec: reshape(p.b_dec, [L * d]),
  };
}

/**
 * code·W′ [batch, L·d] for a shared COO code and W′ = flatDecoder(W_dec), without that copy: each
 * entry (b, i, v) becomes L entries (b·L + l, l·F + i, v) over W_dec seen as [L·F, d] (a free
 * reshape), which spmm sums in W′'s order (per output element the same terms in the same order:
 * the same bits), and ∂W_dec comes out in W_dec's own layout instead of as a transposed view. The
 * values' gradient is W′'s sampled product, read from W_dec in place where the backend can.
 */
export function decodeShared(coo: Coo, W_dec: Tensor, batch: number): Tensor {
  const [L, F, d] = W_dec.shape;
  const perInput = (f: (l: number) => Tensor) => concat(Array.from({ length: L }, (_, l) => f(l)));
  const rows = perInput((l) => add(mul(coo.rows, L), l));
  const cols = perInput((l) => add(coo.cols, l * F));
  const spread = (values: Tensor): Coo => ({ rows, cols, values: perInput(() => values) });
  const product = customVjp(
    (values: Tensor, W: Tensor) => {
      const out = spmm(spread(values), reshape(W, [L * F, d]), batch * L);
      return [reshape(out, [batch, L * d]), { values, W }] as [
        Tensor,
        { values: Tensor; W: Tensor },
      ];
    },
    (r, g, needs) => [
      needs[0]
        ? fusedSddmmPerInput(g, r.W, coo.rows, coo.cols) ??
          sddmm(g, flatDecoder(r.W), coo.rows, coo.cols)
        : null,
      needs[1]
        ? reshape(spmmT(spread(r.values), reshape(g, [batch * L, d]), L * F), [L, F, d])
        : null,
    ],
    "decodeShared",
  );
  return product(coo.values, W_dec);
}

/** ‖W_dec[l, i]‖ [L, F]: the "decoupled" code norm's weight of feature i in input l (one pass where fused). */
export const perInputWeights = (W_dec: Tensor): Tensor => fusedRowNorms(W_dec) ?? norm(W_dec, -1);

/** The code-norm weight w_i of each feature, [F] (differentiable in W_dec). */
export function codeWeights(W_dec: Tensor, cfg: SaeConfig): Tensor {
  const perInput = perInputWeights(W_dec);
  const cc = () => sum(perInput, 0);
  const sae = () => sqrt(sum(square(perInput), 0));
  switch (cfg.code_norm ?? "crosscoder") {
    case "none":
      return ones([W_dec.shape[1]], W_dec.dtype, W_dec.backend);
    case "sae":
      return sae();
    case "mixed":
      return add(
        mul(sae(), cfg.code_norm_alpha_sae ?? 1),
        mul(cc(), cfg.code_norm_alpha_cc ?? 0.1),
      );
    default: // "crosscoder", and "decoupled", whose per-input weights sum to it on a shared code (the L1 crosscoder)
      return cc();
  }
}

/** Reconstruction over the flattened L·d vector: squared (mean Σ (x − x̂)²) or unsquared (mean ‖x − x̂‖). */
export function crosscoderRecon(x: Tensor, xhat: Tensor, cfg: SaeConfig): Tensor {
  if (cfg.crosscoder_recon === "unsquared") return mean(sqrt(sum(square(sub(x, xhat)), -1)));
  return reconstruction(x, xhat);
}

/** x̂ [B, L, d] from any code; per-input codes decode each input with its own code. */
export function decodeCrosscoder(p: SaeParams, code: Code, flat?: SaeParams): Tensor {
  const [L, F, d] = p.W_dec.shape;
  if (code.kind === "inputsDense") {
    // [L, B, F]·[L, F, d] batched over inputs, back to [B, L, d].
    const perInput = matmul(transpose(code.f, [1, 0, 2]), p.W_dec);
    return add(transpose(perInput, [1, 0, 2]), p.b_dec);
  }
  if (code.kind === "inputs") {
    // Entry (b, l, i) is row b·L + l of the [B·L, d] output and row l·F + i of W_dec seen as [L·F, d]
    // (a free reshape: no transposed decoder copy).
    const { coo, input } = code;
    const rows = add(mul(coo.rows, L), input), cols = add(mul(input, F), coo.cols);
    const out = spmm(
      { rows, cols, values: coo.values },
      reshape(p.W_dec, [L * F, d]),
      code.batch * L,
    );
    return add(reshape(out, [code.batch, L, d]), p.b_dec);
  }
  const coo = asCoo(code);
  if (coo) {
    const out = add(decodeShared(coo, p.W_dec, batchSize(code)), reshape(p.b_dec, [L * d]));
    return reshape(out, [out.shape[0], L, d]);
  }
  const f = flat ?? flatParams(p);
  const out = decodeWith(code, f.W_dec, f.b_dec);
  return reshape(out, [out.shape[0], L, d]);
}

function denseCode(p: SaeParams, x: Tensor, cfg: SaeConfig, flat: SaeParams): Tensor {
  return relu(add(matmul(flatInput(x, cfg), flat.W_enc), p.b_enc!));
}

/** The L1 crosscoder: dense ReLU code; sparsity λ·s(t)·mean Σ f_i w_i. */
export const crosscoder: Architecture = {
  sparsity: "l1",
  thresholdUse: "none",
  input: "inputs",
  needsTargets: false,
  nestedGroups: false,
  ghostGrads: false,
  saelensName: "crosscoder",
  defaults: {
    reference:
      "crosscoder_learning's CrossCoder (λ 0.1, lr 1e-3; decoder init norm 0.1 as DL's L1 SAE)",
    apply_b_dec_to_input: false,
    // Decoder norms weight the code; a unit-norm constraint would fight them.
    optimizer: () => "adam",
  },
  paramShapes: crosscoderShapes,
  target: targetOrInput,
  resolve: (c, fail) => resolveCrosscoderFields(c, fail),
  init: (key, cfg) => initCrosscoder(key, cfg, { scale: 0.1 }),
  encode: (p, x, cfg) => ({ kind: "dense", f: denseCode(p, x, cfg, flatParams(p)) }),
  encodeInference: (p, x, cfg) => crosscoder.encode(p, x, cfg),
  decode: (p, code) => decodeCrosscoder(p, code),
  loss(p, { x }, cfg, ctx) {
    const flat = flatParams(p);
    const f = denseCode(p, x, cfg, flat);
    const code: Code = { kind: "dense", f };
    const xf = flatInput(x, cfg);
    const xhatFlat = add(matmul(f, flat.W_dec), flat.b_dec);
    const recon = crosscoderRecon(xf, xhatFlat, cfg);
    const sparsity = mean(sum(mul(f, codeWeights(p.W_dec, cfg)), -1));
    const total = add(recon, mul(sparsity, cfg.l1_coefficient * (ctx.l1Scale ?? 1)));
    return [total, { recon, sparsity, code, xhat: reshape(xhatFlat, x.shape) }];
  },
};

/** Each input's geometric median of x [N, L, d], stacked to [L, d] (the per-input b_dec initialisation). */
export async function perInputGeometricMedian(x: Tensor): Promise<Tensor> {
  const L = x.shape[1];
  const medians: Tensor[] = [];
  for (let l = 0; l < L; l++) {
    const xl = tidy(() => contiguous(reshape(sliceAxis(x, 1, l, l + 1), [x.shape[0], x.shape[2]])));
    medians.push(await geometricMedian(xl));
    xl.dispose();
  }
  const out = tidy(() => stack(medians));
  dispose(medians);
  return out;
}
