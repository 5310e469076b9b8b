/**
 * The SAE's sparse products on COO codes (rows, cols, vals; n entries; repeats add up):
 * spmm adds vals[e]·dense[src] into out[dst] with atomics (one block per entry, threads along d,
 * so reads and atomics are coalesced), where (src, dst) = (cols, rows) for S·dense and
 * (rows, cols) for Sᵀ·dense; sddmm is one warp per entry dotting a[rows[e]] with b[cols[e]]
 * (f64 accumulation, like the CPU backend). f32 and f64; 16-bit floats are widened by the backend.
 */
import type { DType } from "../../dtype.ts";
import { instantiateAll } from "./prelude.ts";

export const SPARSE_DTYPES: readonly DType[] = ["f32", "f64"];

const BODY = String.raw`
template <class T>
__device__ void spmm_impl(ll nnz, ll d, int transpose, ll srcRows, ll outRows, const int* rows, const int* cols, const T* vals, const T* dense, T* out, int* err) {
  for (ll e = blockIdx.x; e < nnz; e += gridDim.x) {
    ll src = transpose ? rows[e] : cols[e], dst = transpose ? cols[e] : rows[e];
    if (src < 0 || src >= srcRows) { if (threadIdx.x == 0) report(err, 3, src, srcRows); continue; }
    if (dst < 0 || dst >= outRows) { if (threadIdx.x == 0) report(err, 3, dst, outRows); continue; }
    T v = vals[e];
    if (v == (T)0) continue;
    const T* s = dense + src * d;
    T* o = out + dst * d;
    for (ll c = threadIdx.x; c < d; c += blockDim.x) atomicAdd(o + c, v * s[c]);
  }
}

template <class T>
__device__ void sddmm_impl(ll nnz, ll d, ll aRows, ll bRows, const T* a, const T* b, const int* rows, const int* cols, T* out, int* err) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5;
  for (ll e = warp; e < nnz; e += warps) {
    ll r = rows[e], c = cols[e];
    if (r < 0 || r >= aRows || c < 0 || c >= bRows) {
      if (lane == 0) report(err, 4, (r < 0 || r >= aRows) ? r : c, (r < 0 || r >= aRows) ? aRows : bRows);
      if (lane == 0) out[e] = (T)0;
      continue;
    }
    const T* pa = a + r * d;
    const T* pb = b + c * d;
    double acc = 0;
    for (ll j = lane; j < d; j += 32) acc += (double)pa[j] * (double)pb[j];
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if (lane == 0) out[e] = (T)acc;
  }
}
`;

export function sparseSource(): string {
  return BODY + instantiateAll(SPARSE_DTYPES, [
    [
      "spmm",
      "ll nnz, ll d, int transpose, ll srcRows, ll outRows, const int* rows, const int* cols, const T* vals, const T* dense, T* out, int* err",
      "spmm_impl<T>(nnz, d, transpose, srcRows, outRows, rows, cols, vals, dense, out, err)",
    ],
    [
      "sddmm",
      "ll nnz, ll d, ll aRows, ll bRows, const T* a, const T* b, const int* rows, const int* cols, T* out, int* err",
      "sddmm_impl<T>(nnz, d, aRows, bRows, a, b, rows, cols, out, err)",
    ],
  ]);
}
