/**
 * Row-major matmul as a column-major cuBLAS call (the transpose trick): a row-major C = A·B is the
 * column-major Cᵀ = Bᵀ·Aᵀ, and a row-major matrix read column-major is its own transpose. So B's
 * data becomes cuBLAS's first operand, A's the second, and a transposed view (unit stride on the
 * row axis) becomes a trans flag instead of a copy. Batch dimensions must flatten to one stride per
 * operand (broadcast batches are stride 0); otherwise the operand is copied to contiguous first.
 */

export interface StridedLike {
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** One column-major operand: op(X) with X at `offset` (elements), leading dimension `ld`. */
export interface GemmOperand {
  trans: boolean;
  ld: number;
  offset: number;
  /** Elements between consecutive batch matrices (0: the same matrix for every batch). */
  batchStride: number;
}

/** cublas<t>gemmStridedBatched's arguments for C (contiguous [...batch, M, N]) = A·B. */
export interface GemmPlan {
  m: number;
  n: number;
  k: number;
  /** cuBLAS's first operand (from B) and second (from A). */
  first: GemmOperand;
  second: GemmOperand;
  ldc: number;
  strideC: number;
  batch: number;
}

/** One stride for all batch dims, or null when they do not flatten (size-1 dims are free). */
export function batchStride(
  shape: readonly number[],
  strides: readonly number[],
  nb: number,
): number | null {
  let stride: number | null = null, span = 1;
  for (let d = nb - 1; d >= 0; d--) {
    if (shape[d] === 1) continue;
    if (stride === null) stride = strides[d];
    else if (strides[d] !== stride * span) return null;
    span *= shape[d];
  }
  return stride ?? 0;
}

/**
 * The column-major operand for a row-major [R, C] matrix X that must enter cuBLAS as Xᵀ
 * ([C, R] column-major), or null when neither axis has unit stride.
 */
function operandOf(
  rows: number,
  cols: number,
  sR: number,
  sC: number,
): { trans: boolean; ld: number } | null {
  // A size-1 axis may carry any stride; it never constrains the layout.
  const rowMajor = cols === 1 || sC === 1, colMajor = rows === 1 || sR === 1;
  if (rowMajor && (rows === 1 || sR >= Math.max(1, cols))) {
    return { trans: false, ld: rows === 1 ? Math.max(1, cols) : sR };
  }
  if (colMajor && (cols === 1 || sC >= Math.max(1, rows))) {
    return { trans: true, ld: cols === 1 ? Math.max(1, rows) : sC };
  }
  return null;
}

/** The plan for a [...batch, M, K] · b [...batch, K, N], or which operand needs a contiguous copy. */
export function planGemm(a: StridedLike, b: StridedLike): { plan: GemmPlan } | { copy: "a" | "b" } {
  const r = a.shape.length, nb = r - 2;
  const M = a.shape[r - 2], K = a.shape[r - 1], N = b.shape[r - 1];
  const ob = operandOf(K, N, b.strides[r - 2], b.strides[r - 1]);
  const sb = batchStride(b.shape, b.strides, nb);
  if (!ob || sb === null) return { copy: "b" };
  const oa = operandOf(M, K, a.strides[r - 2], a.strides[r - 1]);
  const sa = batchStride(a.shape, a.strides, nb);
  if (!oa || sa === null) return { copy: "a" };
  let batch = 1;
  for (let d = 0; d < nb; d++) batch *= a.shape[d];
  return {
    plan: {
      m: N,
      n: M,
      k: K,
      first: { ...ob, offset: b.offset, batchStride: sb },
      second: { ...oa, offset: a.offset, batchStride: sa },
      ldc: Math.max(1, N),
      strideC: M * N,
      batch,
    },
  };
}
