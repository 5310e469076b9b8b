/**
 * Every feature's top-activating contexts, collected in one streaming pass in bounded memory: per
 * feature a fixed number of slots holding the largest activations seen so far, each with a window
 * of token ids around the maximum and the feature's own activation at every token of the window,
 * plus how often the feature fired. Memory is F · top · window, whatever the corpus size.
 */

export interface ContextWindow {
  /** Slots per feature: the `top` largest activations are kept. */
  top: number;
  /** Tokens kept before and after the maximum (within its row). */
  before: number;
  after: number;
}

export interface FeatureContexts extends ContextWindow {
  features: number;
  /** [F, top] activations at the maximum, descending per feature; -Infinity marks an empty slot. */
  values: Float32Array;
  /** [F, top, W] token ids of each window (W = before + 1 + after), -1 outside the row. */
  tokens: Int32Array;
  /** [F, top, W] the feature's activation at each window token (0 outside the row). */
  acts: Float32Array;
  /** [F, top] the stream row and position of each maximum (-1: empty). */
  rows: Int32Array;
  positions: Int32Array;
  /** [F] positions at which the feature was > 0. */
  fires: Float64Array;
  /** Positions scanned (those kept by the mask). */
  scanned: number;
}

export interface ContextCollector {
  /**
   * Scan one batch: `ids` [R, T] token ids, `codes` [R·T, F] the features' activations at each
   * position, `rowIds[r]` the stream row of batch row r, `keep` [R·T] (optional) which positions
   * count (special tokens and padding left out). Positions are scanned in order; a tie keeps the
   * earlier context, so the result does not depend on how the stream was cut into batches.
   */
  add(
    ids: Int32Array,
    codes: Float32Array,
    rowIds: ArrayLike<number>,
    keep?: Uint8Array,
  ): void;
  result(): FeatureContexts;
}

export function contextCollector(features: number, w: ContextWindow): ContextCollector {
  const { top, before, after } = w;
  if (!(Number.isInteger(features) && features > 0)) {
    throw new RangeError(`contextCollector: features must be a positive integer, got ${features}`);
  }
  for (const [name, v, min] of [["top", top, 1], ["before", before, 0], ["after", after, 0]]) {
    if (!(Number.isInteger(v) && (v as number) >= (min as number))) {
      throw new RangeError(`contextCollector: ${name} must be an integer >= ${min}, got ${v}`);
    }
  }
  const W = before + 1 + after;
  const values = new Float32Array(features * top).fill(-Infinity);
  const tokens = new Int32Array(features * top * W).fill(-1);
  const acts = new Float32Array(features * top * W);
  const rows = new Int32Array(features * top).fill(-1);
  const positions = new Int32Array(features * top).fill(-1);
  const fires = new Float64Array(features);
  let scanned = 0;

  /** Slot `s` of feature f takes the context at (r, t); the later slots shift down one. */
  const insert = (
    f: number,
    s: number,
    v: number,
    ids: Int32Array,
    codes: Float32Array,
    r: number,
    t: number,
    T: number,
    rowId: number,
  ) => {
    const base = f * top;
    for (let j = top - 1; j > s; j--) {
      values[base + j] = values[base + j - 1];
      rows[base + j] = rows[base + j - 1];
      positions[base + j] = positions[base + j - 1];
      tokens.copyWithin((base + j) * W, (base + j - 1) * W, (base + j) * W);
      acts.copyWithin((base + j) * W, (base + j - 1) * W, (base + j) * W);
    }
    values[base + s] = v;
    rows[base + s] = rowId;
    positions[base + s] = t;
    const o = (base + s) * W;
    for (let i = 0; i < W; i++) {
      const p = t - before + i;
      const inside = p >= 0 && p < T;
      tokens[o + i] = inside ? ids[r * T + p] : -1;
      acts[o + i] = inside ? codes[(r * T + p) * features + f] : 0;
    }
  };

  return {
    add(ids, codes, rowIds, keep) {
      const R = rowIds.length;
      if (R === 0) return;
      const T = ids.length / R;
      if (!Number.isInteger(T) || codes.length !== ids.length * features) {
        throw new RangeError(
          `contextCollector.add: ${ids.length} ids in ${R} rows and ${codes.length} codes do not fit [R·T, ${features}]`,
        );
      }
      if (keep && keep.length !== ids.length) {
        throw new RangeError(
          `contextCollector.add: keep has ${keep.length} entries, ids ${ids.length}`,
        );
      }
      for (let r = 0; r < R; r++) {
        for (let t = 0; t < T; t++) {
          const n = r * T + t;
          if (keep && !keep[n]) continue;
          scanned++;
          const row = n * features;
          for (let f = 0; f < features; f++) {
            const v = codes[row + f];
            if (!(v > 0)) continue;
            fires[f]++;
            const base = f * top;
            if (!(v > values[base + top - 1])) continue;
            let s = top - 1;
            while (s > 0 && v > values[base + s - 1]) s--;
            insert(f, s, v, ids, codes, r, t, T, rowIds[r]);
          }
        }
      }
    },
    result: () => ({
      features,
      top,
      before,
      after,
      values,
      tokens,
      acts,
      rows,
      positions,
      fires,
      scanned,
    }),
  };
}

/** Feature f's filled slots: activation, window ids and activations, row and position. */
export function contextsOf(c: FeatureContexts, f: number): {
  value: number;
  tokens: number[];
  acts: number[];
  row: number;
  position: number;
}[] {
  const W = c.before + 1 + c.after;
  const out = [];
  for (let s = 0; s < c.top; s++) {
    const i = f * c.top + s;
    if (c.values[i] === -Infinity) break;
    out.push({
      value: c.values[i],
      tokens: Array.from(c.tokens.subarray(i * W, (i + 1) * W)),
      acts: Array.from(c.acts.subarray(i * W, (i + 1) * W)),
      row: c.rows[i],
      position: c.positions[i],
    });
  }
  return out;
}
