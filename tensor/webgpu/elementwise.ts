/**
 * Elementwise kernels by strides: each invocation turns its output index into coordinates and
 * reads every operand through its own strides (0 for broadcast axes), so broadcasts are never
 * materialised. One pipeline per (expression, dtypes); shapes and strides travel in `meta`.
 */
import type { BinaryOp, UnaryOp, View } from "../backend.ts";
import type { DType } from "../dtype.ts";
import { contiguousStrides, type Shape, sizeOf } from "../shape.ts";
import { coalesce } from "../cpu/strided.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime, WG } from "./runtime.ts";
import { bindings, convert, ld, SPECIAL, wty } from "./wgsl.ts";

type Ty = "f32" | "i32" | "u32";

const zero = (t: Ty) => `${t}(0)`;

/** WGSL for a unary op on `a` of type `t` (the result has type t, or u32 for `not`). */
function unaryExpr(op: UnaryOp, t: Ty): string {
  const f = t === "f32";
  switch (op) {
    case "neg":
      return t === "u32" ? "a" : "-a";
    case "abs":
      return t === "u32" ? "a" : "abs(a)";
    case "sign":
      return f
        ? "select(select(select(0.0, 1.0, a > 0.0), -1.0, a < 0.0), a, isnan_(a))"
        : t === "i32"
        ? "sign(a)"
        : "a";
    case "exp":
      return "exp(a)";
    case "log":
      return "log(a)";
    case "sqrt":
      return "sqrt(a)";
    case "rsqrt":
      return "1.0 / sqrt(a)";
    case "sigmoid":
      return "1.0 / (1.0 + exp(-a))";
    case "tanh":
      return "tanh_(a)";
    case "erf":
      return "erf_(a)";
    case "relu":
      return f ? "select(0.0, a, a > 0.0 || isnan_(a))" : t === "i32" ? "max(a, 0)" : "a";
    case "step":
      return `select(${zero(t)}, ${t}(1), a > ${zero(t)})`;
    case "sin":
      return "sin(a)";
    case "cos":
      return "cos(a)";
    case "floor":
      return f ? "floor(a)" : "a";
    case "ceil":
      return f ? "ceil(a)" : "a";
    case "not":
      return `select(0u, 1u, a == ${zero(t)})`;
    case "copy":
      return "a";
  }
}

function binaryExpr(op: BinaryOp, t: Ty): string {
  const f = t === "f32";
  // Compilers may assume floats are never NaN; spell the IEEE answers out with bit tests.
  const ord = f ? " && !isnan_(a) && !isnan_(b)" : "";
  const cmp = (c: string) => `select(0u, 1u, ${c}${c.includes("!=") ? "" : ord})`;
  switch (op) {
    case "add":
      return "a + b";
    case "sub":
      return "a - b";
    case "mul":
      return "a * b";
    case "div":
      return f ? "a / b" : `select(${zero(t)}, a / b, b != ${zero(t)})`;
    case "pow":
      return "pow_(a, b)";
    case "max":
      return f ? "select(select(b, a, a > b && !isnan_(b)), a, isnan_(a))" : "max(a, b)";
    case "min":
      return f ? "select(select(b, a, a < b && !isnan_(b)), a, isnan_(a))" : "min(a, b)";
    case "floordiv":
      return f ? "floor(a / b)" : "floordiv_(a, b)";
    case "mod":
      return f ? "a - b * floor(a / b)" : "mod_(a, b)";
    case "gt":
      return cmp("a > b");
    case "ge":
      return cmp("a >= b");
    case "lt":
      return cmp("a < b");
    case "le":
      return cmp("a <= b");
    case "eq":
      return cmp("a == b");
    case "ne":
      return f ? "select(0u, 1u, a != b || isnan_(a) || isnan_(b))" : cmp("a != b");
    case "and":
      return "(a & b)";
    case "or":
      return "(a | b)";
  }
}

/** Integer floor division and Python modulo; division by zero gives 0 (as the CPU's Int32Array store of NaN/Inf). */
const INT_HELPERS = /* wgsl */ `
fn floordiv_(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  var q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) { q = q - 1; }
  return q;
}
fn mod_(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  var r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) { r = r + b; }
  return r;
}
`;

const NAMES = ["a", "b", "c"];

