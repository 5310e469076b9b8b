/**
 * Row paths for gather and scatterAdd along axis 0 of a matrix whose index names one row per
 * output row (stride 0 along the row): an embedding lookup and its gradient. Each output row is
 * one copy, or one add of a row, where the generic kernels walk offset tables element by element
 * (16 and 25 ms for the 2,048 × 256 lookup of bench/lm_train_profile.ts). The same elements, and
 * the same order of sums, as the generic kernels: the same bits.
 */
import { checkIndex, type NumView } from "./kernels.ts";

type Num = NumView["arr"];

/** Whether idx [n, d] holds one index per row, over rows of x's width d (x's rows contiguous). */
const perRow = (x: NumView, idx: NumView, axis: number): boolean =>
  axis === 0 && x.shape.length === 2 && idx.shape.length === 2 && idx.strides[1] === 0 &&
  x.strides[1] === 1 && idx.shape[1] === x.shape[1];

/** out[i, :] = x[idx[i], :]; false when the operands do not have the row layout. */
export function gatherRows(x: NumView, idx: NumView, axis: number, out: Num): boolean {
  if (!perRow(x, idx, axis)) return false;
  const [n, d] = idx.shape, rows = x.shape[0], s = idx.strides[0], rs = x.strides[0];
  for (let i = 0; i < n; i++) {
    const j = idx.arr[idx.offset + i * s];
    if (!(j >= 0 && j < rows)) checkIndex("gather", j, rows);
    const from = x.offset + j * rs;
    (out as Float32Array).set(x.arr.subarray(from, from + d) as Float32Array, i * d);
  }
  return true;
}

/** out[idx[i], :] += upd[i, :] in index order (out holds base, contiguous [rows, d]). */
export function scatterAddRows(
  out: Num,
  outShape: readonly number[],
  idx: NumView,
  upd: NumView,
  axis: number,
): boolean {
  const base = { arr: out, shape: outShape, strides: [outShape[1], 1], offset: 0 };
  if (!perRow(base, idx, axis) || upd.strides[1] !== 1) return false;
  const [n, d] = idx.shape, rows = outShape[0], s = idx.strides[0], us = upd.strides[0];
  const u = upd.arr;
  for (let i = 0; i < n; i++) {
    const j = idx.arr[idx.offset + i * s];
    if (!(j >= 0 && j < rows)) checkIndex("scatterAdd", j, rows);
    const o = j * d, from = upd.offset + i * us;
    for (let c = 0; c < d; c++) out[o + c] += u[from + c];
  }
  return true;
}
