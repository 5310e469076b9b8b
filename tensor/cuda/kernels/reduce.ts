/**
 * Reductions over any set of axes of a strided view (no copy, no transpose): the kept axes index
 * the output, the reduced axes are walked by each output's reducer. A warp per output when the
 * reduced axes include the unit-stride one (lanes read neighbours); a thread per output otherwise
 * (neighbouring threads then read neighbours); few outputs over many elements are split in chunks
 * whose partials a second kernel combines. Sums accumulate in f64, like the CPU backend.
 * Also argmax/argmin along one axis and cumsum (a block-wide scan per line).
 */
import type { DType } from "../../dtype.ts";
import { instantiateAll } from "./prelude.ts";

export const REDUCE_DTYPES: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32", "bool"];

const BODY = String.raw`
// op: 0 sum, 1 max, 2 min. NaN propagates through max and min.
__device__ __forceinline__ double rcombine(int op, double acc, double v) {
  if (op == 0) return acc + v;
  if (op == 1) return (v > acc || v != v) ? v : acc;
  return (v < acc || v != v) ? v : acc;
}
__device__ __forceinline__ double rinit(int op) { return op == 0 ? 0.0 : (op == 1 ? -__longlong_as_double(0x7ff0000000000000LL) : __longlong_as_double(0x7ff0000000000000LL)); }

// Offset of element j of the reduced sub-array, and of output o over the kept axes.
__device__ __forceinline__ ll sub_offset(ll j, int nd, const Dims& shape, const Dims& str) {
  if (nd == 1) return j * str.d[0];  // j < shape.d[0]: no 64-bit division per element
  ll off = 0;
  for (int d = nd - 1; d >= 0; d--) { ll e = shape.d[d], q = j / e; off += (j - q * e) * str.d[d]; j = q; }
  return off;
}

template <class T>
__device__ void reduce_warp(int op, ll nOut, int nk, Dims kshape, Dims kstr, int nr, Dims rshape, Dims rstr, ll rn, ll off, const T* x, T* out) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5;
  for (ll o = warp; o < nOut; o += warps) {
    ll base = off + sub_offset(o, nk, kshape, kstr);
    double acc = rinit(op);
    for (ll j = lane; j < rn; j += 32) acc = rcombine(op, acc, (double)ld(x, base + sub_offset(j, nr, rshape, rstr)));
    for (int s = 16; s > 0; s >>= 1) acc = rcombine(op, acc, __shfl_xor_sync(0xffffffffu, acc, s));
    if (lane == 0) st(out, o, acc);
  }
}

// Few outputs over many elements: each output's elements in \`parts\` contiguous chunks, a warp
// each, partials kept in double (part[o·parts + s]); reduce_parts then combines each output's
// partials. One warp walking millions of elements alone (a full sum) waits a memory round trip
// per 32 of them.
template <class T>
__device__ void reduce_split(int op, ll nOut, int nk, Dims kshape, Dims kstr, int nr, Dims rshape, Dims rstr, ll rn, ll off, const T* x, ll parts, double* part) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5, chunk = (rn + parts - 1) / parts;
  for (ll v = warp; v < nOut * parts; v += warps) {
    ll o = v / parts, j0 = (v - o * parts) * chunk, j1 = j0 + chunk < rn ? j0 + chunk : rn;
    ll base = off + sub_offset(o, nk, kshape, kstr);
    double acc = rinit(op);
    for (ll j = j0 + lane; j < j1; j += 32) acc = rcombine(op, acc, (double)ld(x, base + sub_offset(j, nr, rshape, rstr)));
    for (int s = 16; s > 0; s >>= 1) acc = rcombine(op, acc, __shfl_xor_sync(0xffffffffu, acc, s));
    if (lane == 0) part[v] = acc;
  }
}

template <class T>
__device__ void reduce_parts(int op, ll nOut, ll parts, const double* part, T* out) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5;
  for (ll o = warp; o < nOut; o += warps) {
    double acc = rinit(op);
    for (ll j = lane; j < parts; j += 32) acc = rcombine(op, acc, part[o * parts + j]);
    for (int s = 16; s > 0; s >>= 1) acc = rcombine(op, acc, __shfl_xor_sync(0xffffffffu, acc, s));
    if (lane == 0) st(out, o, acc);
  }
}

template <class T>
__device__ void reduce_thread(int op, ll nOut, int nk, Dims kshape, Dims kstr, int nr, Dims rshape, Dims rstr, ll rn, ll off, const T* x, T* out) {
  for (ll o = gtid(); o < nOut; o += gstride()) {
    ll base = off + sub_offset(o, nk, kshape, kstr);
    double acc = rinit(op);
    for (ll j = 0; j < rn; j++) acc = rcombine(op, acc, (double)ld(x, base + sub_offset(j, nr, rshape, rstr)));
    st(out, o, acc);
  }
}

// First index of the extreme value; a NaN wins at once (the CPU backend stops at the first NaN).
__device__ __forceinline__ bool arg_better(bool isMax, double v, ll j, double bv, ll bj) {
  bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || j < bj);
  if (v == bv) return j < bj;
  return isMax ? v > bv : v < bv;
}

template <class T>
__device__ void arg_reduce(int isMax, ll nOut, int nk, Dims kshape, Dims kstr, ll n, ll sa, ll off, const T* x, int* out) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5;
  for (ll o = warp; o < nOut; o += warps) {
    ll base = off + sub_offset(o, nk, kshape, kstr);
    double bv = 0; ll bj = -1;
    for (ll j = lane; j < n; j += 32) {
      double v = (double)ld(x, base + j * sa);
      if (bj < 0 || arg_better(isMax, v, j, bv, bj)) { bv = v; bj = j; }
    }
    for (int s = 16; s > 0; s >>= 1) {
      double ov = __shfl_xor_sync(0xffffffffu, bv, s);
      ll oj = __shfl_xor_sync(0xffffffffu, bj, s);
      if (oj >= 0 && (bj < 0 || arg_better(isMax, ov, oj, bv, bj))) { bv = ov; bj = oj; }
    }
    if (lane == 0) out[o] = bj < 0 ? 0 : (int)bj;
  }
}

// One block per line (blockDim.x = 256): chunks of 256 scanned in shared memory, carried along.
template <class T>
__device__ void cumsum_lines(ll lines, int nk, Dims kshape, Dims kstr, Dims ostr, ll n, ll sa, ll so, int reverse, ll off, const T* x, T* out) {
  __shared__ double buf[256];
  for (ll l = blockIdx.x; l < lines; l += gridDim.x) {
    ll base = off + sub_offset(l, nk, kshape, kstr), obase = sub_offset(l, nk, kshape, ostr);
    double carry = 0;
    for (ll c0 = 0; c0 < n; c0 += 256) {
      ll t = c0 + threadIdx.x, j = reverse ? n - 1 - t : t;
      buf[threadIdx.x] = t < n ? (double)ld(x, base + j * sa) : 0.0;
      __syncthreads();
      for (int s = 1; s < 256; s <<= 1) {
        double add = threadIdx.x >= s ? buf[threadIdx.x - s] : 0.0;
        __syncthreads();
        buf[threadIdx.x] += add;
        __syncthreads();
      }
      if (t < n) st(out, obase + j * so, carry + buf[threadIdx.x]);
      carry += buf[255];
      __syncthreads();
    }
  }
}
`;

