/**
 * Fused kernels: one backend pass standing in for a composition of primitives. Each function
 * returns the fused result, or null when the caller must run its composition instead (the backend
 * has no such kernel, or an operand is not plain). Every safety check lives here, once.
 */
import type {
  Activation,
  AdamHyper,
  AttnSoftmaxOptions,
  Backend,
  Buf,
  RowNormOptions,
} from "./backend.ts";
import { isWatched, wrap } from "./prims.ts";
import { shapesEqual } from "./shape.ts";
import type { Tensor } from "./tensor.ts";
import type { Coo } from "./ops/sparse.ts";

type Kernels = NonNullable<Backend["fused"]>;

/** What a kernel asks of its operands beyond the common rule. */
interface Needs {
  /** f32 or f64 only. */
  float: boolean;
  /** 2-D only (row kernels). */
  matrix: boolean;
}

const NEEDS: { [K in keyof Kernels]-?: Needs } = {
  adam: { float: true, matrix: false },
  adamApply: { float: true, matrix: false },
  sumSquares: { float: true, matrix: false },
  affine: { float: true, matrix: true },
  affineTopk: { float: true, matrix: true },
  affineBatchTopk: { float: true, matrix: true },
  columnVarianceSum: { float: true, matrix: true },
  reluGrad: { float: true, matrix: false },
  unitRows: { float: true, matrix: true },
  rowNorms: { float: true, matrix: false },
  projectOutRows: { float: true, matrix: true },
  zeroSpans: { float: false, matrix: false },
  rowNorm: { float: true, matrix: false },
  activation: { float: true, matrix: false },
  attnSoftmax: { float: true, matrix: false },
  crossEntropy: { float: true, matrix: false },
  crossEntropyGrad: { float: true, matrix: false },
  activationGrad: { float: true, matrix: false },
  rowNormGrad: { float: true, matrix: false },
  attnSoftmaxGrad: { float: true, matrix: false },
  squaredErrorGrad: { float: true, matrix: false },
  squaredErrorRows: { float: true, matrix: false },
  spmmTransposed: { float: true, matrix: true },
  sddmmPerInput: { float: true, matrix: true },
};

/**
 * The backend's kernel `name` when every operand is plain: on the first operand's backend, with
 * its shape and dtype, contiguous, and not watched by autodiff (a fused kernel has no VJP rule,
 * so a traced value must go through the primitives).
 */
function kernel<K extends keyof Kernels>(name: K, xs: readonly Tensor[]): Kernels[K] | undefined {
  const x0 = xs[0];
  const k = x0.backend.fused?.[name];
  if (!k) return undefined;
  const needs = NEEDS[name];
  if (needs.float && x0.dtype !== "f32" && x0.dtype !== "f64") return undefined;
  if (needs.matrix && x0.ndim !== 2) return undefined;
  for (const x of xs) {
    if (
      x.backend !== x0.backend || x.dtype !== x0.dtype || !shapesEqual(x.shape, x0.shape) ||
      !x.isContiguous() || isWatched(x)
    ) return undefined;
  }
  return k;
}

/** A 2-D view that reads a contiguous matrix as its transpose (what transpose() gives). */
export const isTransposedMatrix = (x: Tensor): boolean =>
  x.ndim === 2 && x.shape[0] > 1 && x.shape[1] > 1 && x.strides[0] === 1 &&
  x.strides[1] === x.shape[0];

/** A fresh buffer with `x`'s shape, dtype and backend, as a tensor. */
const like = (x: Tensor, buf: Buf): Tensor => wrap(x.backend, buf, x.shape, x.dtype);

/**
 * x·W + b for matrices x [M, K], W [K, N] and a row b [N] in one GEMM whose sum starts from the
 * bias (no [x, 1]·[W; b] concatenation, no second pass over the result). Within the GEMM's
 * rounding of add(matmul(x, W), b) (tests/fused_affine.test.ts bounds it), not the same bits.
 * Null: compose it (an operand traced or of another dtype or backend, or no kernel here).
 */
