/**
 * Explicit, splittable random keys (JAX-style). Numbers are drawn on the host with
 * engine-independent arithmetic (random_bits.ts) and then uploaded, so one seed gives the same
 * values under Deno and Bun and on every backend.
 */
import type { Backend } from "./backend.ts";
import { assertDType, type DType, isFloat } from "./dtype.ts";
import { checkShape, fmt, normAxis, ShapeError, sizeOf } from "./shape.ts";
import * as bits from "./random_bits.ts";
import { tensor, type TensorLike } from "./ops/create.ts";
import { add, cast, lt } from "./ops/elementwise.ts";
import { argmax } from "./ops/reduce.ts";
import { take } from "./ops/shape.ts";
import { Tensor } from "./tensor.ts";

/** A random key. Immutable: derive new keys with split/foldIn, never reuse one for two draws. */
export class PRNGKey {
  constructor(readonly words: bits.KeyData) {}
  toString(): string {
    return `PRNGKey(${this.words[0]}, ${this.words[1]})`;
  }
}

export const key = (seed: number): PRNGKey => new PRNGKey(bits.keyFromSeed(seed));
export const split = (k: PRNGKey, n = 2): PRNGKey[] =>
  bits.splitKey(k.words, n).map((w) => new PRNGKey(w));
export const foldIn = (k: PRNGKey, data: number): PRNGKey =>
  new PRNGKey(bits.foldIn(k.words, data));

export interface RandomOptions {
  dtype?: DType;
  backend?: Backend;
}

function floatDType(op: string, dtype: DType): DType {
  assertDType(dtype, op);
  if (!isFloat(dtype)) throw new TypeError(`${op}: dtype must be a float type, got ${dtype}`);
  return dtype;
}

/** Uniform in [min, max). */
export function uniform(
  k: PRNGKey,
  shape: readonly number[],
  o: RandomOptions & { min?: number; max?: number } = {},
): Tensor {
  const dtype = floatDType("uniform", o.dtype ?? "f32");
  const n = sizeOf(checkShape("uniform", shape));
  const vals = bits.uniformFloats(
    k.words,
    n,
    dtype === "f64" ? "f64" : "f32",
    o.min ?? 0,
    o.max ?? 1,
  );
  return tensor(vals, { dtype, shape, backend: o.backend });
}

/** Normal with the given mean and standard deviation (default standard normal). */
export function normal(
  k: PRNGKey,
  shape: readonly number[],
  o: RandomOptions & { mean?: number; std?: number } = {},
): Tensor {
  const dtype = floatDType("normal", o.dtype ?? "f32");
  const n = sizeOf(checkShape("normal", shape));
  const vals = bits.normalFloats(k.words, n, dtype === "f64" ? "f64" : "f32");
  const mean = o.mean ?? 0, std = o.std ?? 1;
  if (mean !== 0 || std !== 1) { for (let i = 0; i < n; i++) vals[i] = mean + std * vals[i]; }
  return tensor(vals, { dtype, shape, backend: o.backend });
}

/** Integers uniform in [lo, hi). */
export function randint(
  k: PRNGKey,
  shape: readonly number[],
  lo: number,
  hi: number,
  o: { backend?: Backend } = {},
): Tensor {
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi <= lo) {
    throw new RangeError(`randint: need integers lo < hi, got ${lo}, ${hi}`);
  }
  const n = sizeOf(checkShape("randint", shape));
  const u = bits.uniformFloats(k.words, n, "f64");
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.floor(u[i] * (hi - lo));
  return tensor(out, { shape, backend: o.backend });
}

/** Booleans that are true with probability p (a number or a tensor broadcast to `shape`). */
export function bernoulli(k: PRNGKey, p: TensorLike, shape?: readonly number[]): Tensor {
  const s = shape ?? (p instanceof Tensor ? p.shape : []);
  const backend = p instanceof Tensor ? p.backend : undefined;
  return lt(uniform(k, s, { dtype: "f32", backend }), p instanceof Tensor ? cast(p, "f32") : p);
}

/** Gumbel(0, 1) noise, -log(-log u), computed on the host so every backend sees the same values. */
export function gumbel(k: PRNGKey, shape: readonly number[], o: RandomOptions = {}): Tensor {
  const dtype = floatDType("gumbel", o.dtype ?? "f32");
  const n = sizeOf(checkShape("gumbel", shape));
  const u = bits.uniformFloats(k.words, n, "f64", Number.MIN_VALUE, 1);
  const g = new Float64Array(n);
  for (let i = 0; i < n; i++) g[i] = -bits.detLog(-bits.detLog(u[i]));
  return tensor(g, { dtype, shape, backend: o.backend });
}

/** Samples of the categories along `axis` of unnormalised log-probabilities (Gumbel-max). */
export function categorical(k: PRNGKey, logits: Tensor, axis = -1): Tensor {
  normAxis("categorical", axis, logits.ndim, logits.shape);
  const dt = isFloat(logits.dtype) ? logits.dtype : "f32";
  return argmax(
    add(cast(logits, dt), gumbel(k, logits.shape, { dtype: dt, backend: logits.backend })),
    axis,
  );
}

/** A random permutation of [0, n) (i32), or of a tensor's rows along axis 0. */
export function permutation(k: PRNGKey, x: number | Tensor): Tensor {
  const n = typeof x === "number" ? x : x.shape[0];
  if (typeof x !== "number" && x.ndim === 0) {
    throw new ShapeError(`permutation: needs at least one axis, got ${fmt(x.shape)}`);
  }
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`permutation: n must be a non-negative integer, got ${n}`);
  }
  const u = bits.uniformFloats(k.words, n, "f64");
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u[i] * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  if (typeof x === "number") return tensor(p);
  return take(x, tensor(p, { backend: x.backend }), 0);
}
