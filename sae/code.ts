/**
 * Feature codes. TopK-family encoders return sparse codes so decoding costs O(B·k·d); dense codes
 * come from ReLU, Gated and JumpReLU. `decode` and `toDense` accept either.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { zeros } from "../tensor/ops/create.ts";
import { add, cast, div, gt, mul } from "../tensor/ops/elementwise.ts";
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
  | { kind: "dense"; f: Tensor }
  /**
   * Per-input codes of a decoupled crosscoder, code[b, l, i]: COO entries over (token, feature)
   * and the input l of each (i32); a feature may appear once per input for the same token.
   */
  | { kind: "inputs"; coo: Coo; input: Tensor; batch: number; inputs: number }
  /** The same as a dense [B, L, F] tensor (θ-based inference). */
  | { kind: "inputsDense"; f: Tensor };

/** COO entries (rows: tokens); per-input codes give one entry per (token, input, feature). */
export function asCoo(code: Code): Coo | null {
  if (code.kind === "rows") return cooFromRows(code.indices, code.values);
  if (code.kind === "coo" || code.kind === "inputs") return code.coo;
  return null;
}

export function batchSize(code: Code): number {
  return code.kind === "rows"
    ? code.values.shape[0]
    : code.kind === "coo" || code.kind === "inputs"
    ? code.batch
    : code.f.shape[0];
}

export const isPerInput = (code: Code): code is Extract<Code, { kind: "inputs" | "inputsDense" }> =>
  code.kind === "inputs" || code.kind === "inputsDense";

/** code·W_dec (+ b_dec when given); sparse codes never touch the dense [B, F] matrix. */
export function decodeWith(code: Code, W_dec: Tensor, b_dec: Tensor | null): Tensor {
  if (isPerInput(code)) {
    throw new TypeError(
      "decodeWith: a per-input (decoupled crosscoder) code decodes with one decoder per input: use the crosscoder's decode",
    );
  }
  const coo = asCoo(code);
  const out = coo ? spmm(coo, W_dec, batchSize(code)) : matmul((code as { f: Tensor }).f, W_dec);
  return b_dec ? add(out, b_dec) : out;
}

/** The dense [B, F] code (for metrics and inspection); per-input codes give [B, L, F]. */
export function toDense(code: Code, features: number): Tensor {
  if (code.kind === "dense" || code.kind === "inputsDense") return code.f;
  const coo = asCoo(code)!;
  const B = batchSize(code);
  if (code.kind === "inputs") {
    const L = code.inputs;
    const flat = add(mul(add(mul(coo.rows, L), code.input), features), coo.cols);
    return reshape(
      scatterAdd(
        zeros([B * L * features], coo.values.dtype, coo.values.backend),
        flat,
        coo.values,
        0,
      ),
      [B, L, features],
    );
  }
  const flat = add(mul(coo.rows, features), coo.cols);
  return reshape(
    scatterAdd(zeros([B * features], coo.values.dtype, coo.values.backend), flat, coo.values, 0),
    [B, features],
  );
}

/**
 * Non-zero features per row, as f32 [B]. Per-input codes count each input's features and average
 * over inputs (so a decoupled BatchTopK crosscoder trains at L0 k, as its inputs each keep k).
 */
export function l0PerRow(code: Code): Tensor {
  if (code.kind === "dense") return sum(cast(gt(code.f, 0), "f32"), -1);
  if (code.kind === "inputsDense") {
    return div(sum(cast(gt(code.f, 0), "f32"), [1, 2]), code.f.shape[1]);
  }
  const coo = asCoo(code)!;
  const B = batchSize(code);
  const counts = scatterAdd(zeros([B]), coo.rows, cast(gt(coo.values, 0), "f32"), 0);
  return code.kind === "inputs" ? div(counts, code.inputs) : counts;
}