export function fusedAffine(x: Tensor, W: Tensor, b: Tensor): Tensor | null {
  const k = x.backend.fused?.affine;
  if (
    !k || x.ndim !== 2 || W.ndim !== 2 || b.ndim !== 1 || x.shape[1] !== W.shape[0] ||
    b.shape[0] !== W.shape[1] || (x.dtype !== "f32" && x.dtype !== "f64") || !b.isContiguous()
  ) return null;
  for (const t of [x, W, b]) {
    if (t.backend !== x.backend || t.dtype !== x.dtype || isWatched(t)) return null;
  }
  const buf = k(x.view(), W.view(), b.view());
  return buf ? wrap(x.backend, buf, [x.shape[0], W.shape[1]], x.dtype) : null;
}

/**
 * topk(x·W + b, k) for matrices x [M, K], W [K, N] and a row b [N], the product never held in
 * memory: [values, indices] as topk gives them, the values each entry's sum as the backend's GEMM
 * forms it (within that GEMM's rounding of fusedAffine's; the same bits where both sum in one
 * order). Null: compose it (as fusedAffine; or no kernel for this k, dtype or backend, or a NaN).
 */
export function fusedAffineTopk(
  x: Tensor,
  W: Tensor,
  b: Tensor,
  k: number,
): [Tensor, Tensor] | null {
  const kern = x.backend.fused?.affineTopk;
  if (
    !kern || x.ndim !== 2 || W.ndim !== 2 || b.ndim !== 1 || x.shape[1] !== W.shape[0] ||
    b.shape[0] !== W.shape[1] || !Number.isInteger(k) || k < 1 || k > W.shape[1] ||
    x.shape[0] === 0 || x.shape[1] === 0
  ) return null;
  for (const t of [x, W, b]) {
    if (t.backend !== x.backend || t.dtype !== x.dtype || isWatched(t)) return null;
  }
  const r = kern(x.view(), W.view(), b.view(), k);
  if (!r) return null;
  const shape = [x.shape[0], k];
  return [wrap(x.backend, r[0], shape, x.dtype), wrap(x.backend, r[1], shape, "i32")];
}

/**
 * The `total` best entries of the whole product x·W + b for matrices x [M, K], W [K, N] and a row
 * b [N] (BatchTopK's selection over the batch), ranked as topk(reshape(pre, [-1]), total) ranks
 * them, or with `scale` [N] (≥ 0) as topk(reshape(mul(pre, scale), [-1]), total) does (the
 * crosscoder's f·‖W_dec‖ ranking), the product never held in memory: [pre's values at them, flat
 * indices], with fusedAffine's bits where the backend's kernel vouches for them. Null: compose it
 * (no kernel here, an operand traced or of another dtype, or the kernel declines).
 */
export function fusedAffineBatchTopk(
  x: Tensor,
  W: Tensor,
  b: Tensor,
  total: number,
  scale: Tensor | null = null,
): [Tensor, Tensor] | null {
  const kern = x.backend.fused?.affineBatchTopk;
  if (
    !kern || x.ndim !== 2 || W.ndim !== 2 || b.ndim !== 1 || x.shape[1] !== W.shape[0] ||
    b.shape[0] !== W.shape[1] || !Number.isInteger(total) || total < 1 ||
    total > x.shape[0] * W.shape[1] || x.shape[1] === 0 ||
    (scale && !shapesEqual(scale.shape, b.shape))
  ) return null;
  for (const t of scale ? [x, W, b, scale] : [x, W, b]) {
    if (t.backend !== x.backend || t.dtype !== x.dtype || isWatched(t)) return null;
  }
  const r = kern(x.view(), W.view(), b.view(), total, scale?.view() ?? null);
  if (!r) return null;
  return [wrap(x.backend, r[0], [total], x.dtype), wrap(x.backend, r[1], [total], "i32")];
}

/**
 * Sᵀ·dense ([features, d], as spmmT) written as its transpose [d, features], contiguous: the bits
 * of contiguous(transpose(spmmT(s, dense, features))) in one pass (∂W_enc in W_enc's layout).
 * Null: compose it (operands traced, strided or of other dtypes, or no kernel for them here).
 */
