/**
 * The training objective in one place: mean next-token cross-entropy of logits against targets.
 * A fused cross-entropy op can replace this function's body without touching its callers.
 */
import { neg } from "../../../tensor/ops/elementwise.ts";
import { takeAlongAxis } from "../../../tensor/ops/index.ts";
import { logSoftmax, mean } from "../../../tensor/ops/reduce.ts";
import { reshape } from "../../../tensor/ops/shape.ts";
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
  const picked = takeAlongAxis(logSoftmax(logits, -1), reshape(targets, [B, T, 1]), -1);
  return neg(mean(picked));
}
