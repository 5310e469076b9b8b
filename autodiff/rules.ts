/**
 * The VJP rule of every primitive, in one table. A rule maps the cotangents of a node's outputs
 * (null where none arrived) to cotangents of its inputs (null for "zero" or "not differentiable").
 * Rules are written with the public ops, so the backward pass is itself differentiable.
 */
import type { Node, Prim } from "../tensor/prims.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { isFloat } from "../tensor/dtype.ts";
import { zeros } from "../tensor/ops/create.ts";
import {
  add,
  cast,
  cos,
  div,
  eq,
  exp,
  floor,
  gt,
  log,
  mul,
  neg,
  pow,
  sign,
  sin,
  square,
  step,
  sub,
  where,
} from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { broadcastTo, mT, pad, reshape, slice, transpose } from "../tensor/ops/shape.ts";
import { gather, scatterAdd } from "../tensor/ops/index.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { sddmm, spmm, spmmT } from "../tensor/ops/sparse.ts";
import { bind1 } from "../tensor/prims.ts";
import { fusedReluGrad, isTransposedMatrix } from "../tensor/fused.ts";

/** `live[j]`: whether input j needs a cotangent (rules may skip work for the others). */
type Rule<P extends Prim> = (
  cts: (Tensor | null)[],
  node: Node<P>,
  live: boolean[],
) => (Tensor | null)[];

/** A cotangent computed only for an input that needs one (skips e.g. ∂x of x·W with x data). */
const when = (live: boolean, f: () => Tensor): Tensor | null => (live ? f() : null);

const TWO_OVER_SQRT_PI = 1.1283791670955126;

function unaryRule(
  op: Node<"unary">["params"]["op"],
  g: Tensor,
  x: Tensor,
  y: Tensor,
): Tensor | null {
  switch (op) {
    case "neg":
      return neg(g);
    case "abs":
      return mul(g, sign(x));
    case "exp":
      return mul(g, y);
    case "log":
      return div(g, x);
    case "sqrt":
      return div(mul(g, 0.5), y);
    case "rsqrt":
      return mul(mul(g, -0.5), mul(y, square(y)));
    case "sigmoid":
      return mul(g, mul(y, sub(1, y)));
    case "tanh":
      return mul(g, sub(1, square(y)));
    case "erf":
      return mul(g, mul(TWO_OVER_SQRT_PI, exp(neg(square(x)))));
    case "relu":
      // One pass where the backend fuses it and nothing is traced (no grad of this grad).
      return fusedReluGrad(g, x) ?? mul(g, step(x));
    case "sin":
      return mul(g, cos(x));
    case "cos":
      return neg(mul(g, sin(x)));
    case "copy":
      return g;
    case "sign":
    case "step":
    case "floor":
    case "ceil":
    case "not":
      return null;
  }
}

/** Cotangent of max/min: to the winner, shared equally on ties (as in JAX). */
function extremum(g: Tensor, x: Tensor, y: Tensor, op: "gt" | "lt"): [Tensor, Tensor] {
  const win = cast(op === "gt" ? gt(x, y) : gt(y, x), g.dtype);
  const tie = mul(cast(eq(x, y), g.dtype), 0.5);
  const toX = add(win, tie);
  return [mul(g, toX), mul(g, sub(1, toX))];
}

