/** Elementwise ops with NumPy broadcasting and JAX-like dtype promotion. */
import type { BinaryOp, UnaryOp } from "../backend.ts";
import { assertDType, type DType, isFloat, promote, weakDType } from "../dtype.ts";
import { broadcastShapes, fmt, type Shape, ShapeError, shapesEqual } from "../shape.ts";
import { getBackend } from "../registry.ts";
import { bind1 } from "../prims.ts";
import { Tensor } from "../tensor.ts";
import { asTensor, type TensorLike } from "./create.ts";

export function broadcastTo(x: Tensor, shape: Shape): Tensor {
  if (shapesEqual(x.shape, shape)) return x;
  const out = broadcastShapes("broadcastTo", x.shape, shape);
  if (!shapesEqual(out, shape)) {
    throw new ShapeError(`broadcastTo: cannot broadcast shape ${fmt(x.shape)} to ${fmt(shape)}`);
  }
  return bind1("broadcastTo", [x], { shape });
}

export function cast(x: Tensor, dtype: DType): Tensor {
  assertDType(dtype, "cast");
  return x.dtype === dtype ? x : bind1("cast", [x], { dtype });
}

/** Both operands as tensors of one dtype; numbers take the tensor's dtype where it can hold them. */
function operands(a: TensorLike, b: TensorLike): [Tensor, Tensor, DType] {
  const ta = a instanceof Tensor ? a : undefined;
  const tb = b instanceof Tensor ? b : undefined;
  const backend = (ta ?? tb)?.backend ?? getBackend();
  const da = ta ? ta.dtype : weakDType(a as number, tb?.dtype ?? "f32");
  const db = tb ? tb.dtype : weakDType(b as number, ta?.dtype ?? "f32");
  const dt = promote(da, db);
  return [cast(asTensor(a, dt, backend), dt), cast(asTensor(b, dt, backend), dt), dt];
}

function binary(op: BinaryOp, a: TensorLike, b: TensorLike, dtype?: (d: DType) => DType): Tensor {
  let [x, y, dt] = operands(a, b);
  const want = dtype ? dtype(dt) : dt;
  if (want !== dt) [x, y] = [cast(x, want), cast(y, want)];
  const shape = broadcastShapes(op, x.shape, y.shape);
  return bind1("binary", [broadcastTo(x, shape), broadcastTo(y, shape)], { op });
}

const arith = (d: DType): DType => (d === "bool" ? "i32" : d);
const floating = (d: DType): DType => (isFloat(d) ? d : "f32");

export const add = (a: TensorLike, b: TensorLike): Tensor => binary("add", a, b, arith);
export const sub = (a: TensorLike, b: TensorLike): Tensor => binary("sub", a, b, arith);
export const mul = (a: TensorLike, b: TensorLike): Tensor => binary("mul", a, b, arith);
/** True division: integers divide as f32. */
export const div = (a: TensorLike, b: TensorLike): Tensor => binary("div", a, b, floating);
export const pow = (a: TensorLike, b: TensorLike): Tensor => binary("pow", a, b, floating);
/** floor(a / b), in the operands' dtype (exact for i32). */
export const floorDiv = (a: TensorLike, b: TensorLike): Tensor => binary("floordiv", a, b, arith);
/** a − b·floor(a / b): the remainder with the divisor's sign, as in Python. */
export const mod = (a: TensorLike, b: TensorLike): Tensor => binary("mod", a, b, arith);
export const maximum = (a: TensorLike, b: TensorLike): Tensor => binary("max", a, b);
export const minimum = (a: TensorLike, b: TensorLike): Tensor => binary("min", a, b);
export const gt = (a: TensorLike, b: TensorLike): Tensor => binary("gt", a, b);
export const ge = (a: TensorLike, b: TensorLike): Tensor => binary("ge", a, b);
export const lt = (a: TensorLike, b: TensorLike): Tensor => binary("lt", a, b);
export const le = (a: TensorLike, b: TensorLike): Tensor => binary("le", a, b);
export const eq = (a: TensorLike, b: TensorLike): Tensor => binary("eq", a, b);
export const ne = (a: TensorLike, b: TensorLike): Tensor => binary("ne", a, b);
export const logicalAnd = (a: TensorLike, b: TensorLike): Tensor =>
  binary("and", a, b, () => "bool");
export const logicalOr = (a: TensorLike, b: TensorLike): Tensor => binary("or", a, b, () => "bool");

function unary(op: UnaryOp, x: Tensor, dtype: (d: DType) => DType): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a Tensor, got ${typeof x}`);
  return bind1("unary", [cast(x, dtype(x.dtype))], { op });
}

export const neg = (x: Tensor): Tensor => unary("neg", x, arith);
export const abs = (x: Tensor): Tensor => unary("abs", x, arith);
export const sign = (x: Tensor): Tensor => unary("sign", x, arith);
export const exp = (x: Tensor): Tensor => unary("exp", x, floating);
export const log = (x: Tensor): Tensor => unary("log", x, floating);
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x, floating);
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x, floating);
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x, floating);
export const tanh = (x: Tensor): Tensor => unary("tanh", x, floating);
export const erf = (x: Tensor): Tensor => unary("erf", x, floating);
export const sin = (x: Tensor): Tensor => unary("sin", x, floating);
export const cos = (x: Tensor): Tensor => unary("cos", x, floating);
export const floor = (x: Tensor): Tensor => unary("floor", x, arith);
export const ceil = (x: Tensor): Tensor => unary("ceil", x, arith);
export const relu = (x: Tensor): Tensor => unary("relu", x, arith);
/** Heaviside step: 1 where x > 0, else 0 (so step(0) = 0); zero gradient everywhere. */
export const step = (x: Tensor): Tensor => unary("step", x, arith);
export const heaviside = step;
export const logicalNot = (x: Tensor): Tensor => unary("not", x, () => "bool");
export const square = (x: Tensor): Tensor => mul(x, x);

export function clip(x: Tensor, lo: TensorLike, hi: TensorLike): Tensor {
  return minimum(maximum(x, lo), hi);
}

/** GELU; `approximate: "tanh"` is the GPT-2 form, the default is exact (erf). */
export function gelu(x: Tensor, opts: { approximate?: "tanh" | "none" } = {}): Tensor {
  if (opts.approximate === "tanh") {
    const inner = mul(Math.sqrt(2 / Math.PI), add(x, mul(0.044715, mul(x, square(x)))));
    return mul(mul(0.5, x), add(1, tanh(inner)));
  }
  return mul(mul(0.5, x), add(1, erf(mul(x, Math.SQRT1_2))));
}

/** cond ? a : b, broadcast together. */
export function where(cond: TensorLike, a: TensorLike, b: TensorLike): Tensor {
  const [x, y] = operands(a, b);
  const c = cast(asTensor(cond, "bool", x.backend), "bool");
  const shape = broadcastShapes("where", broadcastShapes("where", c.shape, x.shape), y.shape);
  return bind1("where", [broadcastTo(c, shape), broadcastTo(x, shape), broadcastTo(y, shape)], {});
}

/** The same values with no gradient flowing back through them. */
export function stopGradient(x: Tensor): Tensor {
  return new Tensor(x.storage, x.shape, x.dtype, x.strides, x.offset);
}

export function isFinite(x: Tensor): Tensor {
  if (!isFloat(x.dtype)) return gt(x, -Infinity);
  return logicalAnd(eq(x, x), lt(abs(x), Infinity));
}
