/** Loss terms shared by the architectures (definitions in ../shared/SAE-REFERENCE.md). */
import type { Tensor } from "../../tensor/tensor.ts";
import { abs, add, div, isFinite, mul, square, sub, where } from "../../tensor/ops/elementwise.ts";
import { mean, norm, sum } from "../../tensor/ops/reduce.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { expandDims, squeeze } from "../../tensor/ops/shape.ts";
import { type Coo, spmm } from "../../tensor/ops/sparse.ts";
import { squaredError } from "../../autodiff/fused_ops.ts";

/**
 * Mean over the batch of Σ_d (x − x̂)² (dictionary_learning and SAELens); its backward is one
 * pass where the backend fuses it (the composition's bits).
 */
export function reconstruction(x: Tensor, xhat: Tensor): Tensor {
  return squaredError(x, xhat);
}

/**
 * mean‖f‖₁, or with decoder-norm weighting mean Σᵢ fᵢ‖W_dec[i]‖. Codes known to be non-negative
 * (ReLU outputs) skip the abs, saving a forward and a backward pass over [B, F].
 */
export function l1Penalty(
  f: Tensor,
  W_dec: Tensor,
  variant: "plain" | "decoder_norm",
  nonNegative = false,
): Tensor {
  const a = nonNegative ? f : abs(f);
  if (variant === "plain") return mean(sum(a, -1));
  // Σᵢ fᵢ‖W_dec[i]‖ per row is a mat-vec: one BLAS read of f forward and backward.
  return mean(squeeze(matmul(a, expandDims(norm(W_dec, -1), 1)), 1));
}

/**
 * A decoder as its matrix W_dec [F, d], or as the product code·W_dec it stands for ([B, d]; a
 * crosscoder's decoder kept per input decodes without its flattened copy).
 */
export type Decoder = Tensor | ((code: Coo) => Tensor);

const decodeAux = (aux: Coo, W_dec: Decoder, batch: number): Tensor =>
  typeof W_dec === "function" ? W_dec(aux) : spmm(aux, W_dec, batch);

/**
 * AuxK (dictionary_learning): the dead-feature code `aux` decoded without bias should fit the
 * residual e = x − x̂ (taken without gradient); the error is normalised by e's variance about its
 * batch mean, and a 0/0 (no residual) counts as 0.
 */
export function auxkLoss(residual: Tensor, aux: Coo, W_dec: Decoder): Tensor {
  const ehat = decodeAux(aux, W_dec, residual.shape[0]);
  const err = squaredError(residual, ehat);
  const denom = mean(sum(square(sub(residual, mean(residual, 0, { keepdims: true }))), -1));
  const r = div(err, denom);
  return where(isFinite(r), r, 0);
}

/** SAELens's AuxK: the dead code decoded with b_dec against the residual, scaled by min(#dead/k_aux, 1). */
export function auxkLossSaeLens(
  residual: Tensor,
  aux: Coo,
  W_dec: Decoder,
  b_dec: Tensor,
  scale: number,
): Tensor {
  const ehat = add(decodeAux(aux, W_dec, residual.shape[0]), b_dec);
  return mul(squaredError(ehat, residual), scale);
}
