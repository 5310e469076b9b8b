/**
 * The contract every call into the native kernels is checked against before it crosses into C.
 * C has no bounds checks: a count larger than an array, or an array of the wrong element width
 * (a Uint16Array of f16 storage where a Float32Array is expected writes twice its byte length),
 * makes the kernel write past the array's end into whatever the allocator placed next — the
 * process's heap — and the damage surfaces later, far from its cause (glibc aborting with
 * "corrupted size vs. prev_size" at exit). These checks turn such a call into an error at once.
 */

type F = Float32Array | Float64Array;

/** The largest count an i32 parameter carries, and the largest an i64 one does exactly. */
export const I32_MAX = 2 ** 31 - 1;
export const I64_MAX = Number.MAX_SAFE_INTEGER;

/** A count passed to C: a non-negative integer within the parameter's range. */
export function checkCount(kernel: string, name: string, v: number, max = I32_MAX): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`native ${kernel}: ${name} = ${v} is not a count in [0, ${max}]`);
  }
}

/** A float array of the kernel's width (that of `like`) with at least `need` elements. */
export function checkFloats(
  kernel: string,
  name: string,
  a: F,
  need: number,
  like: F,
): void {
  if (a?.constructor !== like.constructor) {
    throw new TypeError(
      `native ${kernel}: ${name} is a ${a?.constructor?.name}, expected a ${like.constructor.name}`,
    );
  }
  checkLength(kernel, name, a, need);
}

/** An index array (Int32Array) with at least `need` elements. */
export function checkIndices(kernel: string, name: string, a: Int32Array, need: number): void {
  if (!(a instanceof Int32Array)) {
    throw new TypeError(
      `native ${kernel}: ${name} is a ${(a as object)?.constructor?.name}, expected an Int32Array`,
    );
  }
  checkLength(kernel, name, a, need);
}

function checkLength(kernel: string, name: string, a: ArrayLike<unknown>, need: number): void {
  if (a.length < need) {
    throw new RangeError(
      `native ${kernel}: ${name} holds ${a.length} elements but the kernel reaches ${need}`,
    );
  }
}
