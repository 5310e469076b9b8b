/**
 * The backend contract: storage and primitive kernels. Every op in `tensor/ops` is defined once
 * over these primitives; a backend supplies kernels and nothing else. Inputs arrive as strided
 * views (broadcasts are stride 0, transposes are permuted strides), so a backend never needs
 * materialised broadcasts. Every kernel returns a fresh contiguous buffer of the stated size.
 */
import type { DType, StorageArray } from "./dtype.ts";
import type { Shape } from "./shape.ts";

/** A backend's opaque buffer handle. */
export type Buf = unknown;

/** A strided window onto a buffer: element (i0..in) lives at offset + Σ i_d·strides[d]. */
export interface View {
  readonly buf: Buf;
  readonly dtype: DType;
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
}

/**
 * Receives Σx² of a kernel's result as a [] buffer with the bits the backend's fused.sumSquares
 * would give it, when the kernel computed it while writing the result (a pass saved).
 */
export type SumSquaresOnTheWay = (sum: Buf) => void;

export type UnaryOp =
  | "neg"
  | "abs"
  | "sign"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "sigmoid"
  | "tanh"
  | "erf"
  | "relu"
  | "step"
  | "sin"
  | "cos"
  | "floor"
  | "ceil"
  | "not"
  | "copy";

export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "pow"
  | "max"
  | "min"
  | "floordiv"
  | "mod"
  | "gt"
  | "ge"
  | "lt"
  | "le"
  | "eq"
  | "ne"
  | "and"
  | "or";

export type ReduceOp = "sum" | "max" | "min";
export type ArgReduceOp = "argmax" | "argmin";

export interface Backend {
  readonly name: string;
  /** True when buffers live in JS memory: the GC reclaims them and `readSync` works. */
  readonly hostMemory: boolean;
  /** One line that says what this backend runs on (e.g. which BLAS). */
  info(): string;

  alloc(dtype: DType, size: number): Buf;
  free(buf: Buf): void;
  /** Upload `data` (storage form: raw 16-bit words for f16/bf16) into a new buffer. */
  fromHost(dtype: DType, data: StorageArray): Buf;
  /** Read `size` elements of a contiguous buffer back in storage form. */
  read(buf: Buf, dtype: DType, size: number): Promise<StorageArray>;
  readSync?(buf: Buf, dtype: DType, size: number): StorageArray;

  /** Elementwise ops; `outShape` is the broadcast shape that all input views already have. */
  unary(op: UnaryOp, x: View, outDtype: DType): Buf;
  binary(op: BinaryOp, a: View, b: View, outDtype: DType): Buf;
  where(cond: View, a: View, b: View, outDtype: DType): Buf;
  cast(x: View, dtype: DType): Buf;
  /** Reduce `axes` (sorted, unique) away; the output has the remaining axes in order. */
  reduce(op: ReduceOp, x: View, axes: readonly number[], outDtype: DType): Buf;
  /** Index (i32) of the extreme value along `axis` (first on ties); the axis is removed. */
  argReduce(op: ArgReduceOp, x: View, axis: number): Buf;
  /** a [...batch, M, K] @ b [...batch, K, N], batch dims already broadcast to `batch`. */
  matmul(a: View, b: View, outDtype: DType): Buf;
  /** take_along_axis: out[i] = x[i with i_axis := idx[i]]; idx (i32) has out's shape. */
  gather(x: View, idx: View, axis: number): Buf;
  /** out = base; out[i with i_axis := idx[i]] += upd[i]. */
  scatterAdd(base: View, idx: View, upd: View, axis: number): Buf;
  /** The k largest along the last axis, sorted descending (lower index first on ties). */
  topk(x: View, k: number): [values: Buf, indices: Buf];
  cumsum(x: View, axis: number, reverse: boolean): Buf;
  concat(xs: readonly View[], axis: number, outShape: Shape): Buf;
  /** Zero padding: widths[d] = [before, after]. */
  pad(x: View, widths: readonly (readonly [number, number])[], outShape: Shape): Buf;

  /**
   * Sparse-dense products for a sparse matrix S [B, F] in COO form (rows, cols i32 and vals, n
   * entries; repeated positions add up), all operands contiguous:
   * transpose false: S @ dense [F, d] → [B, d]; true: Sᵀ @ dense [B, d] → [F, d] (`outRows` = F).
   */
  spmm(rows: View, cols: View, vals: View, dense: View, transpose: boolean, outRows: number): Buf;
  /** Sampled dense-dense product: out[i] = a[rows[i]] · b[cols[i]] for a [B, d], b [F, d]. */
  sddmm(a: View, b: View, rows: View, cols: View): Buf;

