/**
 * Sparse codes as COO matrices and the products SAEs need: a top-k code has k non-zeros per row,
 * so decoding and the encoder's backward pass cost O(n·d) for n = B·k entries instead of the
 * dense O(B·F·d). The three products are each other's VJPs, so they differentiate to any order.
 */
import { fmt, ShapeError } from "../shape.ts";
import { bind1 } from "../prims.ts";
import type { Tensor } from "../tensor.ts";
import { arange } from "./create.ts";
import { broadcastTo, cast } from "./elementwise.ts";
import { contiguous, reshape } from "./shape.ts";

/** A sparse [B, F] matrix: entry i is values[i] at (rows[i], cols[i]); repeats add up. */
export interface Coo {
  rows: Tensor;
  cols: Tensor;
  values: Tensor;
}

function checkCoo(op: string, s: Coo): void {
  const n = s.values.size;
  if (s.rows.dtype !== "i32" || s.cols.dtype !== "i32") {
    throw new TypeError(
      `${op}: rows and cols must be i32, got ${s.rows.dtype} and ${s.cols.dtype}`,
    );
  }
  if (
    s.values.ndim !== 1 || s.rows.ndim !== 1 || s.cols.ndim !== 1 || s.rows.size !== n ||
    s.cols.size !== n
  ) {
    throw new ShapeError(
      `${op}: rows ${fmt(s.rows.shape)}, cols ${fmt(s.cols.shape)} and values ${
        fmt(s.values.shape)
      } must be 1-D of one length`,
    );
  }
}

function check2d(op: string, name: string, x: Tensor): void {
  if (x.ndim !== 2) throw new ShapeError(`${op}: ${name} must be 2-D, got ${fmt(x.shape)}`);
}

/** S @ dense: [B, F] sparse times [F, d] → [B, d]; `batch` is B. */
export function spmm(s: Coo, dense: Tensor, batch: number): Tensor {
  checkCoo("spmm", s);
  check2d("spmm", "dense", dense);
  const v = cast(s.values, dense.dtype);
  return bind1("spmm", [contiguous(s.rows), contiguous(s.cols), contiguous(v), contiguous(dense)], {
    transpose: false,
    outRows: batch,
  });
}

/** Sᵀ @ dense: the transpose of a [B, F] sparse matrix times [B, d] → [F, d]; `features` is F. */
export function spmmT(s: Coo, dense: Tensor, features: number): Tensor {
  checkCoo("spmmT", s);
  check2d("spmmT", "dense", dense);
  const v = cast(s.values, dense.dtype);
  return bind1("spmm", [contiguous(s.rows), contiguous(s.cols), contiguous(v), contiguous(dense)], {
    transpose: true,
    outRows: features,
  });
}

/** (a @ bᵀ) sampled at S's positions: out[i] = a[rows[i]] · b[cols[i]], a [B, d], b [F, d]. */
export function sddmm(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor): Tensor {
  check2d("sddmm", "a", a);
  check2d("sddmm", "b", b);
  if (a.shape[1] !== b.shape[1]) {
    throw new ShapeError(`sddmm: a ${fmt(a.shape)} and b ${fmt(b.shape)} must have the same width`);
  }
  checkCoo("sddmm", { rows, cols, values: rows });
  const dt = a.dtype;
  return bind1("sddmm", [
    contiguous(a),
    contiguous(cast(b, dt)),
    contiguous(rows),
    contiguous(cols),
  ], {});
}

/** The COO form of a per-row code: indices and values [B, k] (top-k output) → n = B·k entries. */
export function cooFromRows(indices: Tensor, values: Tensor): Coo {
  if (
    indices.ndim !== 2 || values.ndim !== 2 || indices.shape[0] !== values.shape[0] ||
    indices.shape[1] !== values.shape[1]
  ) {
    throw new ShapeError(
      `cooFromRows: indices ${fmt(indices.shape)} and values ${
        fmt(values.shape)
      } must be [B, k] alike`,
    );
  }
  const [B, k] = indices.shape;
  const rows = reshape(
    broadcastTo(reshape(arange(0, B, 1, "i32", indices.backend), [B, 1]), [B, k]),
    [-1],
  );
  return { rows, cols: reshape(indices, [-1]), values: reshape(values, [-1]) };
}
