/**
 * Activations harvested from a language model as data sources, one per hook point, that share
 * the model's forward passes: batch g of any of them runs the model once on its token rows
 * (stopping at the last hook asked for) and caches every asked hook, so several dictionaries
 * trained side by side cost one forward per batch. Rows are token positions: a batch of `size`
 * rows is size / T consecutive sequences of the [N, T] token ids (wrapping round), flattened to
 * [size, d] in sequence order.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { reshape } from "../../tensor/ops/shape.ts";
import { keep, tidy } from "../../tensor/scope.ts";
import type { DataSource } from "../sources.ts";
import { hookNames, type LanguageModel, runWithCache } from "./model.ts";

/** Batches kept after their forward pass: enough for dictionaries a few steps apart. */
const KEEP_BATCHES = 4;

export interface Harvest {
  /** One source per asked hook, in the order asked. */
  sources: Record<string, DataSource>;
  /** Forward passes run so far (a test of "one forward per batch"). */
  forwards(): number;
  /** Release the cached activations. */
  dispose(): void;
}

/** Sources for `hooks` of `model` over the token ids `tokens` (i32 [N, T]). */
export function harvestData(
  model: LanguageModel,
  tokens: Tensor,
  hooks: readonly string[],
  name = "tokens",
): Harvest {
  if (tokens.ndim !== 2 || tokens.dtype !== "i32") {
    throw new TypeError(
      `harvestData: ${name} must be i32 token ids [N, T], got ${tokens.dtype} [${tokens.shape}]`,
    );
  }
  const known = new Set(hookNames(model));
  const unknown = hooks.filter((h) => !known.has(h));
  if (unknown.length) {
    throw new RangeError(
      `harvestData: ${unknown.join(", ")} ${
        unknown.length > 1 ? "are not hook points" : "is not a hook point"
      } of this ${model.family} model (sae lm info lists them)`,
    );
  }
  const [N, T] = tokens.shape;
  const ids = tokens.dataSync() as Int32Array;
  const vocab = model.cfg.vocabSize;
  const bad = ids.findIndex((v) => v < 0 || v >= vocab);
  if (bad >= 0) {
    throw new RangeError(
      `harvestData: ${name} row ${Math.floor(bad / T)} position ${bad % T} holds token ${
        ids[bad]
      }, outside the vocabulary [0, ${vocab})`,
    );
  }
  const cache = new Map<string, Record<string, Tensor>>();
  let forwards = 0;

  const run = (index: number, size: number): Record<string, Tensor> => {
    const key = `${index}:${size}`;
    const hit = cache.get(key);
    if (hit) return hit;
    if (size % T !== 0) {
      throw new RangeError(
        `harvestData: a batch of ${size} rows is not whole sequences of ${T} tokens (${name}): make the batch a multiple of ${T}`,
      );
    }
    const S = size / T, rows = new Int32Array(S * T);
    for (let j = 0; j < S; j++) {
      const r = (index * S + j) % N;
      rows.set(ids.subarray(r * T, (r + 1) * T), j * T);
    }
    // Kept as the hooks gave them ([S, T, …]); each batch() hands out a [size, d] view.
    const acts = tidy(() =>
      runWithCache(model, tensor(rows, { shape: [S, T] }), hooks, { stopEarly: true }).cache
    );
    forwards++;
    keep(acts);
    cache.set(key, acts);
    if (cache.size > KEEP_BATCHES) {
      const [oldest] = cache.keys();
      for (const t of Object.values(cache.get(oldest)!)) t.dispose();
      cache.delete(oldest);
    }
    return acts;
  };

  const width = (h: string) => run(0, T)[h].shape.slice(2).reduce((a, b) => a * b, 1);
  const sources = Object.fromEntries(hooks.map((h) => [
    h,
    {
      // A view of its own: a consumer disposing its batch leaves the cached one to the others.
      batch: (index: number, size: number) => ({ x: reshape(run(index, size)[h], [size, -1]) }),
      describe: () => `${model.family} ${h} on ${name} [${N}, ${T}]`,
      width: width(h),
    } satisfies DataSource,
  ]));
  return {
    sources,
    forwards: () => forwards,
    dispose() {
      for (const acts of cache.values()) for (const t of Object.values(acts)) t.dispose();
      cache.clear();
    },
  };
}
