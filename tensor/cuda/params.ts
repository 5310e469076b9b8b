/**
 * Kernel parameters for cuLaunchKernel: `void** kernelParams` is an array holding, for each
 * parameter, the host address of its value. We lay every value out in one off-heap buffer at its
 * natural alignment and point into it; the driver copies the values during the launch call, so
 * the buffer only has to outlive that call.
 */
import type { Ffi } from "../platform/ffi.ts";

/** Kernel argument kinds: device pointers are u64; `dims` is our Dims struct (MAX_DIMS i64s). */
export type KernelArg =
  | { t: "ptr"; v: bigint }
  | { t: "i32"; v: number }
  | { t: "u32"; v: number }
  | { t: "i64"; v: number }
  | { t: "f32"; v: number }
  | { t: "f64"; v: number }
  | { t: "dims"; v: readonly number[] };

/** The rank limit of strided kernels: `struct Dims { long long d[MAX_DIMS]; }` in the sources. */
export const MAX_DIMS = 8;

export interface PackedParams {
  /** What cuLaunchKernel reads as void**. */
  pointers: BigUint64Array;
  /** The values (kept alive with the pointers). */
  storage: ArrayBuffer;
  /** Byte offset of each argument inside `storage`. */
  offsets: number[];
}

const SIZE: Record<KernelArg["t"], number> = {
  ptr: 8,
  i32: 4,
  u32: 4,
  i64: 8,
  f32: 4,
  f64: 8,
  dims: 8 * MAX_DIMS,
};
const ALIGN: Record<KernelArg["t"], number> = {
  ptr: 8,
  i32: 4,
  u32: 4,
  i64: 8,
  f32: 4,
  f64: 8,
  dims: 8,
};

/** Byte offsets of each argument in the packed buffer, and its total size. */
export function layout(args: readonly KernelArg[]): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const a of args) {
    const al = ALIGN[a.t];
    at = Math.ceil(at / al) * al;
    offsets.push(at);
    at += SIZE[a.t];
  }
  return { offsets, bytes: Math.max(8, Math.ceil(at / 8) * 8) };
}

/** Write the values and the pointer array. */
export function packParams(ffi: Pick<Ffi, "addressOf">, args: readonly KernelArg[]): PackedParams {
  const { offsets, bytes } = layout(args);
  const storage = new ArrayBuffer(bytes);
  const dv = new DataView(storage);
  args.forEach((a, i) => {
    const o = offsets[i];
    switch (a.t) {
      case "ptr":
        dv.setBigUint64(o, a.v, true);
        break;
      case "i32":
        dv.setInt32(o, a.v, true);
        break;
      case "u32":
        dv.setUint32(o, a.v, true);
        break;
      case "i64":
        dv.setBigInt64(o, BigInt(a.v), true);
        break;
      case "f32":
        dv.setFloat32(o, a.v, true);
        break;
      case "f64":
        dv.setFloat64(o, a.v, true);
        break;
      case "dims":
        if (a.v.length > MAX_DIMS) {
          throw new RangeError(
            `cuda: ${a.v.length} dimensions exceed the kernels' limit of ${MAX_DIMS}`,
          );
        }
        a.v.forEach((d, j) => dv.setBigInt64(o + 8 * j, BigInt(d), true));
        break;
    }
  });
  const base = ffi.addressOf(new Uint8Array(storage));
  const pointers = new BigUint64Array(new ArrayBuffer(8 * Math.max(1, args.length)));
  offsets.forEach((o, i) => (pointers[i] = base + BigInt(o)));
  return { pointers, storage, offsets };
}

/** Argument helpers, so call sites read like the kernel signatures. */
export const arg = {
  ptr: (v: bigint): KernelArg => ({ t: "ptr", v }),
  i32: (v: number): KernelArg => ({ t: "i32", v }),
  i64: (v: number): KernelArg => ({ t: "i64", v }),
  f32: (v: number): KernelArg => ({ t: "f32", v }),
  f64: (v: number): KernelArg => ({ t: "f64", v }),
  dims: (v: readonly number[]): KernelArg => ({ t: "dims", v }),
};
