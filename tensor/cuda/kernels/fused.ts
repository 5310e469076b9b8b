/**
 * Fused kernels of the optimiser and the decoder constraint: one Adam pass (instead of thirteen
 * elementwise ops), rows scaled to unit norm, and the component of each gradient row along its
 * decoder row removed. One block per row for the row kernels (256 threads, f64 sums).
 */
import type { DType } from "../../dtype.ts";
import { instantiateAll } from "./prelude.ts";

export const FUSED_DTYPES: readonly DType[] = ["f32", "f64"];

const BODY = String.raw`
template <class T>
__device__ void adam_impl(ll n, const T* g, const T* mu, const T* nu, const T* p, T* u, T* mu2, T* nu2, double b1, double b2, double eps, double c2, double scale, double decay) {
  for (ll i = gtid(); i < n; i += gstride()) {
    T gi = g[i];
    T m = (T)b1 * mu[i] + (T)(1 - b1) * gi;
    T v = (T)b2 * nu[i] + (T)(1 - b2) * gi * gi;
    mu2[i] = m;
    nu2[i] = v;
    u[i] = ((T)scale * m) / (sqrt(v / (T)c2) + (T)eps) - (p ? (T)decay * p[i] : (T)0);
  }
}

// Block-wide sum of one double per thread (blockDim.x = 256); every thread gets the total.
__device__ double block_sum(double v, double* sh) {
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  double t = 0;
  for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += sh[i];
  return t;
}

template <class T>
__device__ void unit_rows_impl(ll R, ll C, const T* w, T* out) {
  __shared__ double sh[32];
  for (ll r = blockIdx.x; r < R; r += gridDim.x) {
    const T* wr = w + r * C;
    double s = 0;
    for (ll c = threadIdx.x; c < C; c += blockDim.x) s += (double)wr[c] * (double)wr[c];
    s = block_sum(s, sh);
    T inv = (T)(1.0 / sqrt(s));
    for (ll c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = wr[c] * inv;
  }
}

template <class T>
__device__ void project_out_rows_impl(ll R, ll C, const T* g, const T* w, T* out) {
  __shared__ double sh[32];
  for (ll r = blockIdx.x; r < R; r += gridDim.x) {
    const T* wr = w + r * C;
    const T* gr = g + r * C;
    double ww = 0, gw = 0;
    for (ll c = threadIdx.x; c < C; c += blockDim.x) { ww += (double)wr[c] * (double)wr[c]; gw += (double)gr[c] * (double)wr[c]; }
    ww = block_sum(ww, sh);
    gw = block_sum(gw, sh);
    T s = (T)(gw / ww);
    for (ll c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = gr[c] - s * wr[c];
  }
}
`;

export function fusedSource(): string {
  return BODY + instantiateAll(FUSED_DTYPES, [
    [
      "adam",
      "ll n, const T* g, const T* mu, const T* nu, const T* p, T* u, T* mu2, T* nu2, double b1, double b2, double eps, double c2, double scale, double decay",
      "adam_impl<T>(n, g, mu, nu, p, u, mu2, nu2, b1, b2, eps, c2, scale, decay)",
    ],
    ["unit_rows", "ll R, ll C, const T* w, T* out", "unit_rows_impl<T>(R, C, w, out)"],
    [
      "project_out_rows",
      "ll R, ll C, const T* g, const T* w, T* out",
      "project_out_rows_impl<T>(R, C, g, w, out)",
    ],
  ]);
}
