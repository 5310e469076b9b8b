/**
 * The training objective in one place: mean next-token cross-entropy of logits against targets,
 * through the fused op (one native pass forward, one backward, where the backend has the kernels).
 */
import { crossEntropy } from "../../../autodiff/fused_ops.ts";
import { mean } from "../../../tensor/ops/reduce.ts";
import type { Tensor } from "../../../tensor/tensor.ts";

/** Mean over every position of −log softmax(logits)[target]; logits [B, T, V], targets i32 [B, T]. */
export function lmLoss(logits: Tensor, targets: Tensor): Tensor {
  const [B, T] = targets.shape;
  if (
    logits.ndim !== 3 || targets.ndim !== 2 || logits.shape[0] !== B || logits.shape[1] !== T ||
    targets.dtype !== "i32"
  ) {
    throw new RangeError(
      `lmLoss: logits must be [B, T, V] and targets i32 [B, T], got [${logits.shape}] and ${targets.dtype} [${targets.shape}]`,
    );
  }
  return mean(crossEntropy(logits, targets));
}
