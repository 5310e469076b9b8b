/**
 * The common shape of every activation source on disk: a restartable, synchronous stream of row
 * chunks in f32. A row is one token's activation ([d], or [L, d] for multi-input data such as
 * crosscoders' and MLSAE's), flattened. Synchronous so that a training DataSource can refill its
 * shuffle buffer inside `batch()`; chunks are bounded (a record batch, a slice of a memmap).
 */

export interface RowChunk {
  /** rows × rowSize values, row-major. May be a view the stream reuses: copy what you keep. */
  x: Float32Array;
  rows: number;
  /** Optional per-row token ids, when the source stores them (and they were asked for). */
  tokenIds?: Int32Array;
  /** Optional per-row sequence ids and positions in the sequence (Arrow store columns). */
  sequenceIds?: Int32Array;
  positions?: Int32Array;
}

export interface RowStream {
  /** Shape of one row: [d] or [L, d]. */
  rowShape: number[];
  /** Total rows when known up front. */
  rows?: number;
  /** The on-disk dtype before conversion to f32 ("f32", "f16", "bf16", "f64"). */
  dtype: string;
  format: string;
  path: string;
  /** A fresh pass over the rows, from the first. */
  open(): Iterator<RowChunk>;
}

export const rowSize = (s: RowStream): number => s.rowShape.reduce((a, b) => a * b, 1);

/** Widen stored values to f32 (bf16 by a shift, f16 through the exact table-free decoder). */
export function toF32(
  values: ArrayLike<number>,
  dtype: string,
  decodeF16: (h: number) => number,
): Float32Array {
  if (dtype === "f32" && values instanceof Float32Array) return values;
  const out = new Float32Array(values.length);
  if (dtype === "bf16") {
    // Widen the words into place, then shift: both loops stay on one array type.
    const w = new Uint32Array(out.buffer);
    w.set(values as Uint16Array);
    for (let i = 0; i < w.length; i++) w[i] <<= 16;
  } else if (dtype === "f16") {
    for (let i = 0; i < values.length; i++) out[i] = decodeF16(values[i]);
  } else {
    for (let i = 0; i < values.length; i++) out[i] = values[i];
  }
  return out;
}

/** Split a whole in-memory array into bounded chunks (npy/safetensors sources). */
export function arrayRowStream(
  x: Float32Array,
  rowShape: number[],
  meta: { dtype: string; format: string; path: string; chunkRows?: number },
): RowStream {
  const size = rowShape.reduce((a, b) => a * b, 1);
  const rows = size === 0 ? 0 : x.length / size;
  const chunk = meta.chunkRows ?? Math.max(1, Math.floor((1 << 20) / Math.max(1, size)));
  return {
    rowShape,
    rows,
    dtype: meta.dtype,
    format: meta.format,
    path: meta.path,
    *open() {
      for (let r = 0; r < rows; r += chunk) {
        const n = Math.min(chunk, rows - r);
        yield { x: x.subarray(r * size, (r + n) * size), rows: n };
      }
    },
  };
}
