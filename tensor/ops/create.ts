/** Making tensors: from JS data, constants, ranges. */
import type { Backend } from "../backend.ts";
import { allocStorage, assertDType, type DType, encode16, type StorageArray } from "../dtype.ts";
import { checkShape, fmt, type Shape, ShapeError, sizeOf } from "../shape.ts";
import { getBackend } from "../registry.ts";
import { wrap } from "../prims.ts";
import { Tensor } from "../tensor.ts";

export type TensorLike = Tensor | number;
export type NestedNumbers = number | boolean | readonly NestedNumbers[];
type Typed = Float32Array | Float64Array | Int32Array | Uint8Array | Uint16Array;

export interface CreateOptions {
  dtype?: DType;
  backend?: Backend;
}

function inferShape(data: NestedNumbers): number[] {
  const shape: number[] = [];
  let cur: NestedNumbers = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0] as NestedNumbers;
  }
  return shape;
}

function flatten(data: NestedNumbers, shape: Shape, out: number[], depth = 0): void {
  if (depth === shape.length) {
    if (Array.isArray(data)) {
      throw new ShapeError(
        `tensor: ragged nested array: expected a number at depth ${depth} of shape ${fmt(shape)}`,
      );
    }
    if (typeof data !== "number" && typeof data !== "boolean") {
      throw new TypeError(`tensor: expected numbers, got ${typeof data}`);
    }
    out.push(Number(data));
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) {
    throw new ShapeError(
      `tensor: ragged nested array: expected length ${shape[depth]} at depth ${depth} of shape ${
        fmt(shape)
      }`,
    );
  }
  for (const x of data) flatten(x, shape, out, depth + 1);
}

/** Store `values` (plain numbers) as `dtype`. */
export function storageFrom(dtype: DType, values: ArrayLike<number>): StorageArray {
  if (dtype === "f16" || dtype === "bf16") return encode16(dtype, values);
  const out = allocStorage(dtype, values.length);
  if (dtype === "bool") { for (let i = 0; i < values.length; i++) out[i] = values[i] ? 1 : 0; }
  else out.set(values as ArrayLike<number>);
  return out;
}

function typedDType(a: Typed): DType | undefined {
  if (a instanceof Float32Array) return "f32";
  if (a instanceof Float64Array) return "f64";
  if (a instanceof Int32Array) return "i32";
  return undefined;
}

/**
 * A tensor from nested arrays, a typed array (with `shape`), or a number. Numbers default to
 * f32 and booleans to bool; typed arrays keep their type. A Uint16Array is taken as raw f16/bf16
 * words and needs `dtype`.
 */
export function tensor(
  data: NestedNumbers | Typed,
  opts: CreateOptions & { shape?: readonly number[] } = {},
): Tensor {
  const backend = opts.backend ?? getBackend();
  if (ArrayBuffer.isView(data)) {
    const shape = checkShape("tensor", opts.shape ?? [data.length]);
    if (sizeOf(shape) !== data.length) {
      throw new ShapeError(
        `tensor: shape ${fmt(shape)} needs ${sizeOf(shape)} elements, got ${data.length}`,
      );
    }
    const natural = typedDType(data);
    const dtype = opts.dtype ?? natural;
    if (!dtype) throw new TypeError(`tensor: a ${data.constructor.name} needs an explicit dtype`);
    assertDType(dtype, "tensor");
    const raw = data instanceof Uint16Array && (dtype === "f16" || dtype === "bf16")
      ? data.slice()
      : data instanceof Uint8Array && dtype === "bool"
      ? data.slice()
      : storageFrom(dtype, data);
    return wrap(backend, backend.fromHost(dtype, raw), shape, dtype);
  }
  const shape = inferShape(data);
  const flat: number[] = [];
  flatten(data, shape, flat);
  let probe: NestedNumbers = data;
  while (Array.isArray(probe)) probe = probe[0];
  const dtype = opts.dtype ?? (typeof probe === "boolean" ? "bool" : "f32");
  assertDType(dtype, "tensor");
  const reshaped = opts.shape ? checkShape("tensor", opts.shape) : shape;
  if (sizeOf(reshaped) !== flat.length) {
    throw new ShapeError(
      `tensor: shape ${fmt(reshaped)} needs ${sizeOf(reshaped)} elements, got ${flat.length}`,
    );
  }
  return wrap(backend, backend.fromHost(dtype, storageFrom(dtype, flat)), reshaped, dtype);
}

/**
 * A tensor that takes ownership of a fresh host array in `dtype`'s storage form (raw 16-bit words
 * for f16/bf16), without the copy tensor() makes: that copy matters for multi-gigabyte weight
 * files. The caller must not touch the array afterwards.
 */
export function fromStorage(
  data: StorageArray,
  dtype: DType,
  shape: readonly number[],
  backend: Backend = getBackend(),
): Tensor {
  return wrap(backend, backend.fromHost(dtype, data), shape, dtype);
}

export function scalar(value: number, dtype: DType = "f32", backend?: Backend): Tensor {
  return tensor(value, { dtype, backend });
}

export function full(
  shape: readonly number[],
  value: number,
  dtype: DType = "f32",
  backend?: Backend,
): Tensor {
  checkShape("full", shape);
  assertDType(dtype, "full");
  const b = backend ?? getBackend();
  const raw = storageFrom(dtype, [value]);
  const data = allocStorage(dtype, sizeOf(shape));
  (data as Uint8Array).fill(raw[0]);
  return wrap(b, b.fromHost(dtype, data), shape, dtype);
}

export const zeros = (shape: readonly number[], dtype: DType = "f32", backend?: Backend): Tensor =>
  full(shape, 0, dtype, backend);
export const ones = (shape: readonly number[], dtype: DType = "f32", backend?: Backend): Tensor =>
  full(shape, 1, dtype, backend);
export const zerosLike = (x: Tensor, dtype: DType = x.dtype): Tensor =>
  full(x.shape, 0, dtype, x.backend);
export const onesLike = (x: Tensor, dtype: DType = x.dtype): Tensor =>
  full(x.shape, 1, dtype, x.backend);
export const fullLike = (x: Tensor, value: number, dtype: DType = x.dtype): Tensor =>
  full(x.shape, value, dtype, x.backend);

/** start, start+step, … below stop (NumPy's arange). One argument means [0, n). */
export function arange(
  start: number,
  stop?: number,
  step = 1,
  dtype: DType = "i32",
  backend?: Backend,
): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0 || !Number.isFinite(step)) {
    throw new RangeError(`arange: step must be finite and non-zero, got ${step}`);
  }
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const vals = Array.from({ length: n }, (_, i) => start + i * step);
  return tensor(new Float64Array(vals), { dtype, backend, shape: [n] });
}

/** Identity-like matrix with ones on diagonal `k`. */
export function eye(n: number, m = n, k = 0, dtype: DType = "f32", backend?: Backend): Tensor {
  checkShape("eye", [n, m]);
  const vals = new Float64Array(n * m);
  for (let i = 0; i < n; i++) if (i + k >= 0 && i + k < m) vals[i * m + i + k] = 1;
  return tensor(vals, { dtype, backend, shape: [n, m] });
}

/** Numbers become tensors next to `like` (on its backend, with a weakly typed dtype). */
export function asTensor(x: TensorLike, dtype: DType, backend: Backend): Tensor {
  return x instanceof Tensor ? x : scalar(x, dtype, backend);
}
