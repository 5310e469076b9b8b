/**
 * Top-k along the last axis of contiguous rows, for any k and row length, by radix selection.
 * Every element gets a distinct composite key (an order-preserving integer of its value, then its
 * reversed index so lower indices win ties; NaN ranks highest as on the CPU backend), so exactly k
 * elements are ≥ the k-th key. The host loops over 8-bit digits: `topk_hist` counts the digit of
 * each element still matching the prefix found so far (many blocks per row when rows are few, as
 * in batch top-k over one flattened row), `topk_pick` picks the digit that holds the k-th key.
 * Then `topk_collect` gathers the k winners, and `topk_rank` sorts them by counting, per element,
 * the winners with a larger key: no sort network, any k.
 */
import type { DType } from "../../dtype.ts";
import { instantiateAll } from "./prelude.ts";

export const TOPK_DTYPES: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32"];

/** Bytes of the value key per dtype (f64 needs 8; everything else fits an order-preserving 32-bit key). */
export const KEY_BYTES: Record<DType, number> = {
  f32: 4,
  f64: 8,
  f16: 4,
  bf16: 4,
  i32: 4,
  bool: 4,
};

/** How many 8-bit digits cover indices below n. */
export function indexDigits(n: number): number {
  let d = 1;
  while (d < 4 && n - 1 >= 2 ** (8 * d)) d++;
  return d;
}

