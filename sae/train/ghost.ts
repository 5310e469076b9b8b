/**
 * Ghost grads (Anthropic, Jan 2024; the corrected form from the Bloom GPT-2 write-up): dead
 * features get a gradient signal by asking exp(pre-activation) of the dead features, decoded and
 * rescaled to half the residual's norm, to fit the residual; the term is scaled to the main MSE.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import {
  add,
  cast,
  div,
  exp,
  mul,
  sqrt,
  square,
  stopGradient,
  sub,
} from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";

/** `pre` [B, F] pre-activations, `residual` x − x̂, `dead` bool [F], `mse` the main per-row MSE mean. */
export function ghostLoss(
  pre: Tensor,
  residual: Tensor,
  W_dec: Tensor,
  dead: Tensor,
  mse: Tensor,
): Tensor {
  const e = stopGradient(residual);
  const ghostCode = mul(exp(pre), cast(dead, pre.dtype));
  const xg = matmul(ghostCode, W_dec);
  const rowNorm = (v: Tensor) => sqrt(sum(square(v), -1, { keepdims: true }));
  const scale = stopGradient(div(rowNorm(e), add(mul(rowNorm(xg), 2), 1e-6)));
  const ghostMse = mean(sum(square(sub(mul(xg, scale), e)), -1));
  return mul(ghostMse, stopGradient(div(mse, add(ghostMse, 1e-6))));
}