const RP =
  "int op, ll nOut, int nk, Dims kshape, Dims kstr, int nr, Dims rshape, Dims rstr, ll rn, ll off, const T* x, T* out";
const RA = "op, nOut, nk, kshape, kstr, nr, rshape, rstr, rn, off, x, out";

export function reduceSource(): string {
  return BODY + instantiateAll(REDUCE_DTYPES, [
    ["reduce_warp", RP, `reduce_warp<T>(${RA})`],
    ["reduce_thread", RP, `reduce_thread<T>(${RA})`],
    [
      "reduce_split",
      RP.replace("T* out", "ll parts, double* part"),
      `reduce_split<T>(${RA.replace("out", "parts, part")})`,
    ],
    [
      "reduce_parts",
      "int op, ll nOut, ll parts, const double* part, T* out",
      "reduce_parts<T>(op, nOut, parts, part, out)",
    ],
    [
      "arg_reduce",
      "int isMax, ll nOut, int nk, Dims kshape, Dims kstr, ll n, ll sa, ll off, const T* x, int* out",
      "arg_reduce<T>(isMax, nOut, nk, kshape, kstr, n, sa, off, x, out)",
    ],
    [
      "cumsum",
      "ll lines, int nk, Dims kshape, Dims kstr, Dims ostr, ll n, ll sa, ll so, int reverse, ll off, const T* x, T* out",
      "cumsum_lines<T>(lines, nk, kshape, kstr, ostr, n, sa, so, reverse, off, x, out)",
    ],
  ]);
}