/** The shader for out[view] = expr(a, b, c), its result of dtype `exprDtype` stored as `outDtype`. */
function shader(expr: string, ins: DType[], exprDtype: DType, outDtype: DType): string {
  const lines = [bindings(ins, [outDtype]), SPECIAL, INT_HELPERS];
  lines.push(`@compute @workgroup_size(${WG})`);
  lines.push(`fn main(${ENTRY_ARGS}) {`);
  lines.push(`  let i = ${GROUP_ID} * ${WG}u + lid.x;`);
  lines.push("  if (i >= prm[0]) { return; }");
  lines.push("  let nd = prm[1];");
  lines.push("  var rem = i;");
  lines.push("  var oo = prm[2];");
  ins.forEach((_, k) =>
    lines.push(`  let b${k} = 3u + 2u * nd + ${k}u * (nd + 1u);\n  var o${k} = prm[b${k}];`)
  );
  lines.push("  for (var d = i32(nd) - 1; d >= 0; d--) {");
  lines.push("    let ud = u32(d);");
  lines.push("    let sz = prm[3u + nd + ud];");
  lines.push("    let c = rem % sz;");
  lines.push("    rem = rem / sz;");
  lines.push("    oo = oo + c * prm[3u + ud];");
  ins.forEach((_, k) => lines.push(`    o${k} = o${k} + c * prm[b${k} + 1u + ud];`));
  lines.push("  }");
  ins.forEach((d, k) => lines.push(`  let ${NAMES[k]} = ${ld(d, `in${k}[o${k}]`)};`));
  lines.push(`  out0[oo] = ${convert(`(${expr})`, exprDtype, outDtype)};`);
  lines.push("}");
  return lines.join("\n");
}

/**
 * Run `expr` over `shape`, writing into `out` (contiguous of `outShape`, starting at element
 * `outStart`, so concat and pad can write windows) or into a fresh buffer.
 */
export function mapInto(
  rt: Runtime,
  expr: string,
  exprDtype: DType,
  views: readonly View[],
  outDtype: DType,
  out: GBuf,
  outStrides: readonly number[],
  outStart: number,
): void {
  const shape = views[0].shape;
  const n = sizeOf(shape);
  if (n === 0) return;
  const c = coalesce(shape, [outStrides, ...views.map((v) => v.strides)]);
  const nd = c.shape.length;
  const meta = [n, nd, outStart, ...c.strides[0], ...c.shape];
  views.forEach((v, k) => meta.push(v.offset, ...c.strides[k + 1]));
  const code = shader(expr, views.map((v) => v.dtype), exprDtype, outDtype);
  rt.dispatch(code, [...views.map((v) => v.buf as GBuf), out], meta, Math.ceil(n / WG));
}

function map(
  rt: Runtime,
  expr: string,
  exprDtype: DType,
  views: readonly View[],
  outDtype: DType,
  shape: Shape,
): GBuf {
  const out = rt.alloc(sizeOf(shape), outDtype);
  mapInto(rt, expr, exprDtype, views, outDtype, out, contiguousStrides(shape), 0);
  return out;
}

export function unary(rt: Runtime, op: UnaryOp, x: View, outDtype: DType): GBuf {
  const exprDtype = op === "not" ? "bool" : x.dtype;
  return map(rt, unaryExpr(op, wty(x.dtype)), exprDtype, [x], outDtype, x.shape);
}

const COMPARES = new Set<BinaryOp>(["gt", "ge", "lt", "le", "eq", "ne"]);

export function binary(rt: Runtime, op: BinaryOp, a: View, b: View, outDtype: DType): GBuf {
  const exprDtype = COMPARES.has(op) ? "bool" : a.dtype;
  return map(rt, binaryExpr(op, wty(a.dtype)), exprDtype, [a, b], outDtype, a.shape);
}

export function where(rt: Runtime, c: View, a: View, b: View, outDtype: DType): GBuf {
  return map(rt, "select(c, b, a != 0u)", b.dtype, [c, a, b], outDtype, a.shape);
}

export function cast(rt: Runtime, x: View, dtype: DType): GBuf {
  return map(rt, "a", x.dtype, [x], dtype, x.shape);
}

/** Copy `x` into the window of contiguous `out` (of `outShape`, stored as `outDtype`) that starts at `start`. */
export function copyInto(
  rt: Runtime,
  x: View,
  out: GBuf,
  outShape: Shape,
  start: readonly number[],
  outDtype = x.dtype,
): void {
  const os = contiguousStrides(outShape);
  const off = start.reduce((s, v, d) => s + v * os[d], 0);
  mapInto(rt, "a", x.dtype, [x], outDtype, out, os, off);
}