  /**
   * Optional fused kernels. The generic layer uses one when present and falls back to the
   * composition of primitives otherwise, so a backend may skip any of them.
   */
  fused?: {
    /** One Adam step over contiguous float views of one shape: [update, mu', nu']. */
    adam?(
      g: View,
      mu: View,
      nu: View,
      param: View | null,
      h: AdamHyper,
    ): [update: Buf, mu: Buf, nu: Buf];
    /**
     * One Adam step applied to a parameter of contiguous float views of one shape, as
     * fusedAdam's [update, mu', nu'] then param + update (decay·param only with `decay`), with
     * the gradient first multiplied by the scalar `gradScale` when given, and the new 2-D
     * parameter's rows scaled to unit L2 norm (as unitRows) when `unitRows`. [param', mu', nu'],
     * or null: run the composition. The gradient may also be a 2-D transposed view of a
     * contiguous matrix (read as it is, no copy; the same bits).
     */
    adamApply?(
      param: View,
      g: View,
      mu: View,
      nu: View,
      gradScale: View | null,
      h: AdamHyper,
      o: { decay: boolean; unitRows: boolean },
    ): [param: Buf, mu: Buf, nu: Buf] | null;
    /**
     * Σx² over a contiguous float view as a [] buffer: sum(square(x)) but for the summation
     * order (f32: within one rounding; f64: n·2⁻⁵² relative), or null: run the composition.
     */
    sumSquares?(x: View): Buf | null;
    /**
     * Σ_j var_j over the rows of a contiguous float [rows, cols] x, or of x − y (same shape): the
     * biased variance of each column, summed, as a [] buffer — sum(variance(x − y, 0)) within a
     * few roundings of the dtype (computed in double, rounded once) — or null: compose it.
     */
    columnVarianceSum?(x: View, y: View | null): Buf | null;
    /**
     * x·w + b for float matrices x [M, K] and w [K, N] (any strides) and a contiguous row b [N] of
     * one dtype: b written into each row of the output and the product accumulated onto it in one
     * GEMM. Within the GEMM's rounding of add(matmul(x, w), b), not the same bits (the bias is the
     * sum's first term, not its last). Null: compose it.
     */
    affine?(x: View, w: View, b: View): Buf | null;
    /**
     * Each row's k largest entries of x·w + b (as affine's operands; 1 ≤ k ≤ N) as [values [M, k],
     * indices [M, k] (i32)], best first and ranked as topk ranks them, without the [M, N] product
     * in memory. The values are the backend's own sum of each entry (for the CPU: sgemm's order
     * where it is known, see csrc/affine_topk.c), within the GEMM's rounding of affine's. Null:
     * compose it (affine, then topk).
     */
    affineTopk?(x: View, w: View, b: View, k: number): [values: Buf, indices: Buf] | null;
    /**
     * The `total` largest entries of the whole product x·w + b (as affineTopk's operands; 1 ≤
     * total ≤ M·N), ranked by value or, with a contiguous `scale` [N], by mul(value, scale) as topk
     * ranks the flattened product: [values [total], flat indices r·N + c [total] (i32)], with
     * affine's bits, without the [M, N] product in memory; null: compose it.
     */
    affineBatchTopk?(
      x: View,
      w: View,
      b: View,
      total: number,
      scale: View | null,
    ): [values: Buf, indices: Buf] | null;
    /**
     * Sᵀ·dense for COO entries (rows, cols: i32; vals) and a contiguous float dense [rows', d],
     * written as its transpose [d, outRows]: the bits of the backend's spmm (transpose) then a
     * copy of its transpose, in one pass. Null: compose it. A backend that sums the result's
     * squares on the way may hand them to `sumSquares` (see SumSquaresOnTheWay).
     */
    spmmTransposed?(
      rows: View,
      cols: View,
      vals: View,
      dense: View,
      outRows: number,
      sumSquares?: SumSquaresOnTheWay,
    ): Buf | null;
    /**
     * sddmm(a, b′, rows, cols) where b′ [F, L·d] is a contiguous float b [L, F, d] flattened per
     * row (transpose(b, [1, 0, 2]) reshaped: a decoder kept per input), for a contiguous a
     * [n, L·d], without that copy: the bits of sddmm on it. Null: compose it.
     */
    sddmmPerInput?(a: View, b: View, rows: View, cols: View): Buf | null;
    /** g·step(x), the relu's cotangent, over contiguous float views of one shape. */
    reluGrad?(g: View, x: View): Buf;
    /** Rows of a contiguous float matrix scaled to unit L2 norm. */
    unitRows?(w: View): Buf;
    /** Each row's L2 norm over the last axis of a contiguous float view: sqrt(sum(square(x), -1))'s bits. */
    rowNorms?(x: View): Buf;
    /**
     * g − (g·ŵ)ŵ row by row, ŵ the unit rows of w (both contiguous, one shape); Σ of the result's
     * squares to `sumSquares` where the backend computes it on the way.
     */
    projectOutRows?(g: View, w: View, sumSquares?: SumSquaresOnTheWay): Buf;
    /** A copy of a contiguous view with element spans [start, end) (pairs, ascending, disjoint) set to 0. */
    zeroSpans?(x: View, spans: Int32Array): Buf;
    // Inference kernels: one pass for a composition of ops, within f32 rounding of it. Operands
    // are contiguous float views of one dtype; null means "not here": run the composition.
    /** Each row over the last axis normalised (see RowNormOptions); w and b are [cols]. */
    rowNorm?(x: View, w: View, b: View | null, o: RowNormOptions): Buf | null;
    /** An activation elementwise. */
    activation?(x: View, kind: Activation): Buf | null;
    /** Causal attention's pattern from raw scores [B, H, T, T] (see AttnSoftmaxOptions). */
    attnSoftmax?(scores: View, mask: View | null, o: AttnSoftmaxOptions): Buf | null;
    // Training kernels: the forward and backward halves of ops that autodiff/fused_ops.ts gives
    // hand-written VJPs, on contiguous views, within rounding of their compositions; null: compose.
    /**
     * Softmax cross-entropy of each row of logits [rows, V] against an i32 target per row:
     * [loss, lse] (each [rows]), lse the row's log-sum-exp; a row whose target is `ignoreIndex`
     * gets 0 for both. Throws a RangeError naming the first other target outside [0, V).
     */
    crossEntropy?(logits: View, targets: View, ignoreIndex: number): [loss: Buf, lse: Buf] | null;
    /** (softmax(logits) − onehot(targets))·g per row from the forward's lse; ignored rows 0. */
    crossEntropyGrad?(
      logits: View,
      targets: View,
      lse: View,
      g: View,
      ignoreIndex: number,
    ): Buf | null;
    /** g·act′(x) elementwise. */
    activationGrad?(g: View, x: View, kind: Activation): Buf | null;
    /** rowNorm's backward for its cotangent g: [∂x, ∂w, ∂b] (∂b only with `withBias`). */
    rowNormGrad?(
      g: View,
      x: View,
      w: View,
      withBias: boolean,
      o: RowNormOptions,
    ): [dx: Buf, dw: Buf, db: Buf | null] | null;
    /** attnSoftmax's backward (no soft cap) from its output p and cotangent g: ∂scores. */
    attnSoftmaxGrad?(g: View, p: View, mask: View | null, scale: number): Buf | null;
    /**
     * The squared error's cotangent from r = x − y and the scalar s = g/rows: q + q (negated with
     * `negate`), q = s·r, elementwise: the bits of add(mul(s, r), mul(s, r)) (and its neg).
     */
    squaredErrorGrad?(r: View, s: View, negate: boolean): Buf | null;
    /**
     * The squared error's forward half over the last axis of x and y (one shape): [r, s] with
     * r = x − y and s its rows' Σ r², the bits of sub, mul and sum(−1).
     */
    squaredErrorRows?(x: View, y: View): [r: Buf, s: Buf] | null;
  };
}

/** update = scale·mu'/(sqrt(nu'/c2) + eps) − decay·param, with mu' and nu' the new moments. */
export interface AdamHyper {
  b1: number;
  b2: number;
  eps: number;
  c2: number;
  scale: number;
  decay: number;
}

/** LayerNorm (x − μ)/√(σ² + eps)·w + b when `center`, else RMSNorm x/√(mean x² + eps)·w. */
export interface RowNormOptions {
  eps: number;
  center: boolean;
  /** Multiply by 1 + w (Gemma stores its norm weights around 0). */
  plusOne: boolean;
}

/** gelu's tanh form, exact (erf) gelu, silu. */
export type Activation = "gelu_tanh" | "gelu" | "silu";

/**
 * softmax over keys of c·tanh(s·scale/c) (or s·scale without a cap), keys hidden by the [B, T]
 * bool mask at −1e30, keys after the query or `window` or more before it at 0 weight.
 */
export interface AttnSoftmaxOptions {
  scale: number;
  softcap: number | null;
  window: number | null;
}