export const RULES: { [P in Prim]: Rule<P> } = {
  unary: ([g], { inputs: [x], outputs: [y], params: { op } }) => [unaryRule(op, g!, x, y)],
  binary: ([g], { inputs: [x, y], outputs: [z], params: { op } }, live) => {
    switch (op) {
      case "add":
        return [g, g];
      case "sub":
        return [g, neg(g!)];
      case "mul":
        return [when(live[0], () => mul(g!, y)), when(live[1], () => mul(g!, x))];
      case "div":
        return [when(live[0], () => div(g!, y)), when(live[1], () => neg(div(mul(g!, z), y)))];
      case "pow":
        return [
          when(live[0], () => mul(g!, mul(y, pow(x, sub(y, 1))))),
          when(live[1], () => mul(g!, mul(z, log(where(gt(x, 0), x, 1))))),
        ];
      case "mod":
        return [g, neg(mul(g!, floor(div(x, y))))];
      case "max":
        return extremum(g!, x, y, "gt");
      case "min":
        return extremum(g!, x, y, "lt");
      default:
        return [null, null];
    }
  },
  where: (
    [g],
    { inputs: [c] },
    live,
  ) => [null, when(live[1], () => where(c, g!, 0)), when(live[2], () => where(c, 0, g!))],
  cast: ([g], { inputs: [x] }) => [isFloat(x.dtype) ? cast(g!, x.dtype) : null],
  reduce: ([g], { inputs: [x], outputs: [y], params: { op, axes } }) => {
    const keep = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const gk = broadcastTo(reshape(g!, keep), x.shape);
    if (op === "sum") return [gk];
    const hit = cast(eq(x, broadcastTo(reshape(y, keep), x.shape)), g!.dtype);
    return [div(mul(gk, hit), broadcastTo(sum(hit, axes, { keepdims: true }), x.shape))];
  },
  argReduce: () => [null],
  matmul: (
    [g],
    { inputs: [a, b] },
    live,
  ) => [
    when(live[0], () => matmul(g!, mT(b))),
    // b a transposed matrix (a tied head, x·Wᵀ): ∂b as the transpose of gᵀ·a, so that ∂W comes
    // out contiguous rather than transposed (the same product; BLAS reads either layout).
    when(live[1], () => isTransposedMatrix(b) ? mT(matmul(mT(g!), a)) : matmul(mT(a), g!)),
  ],
  gather: (
    [g],
    { inputs: [x, idx], params: { axis } },
  ) => [scatterAdd(zeros(x.shape, g!.dtype, g!.backend), idx, g!, axis), null],
  scatterAdd: ([g], { inputs: [, idx], params: { axis } }) => [g, null, gather(g!, idx, axis)],
  topk: (
    [g],
    { inputs: [x], outputs: [, idx] },
  ) => [g ? scatterAdd(zeros(x.shape, g.dtype, g.backend), idx, g, -1) : null],
  cumsum: (
    [g],
    { params: { axis, reverse } },
  ) => [bind1("cumsum", [g!], { axis, reverse: !reverse })],
  concat: ([g], { inputs, params: { axis } }) => {
    let at = 0;
    return inputs.map((x) => {
      const starts = x.shape.map((_, i) => (i === axis ? at : 0));
      const ends = x.shape.map((d, i) => (i === axis ? at + d : g!.shape[i]));
      at += x.shape[axis];
      return slice(g!, starts, ends);
    });
  },
  pad: (
    [g],
    { inputs: [x], params: { widths } },
  ) => [slice(g!, widths.map((w) => w[0]), widths.map((w, i) => w[0] + x.shape[i]))],
  reshape: ([g], { inputs: [x] }) => [reshape(g!, x.shape)],
  permute: ([g], { params: { perm } }) => {
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [transpose(g!, inv)];
  },
  broadcastTo: ([g], { inputs: [x], params: { shape } }) => {
    const lead = shape.length - x.ndim;
    const axes = shape.flatMap((
      d,
      i,
    ) => (i < lead || (x.shape[i - lead] === 1 && d !== 1) ? [i] : []));
    return [reshape(sum(g!, axes), x.shape)];
  },
  slice: (
    [g],
    { inputs: [x], params: { starts, ends } },
  ) => [pad(g!, starts.map((s, i) => [s, x.shape[i] - ends[i]] as const))],
  alias: ([g]) => [g],
  // S@T, Sᵀ@G and the sampled product are closed under differentiation (ops/sparse.ts).
  spmm: ([g], { inputs: [r, c, v, m], params: { transpose } }, live) => {
    const coo = { rows: r, cols: c, values: v };
    return transpose
      ? [
        null,
        null,
        when(live[2], () => sddmm(m, g!, r, c)),
        when(live[3], () => spmm(coo, g!, m.shape[0])),
      ]
      : [
        null,
        null,
        when(live[2], () => sddmm(g!, m, r, c)),
        when(live[3], () => spmmT(coo, g!, m.shape[0])),
      ];
  },
  sddmm: ([g], { inputs: [a, b, r, c] }, live) => {
    const coo = { rows: r, cols: c, values: g! };
    return [
      when(live[0], () => spmm(coo, b, a.shape[0])),
      when(live[1], () => spmmT(coo, a, b.shape[0])),
      null,
      null,
    ];
  },
  custom: (cts, { params: { backward } }, live) => backward(cts, live),
};

export function vjpRule(node: Node): Rule<Prim> {
  return RULES[node.prim] as Rule<Prim>;
}