export function fusedSpmmTransposed(s: Coo, dense: Tensor, features: number): Tensor | null {
  const k = dense.backend.fused?.spmmTransposed;
  const { rows, cols, values } = s;
  if (!k || dense.ndim !== 2 || (dense.dtype !== "f32" && dense.dtype !== "f64")) return null;
  if (rows.dtype !== "i32" || cols.dtype !== "i32" || values.dtype !== dense.dtype) return null;
  for (const t of [rows, cols, values, dense]) {
    if (t.backend !== dense.backend || !t.isContiguous() || isWatched(t)) return null;
  }
  let sq: Buf | null = null;
  const buf = k(rows.view(), cols.view(), values.view(), dense.view(), features, (b) => sq = b);
  if (!buf) return null;
  return withSumSquares(wrap(dense.backend, buf, [dense.shape[1], features], dense.dtype), sq);
}

/**
 * The sampled product a·b′ᵀ at (rows, cols) for b [L, F, d] read as b′ [F, L·d] (each feature's L
 * rows side by side: a crosscoder's decoder as its flattened [F, L·d]), without that copy: the
 * bits of sddmm(a, reshape(contiguous(transpose(b, [1, 0, 2])), [F, L·d]), rows, cols). Null:
 * compose it.
 */
export function fusedSddmmPerInput(
  a: Tensor,
  b: Tensor,
  rows: Tensor,
  cols: Tensor,
): Tensor | null {
  const k = a.backend.fused?.sddmmPerInput;
  if (
    !k || a.ndim !== 2 || b.ndim !== 3 || a.shape[1] !== b.shape[0] * b.shape[2] ||
    (a.dtype !== "f32" && a.dtype !== "f64") || rows.dtype !== "i32" || cols.dtype !== "i32" ||
    rows.ndim !== 1 || cols.ndim !== 1 || rows.size !== cols.size
  ) return null;
  for (const t of [a, b, rows, cols]) {
    if (t.backend !== a.backend || !t.isContiguous() || isWatched(t)) return null;
  }
  if (b.dtype !== a.dtype) return null;
  const buf = k(a.view(), b.view(), rows.view(), cols.view());
  return buf ? wrap(a.backend, buf, [rows.size], a.dtype) : null;
}

/** norm(x, -1) (the L2 norm over the last axis) in one pass, the composition's bits. */
export function fusedRowNorms(x: Tensor): Tensor | null {
  const k = x.ndim >= 1 ? kernel("rowNorms", [x]) : undefined;
  return k ? wrap(x.backend, k(x.view()), x.shape.slice(0, -1), x.dtype) : null;
}

/** g·step(x), the relu's cotangent. */
export function fusedReluGrad(g: Tensor, x: Tensor): Tensor | null {
  const k = kernel("reluGrad", [g, x]);
  return k ? like(g, k(g.view(), x.view())) : null;
}

/** One Adam step of one leaf: [update, mu', nu'] (see AdamHyper); `param` only for weight decay. */
export function fusedAdam(
  g: Tensor,
  mu: Tensor,
  nu: Tensor,
  param: Tensor | null,
  h: AdamHyper,
): [Tensor, Tensor, Tensor] | null {
  const k = kernel("adam", param ? [g, mu, nu, param] : [g, mu, nu]);
  if (!k) return null;
  const [u, m2, v2] = k(g.view(), mu.view(), nu.view(), param?.view() ?? null, h);
  return [like(g, u), like(g, m2), like(g, v2)];
}

/**
 * One Adam step applied to `param`: [param + update, mu', nu'] as fusedAdam then add (decay·param
 * only with `decay`), the gradient first multiplied by the scalar `gradScale` (a clipping factor)
 * when given, and the new parameter's rows scaled to unit norm (as unitRows) when `unitRows`.
 * The same bits as that composition on the CPU backend; null: run the composition.
 */
