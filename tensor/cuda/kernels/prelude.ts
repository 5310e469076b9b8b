/**
 * CUDA C++ shared by every kernel module: storage types, loads and stores per dtype, 16-bit float
 * conversions and the Dims struct. No #include: the same text compiles under nvcc and NVRTC
 * (whose built-in headers differ between versions). f16 and bf16 are wrapper structs so loads and
 * stores overload on the pointer type; they compute in f32 as on the CPU backend, i32 and bool in
 * f64 (the CPU backend computes every number as a JS double).
 */
import type { DType } from "../../dtype.ts";

/** The storage type of each dtype in the kernels. */
export const CTYPE: Record<DType, string> = {
  f32: "float",
  f64: "double",
  f16: "f16_t",
  bf16: "bf16_t",
  i32: "int",
  bool: "unsigned char",
};
/** The type arithmetic happens in. */
export const COMPUTE: Record<DType, string> = {
  f32: "float",
  f64: "double",
  f16: "float",
  bf16: "float",
  i32: "double",
  bool: "double",
};
/** Suffix of per-dtype kernel names (ctype names have spaces). */
export const SUFFIX: Record<DType, string> = {
  f32: "f32",
  f64: "f64",
  f16: "f16",
  bf16: "bf16",
  i32: "i32",
  bool: "bool",
};

export const PRELUDE = String.raw`
typedef long long ll;
typedef unsigned long long ull;
#define MAX_DIMS 8
struct Dims { ll d[MAX_DIMS]; };
struct f16_t { unsigned short x; };
struct bf16_t { unsigned short x; };

#ifndef SC_HOST_EMULATION  // the tests' CPU emulation of these kernels brings its own conversions
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#endif
__device__ __forceinline__ float b2f(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
// Round to nearest even; NaN stays a quiet NaN (as tensor/dtype.ts does on the host).
__device__ __forceinline__ unsigned short f2b(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (unsigned short)(((u >> 16) | 0x40u) & 0xffffu);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float ld(const float* p, ll i) { return p[i]; }
__device__ __forceinline__ double ld(const double* p, ll i) { return p[i]; }
__device__ __forceinline__ float ld(const f16_t* p, ll i) { return h2f(p[i].x); }
__device__ __forceinline__ float ld(const bf16_t* p, ll i) { return b2f(p[i].x); }
__device__ __forceinline__ double ld(const int* p, ll i) { return (double)p[i]; }
__device__ __forceinline__ double ld(const unsigned char* p, ll i) { return (double)p[i]; }

__device__ __forceinline__ void st(float* p, ll i, double v) { p[i] = (float)v; }
__device__ __forceinline__ void st(double* p, ll i, double v) { p[i] = v; }
__device__ __forceinline__ void st(f16_t* p, ll i, double v) { p[i].x = f2h((float)v); }
__device__ __forceinline__ void st(bf16_t* p, ll i, double v) { p[i].x = f2b((float)v); }
// JS ToInt32 semantics for the values that occur: NaN and infinities give 0, others wrap mod 2^32.
__device__ __forceinline__ void st(int* p, ll i, double v) { p[i] = (v != v || fabs(v) > 9.2e18) ? 0 : (int)(unsigned)(ull)(ll)v; }
__device__ __forceinline__ void st(unsigned char* p, ll i, double v) { p[i] = v != 0; }

__device__ __forceinline__ ll gtid() { return (ll)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ ll gstride() { return (ll)gridDim.x * blockDim.x; }

// Index errors found on the device: the first one wins and is reported at the next readback.
__device__ __forceinline__ void report(int* err, int code, ll index, ll size) {
  if (atomicCAS(err, 0, code) == 0) { err[1] = (int)index; err[2] = (int)size; }
}
`;

/** The explicit extern "C" instantiation of a kernel template for one dtype. */
export function instantiate(name: string, params: string, call: string, dt: DType): string {
  const T = CTYPE[dt];
  return `extern "C" __global__ void ${name}_${SUFFIX[dt]}(${params.replaceAll("T*", `${T}*`)}) { ${
    call.replaceAll("<T>", `<${T}>`)
  }; }\n`;
}

/** [kernel name, parameter list with T, call with <T>] for a family of templated kernels. */
export type KernelTemplate = readonly [name: string, params: string, call: string];

/** Every template instantiated for every dtype of the family. */
export function instantiateAll(
  dtypes: readonly DType[],
  templates: readonly KernelTemplate[],
): string {
  return dtypes.map((dt) => templates.map(([n, p, c]) => instantiate(n, p, c, dt)).join("")).join(
    "",
  );
}
