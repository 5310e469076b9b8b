/**
 * The CPU backend's training kernels (see Backend.fused: crossEntropy … squaredErrorGrad): native
 * only, so each returns null without the native library (or for 16-bit floats), and the caller
 * composes the op from primitives instead.
 */
import type { Activation, Backend, View } from "../backend.ts";
import { sizeOf } from "../shape.ts";
import { native } from "./native.ts";
import { takeArray } from "./pool.ts";

type F = Float32Array | Float64Array;
type Fused = NonNullable<Backend["fused"]>;

/** What the backend lends: a contiguous view's first n elements, and threads for some work. */
export interface TrainHelpers {
  own(v: View, n: number): ArrayLike<number>;
  nativeThreads(work: number): number;
}

const KIND: Record<Activation, 0 | 1 | 2> = { gelu_tanh: 0, gelu: 1, silu: 2 };

const isFloat = (a: unknown): a is F => a instanceof Float32Array || a instanceof Float64Array;
/** The float width every view shares, or null. */
const width = (...vs: View[]) =>
  vs.every((v) => isFloat(v.buf) && v.dtype === vs[0].dtype) ? vs[0].dtype : null;

export function trainKernels(
  { own, nativeThreads }: TrainHelpers,
): Pick<
  Fused,
  | "crossEntropy"
  | "crossEntropyGrad"
  | "activationGrad"
  | "rowNormGrad"
  | "attnSoftmaxGrad"
  | "squaredErrorGrad"
  | "squaredErrorRows"
> {
  const f = (v: View, n: number) => own(v, n) as F;
  return {
    crossEntropy(x, tgt, ignore) {
      const nat = native(), n = sizeOf(x.shape), V = x.shape[x.shape.length - 1] ?? 0;
      const dt = width(x);
      if (!nat || !dt || V === 0 || tgt.dtype !== "i32") return null;
      const rows = n / V, loss = takeArray(dt, rows) as F, lse = takeArray(dt, rows) as F;
      const ids = own(tgt, rows) as Int32Array;
      const bad = nat.crossEntropy(f(x, n), ids, loss, lse, rows, V, ignore, nativeThreads(n));
      if (bad >= 0) {
        throw new RangeError(
          `crossEntropy: target ${
            ids[bad]
          } at row ${bad} is outside [0, ${V}) and not ignoreIndex ${ignore}`,
        );
      }
      return [loss, lse];
    },
    crossEntropyGrad(x, tgt, lse, g, ignore) {
      const nat = native(), n = sizeOf(x.shape), V = x.shape[x.shape.length - 1] ?? 0;
      if (!nat || !width(x, lse, g) || V === 0 || tgt.dtype !== "i32") return null;
      const rows = n / V, out = takeArray(x.dtype, n) as F;
      nat.crossEntropyGrad(
        f(x, n),
        own(tgt, rows) as Int32Array,
        f(lse, rows),
        f(g, rows),
        out,
        rows,
        V,
        ignore,
        nativeThreads(n),
      );
      return out;
    },
    activationGrad(g, x, kind) {
      const nat = native(), n = sizeOf(x.shape);
      if (!nat || !width(g, x)) return null;
      const out = takeArray(x.dtype, n) as F;
      if (n > 0) nat.activationGrad(f(g, n), f(x, n), out, n, KIND[kind], nativeThreads(n));
      return out;
    },
    rowNormGrad(g, x, w, withBias, o) {
      const nat = native(), n = sizeOf(x.shape), C = x.shape[x.shape.length - 1] ?? 0;
      if (!nat || !width(g, x, w) || C === 0) return null;
      const dx = takeArray(x.dtype, n) as F, dw = takeArray(x.dtype, C) as F;
      const db = withBias ? takeArray(x.dtype, C) as F : null;
      nat.rowNormGrad(
        f(g, n),
        f(x, n),
        f(w, C),
        dx,
        dw,
        db,
        n / C,
        C,
        o.eps,
        o.center,
        o.plusOne,
        nativeThreads(n),
      );
      return [dx, dw, db];
    },
    attnSoftmaxGrad(g, p, mask, scale) {
      const nat = native(), n = sizeOf(p.shape), [B, H, T] = p.shape;
      if (!nat || !width(g, p) || n === 0) return null;
      const out = takeArray(p.dtype, n) as F;
      nat.attnSoftmaxGrad(
        f(g, n),
        f(p, n),
        mask ? own(mask, B * T) as Uint8Array : null,
        out,
        B * H * T,
        T,
        H,
        scale,
        nativeThreads(n),
      );
      return out;
    },
    squaredErrorGrad(r, s, negate) {
      const nat = native(), n = sizeOf(r.shape);
      if (!nat || !width(r, s) || sizeOf(s.shape) !== 1) return null;
      const out = takeArray(r.dtype, n) as F;
      if (n > 0) nat.squaredErrorGrad(f(r, n), f(s, 1), out, n, negate, nativeThreads(n));
      return out;
    },
    squaredErrorRows(x, y) {
      const nat = native(), n = sizeOf(x.shape), C = x.shape[x.shape.length - 1] ?? 0;
      if (!nat || !width(x, y) || C === 0) return null;
      const rows = n / C, r = takeArray(x.dtype, n) as F, s = takeArray(x.dtype, rows) as F;
      nat.squaredErrorRows(f(x, n), f(y, n), r, s, rows, C, nativeThreads(n));
      return [r, s];
    },
  };
}