export function fusedAdamApply(
  param: Tensor,
  g: Tensor,
  mu: Tensor,
  nu: Tensor,
  gradScale: Tensor | null,
  h: AdamHyper,
  o: { decay: boolean; unitRows: boolean },
): [Tensor, Tensor, Tensor] | null {
  // The gradient may be a transposed matrix (∂W_enc from a sparse product): the kernel reads it so.
  const gT = isTransposedMatrix(g);
  const k = kernel("adamApply", gT ? [param, mu, nu] : [param, g, mu, nu]);
  if (!k || (o.unitRows && param.ndim !== 2)) return null;
  if (
    gT && (g.backend !== param.backend || g.dtype !== param.dtype ||
      !shapesEqual(g.shape, param.shape) || isWatched(g))
  ) return null;
  if (
    gradScale && (gradScale.size !== 1 || gradScale.backend !== g.backend ||
      gradScale.dtype !== g.dtype || !gradScale.isContiguous() || isWatched(gradScale))
  ) return null;
  const r = k(param.view(), g.view(), mu.view(), nu.view(), gradScale?.view() ?? null, h, o);
  return r && [like(g, r[0]), like(g, r[1]), like(g, r[2])];
}

/**
 * Σx² of tensors whose kernel summed their squares while writing them (the bits fusedSumSquares
 * would compute), held until fusedSumSquares takes it, once: a gradient's global norm then reads
 * the gradient no more. Keyed by the tensor, whose contents never change while it lives.
 */
const onTheWay = new WeakMap<Tensor, Tensor>();

function withSumSquares(x: Tensor, sum: Buf | null): Tensor {
  if (sum !== null) onTheWay.set(x, wrap(x.backend, sum, [], x.dtype));
  return x;
}

/**
 * Σx² as a scalar tensor: sum(square(x)) but for the order of the sum (see Backend); a transposed
 * matrix is summed in its storage order. Null: compose it.
 */
export function fusedSumSquares(x: Tensor): Tensor | null {
  const known = onTheWay.get(x);
  if (known) {
    onTheWay.delete(x);
    // (a traced x needs the primitives; a nested tidy may have released the sum)
    if (!known.disposed && !isWatched(x)) return known;
  }
  if (!isTransposedMatrix(x)) {
    const buf = kernel("sumSquares", [x])?.(x.view());
    return buf ? wrap(x.backend, buf, [], x.dtype) : null;
  }
  const k = x.backend.fused?.sumSquares;
  if (!k || (x.dtype !== "f32" && x.dtype !== "f64") || isWatched(x)) return null;
  const [r, c] = x.shape, v = x.view();
  const buf = k({ ...v, shape: [c, r], strides: [r, 1] });
  return buf ? wrap(x.backend, buf, [], x.dtype) : null;
}

/**
 * sum(variance(x − y, 0)) (y null: of x) for matrices, as a scalar tensor: FVU's terms in one
 * pass, computed in double and rounded once (within a few roundings of the composition); null:
 * compose it.
 */
export function fusedColumnVarianceSum(x: Tensor, y: Tensor | null): Tensor | null {
  const buf = kernel("columnVarianceSum", y ? [x, y] : [x])?.(x.view(), y?.view() ?? null);
  return buf ? wrap(x.backend, buf, [], x.dtype) : null;
}

/** Rows of a matrix scaled to unit L2 norm. */
export function fusedUnitRows(w: Tensor): Tensor | null {
  const k = kernel("unitRows", [w]);
  return k ? like(w, k(w.view())) : null;
}

/** g − (g·ŵ)ŵ row by row, ŵ the unit rows of w. */
export function fusedProjectOutRows(g: Tensor, w: Tensor): Tensor | null {
  const k = kernel("projectOutRows", [g, w]);
  if (!k) return null;
  let sq: Buf | null = null;
  const out = like(g, k(g.view(), w.view(), (b) => sq = b));
  return withSumSquares(out, sq);
}

/**
 * A copy of `x` with element spans [start, end) set to 0; `spans` (pairs, ascending, disjoint)
 * is asked for only when the kernel runs.
 */
export function fusedZeroSpans(x: Tensor, spans: () => Int32Array): Tensor | null {
  const k = kernel("zeroSpans", [x]);
  return k ? like(x, k(x.view(), spans())) : null;
}

