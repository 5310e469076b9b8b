/** cublas<t>gemmStridedBatched's semantics on host arrays (column-major, op(X) per trans flag). */
import type { GemmPlan } from "../../tensor/cuda/gemm_plan.ts";

export function colMajorGemm(
  plan: GemmPlan,
  A: Float64Array,
  B: Float64Array,
  C: Float64Array,
): void {
  const at = (X: Float64Array, o: GemmPlan["first"], b: number, i: number, j: number) =>
    X[o.offset + b * o.batchStride + (o.trans ? j + i * o.ld : i + j * o.ld)];
  for (let b = 0; b < plan.batch; b++) {
    for (let i = 0; i < plan.m; i++) {
      for (let j = 0; j < plan.n; j++) {
        let s = 0;
        for (let l = 0; l < plan.k; l++) {
          s += at(B, plan.first, b, i, l) * at(A, plan.second, b, l, j);
        }
        C[b * plan.strideC + i + j * plan.ldc] = s;
      }
    }
  }
}
