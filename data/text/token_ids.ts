/**
 * Pre-tokenised ids from a JSON or Parquet list: every element must be an integer in
 * [0, 2^31) (numbers or bigints), or the error says which element is not.
 */
export function tokenIds(values: ArrayLike<unknown>, fail: (msg: string) => Error): Int32Array {
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const n = typeof v === "bigint" ? Number(v) : v;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 0x7fffffff) {
      throw fail(
        `element ${i} is ${
          typeof v === "bigint" ? v + "n" : JSON.stringify(v) ?? String(v)
        }, not a token id (an integer from 0 to 2^31-1)`,
      );
    }
    out[i] = n;
  }
  return out;
}
