/**
 * The native training kernels (csrc/cpu_kernels.c, "Training kernels"): the forward and backward
 * halves of softmax cross-entropy, activations, row norms and the attention pattern, which
 * autodiff/fused_ops.ts gives hand-written VJPs. Kept beside native.ts, which merges them into
 * its Native interface; every call is checked (native_bounds.ts) before it crosses into C.
 */
import type { FfiFn, FfiSig } from "../platform/ffi.ts";
import { checkCount, checkFloats, checkIndices, I64_MAX } from "./native_bounds.ts";

type F = Float32Array | Float64Array;

export interface NativeTrain {
  /**
   * Per row of x [rows, V]: lse = log Σ e^x, loss = lse − x[tgt]; rows with target `ignore` get
   * 0. Returns -1, or the first row whose target is outside [0, V) and not `ignore`.
   */
  crossEntropy(
    x: F,
    tgt: Int32Array,
    loss: F,
    lse: F,
    rows: number,
    V: number,
    ignore: number,
    threads: number,
  ): number;
  /** out = (e^(x − lse) − onehot(tgt))·g per row of x [rows, V]; rows with target `ignore` 0. */
  crossEntropyGrad(
    x: F,
    tgt: Int32Array,
    lse: F,
    g: F,
    out: F,
    rows: number,
    V: number,
    ignore: number,
    threads: number,
  ): void;
  /** out = g·act′(x) over the first n elements: kinds as activation's. */
  activationGrad(g: F, x: F, out: F, n: number, kind: 0 | 1 | 2, threads: number): void;
  /** rowNorm's backward: ∂x [rows, cols], ∂w and (db not null) ∂b [cols]. */
  rowNormGrad(
    g: F,
    x: F,
    w: F,
    dx: F,
    dw: F,
    db: F | null,
    rows: number,
    cols: number,
    eps: number,
    center: boolean,
    plusOne: boolean,
    threads: number,
  ): void;
  /** ∂s = scale·p·(g − Σ g·p) per row of [rows/t, t, t], 0 after the query and where masked. */
  attnSoftmaxGrad(
    g: F,
    p: F,
    mask: Uint8Array | null,
    out: F,
    rows: number,
    t: number,
    heads: number,
    scale: number,
    threads: number,
  ): void;
  /** out = ±(q + q), q = s[0]·r, over the first n elements (−, the default sign, with `negate`). */
  squaredErrorGrad(r: F, s: F, out: F, n: number, negate: boolean, threads: number): void;
  /** r = x − y over [rows, cols] and s[row] = Σ r² (squares rounded, summed in double). */
  squaredErrorRows(x: F, y: F, r: F, s: F, rows: number, cols: number, threads: number): void;
}

/** Signatures by kernel name (each compiled as sc_<name>_f32 and sc_<name>_f64). */
export const TRAIN_SIGS: Record<string, FfiSig> = {
  cross_entropy: { args: ["buf", "buf", "buf", "buf", "i64", "i64", "i32", "i32"], ret: "i64" },
  cross_entropy_grad: {
    args: ["buf", "buf", "buf", "buf", "buf", "i64", "i64", "i32", "i32"],
    ret: "void",
  },
  activation_grad: { args: ["buf", "buf", "buf", "i64", "i32", "i32"], ret: "void" },
  row_norm_grad: {
    args: ["buf", "buf", "buf", "buf", "buf", "buf", "i64", "i64", "f64", "i32", "i32", "i32"],
    ret: "i32",
  },
  attn_softmax_grad: {
    args: ["buf", "buf", "buf", "buf", "i64", "i64", "i64", "f64", "i32"],
    ret: "void",
  },
  squared_error_grad: { args: ["buf", "buf", "buf", "i64", "i32", "i32"], ret: "void" },
  squared_error_rows: { args: ["buf", "buf", "buf", "buf", "i64", "i64", "i32"], ret: "void" },
};

