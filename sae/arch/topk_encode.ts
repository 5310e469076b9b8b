/**
 * TopK and BatchTopK encoders with a sparse backward pass. Forward: pre = (x − b_dec)·W_enc + b_enc,
 * keep the k largest per row (TopK) or the k·B largest of the batch (BatchTopK), ReLU. Only the
 * kept entries carry gradient, so the backward pass is COO products costing O(n·d) for n kept
 * entries, not the dense O(B·F·d) matmul a plain VJP would run. Taking top-k before the ReLU
 * picks the same values (ties among zeros may pick other indices, which carry zero value and zero
 * gradient) and saves a pass over [B, F].
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { customVjp } from "../../autodiff/grad.ts";
import { ones, zeros } from "../../tensor/ops/create.ts";
import { add, floorDiv, mod, mul, neg, relu, step, sub } from "../../tensor/ops/elementwise.ts";
import { scatterAdd, topk } from "../../tensor/ops/index.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import {
  concat,
  contiguous,
  expandDims,
  reshape,
  sliceAxis,
  squeeze,
  transpose,
} from "../../tensor/ops/shape.ts";
import { type Coo, cooFromRows, spmm, spmmT } from "../../tensor/ops/sparse.ts";
import {
  fusedAffine,
  fusedAffineBatchTopk,
  fusedAffineTopk,
  fusedSpmmTransposed,
} from "../../tensor/fused.ts";

export interface TopKCode {
  /** [B, k] activations (≥ 0) and their feature indices (i32), largest first. */
  values: Tensor;
  indices: Tensor;
}

/** Pre-activations before the top-k selection: (x − b_dec)·W_enc + b_enc. */
export function preActivations(
  x: Tensor,
  W_enc: Tensor,
  b_enc: Tensor,
  b_dec: Tensor | null,
): Tensor {
  // (x − b_dec)·W_enc + b_enc, with b_dec folded into the bias: b_dec's gradient is then a
  // mat-vec (W_enc·Σ∂pre) instead of a dense [B, F]·[F, d] product for ∂(x − b_dec).
  if (!b_dec) return add(matmul(x, W_enc), b_enc);
  return add(matmul(x, W_enc), sub(b_enc, squeeze(matmul(expandDims(b_dec, 0), W_enc), 0)));
}

/**
 * x·W + b with the bias riding in the GEMM: where the backend has the kernel, the GEMM's sum
 * starts from the bias (K = d); elsewhere one GEMM over [x, 1]·[W; b] (K = d + 1). Either way no
 * second pass over the [B, F] result (8 ms of an 80 ms encoder matmul at d=512, F=8192, B=2048).
 * Forward only (the sparse encoder's backward is its own), so nothing differentiates the concat.
 */
function affine(x: Tensor, W: Tensor, b: Tensor): Tensor {
  const fused = fusedAffine(x, W, b);
  if (fused) return fused;
  const [B] = x.shape;
  return matmul(concat([x, ones([B, 1], x.dtype, x.backend)], 1), concat([W, expandDims(b, 0)], 0));
}

/** Gradients of (x, W_enc, b_enc[, b_dec]) from the cotangent `dpre` of the kept pre-activations. */
function encoderBackward(
  xin: Tensor,
  W_enc: Tensor,
  dpre: Coo,
  needs: boolean[],
  withBDec: boolean,
): (Tensor | null)[] {
  const [B] = xin.shape;
  const F = W_enc.shape[1];
  // ∂W_enc in W_enc's [d, F] layout, written so by the sparse product where the backend can (the
  // same bits); elsewhere a transposed view of its [F, d], which the fused Adam and the global
  // norm read as it is (no copy) and anything else through its strides.
  const dW = needs[1] ? fusedSpmmTransposed(dpre, xin, F) ?? transpose(spmmT(dpre, xin, F)) : null;
  const db = needs[2] || (withBDec && needs[3])
    ? scatterAdd(zeros([F], dpre.values.dtype, dpre.values.backend), dpre.cols, dpre.values, 0)
    : null;
  const dx = needs[0] ? spmm(dpre, contiguous(transpose(W_enc)), B) : null;
  // Σ_b ∂xin[b] = W_enc · Σ_b ∂pre[b] = W_enc · ∂b_enc, so b_dec's gradient is a mat-vec.
  const dbDec = withBDec && needs[3] ? neg(matmul(W_enc, db!)) : null;
  return withBDec ? [dx, dW, needs[2] ? db : null, dbDec] : [dx, dW, needs[2] ? db : null];
}

