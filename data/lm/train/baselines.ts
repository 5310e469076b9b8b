/**
 * What a language model must beat: unigram and bigram models counted from the training tokens,
 * smoothed by adding k to every count, scored as mean next-token cross-entropy (nats) on the
 * held-out tokens — the same positions the model is scored on (every token after the first).
 */

export interface NgramLosses {
  /** The add-k constant of each model. */
  unigramK: number;
  bigramK: number;
  /** Mean −log p(x_i) and −log p(x_i | x_{i−1}) over held-out i ≥ 1. */
  unigram: number;
  bigram: number;
}

/**
 * p_uni(w) = (c(w) + k)/(N + kV); p_bi(w | u) = (c(u, w) + k)/(c(u, ·) + kV), c(u, ·) counting the
 * training pairs that start with u. Ids must lie in [0, vocabSize).
 */
export function ngramLosses(
  train: Int32Array,
  heldout: Int32Array,
  vocabSize: number,
  o: { unigramK?: number; bigramK?: number } = {},
): NgramLosses {
  const ku = o.unigramK ?? 1, kb = o.bigramK ?? 0.1;
  if (!(ku > 0 && kb > 0)) throw new RangeError(`ngramLosses: k must be positive`);
  if (train.length < 2 || heldout.length < 2) {
    throw new RangeError(
      `ngramLosses: need at least 2 training and 2 held-out tokens, got ${train.length} and ${heldout.length}`,
    );
  }
  const check = (ids: Int32Array, what: string) => {
    for (const id of ids) {
      if (!(id >= 0 && id < vocabSize)) {
        throw new RangeError(`ngramLosses: ${what} token id ${id} outside [0, ${vocabSize})`);
      }
    }
  };
  check(train, "training"), check(heldout, "held-out");
  const uni = new Float64Array(vocabSize), first = new Float64Array(vocabSize);
  const pairs = new Map<number, number>();
  for (let i = 0; i < train.length; i++) {
    uni[train[i]]++;
    if (i > 0) {
      const key = train[i - 1] * vocabSize + train[i];
      pairs.set(key, (pairs.get(key) ?? 0) + 1);
      first[train[i - 1]]++;
    }
  }
  let lu = 0, lb = 0;
  for (let i = 1; i < heldout.length; i++) {
    const u = heldout[i - 1], w = heldout[i];
    lu -= Math.log((uni[w] + ku) / (train.length + ku * vocabSize));
    lb -= Math.log(((pairs.get(u * vocabSize + w) ?? 0) + kb) / (first[u] + kb * vocabSize));
  }
  const n = heldout.length - 1;
  return { unigramK: ku, bigramK: kb, unigram: lu / n, bigram: lb / n };
}
