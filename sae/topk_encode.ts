/**
 * The TopK encoder with a sparse backward pass. Forward: pre = (x − b_dec)·W_enc + b_enc, keep
 * the k largest per row, ReLU. Only k entries per row carry gradient, so the backward pass is
 * COO products costing O(B·k·d) instead of the dense O(B·F·d) matmul a plain VJP would run.
 * Taking top-k before the ReLU picks the same values (ties among zeros may pick other indices,
 * which carry zero value and zero gradient), and saves a pass over [B, F].
 */
import type { Tensor } from "../tensor/tensor.ts";
import { customVjp } from "../autodiff/grad.ts";
import { zeros } from "../tensor/ops/create.ts";
import { add, mul, neg, relu, step, sub } from "../tensor/ops/elementwise.ts";
import { topk } from "../tensor/ops/index.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { contiguous, reshape, transpose } from "../tensor/ops/shape.ts";
import { cooFromRows, spmm, spmmT } from "../tensor/ops/sparse.ts";
import { scatterAdd } from "../tensor/ops/index.ts";

export interface TopKCode {
  /** [B, k] activations (≥ 0) and their feature indices (i32), largest first. */
  values: Tensor;
  indices: Tensor;
}

/** Pre-activations before the top-k selection: (x − b_dec)·W_enc + b_enc. */
export function preActivations(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | null): Tensor {
  return add(matmul(b_dec ? sub(x, b_dec) : x, W_enc), b_enc);
}

/** Sparse-backward gradient of the encoder given the cotangent of the kept pre-activations. */
function encoderBackward(xin: Tensor, W_enc: Tensor, idx: Tensor, dpre: Tensor, needs: boolean[], withBDec: boolean): (Tensor | null)[] {
  const [B] = xin.shape;
  const F = W_enc.shape[1];
  const coo = cooFromRows(idx, dpre);
  const dW = needs[1] ? contiguous(transpose(spmmT(coo, xin, F))) : null;
  const db = needs[2] || (withBDec && needs[3]) ? scatterAdd(zeros([F], dpre.dtype, dpre.backend), reshape(idx, [-1]), reshape(dpre, [-1]), 0) : null;
  const dx = needs[0] ? spmm(coo, contiguous(transpose(W_enc)), B) : null;
  // Σ_b ∂xin[b] = W_enc · Σ_b ∂pre[b] = W_enc · ∂b_enc, so b_dec's gradient is a mat-vec.
  const dbDec = withBDec && needs[3] ? neg(matmul(W_enc, db!)) : null;
  return withBDec ? [dx, dW, needs[2] ? db : null, dbDec] : [dx, dW, needs[2] ? db : null];
}

/** TopK code of x; differentiable in x, W_enc, b_enc and (when given) b_dec. */
export function topkEncode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | null, k: number): TopKCode {
  const withBDec = b_dec !== null;
  const f = customVjp(
    (...args: Tensor[]) => {
      const [xx, W, b, bd] = args;
      const xin = withBDec ? sub(xx, bd) : xx;
      const [v, idx] = topk(add(matmul(xin, W), b), k);
      const vals = relu(v);
      return [[vals, idx], { xin, idx, vals, W }] as [Tensor[], { xin: Tensor; idx: Tensor; vals: Tensor; W: Tensor }];
    },
    (r, [dvals], needs) => encoderBackward(r.xin, r.W, r.idx, mul(dvals, step(r.vals)), needs, withBDec),
    "topkEncode",
  );
  const [values, indices] = withBDec ? f(x, W_enc, b_enc, b_dec!) : f(x, W_enc, b_enc);
  return { values, indices };
}

/** x̂ = Σ_j values[b, j]·W_dec[indices[b, j]] + b_dec, in O(B·k·d). */
export function sparseDecode(code: TopKCode, W_dec: Tensor, b_dec: Tensor): Tensor {
  return add(spmm(cooFromRows(code.indices, code.values), W_dec, code.values.shape[0]), b_dec);
}
