/** Sparse-dense kernels over COO entries; operands are contiguous row-major arrays. */
type Arr = ArrayLike<number> & { [i: number]: number };

export function check(op: string, i: number, n: number): void {
  if (!(i >= 0 && i < n)) throw new RangeError(`${op}: index ${i} is out of range for ${n} rows`);
}

/**
 * transpose false: out[rows[i]] += vals[i]·dense[cols[i]] (S @ dense);
 * transpose true:  out[cols[i]] += vals[i]·dense[rows[i]] (Sᵀ @ dense). `out` starts zeroed.
 * Only columns [c0, c1) are computed, so threads can share the work without sharing a slot.
 * `order` visits the entries in another order (grouped by output row: see byRow).
 */
export function spmm(
  rows: Arr,
  cols: Arr,
  vals: Arr,
  dense: Arr,
  d: number,
  transpose: boolean,
  outRows: number,
  out: Arr,
  c0 = 0,
  c1 = d,
  order: Int32Array | null = null,
): void {
  const inRows = dense.length / (d || 1);
  const [dst, src] = transpose ? [cols, rows] : [rows, cols];
  for (let q = 0; q < vals.length; q++) {
    const i = order ? order[q] : q;
    const o = dst[i], s = src[i], w = vals[i];
    check("spmm", o, outRows);
    check("spmm", s, inRows);
    if (w === 0) continue;
    const ob = o * d, sb = s * d;
    let c = c0;
    for (; c + 3 < c1; c += 4) {
      out[ob + c] += w * dense[sb + c];
      out[ob + c + 1] += w * dense[sb + c + 1];
      out[ob + c + 2] += w * dense[sb + c + 2];
      out[ob + c + 3] += w * dense[sb + c + 3];
    }
    for (; c < c1; c++) out[ob + c] += w * dense[sb + c];
  }
}

/** out[i] = a[rows[i]] · b[cols[i]]. */
export function sddmm(a: Arr, b: Arr, rows: Arr, cols: Arr, d: number, out: Arr): void {
  const na = a.length / (d || 1), nb = b.length / (d || 1);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i], c = cols[i];
    check("sddmm", r, na);
    check("sddmm", c, nb);
    const ab = r * d, bb = c * d;
    // Four partial sums break the add-latency chain of a single accumulator.
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, j = 0;
    for (; j + 3 < d; j += 4) {
      s0 += a[ab + j] * b[bb + j];
      s1 += a[ab + j + 1] * b[bb + j + 1];
      s2 += a[ab + j + 2] * b[bb + j + 2];
      s3 += a[ab + j + 3] * b[bb + j + 3];
    }
    for (; j < d; j++) s0 += a[ab + j] * b[bb + j];
    out[i] = (s0 + s1) + (s2 + s3);
  }
}

/**
 * The entries' indices grouped by output row (stable counting sort), or null when they are
 * already in order. Visiting Sᵀ's entries this way keeps each output row in cache while it is
 * summed (TopK codes come row-major in the batch, so by feature they are scattered).
 */
export function byRow(dst: Arr, n: number, outRows: number): Int32Array | null {
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) if (dst[i] < dst[i - 1]) sorted = false;
  if (sorted) return null;
  const start = new Int32Array(outRows + 1);
  for (let i = 0; i < n; i++) {
    const o = dst[i];
    if (o >= 0 && o < outRows) start[o + 1]++;
    // Out-of-range rows are left to the kernel's check, which names them.
    else return null;
  }
  for (let r = 0; r < outRows; r++) start[r + 1] += start[r];
  const order = new Int32Array(new SharedArrayBuffer(4 * n));
  for (let i = 0; i < n; i++) order[start[dst[i]]++] = i;
  return order;
}
