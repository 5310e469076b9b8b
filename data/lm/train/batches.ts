/**
 * Training batches: B random windows of T + 1 tokens from one token array, inputs the first T and
 * targets the last T (shifted by one). Where the windows start is a pure function of
 * (seed, step), so a resumed run draws exactly the batches the uninterrupted one would have.
 */
import { tensor } from "../../../tensor/ops/create.ts";
import { foldIn, key } from "../../../tensor/random.ts";
import { uniformFloats } from "../../../tensor/random_bits.ts";
import type { Tensor } from "../../../tensor/tensor.ts";

export interface BatchSpec {
  seed: number;
  batch: number;
  /** T: tokens the model sees per row. */
  context: number;
}

/** The B window starts of step `step`, uniform in [0, n − T − 1]. */
export function windowStarts(nTokens: number, step: number, s: BatchSpec): Int32Array {
  const hi = nTokens - s.context;
  if (hi < 1) {
    throw new RangeError(
      `batches: ${nTokens} tokens cannot hold one window of context ${s.context} + 1`,
    );
  }
  // The step folds into a key of its own, away from the keys initialisation draws from.
  const k = foldIn(foldIn(key(s.seed), 0x6261), step);
  // Drawn on the host (no device round trip): the same numbers as randint(k, [B], 0, hi).
  const u = uniformFloats(k.words, s.batch, "f64");
  return Int32Array.from(u, (x) => Math.floor(x * hi));
}

/** The windows of step `step` as one row-major [B, T + 1] array. */
export function batchWindows(ids: Int32Array, step: number, s: BatchSpec): Int32Array {
  const starts = windowStarts(ids.length, step, s), w = s.context + 1;
  const out = new Int32Array(s.batch * w);
  starts.forEach((start, b) => out.set(ids.subarray(start, start + w), b * w));
  return out;
}

/** Inputs and targets [rows, T] (i32) from windows [rows, T + 1]. */
export function splitWindows(
  windows: Int32Array,
  context: number,
): { inputs: Tensor; targets: Tensor } {
  const w = context + 1, rows = windows.length / w;
  const inputs = new Int32Array(rows * context), targets = new Int32Array(rows * context);
  for (let r = 0; r < rows; r++) {
    inputs.set(windows.subarray(r * w, r * w + context), r * context);
    targets.set(windows.subarray(r * w + 1, (r + 1) * w), r * context);
  }
  const shape = [rows, context];
  return {
    inputs: tensor(inputs, { dtype: "i32", shape }),
    targets: tensor(targets, { dtype: "i32", shape }),
  };
}