/** The checked kernels over `fn(name, like)`, the raw kernel of `like`'s width. */
export function bindTrain(fn: (name: string, like: F) => FfiFn): NativeTrain {
  const rowsOf = (k: string, rows: number, cols: number, threads: number) => {
    checkCount(k, "rows", rows, I64_MAX), checkCount(k, "cols", cols, I64_MAX);
    checkCount(k, "threads", threads);
  };
  const ignoreOk = (k: string, ignore: number) => {
    if (!Number.isInteger(ignore) || ignore < -(2 ** 31) || ignore >= 2 ** 31) {
      throw new RangeError(`native ${k}: ignoreIndex ${ignore} is not an i32`);
    }
  };
  return {
    crossEntropy(x, tgt, loss, lse, rows, V, ignore, threads) {
      const k = "crossEntropy";
      rowsOf(k, rows, V, threads), ignoreOk(k, ignore);
      checkFloats(k, "x", x, rows * V, x), checkIndices(k, "tgt", tgt, rows);
      checkFloats(k, "loss", loss, rows, x), checkFloats(k, "lse", lse, rows, x);
      return Number(fn("cross_entropy", x)(x, tgt, loss, lse, rows, V, ignore, threads));
    },
    crossEntropyGrad(x, tgt, lse, g, out, rows, V, ignore, threads) {
      const k = "crossEntropyGrad";
      rowsOf(k, rows, V, threads), ignoreOk(k, ignore);
      checkFloats(k, "x", x, rows * V, x), checkIndices(k, "tgt", tgt, rows);
      checkFloats(k, "lse", lse, rows, x), checkFloats(k, "g", g, rows, x);
      checkFloats(k, "out", out, rows * V, x);
      fn("cross_entropy_grad", x)(x, tgt, lse, g, out, rows, V, ignore, threads);
    },
    activationGrad(g, x, out, n, kind, threads) {
      const k = "activationGrad";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "g", g, n, x), checkFloats(k, "x", x, n, x), checkFloats(k, "out", out, n, x);
      if (kind !== 0 && kind !== 1 && kind !== 2) {
        throw new RangeError(`native ${k}: kind ${kind} is not 0, 1 or 2`);
      }
      fn("activation_grad", x)(g, x, out, n, kind, threads);
    },
    rowNormGrad(g, x, w, dx, dw, db, rows, cols, eps, center, plusOne, threads) {
      const k = "rowNormGrad";
      rowsOf(k, rows, cols, threads);
      const n = rows * cols;
      checkFloats(k, "g", g, n, x), checkFloats(k, "x", x, n, x), checkFloats(k, "dx", dx, n, x);
      checkFloats(k, "w", w, cols, x), checkFloats(k, "dw", dw, cols, x);
      if (db !== null) checkFloats(k, "db", db, cols, x);
      const r = fn("row_norm_grad", x)(
        g,
        x,
        w,
        dx,
        dw,
        db,
        rows,
        cols,
        eps,
        +center,
        +plusOne,
        threads,
      );
      if (r !== -1) throw new Error(`native ${k}: out of memory for ${threads} rows of ${cols}`);
    },
    attnSoftmaxGrad(g, p, mask, out, rows, t, heads, scale, threads) {
      const k = "attnSoftmaxGrad";
      checkCount(k, "rows", rows, I64_MAX), checkCount(k, "t", t, I64_MAX);
      checkCount(k, "heads", heads, I64_MAX), checkCount(k, "threads", threads);
      if (heads < 1 || t < 1 || rows % (t * heads) !== 0) {
        throw new RangeError(`native ${k}: ${rows} rows are not [B, ${heads}, ${t}] rows`);
      }
      checkFloats(k, "g", g, rows * t, p), checkFloats(k, "p", p, rows * t, p);
      checkFloats(k, "out", out, rows * t, p);
      if (mask !== null && !(mask instanceof Uint8Array && mask.length >= rows / heads)) {
        throw new RangeError(`native ${k}: mask must be a Uint8Array of ${rows / heads} bytes`);
      }
      fn("attn_softmax_grad", p)(g, p, mask, out, rows, t, heads, scale, threads);
    },
    squaredErrorGrad(r, s, out, n, negate, threads) {
      const k = "squaredErrorGrad";
      checkCount(k, "n", n, I64_MAX), checkCount(k, "threads", threads);
      checkFloats(k, "r", r, n, r), checkFloats(k, "s", s, 1, r), checkFloats(k, "out", out, n, r);
      fn("squared_error_grad", r)(r, s, out, n, +negate, threads);
    },
    squaredErrorRows(x, y, r, s, rows, cols, threads) {
      const k = "squaredErrorRows";
      rowsOf(k, rows, cols, threads);
      checkFloats(k, "x", x, rows * cols, x), checkFloats(k, "y", y, rows * cols, x);
      checkFloats(k, "r", r, rows * cols, x), checkFloats(k, "s", s, rows, x);
      fn("squared_error_rows", x)(x, y, r, s, rows, cols, threads);
    },
  };
}
