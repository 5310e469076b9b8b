/**
 * Fused kernels of the optimiser and the decoder constraint: one Adam pass (instead of thirteen
 * elementwise ops), Adam applied to the parameter (clipping's scale and a transposed gradient
 * folded in), clipping's sum of squares, rows scaled to unit norm, and the component of each
 * gradient row along its decoder row removed. One block per row for the row kernels (256 threads,
 * f64 sums).
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

// Adam applied (fusedAdamApply): p' = p + u with u, m', v' as adam_impl, after the gradient is
// multiplied by gs[0] (rounded to T, as mul by a scalar tensor) when gs is given. The parameter is
// [R, C]; with gT its gradient is stored transposed ([C, R], as ∂W_enc comes from the sparse
// product) and read through 32×32 tiles in shared memory, so both sides stay coalesced. 256
// threads a block (8 rows of 32), grid (⌈C/32⌉, ⌈R/32⌉).
template <class T>
__device__ void adam_apply_impl(ll R, ll C, const T* g, int gT, const T* gs, const T* mu, const T* nu, const T* p, T* p2, T* mu2, T* nu2, double b1, double b2, double eps, double c2, double scale, double decay) {
  __shared__ T tile[32][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const ll r0 = (ll)blockIdx.y * 32, c0 = (ll)blockIdx.x * 32;
  if (gT) {
    for (int j = ty; j < 32; j += 8) {
      const ll c = c0 + j, r = r0 + tx;
      if (c < C && r < R) tile[j][tx] = g[c * R + r];
    }
    __syncthreads();
  }
  for (int j = ty; j < 32; j += 8) {
    const ll r = r0 + j, c = c0 + tx;
    if (r >= R || c >= C) continue;
    const ll i = r * C + c;
    T gi = gT ? tile[tx][j] : g[i];
    if (gs) gi = gi * gs[0];
    T m = (T)b1 * mu[i] + (T)(1 - b1) * gi;
    T v = (T)b2 * nu[i] + (T)(1 - b2) * gi * gi;
    mu2[i] = m;
    nu2[i] = v;
    T u = ((T)scale * m) / (sqrt(v / (T)c2) + (T)eps) - (decay != 0 ? (T)decay * p[i] : (T)0);
    p2[i] = p[i] + u;
  }
}

// Σ x² over n contiguous elements in \`parts\` chunks, a warp each: each square rounded to T (as
// square() gives it), summed in double; reduce_parts (op 0) adds the partials.
template <class T>
__device__ void sum_squares_split_impl(ll n, ll parts, const T* x, double* part) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5, chunk = (n + parts - 1) / parts;
  for (ll s = warp; s < parts; s += warps) {
    ll j0 = s * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
    double acc = 0;
    for (ll j = j0 + lane; j < j1; j += 32) { const T e = x[j]; const T q = e * e; acc += (double)q; }
    for (int sft = 16; sft > 0; sft >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, sft);
    if (lane == 0) part[s] = acc;
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
    [
      "adam_apply",
      "ll R, ll C, const T* g, int gT, const T* gs, const T* mu, const T* nu, const T* p, T* p2, T* mu2, T* nu2, double b1, double b2, double eps, double c2, double scale, double decay",
      "adam_apply_impl<T>(R, C, g, gT, gs, mu, nu, p, p2, mu2, nu2, b1, b2, eps, c2, scale, decay)",
    ],
    [
      "sum_squares_split",
      "ll n, ll parts, const T* x, double* part",
      "sum_squares_split_impl<T>(n, parts, x, part)",
    ],
    ["unit_rows", "ll R, ll C, const T* w, T* out", "unit_rows_impl<T>(R, C, w, out)"],
    [
      "project_out_rows",
      "ll R, ll C, const T* g, const T* w, T* out",
      "project_out_rows_impl<T>(R, C, g, w, out)",
    ],
  ]);
}
