/** Sparse-dense kernels over COO entries; operands are contiguous row-major arrays. */
type Arr = ArrayLike<number> & { [i: number]: number };

export function check(op: string, i: number, n: number): void {
  if (!(i >= 0 && i < n)) throw new RangeError(`${op}: index ${i} is out of range for ${n} rows`);
}

/**
 * transpose false: out[rows[i]] += vals[i]·dense[cols[i]] (S @ dense);
 * transpose true:  out[cols[i]] += vals[i]·dense[rows[i]] (Sᵀ @ dense). `out` starts zeroed.
 * Only columns [c0, c1) are computed, so threads can share the work without sharing a slot.
 */
export function spmm(rows: Arr, cols: Arr, vals: Arr, dense: Arr, d: number, transpose: boolean, outRows: number, out: Arr, c0 = 0, c1 = d): void {
  const inRows = dense.length / (d || 1);
  const [dst, src] = transpose ? [cols, rows] : [rows, cols];
  for (let i = 0; i < vals.length; i++) {
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
