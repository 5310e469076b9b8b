/**
 * Elementwise kernels, generated per (expression, input dtypes, output dtype) and compiled on
 * first use, as the CPU backend generates its loops. Every input and the output are strided views
 * (broadcasts are stride 0), so nothing is ever materialised; the output view also lets concat and
 * pad write into a window of a larger buffer. Three kernels per module: a flat loop when every view
 * is contiguous, and strided loops with 32-bit and 64-bit index arithmetic.
 */
import type { BinaryOp, UnaryOp } from "../../backend.ts";
import type { DType } from "../../dtype.ts";
import { COMPUTE, CTYPE, PRELUDE } from "./prelude.ts";

/** Expressions over the compute type C: inputs are a, b, c. */
export const UNARY_C: Record<UnaryOp, string> = {
  neg: "-a",
  abs: "fabs(a)",
  sign: "(a != a ? a : (C)((a > 0) - (a < 0)))",
  exp: "exp(a)",
  log: "log(a)",
  sqrt: "sqrt(a)",
  rsqrt: "(C)1 / sqrt(a)",
  sigmoid: "(C)1 / ((C)1 + exp(-a))",
  tanh: "tanh(a)",
  erf: "erf(a)",
  relu: "(a > 0 ? a : (a != a ? a : (C)0))",
  step: "(C)(a > 0)",
  sin: "sin(a)",
  cos: "cos(a)",
  floor: "floor(a)",
  ceil: "ceil(a)",
  not: "(C)(a == 0)",
  copy: "a",
};

export const BINARY_C: Record<BinaryOp, string> = {
  add: "a + b",
  sub: "a - b",
  mul: "a * b",
  div: "a / b",
  pow: "pow(a, b)",
  floordiv: "floor(a / b)",
  // Python's sign convention: the result takes the divisor's sign.
  mod: "(a - b * floor(a / b))",
  max: "((a > b || a != a) ? a : b)",
  min: "((a < b || a != a) ? a : b)",
  gt: "(C)(a > b)",
  ge: "(C)(a >= b)",
  lt: "(C)(a < b)",
  le: "(C)(a <= b)",
  eq: "(C)(a == b)",
  ne: "(C)(a != b)",
  and: "(C)((a != 0) & (b != 0))",
  or: "(C)((a != 0) | (b != 0))",
};

export const WHERE_C = "(a != 0 ? b : c)";

/** The cast expression from `from` to `to` (the CPU backend's castExpr, in C). */
export function castC(from: DType, to: DType): string {
  if (to === "i32" && from !== "i32" && from !== "bool") return "(a != a ? (C)0 : trunc(a))";
  if (to === "bool") return "(C)(a != 0)";
  return "a";
}

/** The compute type of an op: the output's, widened to f64 when an input is f64. */
export function computeType(inputs: readonly DType[], out: DType): string {
  return [out, ...inputs].some((d) => COMPUTE[d] === "double") ? "double" : "float";
}

export interface EwSpec {
  expr: string;
  inputs: readonly DType[];
  out: DType;
}

/** A stable cache key (and module name) for a spec. */
export function ewKey(s: EwSpec): string {
  return `${s.expr}|${s.inputs.join(",")}|${s.out}`;
}

const NAMES = ["a", "b", "c"];

/**
 * Kernel bodies for one spec, with its own kernel names (`prefix`) so several specs can share a
 * translation unit (the nvcc test compiles them all at once).
 */
export function ewKernels(s: EwSpec, prefix = "ew"): string {
  const C = computeType(s.inputs, s.out), O = CTYPE[s.out];
  const ins = s.inputs.map((d, i) => `Dims s${i}, ll o${i}, const ${CTYPE[d]}* __restrict__ x${i}`)
    .join(", ");
  const loads = (pos: (i: number) => string) =>
    s.inputs.map((_, i) => `C ${NAMES[i]} = (C)ld(x${i}, ${pos(i)});`).join(" ");
  const strided = (I: string) => `
extern "C" __global__ void ${prefix}_strided${
    I === "int" ? "32" : "64"
  }(ll n, int nd, Dims shape, Dims so, ll oo, ${O}* __restrict__ out, ${ins}) {
  typedef ${C} C;
  for (${I} i = (${I})gtid(); i < (${I})n; i += (${I})gstride()) {
    ${I} r = i, po = (${I})oo${s.inputs.map((_, k) => `, p${k} = (${I})o${k}`).join("")};
    for (int d = nd - 1; d >= 0; d--) {
      ${I} e = (${I})shape.d[d], q = r / e, c = r - q * e;
      r = q; po += c * (${I})so.d[d];${
    s.inputs.map((_, k) => ` p${k} += c * (${I})s${k}.d[d];`).join("")
  }
    }
    ${loads((k) => `p${k}`)}
    st(out, po, ${s.expr});
  }
}`;
  return `
extern "C" __global__ void ${prefix}_flat(ll n, int nd, Dims shape, Dims so, ll oo, ${O}* __restrict__ out, ${ins}) {
  typedef ${C} C;
  for (ll i = gtid(); i < n; i += gstride()) {
    ${loads((k) => `o${k} + i`)}
    st(out, oo + i, ${s.expr});
  }
}${strided("int")}${strided("ll")}
`;
}

/** A whole module for one spec. */
export function ewSource(s: EwSpec): string {
  return PRELUDE + ewKernels(s);
}

const ALL: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32", "bool"];
const COMPARE = new Set(["gt", "ge", "lt", "le", "eq", "ne", "and", "or"]);

/** Every elementwise spec the backend can generate (for compile checks and warm-up). */
export function everySpec(): EwSpec[] {
  const specs: EwSpec[] = [];
  for (const dt of ALL) {
    for (const [op, expr] of Object.entries(UNARY_C)) {
      specs.push({ expr, inputs: [dt], out: op === "not" ? "bool" : dt });
    }
    for (const [op, expr] of Object.entries(BINARY_C)) {
      specs.push({ expr, inputs: [dt, dt], out: COMPARE.has(op) ? "bool" : dt });
    }
  }
  for (const dt of ALL) {
    specs.push({ expr: WHERE_C, inputs: ["bool", dt, dt], out: dt });
    specs.push({ expr: UNARY_C.not, inputs: [dt], out: "bool" });
    for (const to of ALL) specs.push({ expr: castC(dt, to), inputs: [dt], out: to });
  }
  return [...new Map(specs.map((s) => [ewKey(s), s])).values()];
}