/**
 * The backend's inference kernel `name` when every float operand is plain (as in `kernel`, shapes
 * aside: each kernel states its own) and every other one (`extra`, e.g. a bool mask) is
 * contiguous on the same backend.
 */
function inference<K extends "rowNorm" | "activation" | "attnSoftmax">(
  name: K,
  xs: readonly Tensor[],
  extra: readonly Tensor[] = [],
): Kernels[K] | undefined {
  const x0 = xs[0];
  const k = x0.backend.fused?.[name];
  if (!k || (x0.dtype !== "f32" && x0.dtype !== "f64")) return undefined;
  for (const x of xs) {
    if (x.backend !== x0.backend || x.dtype !== x0.dtype || !x.isContiguous() || isWatched(x)) {
      return undefined;
    }
  }
  for (const x of extra) {
    if (x.backend !== x0.backend || !x.isContiguous() || isWatched(x)) return undefined;
  }
  return k;
}

/**
 * LayerNorm or RMSNorm over the last axis in one pass (see RowNormOptions); w and b are [C]. Null
 * when the caller must compose it (an operand traced, or no kernel here).
 */
export function fusedRowNorm(
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  o: RowNormOptions,
): Tensor | null {
  const C = x.shape[x.ndim - 1];
  if (x.ndim < 1 || w.ndim !== 1 || w.shape[0] !== C || (b && (b.ndim !== 1 || b.shape[0] !== C))) {
    return null;
  }
  const k = inference("rowNorm", b ? [x, w, b] : [x, w]);
  const buf = k?.(x.view(), w.view(), b?.view() ?? null, o);
  return buf ? like(x, buf) : null;
}

/** An activation (gelu's tanh form, exact gelu, silu) in one pass, or null: compose it. */
export function fusedActivation(x: Tensor, kind: Activation): Tensor | null {
  const buf = inference("activation", [x])?.(x.view(), kind);
  return buf ? like(x, buf) : null;
}

/**
 * Causal attention's pattern from raw scores [B, H, T, T] in one pass (see AttnSoftmaxOptions);
 * `mask` is a bool [B, T] key mask. Null: compose it.
 */
export function fusedAttnSoftmax(
  scores: Tensor,
  mask: Tensor | null,
  o: AttnSoftmaxOptions,
): Tensor | null {
  const [B, , T, Tk] = scores.shape;
  if (scores.ndim !== 4 || T !== Tk) return null;
  if (
    mask && (mask.dtype !== "bool" || mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== T)
  ) {
    return null;
  }
  const window = o.window != null && Number.isFinite(o.window) ? o.window : null;
  if (window !== null && !(Number.isInteger(window) && window >= 1)) return null;
  const k = inference("attnSoftmax", [scores], mask ? [mask] : []);
  const buf = k?.(scores.view(), mask?.view() ?? null, { ...o, window });
  return buf ? like(scores, buf) : null;
}

// Training kernels: the halves of the ops that autodiff/fused_ops.ts differentiates by hand. Each
// is null when an operand is traced, strided or elsewhere, or the backend has no such kernel.

/** Operands fit for a training kernel: plain as in `inference`, and of x0's dtype when float. */
function plain(xs: readonly Tensor[], ints: readonly Tensor[] = []): boolean {
  const x0 = xs[0];
  if (x0.dtype !== "f32" && x0.dtype !== "f64") return false;
  for (const x of [...xs, ...ints]) {
    if (x.backend !== x0.backend || !x.isContiguous() || isWatched(x)) return false;
    if (!ints.includes(x) && x.dtype !== x0.dtype) return false;
  }
  return true;
}

/**
 * Softmax cross-entropy over the last axis of logits [..., V] against i32 targets [...]: [loss,
 * lse], both shaped like the targets (rows whose target is `ignoreIndex`: 0 and 0).
 */
