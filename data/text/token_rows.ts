/**
 * Token rows: a corpus tokenised and cut into fixed-length rows of `context` ids, the unit that
 * harvesting and live activation buffers run the model on.
 */

export interface TokenRow {
  /** [context] token ids. */
  ids: Int32Array;
  /** This row's number in the stream (0, 1, 2, …): the position a resumed run skips to. */
  index: number;
  /** How many leading ids are real; the rest is padding to drop (default: all). */
  length?: number;
}

/** A restartable stream of rows: each call of `rows()` starts at row 0. */
export interface TokenRowStream {
  rows(): AsyncIterable<TokenRow>;
  readonly context: number;
  describe(): string;
}