const BODY = String.raw`
__device__ __forceinline__ ull fkey(float f) {
  if (f != f) return 0xffffffffull;
  if (f == 0.0f) f = 0.0f;  // -0 ties with +0
  unsigned u = __float_as_uint(f);
  return (ull)(u ^ ((u >> 31) ? 0xffffffffu : 0x80000000u));
}
__device__ __forceinline__ ull vkey(const float* x, ll i) { return fkey(x[i]); }
__device__ __forceinline__ ull vkey(const f16_t* x, ll i) { return fkey(h2f(x[i].x)); }
__device__ __forceinline__ ull vkey(const bf16_t* x, ll i) { return fkey(b2f(x[i].x)); }
__device__ __forceinline__ ull vkey(const int* x, ll i) { return (ull)((unsigned)x[i] ^ 0x80000000u); }
__device__ __forceinline__ ull vkey(const double* x, ll i) {
  double f = x[i];
  if (f != f) return 0xffffffffffffffffull;
  if (f == 0.0) f = 0.0;
  ull u = (ull)__double_as_longlong(f);
  return u ^ ((u >> 63) ? 0xffffffffffffffffull : 0x8000000000000000ull);
}

// Per row: the key prefix and index prefix chosen so far, and how many winners remain below it.
struct TopkState { ull key; unsigned lo; int need; };

// Digit p of the composite key (value digits first, most significant first), and whether the
// element still matches the digits chosen before p.
__device__ __forceinline__ bool tk_digit(int p, int vd, int id, ull key, unsigned lo, const TopkState& s, int* digit) {
  if (p < vd) {
    int sh = 8 * (vd - 1 - p);
    if (p > 0 && (key >> (sh + 8)) != (s.key >> (sh + 8))) return false;
    *digit = (int)((key >> sh) & 255);
    return true;
  }
  int q = p - vd, sh = 8 * (id - 1 - q);
  if (key != s.key) return false;
  if (q > 0 && (lo >> (sh + 8)) != (s.lo >> (sh + 8))) return false;
  *digit = (int)((lo >> sh) & 255);
  return true;
}

template <class T>
__device__ void topk_hist(int pass, int vd, int id, int rows, ll n, int blocksPerRow, const T* x, const TopkState* state, unsigned* hist) {
  __shared__ unsigned h[256];
  for (int row = blockIdx.y; row < rows; row += gridDim.y) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) h[i] = 0;
    __syncthreads();
    TopkState s = state[row];
    const T* xr = x + (ll)row * n;
    for (ll j = (ll)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (ll)blocksPerRow * blockDim.x) {
      int dg;
      if (tk_digit(pass, vd, id, vkey(xr, j), (unsigned)(n - 1 - j), s, &dg)) atomicAdd(&h[dg], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x) if (h[i]) atomicAdd(&hist[(ll)row * 256 + i], h[i]);
    __syncthreads();
  }
}

extern "C" __global__ void topk_init(int rows, int k, TopkState* state) {
  for (ll r = gtid(); r < rows; r += gstride()) { TopkState s; s.key = 0; s.lo = 0; s.need = k; state[r] = s; }
}

// Σ of the row's histogram from bin b up (lane L holds bins 8L … 8L + 7), on every lane.
__device__ __forceinline__ unsigned tk_count_from(const unsigned* v, int lane, int b) {
  unsigned c = 0;
  for (int i = 0; i < 8; i++) if (lane * 8 + i >= b) c += v[i];
  for (int sft = 16; sft > 0; sft >>= 1) c += __shfl_xor_sync(0xffffffffu, c, sft);
  return c;
}

// A warp per row: the digit holding the need-th largest key among those matching, i.e. the largest
// b ≥ 1 whose count from b up reaches need (else 0), found by bisection on that non-increasing
// count; clears the histogram. (One thread per row walking 256 bins of global memory took ~0.1 ms
// a pass at 2048 rows.)
__device__ void topk_pick_impl(int pass, int vd, int id, int rows, TopkState* state, unsigned* hist) {
  int lane = threadIdx.x & 31;
  ll warp = gtid() >> 5, warps = gstride() >> 5;
  for (ll row = warp; row < rows; row += warps) {
    unsigned* h = hist + row * 256;
    TopkState s = state[row];
    unsigned v[8];
    for (int i = 0; i < 8; i++) v[i] = h[lane * 8 + i];
    int lo = 0, hi = 255;
    while (lo < hi) {
      int mid = (lo + hi + 1) >> 1;
      if (tk_count_from(v, lane, mid) >= (unsigned)s.need) lo = mid; else hi = mid - 1;
    }
    unsigned above = tk_count_from(v, lane, lo + 1);
    for (int i = 0; i < 8; i++) h[lane * 8 + i] = 0;
    if (lane == 0) {
      s.need -= (int)above;
      if (pass < vd) s.key |= (ull)lo << (8 * (vd - 1 - pass));
      else s.lo |= (unsigned)lo << (8 * (id - 1 - (pass - vd)));
      state[row] = s;
    }
  }
}

template <class T>
__device__ void topk_collect(int rows, ll n, int k, int blocksPerRow, const T* x, const TopkState* state, int* count, int* sel) {
  for (int row = blockIdx.y; row < rows; row += gridDim.y) {
    TopkState s = state[row];
    const T* xr = x + (ll)row * n;
    for (ll j = (ll)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (ll)blocksPerRow * blockDim.x) {
      ull key = vkey(xr, j);
      unsigned lo = (unsigned)(n - 1 - j);
      if (key > s.key || (key == s.key && lo >= s.lo)) {
        int slot = atomicAdd(&count[row], 1);
        if (slot < k) sel[(ll)row * k + slot] = (int)j;
      }
    }
  }
}

// blockDim.x = 256; grid (ceil(k/256), rows). Rank = winners with a larger composite key.
template <class T>
__device__ void topk_rank(int rows, ll n, int k, const T* x, const int* sel, T* values, int* indices) {
  __shared__ ull ks[256];
  __shared__ unsigned ls[256];
  for (int row = blockIdx.y; row < rows; row += gridDim.y) {
  const T* xr = x + (ll)row * n;
  const int* sr = sel + (ll)row * k;
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  int j = t < k ? sr[t] : 0;
  ull key = vkey(xr, j);
  unsigned lo = (unsigned)(n - 1 - j);
  int rank = 0;
  for (int c0 = 0; c0 < k; c0 += 256) {
    int c = c0 + threadIdx.x;
    if (c < k) { int jj = sr[c]; ks[threadIdx.x] = vkey(xr, jj); ls[threadIdx.x] = (unsigned)(n - 1 - jj); }
    __syncthreads();
    int m = min(256, k - c0);
    for (int i = 0; i < m; i++) rank += (ks[i] > key || (ks[i] == key && ls[i] > lo));
    __syncthreads();
  }
  if (t < k) { values[(ll)row * k + rank] = xr[j]; indices[(ll)row * k + rank] = j; }
  }
}

extern "C" __global__ void topk_pick(int pass, int vd, int id, int rows, TopkState* state, unsigned* hist) { topk_pick_impl(pass, vd, id, rows, state, hist); }
`;

export function selectSource(): string {
  return BODY + instantiateAll(TOPK_DTYPES, [
    [
      "topk_hist",
      "int pass, int vd, int id, int rows, ll n, int blocksPerRow, const T* x, const TopkState* state, unsigned* hist",
      "topk_hist<T>(pass, vd, id, rows, n, blocksPerRow, x, state, hist)",
    ],
    [
      "topk_collect",
      "int rows, ll n, int k, int blocksPerRow, const T* x, const TopkState* state, int* count, int* sel",
      "topk_collect<T>(rows, n, k, blocksPerRow, x, state, count, sel)",
    ],
    [
      "topk_rank",
      "int rows, ll n, int k, const T* x, const int* sel, T* values, int* indices",
      "topk_rank<T>(rows, n, k, x, sel, values, indices)",
    ],
  ]);
}
