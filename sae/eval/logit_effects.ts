/**
 * Logit effects: for each feature, the tokens whose logits its decoder direction raises and lowers
 * most, through the model's direct path (data/lm/direct_logits.ts: the matrices after the hook,
 * the final norm's centring and weight, the unembedding), less the mean over the vocabulary.
 * Features go through in chunks, so memory holds chunk · V logits at a time.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { mul, sub } from "../../tensor/ops/elementwise.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { mean } from "../../tensor/ops/reduce.ts";
import { contiguous, mT, sliceAxis } from "../../tensor/ops/shape.ts";
import { tidy } from "../../tensor/scope.ts";
import type { DirectLogitMap } from "../../data/lm/direct_logits.ts";

export interface LogitEffects {
  /** Tokens kept per feature and side. */
  k: number;
  /** [F, k] the token ids raised most (descending effect) and their effects. */
  upIds: Int32Array;
  up: Float32Array;
  /** [F, k] the token ids lowered most (ascending effect, most negative first). */
  downIds: Int32Array;
  down: Float32Array;
}

/** The k largest (or, with `lowest`, smallest) entries of `row`, ties to the lower id, into `ids`/`vals` at `o`. */
export function topEntries(
  row: Float32Array,
  k: number,
  lowest: boolean,
  ids: Int32Array,
  vals: Float32Array,
  o: number,
): void {
  const sign = lowest ? -1 : 1;
  let n = 0;
  for (let i = 0; i < row.length; i++) {
    const v = sign * row[i];
    if (n === k && !(v > sign * vals[o + k - 1])) continue;
    let j = n < k ? n++ : k - 1;
    while (j > 0 && v > sign * vals[o + j - 1]) {
      vals[o + j] = vals[o + j - 1];
      ids[o + j] = ids[o + j - 1];
      j--;
    }
    vals[o + j] = row[i];
    ids[o + j] = i;
  }
}

/**
 * The effects of the directions `dec` [F, d_hook] (decoder rows in the hook's space), keeping `k`
 * tokens per side; `chunk` features at a time.
 */
export async function logitEffects(
  dec: Tensor,
  map: DirectLogitMap,
  k: number,
  chunk = 512,
): Promise<LogitEffects> {
  const [F] = dec.shape, V = map.unembed.shape[0];
  if (!(Number.isInteger(k) && k >= 1 && k <= V)) {
    throw new RangeError(`logitEffects: k must be an integer in [1, ${V}], got ${k}`);
  }
  const out: LogitEffects = {
    k,
    upIds: new Int32Array(F * k),
    up: new Float32Array(F * k),
    downIds: new Int32Array(F * k),
    down: new Float32Array(F * k),
  };
  for (let f0 = 0; f0 < F; f0 += chunk) {
    const f1 = Math.min(F, f0 + chunk);
    const logits = tidy(() => {
      let x = contiguous(sliceAxis(dec, 0, f0, f1));
      for (const m of map.toResidual) {
        x = matmul(x, m.w);
        if (m.gamma) x = mul(x, m.gamma);
      }
      if (map.center) x = sub(x, mean(x, -1, { keepdims: true }));
      const l = matmul(mul(x, map.gamma), mT(map.unembed));
      return sub(l, mean(l, -1, { keepdims: true }));
    });
    const v = (await logits.data()) as Float32Array;
    logits.dispose();
    for (let f = f0; f < f1; f++) {
      const row = v.subarray((f - f0) * V, (f - f0 + 1) * V);
      topEntries(row, k, false, out.upIds, out.up, f * k);
      topEntries(row, k, true, out.downIds, out.down, f * k);
    }
  }
  return out;
}
