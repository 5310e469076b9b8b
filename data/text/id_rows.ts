/**
 * Token rows from ids already in memory: an [N, T] array (or a flat array cut into rows of
 * `context`), optionally with each row's real length (the rest is padding). For pre-tokenised
 * input and for tests.
 */
import type { TokenRow, TokenRowStream } from "./token_rows.ts";

export interface IdRowsOptions {
  /** Shown by describe() and in errors (a file name). */
  name?: string;
  /** Real tokens per row; positions from there on are padding. */
  lengths?: ArrayLike<number>;
}

/** Rows of `context` ids from `ids` ([N·context] flattened; a partial last row is dropped). */
export function idRows(ids: Int32Array, context: number, opts: IdRowsOptions = {}): TokenRowStream {
  if (!Number.isSafeInteger(context) || context < 1) {
    throw new RangeError(`idRows: context must be a positive integer, got ${context}`);
  }
  const n = Math.floor(ids.length / context);
  const name = opts.name ?? "ids";
  if (opts.lengths && opts.lengths.length !== n) {
    throw new RangeError(`idRows: ${name} has ${n} rows but ${opts.lengths.length} lengths`);
  }
  return {
    context,
    describe: () => `${name} (${n} rows of ${context} token ids)`,
    async *rows(): AsyncIterable<TokenRow> {
      for (let i = 0; i < n; i++) {
        const row: TokenRow = { ids: ids.subarray(i * context, (i + 1) * context), index: i };
        if (opts.lengths) row.length = opts.lengths[i];
        yield row;
      }
    },
  };
}
