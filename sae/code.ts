/**
 * Feature codes. TopK-family encoders return sparse codes so decoding costs O(B·k·d); dense codes
 * come from ReLU, Gated and JumpReLU. `decode` and `toDense` accept either.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { zeros } from "../tensor/ops/create.ts";
import { add, cast, gt, mul } from "../tensor/ops/elementwise.ts";
import { scatterAdd } from "../tensor/ops/index.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { reshape } from "../tensor/ops/shape.ts";
import { type Coo, cooFromRows, spmm } from "../tensor/ops/sparse.ts";

export type Code =
  /** k entries per row: values (≥ 0) and feature indices, [B, k] each. */
  | { kind: "rows"; values: Tensor; indices: Tensor }
  /** Any sparse pattern (BatchTopK): COO entries of a [batch, features] matrix. */
  | { kind: "coo"; coo: Coo; batch: number }
  | { kind: "dense"; f: Tensor };

export function asCoo(code: Code): Coo | null {
  if (code.kind === "rows") return cooFromRows(code.indices, code.values);
  if (code.kind === "coo") return code.coo;
  return null;
}

export function batchSize(code: Code): number {
  return code.kind === "rows" ? code.values.shape[0] : code.kind === "coo" ? code.batch : code.f.shape[0];
}

/** code·W_dec (+ b_dec when given); sparse codes never touch the dense [B, F] matrix. */
export function decodeWith(code: Code, W_dec: Tensor, b_dec: Tensor | null): Tensor {
  const coo = asCoo(code);
  const out = coo ? spmm(coo, W_dec, batchSize(code)) : matmul((code as { f: Tensor }).f, W_dec);
  return b_dec ? add(out, b_dec) : out;
}

/** The dense [B, F] code (for metrics and inspection). */
export function toDense(code: Code, features: number): Tensor {
  if (code.kind === "dense") return code.f;
  const coo = asCoo(code)!;
  const B = batchSize(code);
  const flat = add(mul(coo.rows, features), coo.cols);
  return reshape(scatterAdd(zeros([B * features], coo.values.dtype, coo.values.backend), flat, coo.values, 0), [B, features]);
}

/** Non-zero features per row, as f32 [B]. */
export function l0PerRow(code: Code): Tensor {
  if (code.kind === "dense") return sum(cast(gt(code.f, 0), "f32"), -1);
  const coo = asCoo(code)!;
  const B = batchSize(code);
  return scatterAdd(zeros([B]), coo.rows, cast(gt(coo.values, 0), "f32"), 0);
}
