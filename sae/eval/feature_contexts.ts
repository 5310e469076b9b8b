/**
 * Every feature's top-activating contexts, kept in bounded memory while a corpus streams past: per
 * feature `top` slots holding the largest activations seen so far, each with a window of token ids
 * around the maximum and the feature's own activation at every token of the window. Memory is
 * F · top · window, whatever the corpus size. feature_stats.ts drives it, one firing at a time.
 */

export interface ContextWindow {
  /** Slots per feature: the `top` largest activations are kept. */
  top: number;
  /** Tokens kept before and after the maximum (within its row). */
  before: number;
  after: number;
}

/**
 * One batch as the collectors read it: `ids` [R, T] token ids, `codes` [R·T·S, F] the features'
 * activations at each position and slice (S slices: an MLSAE's layers, a decoupled crosscoder's
 * inputs; 1 otherwise), `rowIds[r]` the stream row of batch row r.
 */
export interface ScanBatch {
  ids: Int32Array;
  codes: Float32Array;
  rowIds: ArrayLike<number>;
}

/**
 * One firing, where the collectors find it: feature f's activation v at (batch row r, position t,
 * slice s) of batch b ([R, T] ids, S slices, F features), in the document label `label`. The
 * collector reuses one such record for every firing (no allocation in the inner loop).
 */
export interface Firing {
  b: ScanBatch;
  T: number;
  S: number;
  F: number;
  f: number;
  v: number;
  r: number;
  t: number;
  s: number;
  label: number;
}

/** The firing's window, into `tokens`/`acts` at offset `o`: ids (-1 outside the row) and f's activation in its slice (0 outside). */
export function copyWindow(
  x: Firing,
  w: ContextWindow,
  tokens: Int32Array,
  acts: Float32Array,
  o: number,
): void {
  const W = w.before + 1 + w.after, { b, T, S, F, f, r, s } = x;
  for (let i = 0; i < W; i++) {
    const p = x.t - w.before + i;
    const inside = p >= 0 && p < T;
    tokens[o + i] = inside ? b.ids[r * T + p] : -1;
    acts[o + i] = inside ? b.codes[((r * T + p) * S + s) * F + f] : 0;
  }
}

/** The top slots of every feature, as arrays (saved as they are; see docs/features.md). */
export interface TopContexts {
  /** [F, top] activations at the maximum, descending per feature; -Infinity marks an empty slot. */
  values: Float32Array;
  /** [F, top, W] token ids of each window (W = before + 1 + after), -1 outside the row. */
  tokens: Int32Array;
  /** [F, top, W] the feature's activation at each window token (0 outside the row). */
  acts: Float32Array;
  /** [F, top] the stream row, position and slice of each maximum (-1: empty). */
  rows: Int32Array;
  positions: Int32Array;
  slices: Int32Array;
  /** [F, top] the document label (domain) id at the maximum, -1 when unknown. */
  labels: Int32Array;
}

export function emptyTopContexts(F: number, w: ContextWindow): TopContexts {
  const n = F * w.top, W = w.before + 1 + w.after;
  return {
    values: new Float32Array(n).fill(-Infinity),
    tokens: new Int32Array(n * W).fill(-1),
    acts: new Float32Array(n * W),
    rows: new Int32Array(n).fill(-1),
    positions: new Int32Array(n).fill(-1),
    slices: new Int32Array(n).fill(-1),
    labels: new Int32Array(n).fill(-1),
  };
}

/**
 * Offer a firing to the top slots. Firings must come in scan order (row, position, slice): a tie
 * keeps the earlier context, so the result does not depend on how the stream was cut into batches.
 */
export function offerTop(c: TopContexts, w: ContextWindow, x: Firing): void {
  const top = w.top, base = x.f * top, W = w.before + 1 + w.after, v = x.v;
  if (!(v > c.values[base + top - 1])) return;
  let slot = top - 1;
  while (slot > 0 && v > c.values[base + slot - 1]) slot--;
  for (let j = base + top - 1; j > base + slot; j--) moveSlot(c, j - 1, c, j, W);
  fillSlot(c, base + slot, x, w);
}

/** Slot i of `from` copied into slot j of `to` (every field; windows of W). */
export function moveSlot(
  from: TopContexts,
  i: number,
  to: TopContexts,
  j: number,
  W: number,
): void {
  to.values[j] = from.values[i];
  to.rows[j] = from.rows[i];
  to.positions[j] = from.positions[i];
  to.slices[j] = from.slices[i];
  to.labels[j] = from.labels[i];
  for (let k = 0; k < W; k++) {
    to.tokens[j * W + k] = from.tokens[i * W + k];
    to.acts[j * W + k] = from.acts[i * W + k];
  }
}

/** Slot i takes the firing x: its activation, place, label and window. */
export function fillSlot(c: TopContexts, i: number, x: Firing, w: ContextWindow): void {
  c.values[i] = x.v;
  c.rows[i] = x.b.rowIds[x.r];
  c.positions[i] = x.t;
  c.slices[i] = x.s;
  c.labels[i] = x.label;
  copyWindow(x, w, c.tokens, c.acts, i * (w.before + 1 + w.after));
}

/** One kept context: where it is, its activation, and its window. */
export interface Context {
  value: number;
  tokens: number[];
  acts: number[];
  row: number;
  position: number;
  slice: number;
  label: number;
}

/** The filled slots [first, first + count) of a record of slot arrays, as plain objects. */
export function slotsOf(
  c: Pick<TopContexts, "values" | "tokens" | "acts" | "rows" | "positions" | "slices" | "labels">,
  W: number,
  first: number,
  count: number,
): Context[] {
  const out: Context[] = [];
  for (let i = first; i < first + count; i++) {
    if (c.values[i] === -Infinity) continue;
    out.push({
      value: c.values[i],
      tokens: Array.from(c.tokens.subarray(i * W, (i + 1) * W)),
      acts: Array.from(c.acts.subarray(i * W, (i + 1) * W)),
      row: c.rows[i],
      position: c.positions[i],
      slice: c.slices[i],
      label: c.labels[i],
    });
  }
  return out;
}