/** Kept entries; `linear` ones were taken without a ReLU, so all of them pass gradient. */
export type SelectedCoo = Coo & { linear?: boolean };

type Residuals = { xin: Tensor; W: Tensor; coos: SelectedCoo[] };

/**
 * A selection of kept pre-activations; `rowTopk` marks the plain per-row top-k and `batchTopk`
 * the batch's top-`total` (both ReLU'd), which the encoder may find inside the GEMM without the
 * [B, F] pre-activations (fusedAffineTopk, fusedAffineBatchTopk).
 */
export type Select = ((pre: Tensor) => SelectedCoo) & {
  rowTopk?: number;
  batchTopk?: number;
  /** The batch top-k ranks mul(pre, batchScale) (a row [F], ≥ 0), keeping pre's values. */
  batchScale?: Tensor;
};

/** The k largest pre-activations of each row, ReLU'd (topkSelect), marked as fusible. */
export const rowTopkSelect = (k: number): Select =>
  Object.assign((pre: Tensor) => topkSelect(pre, k), { rowTopk: k });

/** The batch's `total` largest pre-activations, ReLU'd (batchTopkSelect); fusible on one rank. */
export const batchTopkSelectOf = (total: number, share?: BatchShare): Select =>
  Object.assign(
    (pre: Tensor) => batchTopkSelect(pre, total, share),
    !share || share.ranks === 1 ? { batchTopk: total } : {},
  );

/** The selections' kept entries: fused with the GEMM when the only one is a row or batch top-k. */
function select(xin: Tensor, W: Tensor, b: Tensor, selects: Select[]): SelectedCoo[] {
  const only = selects.length === 1 ? selects[0] : undefined;
  if (only?.rowTopk !== undefined) {
    const fused = fusedAffineTopk(xin, W, b, only.rowTopk);
    if (fused) return [cooFromRows(fused[1], relu(fused[0]))];
  } else if (only?.batchTopk !== undefined) {
    const fused = fusedAffineBatchTopk(xin, W, b, only.batchTopk, only.batchScale ?? null);
    if (fused) return [cooFromFlat(fused[1], relu(fused[0]), W.shape[1])];
  }
  const pre = affine(xin, W, b);
  return selects.map((s) => s(pre));
}

/**
 * One dense matmul, then each `select` keeps some pre-activations as COO entries (values after
 * ReLU). Several selections share the matmul (the main code and AuxK's dead-feature code); their
 * cotangents are concatenated into one sparse backward pass.
 */
export function sparseEncoder(
  name: string,
  x: Tensor,
  W_enc: Tensor,
  b_enc: Tensor,
  b_dec: Tensor | null,
  selects: Select[],
): Coo[] {
  const withBDec = b_dec !== null;
  const f = customVjp(
    (...args: Tensor[]) => {
      const [xx, W, b, bd] = args;
      const xin = withBDec ? sub(xx, bd) : xx;
      const coos = select(xin, W, b, selects);
      return [coos.flatMap((c) => [c.values, c.rows, c.cols]), { xin, W, coos }] as [
        Tensor[],
        Residuals,
      ];
    },
    (r, cts, needs) => {
      const part = (
        i: number,
      ) => (r.coos[i].linear ? cts[3 * i] : mul(cts[3 * i], step(r.coos[i].values)));
      const dpre: Coo = r.coos.length === 1 ? { ...r.coos[0], values: part(0) } : {
        rows: concat(r.coos.map((c) => c.rows)),
        cols: concat(r.coos.map((c) => c.cols)),
        values: concat(r.coos.map((_, i) => part(i))),
      };
      return encoderBackward(r.xin, r.W, dpre, needs, withBDec);
    },
    name,
  );
  const out = withBDec ? f(x, W_enc, b_enc, b_dec!) : f(x, W_enc, b_enc);
  return selects.map((_, i) => ({
    values: out[3 * i],
    rows: out[3 * i + 1],
    cols: out[3 * i + 2],
  }));
}

