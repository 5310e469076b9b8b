/**
 * Held-out loss: the model's mean next-token cross-entropy over consecutive, non-overlapping
 * windows of T + 1 tokens (the first `maxTokens` or so of the array), a few rows at a time, with
 * no gradient traced (so the backend's fused inference kernels run).
 */
import { tidy } from "../../../tensor/scope.ts";
import type { Gpt2Config } from "../config.ts";
import { forward } from "../gpt2.ts";
import type { Gpt2Params } from "../load.ts";
import { splitWindows } from "./batches.ts";
import { lmLoss } from "./loss.ts";

export async function heldoutLoss(
  params: Gpt2Params,
  cfg: Gpt2Config,
  ids: Int32Array,
  o: { batch: number; maxTokens: number },
): Promise<number> {
  if (ids.length < 2) {
    throw new RangeError(`heldoutLoss: need at least 2 tokens, got ${ids.length}`);
  }
  // A short array is one shorter window.
  const T = Math.min(cfg.nPositions, ids.length - 1), w = T + 1;
  const n = Math.max(1, Math.min(Math.floor((ids.length - 1) / T), Math.ceil(o.maxTokens / T)));
  let sum = 0;
  for (let r = 0; r < n; r += o.batch) {
    const rows = Math.min(o.batch, n - r);
    const windows = new Int32Array(rows * w);
    for (let i = 0; i < rows; i++) windows.set(ids.subarray((r + i) * T, (r + i) * T + w), i * w);
    const loss = tidy(() => {
      const { inputs, targets } = splitWindows(windows, T);
      return lmLoss(forward(params, inputs, cfg), targets);
    });
    sum += (await loss.item()) * rows;
    loss.dispose();
  }
  return sum / n;
}
