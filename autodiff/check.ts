/**
 * Gradient checking: reverse-mode gradients against central finite differences, in f64.
 * Reads values synchronously, so it needs a host backend (the CPU).
 */
import { isFloat } from "../tensor/dtype.ts";
import { fmt } from "../tensor/shape.ts";
import { tidy } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/ops/create.ts";
import { cast, mul } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { grad } from "./grad.ts";

function scalarOf(who: string, y: Tensor): number {
  if (!(y instanceof Tensor) || y.size !== 1) {
    throw new TypeError(
      `${who}: the function must return a one-element tensor, got ${
        y instanceof Tensor ? y.describe() : typeof y
      }`,
    );
  }
  return Number(y.dataSync()[0]);
}

function withElement(x: Tensor, base: Float64Array, j: number, v: number): Tensor {
  const d = base.slice();
  d[j] = v;
  return tensor(d, { shape: x.shape, dtype: "f64", backend: x.backend });
}

/** ∂f/∂x by central differences (f(x + eps·e_j) − f(x − eps·e_j)) / 2eps, one element at a time. */
export function numericalGrad(f: (x: Tensor) => Tensor, x: Tensor, eps = 1e-6): Tensor {
  if (x.dtype !== "f64") {
    throw new TypeError(
      `numericalGrad: x must be f64 for meaningful differences, got ${x.describe()}`,
    );
  }
  const base = Float64Array.from(x.dataSync());
  const out = new Float64Array(base.length);
  for (let j = 0; j < base.length; j++) {
    const hi = tidy(() => scalarOf("numericalGrad", f(withElement(x, base, j, base[j] + eps))));
    const lo = tidy(() => scalarOf("numericalGrad", f(withElement(x, base, j, base[j] - eps))));
    out[j] = (hi - lo) / (2 * eps);
  }
  return tensor(out, { shape: x.shape, dtype: "f64", backend: x.backend });
}

export interface CheckGradsOptions {
  /** Finite-difference step (default 1e-6). */
  eps?: number;
  /** Relative tolerance against the numeric value (default 1e-5). */
  rtol?: number;
  /** Absolute tolerance (default 1e-6). */
  atol?: number;
  /** Seed of the random output weighting (default 0). */
  seed?: number;
}

/** Deterministic weights in [-1, -0.25] ∪ [0.25, 1], away from 0 so no output is ignored. */
function weights(seed: number, n: number): Float64Array {
  let s = (seed * 0x9e3779b1 + 0x6d2b79f5) >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    const u = ((z ^ (z >>> 14)) >>> 0) / 4294967296;
    out[i] = (u < 0.5 ? -1 : 1) * (0.25 + 1.5 * Math.abs(u - 0.5));
  }
  return out;
}

/**
 * Check `grad` of f with respect to every float input against central differences. Non-scalar
 * outputs are projected onto a fixed random cotangent w (the checked function is sum(f(xs)·w)),
 * so every output element takes part. Float inputs are cast to f64; other inputs (indices) are
 * passed through unchecked. Throws naming the input, element, and both values on mismatch.
 */
export function checkGrads(
  f: (...xs: Tensor[]) => Tensor,
  xs: Tensor[],
  opts: CheckGradsOptions = {},
): void {
  const eps = opts.eps ?? 1e-6, rtol = opts.rtol ?? 1e-5, atol = opts.atol ?? 1e-6;
  const args = xs.map((x) => (isFloat(x.dtype) ? cast(x, "f64") : x));
  const y0 = f(...args);
  if (!(y0 instanceof Tensor)) {
    throw new TypeError(`checkGrads: the function must return a Tensor, got ${typeof y0}`);
  }
  if (!isFloat(y0.dtype)) {
    throw new TypeError(
      `checkGrads: the function must return a float tensor, got ${y0.describe()}`,
    );
  }
  const w = tensor(weights(opts.seed ?? 0, y0.size), {
    shape: y0.shape,
    dtype: "f64",
    backend: y0.backend,
  });
  const projected = (...a: Tensor[]) => sum(mul(cast(f(...a), "f64"), w));
  const analytic = grad(projected, { argnums: args.map((_, i) => i) })(
    ...args,
  ) as (Tensor | null)[];

  args.forEach((x, i) => {
    if (!isFloat(x.dtype)) return;
    const g = analytic[i];
    if (!(g instanceof Tensor)) {
      throw new Error(`checkGrads: no gradient for input ${i} ${x.describe()}`);
    }
    if (g.shape.join() !== x.shape.join()) {
      throw new Error(
        `checkGrads: input ${i}: gradient shape ${fmt(g.shape)} vs input shape ${fmt(x.shape)}`,
      );
    }
    const a = g.dataSync();
    const n = numericalGrad((xi) => projected(...args.map((o, k) => (k === i ? xi : o))), x, eps)
      .dataSync();
    for (let j = 0; j < n.length; j++) {
      if (!(Math.abs(a[j] - n[j]) <= atol + rtol * Math.abs(n[j]))) {
        throw new Error(
          `checkGrads: input ${i} (shape ${fmt(x.shape)}), element ${j}: analytic ${
            a[j]
          } vs numeric ${n[j]} ` +
            `(|diff| ${Math.abs(a[j] - n[j]).toExponential(3)}, rtol ${rtol}, atol ${atol})`,
        );
      }
    }
  });
}