/** TopK code of x: k features per row. Differentiable in x, W_enc, b_enc and (when given) b_dec. */
export function topkEncode(
  x: Tensor,
  W_enc: Tensor,
  b_enc: Tensor,
  b_dec: Tensor | null,
  k: number,
): TopKCode {
  const [coo] = sparseEncoder("topkEncode", x, W_enc, b_enc, b_dec, [rowTopkSelect(k)]);
  // The COO entries are the row-major [B, k] code; reshaping keeps the values on the tape.
  const [B] = x.shape;
  return { values: reshape(coo.values, [B, k]), indices: reshape(coo.cols, [B, k]) };
}

/** BatchTopK code: the `total` largest activations of the whole batch, as COO entries. */
export function batchTopkEncode(
  x: Tensor,
  W_enc: Tensor,
  b_enc: Tensor,
  b_dec: Tensor | null,
  total: number,
): Coo {
  return sparseEncoder("batchTopkEncode", x, W_enc, b_enc, b_dec, [batchTopkSelectOf(total)])[0];
}

/** The k largest pre-activations of each row, ReLU'd, as COO entries (row-major [B, k]). */
export function topkSelect(pre: Tensor, k: number, applyRelu = true): SelectedCoo {
  const [v, idx] = topk(pre, k);
  return applyRelu ? cooFromRows(idx, relu(v)) : { ...cooFromRows(idx, v), linear: true };
}

/**
 * A batch-level top-k over the ranks of a data-parallel job, each holding an equal share of the
 * global batch. Given this rank's best candidates (values sorted best first, as many as the
 * global count could take from one rank), `keep` says how many of them the global top-`total`
 * holds: ties at the cut go to lower ranks first, as one process's top-k over the concatenated
 * batch gives them to lower indices.
 */
export interface BatchShare {
  ranks: number;
  keep(sorted: Tensor, total: number): number;
}

/**
 * The `total` largest of `scores` (a flat batch), or with `share` this rank's part of the
 * `total · ranks` largest over every rank's scores: [values, flat indices], best first.
 */
export function batchTopk(scores: Tensor, total: number, share?: BatchShare): [Tensor, Tensor] {
  if (!share || share.ranks === 1) return topk(scores, total);
  const global = total * share.ranks;
  const [v, i] = topk(scores, Math.min(global, scores.size));
  const m = share.keep(v, global);
  return m === v.size ? [v, i] : [sliceAxis(v, 0, 0, m), sliceAxis(i, 0, 0, m)];
}

/** The `total` largest pre-activations of the whole batch, ReLU'd, as COO entries. */
export function batchTopkSelect(pre: Tensor, total: number, share?: BatchShare): Coo {
  const [v, flat] = batchTopk(reshape(pre, [-1]), total, share);
  return cooFromFlat(flat, relu(v), pre.shape[1]);
}

/** COO entries from flat indices r·F + c into a [B, F] matrix. */
const cooFromFlat = (flat: Tensor, values: Tensor, F: number): Coo => ({
  rows: floorDiv(flat, F),
  cols: mod(flat, F),
  values,
});

/** x̂ = Σ_j values[b, j]·W_dec[indices[b, j]] + b_dec, in O(B·k·d). */
export function sparseDecode(code: TopKCode, W_dec: Tensor, b_dec: Tensor): Tensor {
  return add(spmm(cooFromRows(code.indices, code.values), W_dec, code.values.shape[0]), b_dec);
}