export function fusedCrossEntropy(
  logits: Tensor,
  targets: Tensor,
  ignoreIndex: number,
): [loss: Tensor, lse: Tensor] | null {
  const k = logits.backend.fused?.crossEntropy;
  if (!k || targets.dtype !== "i32" || !plain([logits], [targets])) return null;
  const r = k(logits.view(), targets.view(), ignoreIndex);
  return r &&
    [
      wrap(logits.backend, r[0], targets.shape, logits.dtype),
      wrap(logits.backend, r[1], targets.shape, logits.dtype),
    ];
}

/** ∂logits of the summed g·loss from fusedCrossEntropy's lse: (softmax − onehot)·g. */
export function fusedCrossEntropyGrad(
  logits: Tensor,
  targets: Tensor,
  lse: Tensor,
  g: Tensor,
  ignoreIndex: number,
): Tensor | null {
  const k = logits.backend.fused?.crossEntropyGrad;
  if (!k || !plain([logits, lse, g], [targets])) return null;
  const buf = k(logits.view(), targets.view(), lse.view(), g.view(), ignoreIndex);
  return buf ? like(logits, buf) : null;
}

/** g·act′(x), the activation's cotangent. */
export function fusedActivationGrad(g: Tensor, x: Tensor, kind: Activation): Tensor | null {
  const k = x.backend.fused?.activationGrad;
  if (!k || !shapesEqual(g.shape, x.shape) || !plain([x, g])) return null;
  const buf = k(g.view(), x.view(), kind);
  return buf ? like(x, buf) : null;
}

/** fusedRowNorm's backward: [∂x, ∂w, ∂b] (∂b null without a bias). */
export function fusedRowNormGrad(
  g: Tensor,
  x: Tensor,
  w: Tensor,
  withBias: boolean,
  o: RowNormOptions,
): [Tensor, Tensor, Tensor | null] | null {
  const k = x.backend.fused?.rowNormGrad;
  if (!k || !shapesEqual(g.shape, x.shape) || !plain([x, g, w])) return null;
  const r = k(g.view(), x.view(), w.view(), withBias, o);
  return r && [like(x, r[0]), like(w, r[1]), r[2] === null ? null : like(w, r[2])];
}

/** fusedAttnSoftmax's backward (no soft cap) from its output p: ∂scores. */
export function fusedAttnSoftmaxGrad(
  g: Tensor,
  p: Tensor,
  mask: Tensor | null,
  scale: number,
): Tensor | null {
  const k = p.backend.fused?.attnSoftmaxGrad;
  if (!k || !shapesEqual(g.shape, p.shape) || !plain([p, g], mask ? [mask] : [])) return null;
  const buf = k(g.view(), p.view(), mask?.view() ?? null, scale);
  return buf ? like(p, buf) : null;
}

/** Whether fusedSquaredErrorGrad may run for the squared error of x against y (one shape). */
export function canFuseSquaredError(x: Tensor, y: Tensor): boolean {
  return !!x.backend.fused?.squaredErrorGrad && shapesEqual(x.shape, y.shape) && plain([x, y]);
}

/**
 * The squared error's cotangent for x (y with `negate`) from r = x − y and the scalar s = g/rows
 * (see autodiff/fused_ops.ts squaredError): the bits of add(mul(s, r), mul(s, r)), negated.
 */
export function fusedSquaredErrorGrad(r: Tensor, s: Tensor, negate: boolean): Tensor | null {
  const k = r.backend.fused?.squaredErrorGrad;
  if (!k || s.size !== 1 || !plain([r, s])) return null;
  const buf = k(r.view(), s.view(), negate);
  return buf ? like(r, buf) : null;
}

/** [x − y, its rows' Σ (x − y)² over the last axis]: the bits of sub, mul and sum(−1), one pass. */
export function fusedSquaredErrorRows(x: Tensor, y: Tensor): [Tensor, Tensor] | null {
  const k = x.backend.fused?.squaredErrorRows;
  if (!k || x.ndim < 1 || !shapesEqual(x.shape, y.shape) || !plain([x, y])) return null;
  const r = k(x.view(), y.view());
  return r && [like(x, r[0]), wrap(x.backend, r[1], x.shape.slice(0, -1), x.dtype)];
}
