// The TopK encoder's forward in one pass: the k largest entries of each row of x·W + b, found
// while the GEMM's tiles are still in registers and cache, so the [rows, N] product is never
// written. At d 512, F 8192, batch 2048 that product is 64 MB; on a 2-core machine its stores,
// the bias pass before them and top-k's reload after them cost about a third of the GEMM itself.
//
// The sums are OpenBLAS's (its SkylakeX sgemm) to the bit: each output starts from the bias and
// adds, chunk by chunk along K (OpenBLAS's split: at_chunk_end), a partial sum accumulated from zero
// by one fused multiply-add per term in order. That is the order this file defines; it is the one
// cblas_sgemm (beta = 1 onto the bias) uses where OpenBLAS picks SkylakeX parameters, and within
// the usual sgemm rounding of any other order. The selection is sc_topk_f32's: larger first, ties
// to the lower index, −0 equal to +0 (a NaN anywhere returns -4: the caller composes).
//
// With `bf16` the product runs on AMX tiles instead (amx_bf16.h): x and W rounded to bf16 as they
// are packed, products summed in f32, the bias added after; the selection as above.
//
// Built where the compiler targets AVX-512 (AMX for bf16; -march=native on such a CPU); elsewhere
// the function returns -5 and the caller runs the GEMM and top-k as before.

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amx_bf16.h"
#include "reuse.h"
#include "threads.h"
#include "topk_key.h"

// Return codes: -1 done; -2 out of memory; -3 bad k; -4 a NaN in the product; -5 not built here
// (or k above AT_MAX_K, the most the candidate lists are sized for).
#define AT_MAX_K 256

// Calls answered through the screen (a diagnostic: tests check that the screen runs).
static int64_t at_screened = 0, at_full_rows = 0;

int64_t sc_affine_topk_screened(void) { return __atomic_load_n(&at_screened, __ATOMIC_RELAXED); }

// Rows the screen could not vouch for and summed in full (a diagnostic: tests check that path runs).
int64_t sc_affine_topk_full_rows(void) { return __atomic_load_n(&at_full_rows, __ATOMIC_RELAXED); }

#if defined(__AVX512F__)
#include <immintrin.h>

#define AT_MR 12   // rows of a micro-tile: 24 accumulators of 16 lanes
#define AT_NR 32   // columns of a micro-tile (two vectors); W is packed in slivers this wide
#define AT_KQ 256  // the most terms of a step (the slice of W's sliver kept in L1: 32 KB)

// OpenBLAS's split of K (its SkylakeX sgemm, GEMM_Q 448, as measured against cblas_sgemm): chunks
// of 448 while at least twice that is left, a remainder above 448 halved (the first half rounded
// up), else the rest. The end of the chunk that starts at ls.
#define AT_Q 448
static inline int64_t at_chunk_end(int64_t ls, int64_t K) {
  int64_t n = K - ls;
  if (n >= 2 * AT_Q) n = AT_Q;
  else if (n > AT_Q) n = (n + 1) / 2;
  return ls + n;
}

// aligned_alloc wants a multiple of the alignment.
static void *at_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

// One step of a micro-tile over kq terms (A packed [kq][12], B packed [kq][32]): the chunk's
// partial sum starts from zero (`begin`) or from acc, and is parked in acc between steps; at the
// chunk's end it is added to C[12][32] — onto the bias for the first chunk — and the total written
// to out (C itself but for the last chunk, whose sums go straight to the offer). Parking the sum does
// not change its bits (the same fused multiply-adds in the same order); it lets a step's slice of
// W's sliver (at most AT_KQ × 32) stay in L1 across the block's micro-tiles.
static inline void at_tile(int64_t kq, const float *A, const float *B, const float *bias, const float *C,
                           float *out, float *acc, int begin, int end, int first) {
  __m512 a0[AT_MR], a1[AT_MR];
  for (int i = 0; i < AT_MR; i++) {
    a0[i] = begin ? _mm512_setzero_ps() : _mm512_load_ps(acc + i * AT_NR);
    a1[i] = begin ? _mm512_setzero_ps() : _mm512_load_ps(acc + i * AT_NR + 16);
  }
  for (int64_t k = 0; k < kq; k++) {
    const __m512 b0 = _mm512_loadu_ps(B + k * AT_NR), b1 = _mm512_loadu_ps(B + k * AT_NR + 16);
#pragma GCC unroll 12
    for (int i = 0; i < AT_MR; i++) {
      const __m512 a = _mm512_set1_ps(A[k * AT_MR + i]);
      a0[i] = _mm512_fmadd_ps(a, b0, a0[i]);
      a1[i] = _mm512_fmadd_ps(a, b1, a1[i]);
    }
  }
  if (!end) {
    for (int i = 0; i < AT_MR; i++) {
      _mm512_store_ps(acc + i * AT_NR, a0[i]);
      _mm512_store_ps(acc + i * AT_NR + 16, a1[i]);
    }
    return;
  }
  const __m512 z0 = first ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 z1 = first ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int i = 0; i < AT_MR; i++) {
    const float *c = C + i * AT_NR;
    _mm512_store_ps(out + i * AT_NR, _mm512_add_ps(first ? z0 : _mm512_load_ps(c), a0[i]));
    _mm512_store_ps(out + i * AT_NR + 16, _mm512_add_ps(first ? z1 : _mm512_load_ps(c + 16), a1[i]));
  }
}

typedef struct {
  const float *w;
  float *packed;
  int64_t K, N, s0, s1;
  int wT;
} at_pack_job;

// W's column slivers [s0, s1) as [K][32] blocks (columns past N zero); W is [K, N], or [N, K] when wT.
static void *at_pack_task(void *p) {
  const at_pack_job *j = p;
  const int64_t K = j->K, N = j->N;
  // W [K, N]: 8 slivers at a time, each row's 1 KB read once in order (one read stream, 8 writes).
  for (int64_t s8 = j->s0; !j->wT && s8 < j->s1; s8 += 8) {
    const int64_t s1 = s8 + 8 < j->s1 ? s8 + 8 : j->s1;
    for (int64_t k = 0; k < K; k++)
      for (int64_t s = s8; s < s1; s++) {
        float *dst = j->packed + s * K * AT_NR + k * AT_NR;
        const int64_t c0 = s * AT_NR, n = N - c0 < AT_NR ? N - c0 : AT_NR;
        memcpy(dst, j->w + k * N + c0, sizeof(float) * (size_t)n);
        memset(dst + n, 0, sizeof(float) * (size_t)(AT_NR - n));
      }
  }
  // W stored [N, K]: each column's K values read in order.
  for (int64_t s = j->s0; j->wT && s < j->s1; s++) {
    float *dst = j->packed + s * K * AT_NR;
    const int64_t c0 = s * AT_NR, n = N - c0 < AT_NR ? N - c0 : AT_NR;
    for (int64_t c = 0; c < AT_NR; c++)
      for (int64_t k = 0; k < K; k++) dst[k * AT_NR + c] = c < n ? j->w[(c0 + c) * K + k] : 0;
  }
  return 0;
}

typedef struct {
  const float *x, *packed, *bias;
  int64_t M, K, N, k, s0, s1, block;  // rows in slivers of 12: [s0, s1), `block` slivers at a time
                                      // (bf16: rows [s0, s1), `block` rows at a time)
  float *values;
  int32_t *indices;
  int status;  // -1, -2, -4, or -6 (the bf16 screen cannot vouch for enough rows: see at_screen)
  // The f32 product through a bf16 screen (at_screen): W as given, its largest column norm, and
  // how many approximate candidates each row keeps (0: plain bf16, no screen).
  const float *w, *wt;  // wt: W transposed ([N, K]), for the screen's exact sums
  int32_t wT;
  int64_t keep;
  const float *ucol;  // per column (padded to whole slivers with zeros): ‖w_c‖, ‖δw_c‖, ‖w_c‖ + ‖δw_c‖
  double d0;          // the bound's constant term (at_screen_eps)
} at_job;

// Each row's candidates: the columns whose value beat the row's threshold, in column order
// (values and columns, compressed out of each offered vector). When 2·keep are held, the keep-th
// best value (found by a binary search on order keys, at_lists_cut) becomes the threshold and only
// the values at or above it stay; a later column equal to it loses the tie to the earlier ones, so
// only values strictly above it enter. About keep·ln(N/keep) columns of a row of N in random order
// enter, a compressed store per offered vector that has any; the threshold test is one compare.
typedef struct {
  int64_t keep, width;  // width: room per row (2·keep and one more offer, in whole vectors)
  float *vals;
  int32_t *cols;
  float *thr;  // NaN until the first cut: every column enters
  int64_t *count;
} at_lists;

static at_lists at_lists_new(int64_t rows, int64_t keep) {
  at_lists L = {keep, (2 * keep + AT_NR + 15) / 16 * 16, 0, 0, 0, 0};
  L.vals = at_alloc(sizeof(float) * (size_t)(rows * L.width));
  L.cols = at_alloc(sizeof(int32_t) * (size_t)(rows * L.width));
  L.thr = malloc(sizeof(float) * (size_t)rows), L.count = malloc(sizeof(int64_t) * (size_t)rows);
  return L;
}

static int at_lists_ok(const at_lists *L) { return L->vals && L->cols && L->thr && L->count; }

static void at_lists_free(at_lists *L) { free(L->vals), free(L->cols), free(L->thr), free(L->count); }

static void at_lists_reset(at_lists *L, int64_t rows) {
  memset(L->count, 0, sizeof(int64_t) * (size_t)rows);
  for (int64_t i = 0; i < rows; i++) L->thr[i] = __builtin_nanf("");
}

// Lanes [0, n) of a vector, n clamped to [0, 16].
static inline __mmask16 at_lanes_below(int64_t n) {
  return n <= 0 ? 0 : n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
}

// Order keys: unsigned integers in the floats' order, −0 as +0 (topk_key_f32's upper half).
static inline __m512i at_ord16(__m512 v) {
  const __m512i u = _mm512_castps_si512(_mm512_add_ps(v, _mm512_setzero_ps()));  // −0 + 0 = +0
  return _mm512_mask_xor_epi32(_mm512_or_si512(u, _mm512_set1_epi32((int)0x80000000u)), _mm512_movepi32_mask(u),
                               u, _mm512_set1_epi32(-1));
}

static inline float at_unord(uint32_t o) {
  const uint32_t u = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// n values/columns (in column order) cut to those whose order key is at least t's, then to `most`
// of them: the ones above t, then the earliest equal to t. Returns how many stay.
static int64_t at_keep_from(float *V, int32_t *C, int64_t n, uint32_t t, int64_t most) {
  const __m512i tv = _mm512_set1_epi32((int)t);
  int64_t above = 0;
  for (int64_t q = 0; 16 * q < n; q++)
    above += __builtin_popcount(
        _mm512_mask_cmpgt_epu32_mask(at_lanes_below(n - 16 * q), at_ord16(_mm512_loadu_ps(V + 16 * q)), tv));
  int64_t ties = most - above, w = 0;
  for (int64_t q = 0; 16 * q < n; q++) {
    const __m512 v = _mm512_loadu_ps(V + 16 * q);
    const __m512i o = at_ord16(v);
    const __mmask16 live = at_lanes_below(n - 16 * q);
    __mmask16 eq = _mm512_mask_cmpeq_epu32_mask(live, o, tv);
    // The first `ties` equal ones, in column order.
    for (int64_t e = __builtin_popcount(eq); e > ties; e--)
      eq &= (__mmask16)~(0x8000u >> __builtin_clz((uint32_t)eq << 16));  // the last one out
    ties -= __builtin_popcount(eq);
    const __mmask16 m = _mm512_mask_cmpgt_epu32_mask(live, o, tv) | eq;
    // Stores go no further than the buffer's own entries: w ≤ 16·q.
    _mm512_storeu_ps(V + w, _mm512_maskz_compress_ps(m, v));
    _mm512_storeu_si512(C + w, _mm512_maskz_compress_epi32(m, _mm512_loadu_si512(C + 16 * q)));
    w += __builtin_popcount(m);
  }
  return w;
}

// An order key t that exactly m of n values reach, or else the m-th largest's (1 ≤ m ≤ n): the
// largest t at least m reach, or the first t a binary search meets that exactly m reach. Either
// way the m best by value and column are among those at or above t (at_keep_from keeps them), and
// every other value is at most t's.
static uint32_t at_mth_ord(const float *V, int64_t n, int64_t m) {
  __m512i o[(2 * AT_MAX_K + AT_NR + 15) / 16];
  const int64_t vecs = (n + 15) / 16;
  __m512i lo16 = _mm512_set1_epi32(-1), hi16 = _mm512_setzero_si512();
  for (int64_t q = 0; q < vecs; q++) {
    // Lanes past n as key 0, below every value's (a NaN never gets here) and below the search.
    const __mmask16 live = at_lanes_below(n - 16 * q);
    o[q] = _mm512_maskz_mov_epi32(live, at_ord16(_mm512_loadu_ps(V + 16 * q)));
    lo16 = _mm512_mask_min_epu32(lo16, live, lo16, o[q]), hi16 = _mm512_max_epu32(hi16, o[q]);
  }
  // All n reach the smallest; search (smallest, largest].
  uint32_t lo = _mm512_reduce_min_epu32(lo16), hi = _mm512_reduce_max_epu32(hi16);
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2 + 1;
    const __m512i mv = _mm512_set1_epi32((int)mid);
    int64_t c = 0;
    for (int64_t q = 0; q < vecs; q++) c += __builtin_popcount(_mm512_cmpge_epu32_mask(o[q], mv));
    if (c == m) return mid;
    lo = c > m ? mid : lo;
    hi = c > m ? hi : mid - 1;
  }
  return lo;
}

// Row i's list cut to its keep best; the keep-th best becomes the threshold.
static void at_lists_cut(at_lists *L, int64_t i) {
  float *V = L->vals + i * L->width;
  int32_t *C = L->cols + i * L->width;
  const uint32_t t = at_mth_ord(V, L->count[i], L->keep);
  L->count[i] = at_keep_from(V, C, L->count[i], t, L->keep);
  L->thr[i] = at_unord(t);
}

// The k best of n values/columns (column order) into values/indices [k], best first: larger first,
// ties to the earlier column; the values themselves (a −0 stays −0).
static void at_best(float *V, int32_t *C, int64_t n, int64_t k, float *values, int32_t *indices) {
  n = at_keep_from(V, C, n, at_mth_ord(V, n, k), k);
  uint64_t keys[AT_MAX_K];
  for (int64_t p = 0; p < n; p++) {
    // The value's order key (topk_key_f32's upper half), then the position: column order.
    const uint64_t key = (topk_key_f32(V[p], 0) >> 32) << 32 | (uint32_t)~(uint32_t)p;
    int64_t q = p;
    for (; q > 0 && keys[q - 1] < key; q--) keys[q] = keys[q - 1];
    keys[q] = key;
  }
  for (int64_t t = 0; t < n; t++) {
    const uint32_t p = ~(uint32_t)keys[t];
    values[t] = V[p], indices[t] = C[p];
  }
}

// Rows [r0, r1)'s candidates (list i is row r0 + i) into values/indices [rows, k], best first.
static void at_lists_write(at_lists *L, int64_t r0, int64_t r1, int64_t k, float *values, int32_t *indices) {
  for (int64_t r = r0; r < r1; r++)
    at_best(L->vals + (r - r0) * L->width, L->cols + (r - r0) * L->width, L->count[r - r0], k, values + r * k,
            indices + r * k);
}

// Offer one row's 32 columns from c0 (n of them real) to its list; 0 when one is NaN. The common
// case, no column above the threshold, is two compares: `!(v <= thr)` holds for v > thr, for a NaN
// v (found below) and for every v while thr is NaN (the list not yet cut).
static inline int at_offer(at_lists *L, int64_t i, const float *t, int64_t c0, int64_t n) {
  const __m512 v0 = _mm512_load_ps(t), v1 = _mm512_load_ps(t + 16), thr = _mm512_set1_ps(L->thr[i]);
  const __mmask16 r0 = at_lanes_below(n), r1 = at_lanes_below(n - 16);
  const __mmask16 h0 = _mm512_mask_cmp_ps_mask(r0, v0, thr, _CMP_NLE_UQ);
  const __mmask16 h1 = _mm512_mask_cmp_ps_mask(r1, v1, thr, _CMP_NLE_UQ);
  if (!(h0 | h1)) return 1;
  if (_mm512_mask_cmp_ps_mask(r0, v0, v0, _CMP_UNORD_Q) | _mm512_mask_cmp_ps_mask(r1, v1, v1, _CMP_UNORD_Q))
    return 0;
  float *V = L->vals + i * L->width;
  int32_t *C = L->cols + i * L->width;
  int64_t m = L->count[i];
  const __m512i c = _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32((int32_t)c0));
  _mm512_storeu_ps(V + m, _mm512_maskz_compress_ps(h0, v0));
  _mm512_storeu_si512(C + m, _mm512_maskz_compress_epi32(h0, c));
  m += __builtin_popcount(h0);
  _mm512_storeu_ps(V + m, _mm512_maskz_compress_ps(h1, v1));
  _mm512_storeu_si512(C + m, _mm512_maskz_compress_epi32(h1, _mm512_add_epi32(c, _mm512_set1_epi32(16))));
  L->count[i] = m + __builtin_popcount(h1);
  if (L->count[i] >= 2 * L->keep) at_lists_cut(L, i);
  return 1;
}

static void *at_task(void *p) {
  at_job *j = p;
  const int64_t K = j->K, N = j->N, k = j->k, B = j->block, rowsB = B * AT_MR;
  const int64_t slivers = (N + AT_NR - 1) / AT_NR;
  float *A = at_alloc(sizeof(float) * (size_t)(rowsB * K));
  float *tile = at_alloc(sizeof(float) * (size_t)(rowsB * AT_NR));
  float *acc = at_alloc(sizeof(float) * (size_t)(rowsB * AT_NR));
  float *sums = at_alloc(sizeof(float) * AT_MR * AT_NR);
  at_lists L = at_lists_new(rowsB, k);
  j->status = -1;
  if (!A || !tile || !acc || !sums || !at_lists_ok(&L)) {
    j->status = -2;
    goto done;
  }
  for (int64_t sb = j->s0; sb < j->s1; sb += B) {
    const int64_t se = sb + B < j->s1 ? sb + B : j->s1, r0 = sb * AT_MR;
    const int64_t r1 = se * AT_MR < j->M ? se * AT_MR : j->M;
    for (int64_t s = sb; s < se; s++) {
      float *a = A + (s - sb) * K * AT_MR;
      for (int64_t kk = 0; kk < K; kk++)
        for (int64_t i = 0; i < AT_MR; i++) {
          const int64_t r = s * AT_MR + i;
          a[kk * AT_MR + i] = r < j->M ? j->x[r * K + kk] : 0;
        }
    }
    at_lists_reset(&L, r1 - r0);
    for (int64_t js = 0; js < slivers; js++) {
      const float *b = j->packed + js * K * AT_NR;
      const int64_t c0 = js * AT_NR;
      // Each step's slice of W's sliver is read from L1 by every micro-tile of the block; each
      // micro-tile's finished sums are offered to its rows' lists while they are in L1.
      for (int64_t ls = 0; ls < K;) {
        const int64_t le = at_chunk_end(ls, K);
        for (int64_t k0 = ls; k0 < le; k0 += AT_KQ) {
          const int64_t kq = le - k0 < AT_KQ ? le - k0 : AT_KQ;
          const int last = le == K && k0 + kq == le;
          for (int64_t s = sb; s < se; s++) {
            float *C = tile + (s - sb) * AT_MR * AT_NR;
            at_tile(kq, A + (s - sb) * K * AT_MR + k0 * AT_MR, b + k0 * AT_NR, j->bias + c0, C,
                    last ? sums : C, acc + (s - sb) * AT_MR * AT_NR, k0 == ls, k0 + kq == le, ls == 0);
            for (int64_t r = s * AT_MR; last && r < (s + 1) * AT_MR && r < r1; r++) {
              if (!at_offer(&L, r - r0, sums + (r - s * AT_MR) * AT_NR, c0, N - c0)) {
                j->status = -4;
                goto done;
              }
            }
          }
        }
        ls = le;
      }
    }
    at_lists_write(&L, r0, r1, k, j->values, j->indices);
  }
done:
  free(A), free(tile), free(acc), free(sums), at_lists_free(&L);
  return 0;
}

#ifdef SC_AMX
// ---- The f32 top-k through a bf16 screen ----------------------------------------------------
// The exact f32 top-k (the sums above, to the bit) for about the cost of a bf16 GEMM: AMX computes
// every entry a = x̃·w̃ + b from x̃ = bf16(x) and w̃ = bf16(w); each row keeps at least the `keep`
// best upper bounds a + ε; only the columns the bound cannot rule out are summed again exactly, and
// their exact k best are the answer.
//
// The bound. With δx = x − x̃ and δw = w − w̃, x·w − x̃·w̃ = δx·w + x̃·δw, so the products' sum moves
// by at most ‖δx‖·‖w_c‖ + ‖x̃‖·‖δw_c‖ (Cauchy–Schwarz on the rounding errors themselves: about
// 2⁻⁸·‖x‖·‖w_c‖, not the worst case 2⁻⁷). AMX sums K exact bf16 products in f32 and the exact path
// K products, erring by at most 3K·2⁻²⁴·S in all, S = (‖x‖ + ‖δx‖)·(‖w_c‖ + ‖δw_c‖) bounding every
// Σ|term| (first order; K ≤ 2¹⁴); adding the bias rounds by at most 3·2⁻²⁴·(S + max|b|). So each
// approximate value a is within
//   ε_c = 1.01·(‖δx‖·‖w_c‖ + ‖x̃‖·‖δw_c‖ + (3K·2⁻²⁴ + 2⁻²¹)·S + 2⁻²¹·max|b|) + 2⁻¹⁰⁰
// of its exact value e (at_screen_row; the last term covers products and sums AMX flushes to zero
// below 2⁻¹²⁶: operands lie in [2⁻¹⁰⁰, 2⁵⁰] or are 0, so no operand is subnormal in bf16).
// Each row's list ranks the upper bounds h = a + ε_c; at_screen takes the k-th largest lower bound L
// among the listed (at most the exact k-th best), keeps the listed columns whose upper bound reaches
// L, and vouches for the row when every unlisted column's h (at most the list's threshold) is below
// L. A row it cannot vouch for (more columns near the k-th best than its list holds) is summed in
// full; past one such row in 32 the call returns -6, for the f32 kernel to redo. Operands outside
// that range keep the screen out.

// Room in a row's list: three times the k best (ε is ~2⁻⁸ of ‖x‖·‖w‖, so columns beyond the k best
// come within it: about 1.6k of them on random operands), at most AT_SCREEN_MOST.
#define AT_SCREEN_MOST 192
static int64_t at_screen_keep(int64_t k) { return (3 * k + 15) / 16 * 16; }

// Worth screening: the kept candidates fit AT_SCREEN_MOST and are fewer than the columns, K within
// the bound's first-order range, and not switched off (SPARSECODER_TOPK_SCREEN=0, for A/B timing).
static int at_screen_wanted(int64_t k, int64_t K, int64_t N) {
  static int off = -1;
  if (off < 0) {
    const char *e = getenv("SPARSECODER_TOPK_SCREEN");
    off = e && e[0] == '0' && e[1] == 0;
  }
  return !off && at_screen_keep(k) <= AT_SCREEN_MOST && at_screen_keep(k) < N && K <= (1 << 14);
}

// 1 when |v| is 0 or in [2⁻¹⁰⁰, 2⁵⁰]; squares of v, δv and ṽ added to sq[0..3) in double.
static inline int at_screen_add(float v, double *sq) {
  const float a = v < 0 ? -v : v;
  if (!(a <= 0x1p50f) || (a != 0 && a < 0x1p-100f)) return 0;
  const float d = amx_resid(v), t = v - d;
  sq[0] += (double)v * (double)v, sq[1] += (double)d * (double)d, sq[2] += (double)t * (double)t;
  return 1;
}

// Lanes of v out of the screen's range (not 0 and not in [2⁻¹⁰⁰, 2⁵⁰], or NaN).
static inline __mmask16 at_screen_out(__m512 v) {
  const __m512 a = _mm512_abs_ps(v);
  return _mm512_cmp_ps_mask(a, _mm512_set1_ps(0x1p50f), _CMP_NLE_UQ) |
         (_mm512_cmp_ps_mask(a, _mm512_set1_ps(0x1p-100f), _CMP_LT_OQ) &
          _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_OQ));
}

// acc[0..2) += the squares of v's 16 lanes in double (low and high halves).
static inline void at_sq16(__m512 v, __m512d *acc) {
  const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  acc[0] = _mm512_fmadd_pd(lo, lo, acc[0]), acc[1] = _mm512_fmadd_pd(hi, hi, acc[1]);
}

// [‖v‖², ‖δv‖², ‖ṽ‖²] of n contiguous values; 0 when one is out of the screen's range.
static int at_screen_norms(const float *v, int64_t n, double *sq) {
  __m512d acc[3][2];
  for (int q = 0; q < 3; q++) acc[q][0] = acc[q][1] = _mm512_setzero_pd();
  __mmask16 out = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(v + i), d = amx_resid16(x);
    out |= at_screen_out(x);
    at_sq16(x, acc[0]), at_sq16(d, acc[1]), at_sq16(_mm512_sub_ps(x, d), acc[2]);
  }
  for (int q = 0; q < 3; q++) sq[q] = _mm512_reduce_add_pd(_mm512_add_pd(acc[q][0], acc[q][1]));
  int ok = !out;
  for (; i < n; i++) ok &= at_screen_add(v[i], sq);
  return ok;
}

// 16 vectors as a 16 × 16 block, transposed in place: r[i] lane l becomes r[l] lane i.
static inline void at_t16(__m512 *r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int h = 0; h < 2; h++) {
      const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
      r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  // Now r[4q + j] holds, in 128-bit quarter b, column 4b + j of rows 4q … 4q + 3.
  for (int i = 0; i < 8; i++) {
    const int a = (i / 4) * 8 + i % 4;
    t[i] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);
    t[i + 8] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xdd);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 4], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 4], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 8], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 8], t[i + 12], 0xdd);
  }
}

// What the screen needs of W [K, N], made in one read of W (slivers [s0, s1) of 32 columns): W in
// bf16 packed for AMX (amx_pack_b's layout), W transposed into wt [N, K] for the exact sums, and
// each column's norms as the bound uses them (u [3][Np]: ‖w_c‖, ‖δw_c‖, ‖w_c‖ + ‖δw_c‖, zero past N);
// ok = 0 when a value is out of the screen's range.
typedef struct {
  const float *w;
  int64_t K, N, Np, s0, s1;
  uint16_t *packed;
  float *wt, *u;
  int ok;
} at_prep_job;

// Norms from sums of squares, rounded up to f32 (the sums' own error is inside the bound's 1.01).
static void at_prep_norms(float *u, int64_t Np, int64_t c, double nn, double dd) {
  const double n = sqrt(nn), d = sqrt(dd);
  u[c] = (float)(n * (1 + 0x1p-20)), u[Np + c] = (float)(d * (1 + 0x1p-20));
  u[2 * Np + c] = (float)((n + d) * (1 + 0x1p-20));
}

static void *at_prep_task(void *p) {
  at_prep_job *j = p;
  const int64_t K = j->K, N = j->N, Kp = amx_kp(K), full = N / 32;
  __mmask16 out = 0;
  int ok = 1;
  for (int64_t s = j->s0; s < j->s1; s++) {
    uint16_t *dst = j->packed + s * Kp * 32;
    if (s >= full) {
      // The last, partial sliver: element by element.
      amx_pack_b(j->w, 0, N, K, N, s, dst);
      for (int64_t c = s * 32; c < N; c++) {
        double sq[3] = {0, 0, 0};
        for (int64_t k = 0; k < K; k++) {
          const float v = j->w[k * N + c];
          ok &= at_screen_add(v, sq), j->wt[c * K + k] = v;
        }
        at_prep_norms(j->u, j->Np, c, sq[0], sq[1]);
      }
      continue;
    }
    for (int h = 0; h < 2; h++) {
      const int64_t c0 = s * 32 + h * 16;
      // Per column, in f32 in K's order: Σw² and Σ(δw)² (values within 2⁵⁰: nothing overflows; each
      // sum within K·2⁻²⁴ of its value, which the bound's 1.01 absorbs, K ≤ 2¹⁴).
      __m512 n0 = _mm512_setzero_ps(), n1 = n0;
      for (int64_t k0 = 0; k0 < Kp; k0 += 16) {
        __m512 r[16];
        for (int l = 0; l < 16; l++)
          r[l] = k0 + l < K ? _mm512_loadu_ps(j->w + (k0 + l) * N + c0) : _mm512_setzero_ps();
        for (int l = 0; l < 16; l += 2) {
          const __m512 e0 = amx_resid16(r[l]), e1 = amx_resid16(r[l + 1]);
          out |= at_screen_out(r[l]) | at_screen_out(r[l + 1]);
          n0 = _mm512_fmadd_ps(r[l + 1], r[l + 1], _mm512_fmadd_ps(r[l], r[l], n0));
          n1 = _mm512_fmadd_ps(e1, e1, _mm512_fmadd_ps(e0, e0, n1));
          amx_pack_pair(r[l], r[l + 1], dst + h * Kp * 16 + ((k0 + l) >> 1) * 32);
        }
        if (k0 >= K) continue;
        at_t16(r);
        const __mmask16 m = at_lanes_below(K - k0);
        for (int l = 0; l < 16; l++) _mm512_mask_storeu_ps(j->wt + (c0 + l) * K + k0, m, r[l]);
      }
      float a0[16], a1[16];
      _mm512_storeu_ps(a0, n0), _mm512_storeu_ps(a1, n1);
      for (int l = 0; l < 16; l++) at_prep_norms(j->u, j->Np, c0 + l, a0[l], a1[l]);
    }
  }
  j->ok = ok && !out;
  return 0;
}

// at_prep_task over nt threads; u zeroed past N. 0 when a value is out of the screen's range.
static int at_screen_prep(const float *w, int64_t K, int64_t N, int nt, uint16_t *packed, float *wt,
                          float *u, int64_t Np) {
  const int64_t slivers = (N + 31) / 32;
  if (nt > slivers) nt = (int)slivers;
  memset(u, 0, sizeof(float) * (size_t)(3 * Np));
  at_prep_job jobs[MAX_THREADS];
  for (int t = 0; t < nt; t++)
    jobs[t] = (at_prep_job){w, K, N, Np, slivers * t / nt, slivers * (t + 1) / nt, packed, wt, u, 1};
  run_tasks(at_prep_task, jobs, sizeof(at_prep_job), nt);
  int ok = 1;
  for (int t = 0; t < nt; t++) ok &= jobs[t].ok;
  return ok;
}

// The bound for row r (norms nx = ‖x‖, dx = ‖δx‖, tx = ‖x̃‖) at a column with coefficients
// (u0, u1, u2) = (‖w_c‖, ‖δ²w_c‖, ‖w_c‖ + 2‖δw_c‖): ε = a·u0 + b·u1 + g·u2 + d0 with
// a = 1.01·‖δx‖, b = 1.01·‖x̃‖, g = 1.01·(3K·2⁻²⁴ + 2⁻²¹)·(‖x‖ + ‖δx‖), d0 = 1.01·2⁻²¹·max|b| + 2⁻¹⁰⁰.
typedef struct {
  double a, b, g;
} at_row_eps;

static at_row_eps at_screen_row(const double *sq, int64_t K) {
  const double nx = sqrt(sq[0]), dx = sqrt(sq[1]), tx = sqrt(sq[2]);
  return (at_row_eps){1.01 * dx, 1.01 * tx, 1.01 * (3.0 * (double)K * 0x1p-24 + 0x1p-21) * (nx + dx)};
}

// Exact sums at the block's candidates, 16 (row, column) pairs of one row a group: b + Σ over K's
// chunks (at_chunk_end) of a partial sum from zero by one FMA per term in order — at_tile's
// arithmetic. Each lane reads its column of W from the transposed copy (a contiguous row of wt),
// 16 terms at a time, turned into 16 vectors of one term each by a register transpose.
typedef struct {
  int32_t *cols;  // [groups][16] columns (lanes past `live` repeat a live one)
  int32_t *row;   // each group's row
  __mmask16 *live;
  float *sum;  // [groups][16]
} at_exact_groups;

// How far ahead (terms) each lane's row of wt is fetched: the rows are in L3, 16 streams a group.
#define AT_EXACT_AHEAD 256

static void at_exact(const at_job *j, const at_exact_groups *G, int64_t groups) {
  const int64_t K = j->K;
  const float *wt = j->wt;
  for (int64_t g = 0; g < groups; g++) {
    const int32_t *cols = G->cols + 16 * g;
    const float *x = j->x + (int64_t)G->row[g] * K;
    __m512 sum = _mm512_i32gather_ps(_mm512_load_si512(cols), j->bias, 4), acc = _mm512_setzero_ps();
    int64_t le = at_chunk_end(0, K);
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const int64_t ahead = k0 + AT_EXACT_AHEAD;
      if (ahead < K) {
        for (int l = 0; l < 16; l++) _mm_prefetch((const char *)(wt + (int64_t)cols[l] * K + ahead), _MM_HINT_T0);
      } else if (g + 1 < groups) {
        for (int l = 0; l < 16; l++)
          _mm_prefetch((const char *)(wt + (int64_t)cols[16 + l] * K + ahead - K), _MM_HINT_T0);
      }
      const int64_t n = K - k0 < 16 ? K - k0 : 16;
      const __mmask16 m = at_lanes_below(n);
      __m512 r[16];
      for (int l = 0; l < 16; l++) r[l] = _mm512_maskz_loadu_ps(m, wt + (int64_t)cols[l] * K + k0);
      at_t16(r);
      for (int64_t q = 0; q < n; q++) {
        acc = _mm512_fmadd_ps(_mm512_set1_ps(x[k0 + q]), r[q], acc);
        if (k0 + q + 1 == le) sum = _mm512_add_ps(sum, acc), acc = _mm512_setzero_ps(), le = at_chunk_end(le, K);
      }
    }
    _mm512_store_ps(G->sum + 16 * g, sum);
  }
}

// Row r's exact k best from all N columns (a row the screen could not vouch for): every column's
// exact sum, 16 at a time, offered to a one-row list. -1 done, -2 out of memory, -4 a NaN.
static int at_full_row(const at_job *j, int64_t r) {
  const int64_t N = j->N, groups = (N + 15) / 16;
  at_exact_groups F = {at_alloc(sizeof(int32_t) * (size_t)(16 * groups)),
                       at_alloc(sizeof(int32_t) * (size_t)groups), at_alloc(sizeof(__mmask16) * (size_t)groups),
                       at_alloc(sizeof(float) * (size_t)(16 * groups + AT_NR))};
  at_lists L = at_lists_new(1, j->k);
  int status = F.cols && F.row && F.live && F.sum && at_lists_ok(&L) ? -1 : -2;
  if (status == -1) {
    for (int64_t g = 0; g < groups; g++) {
      for (int64_t l = 0; l < 16; l++) F.cols[16 * g + l] = (int32_t)(16 * g + l < N ? 16 * g + l : N - 1);
      F.row[g] = (int32_t)r, F.live[g] = at_lanes_below(N - 16 * g);
    }
    at_exact(j, &F, groups);
    at_lists_reset(&L, 1);
    for (int64_t c0 = 0; status == -1 && c0 < N; c0 += AT_NR)
      if (!at_offer(&L, 0, F.sum + c0, c0, N - c0)) status = -4;
    if (status == -1) at_lists_write(&L, r, r + 1, j->k, j->values, j->indices);
  }
  free(F.cols), free(F.row), free(F.live), free(F.sum), at_lists_free(&L);
  return status;
}

// Rounding modes of the outward-rounded bounds (at_screen, abt_bounds16).
#define AT_DOWN (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define AT_UP (_MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)

// The least f32 at or above d (d ≥ 0 and finite).
static inline float at_up_f32(double d) {
  const float f = (float)d;
  return (double)f < d ? nextafterf(f, INFINITY) : f;
}

// Rows [r0, r1)'s screened lists (list i is row r0 + i: the columns whose upper bound a + ε beat
// its threshold) into values/indices; -1 done, -2 out of memory, -4 a NaN among the exact sums, -6
// more rows than the screen could vouch for (1 in 32; the few others are summed in full).
// E: each row's bound coefficients. G has room for the rows' lists.
//   A listed column's exact value lies in [lo, hi'] with hi' = h + 2⁻²²·|h| + 2⁻²⁰·ε and lo = h −
// 2.02·ε − 2⁻²²·|h| (h = fl(a + ε̂), ε̂ the f32 bound within 1.01 of ε); an unlisted one (its h at
// most the list's threshold) lies below the threshold's hi' taken with the row's largest ε. L, a
// value at least k of the listed lo reach, is at most the exact k-th best, so the winners are among
// the listed with hi' ≥ L, provided the unlisted ones lie below L.
static int at_screen(const at_job *j, at_lists *L, int64_t r0, int64_t r1, const at_row_eps *E,
                     const at_exact_groups *G) {
  const int64_t k = j->k, Np = (j->N + 31) / 32 * 32;
  const float *u0 = j->ucol, *u1 = u0 + Np, *u2 = u1 + Np;
  double umax[3] = {0, 0, 0};
  for (int64_t c = 0; c < j->N; c++) {
    umax[0] = fmax(umax[0], u0[c]), umax[1] = fmax(umax[1], u1[c]), umax[2] = fmax(umax[2], u2[c]);
  }
  // Rows summed in full: at most one in 32 of a block (amx_block_rows: at most 512 rows).
  int64_t groups = 0, nfull = 0, full[32];
  const int64_t most = (r1 - r0 + 31) / 32;
  float lo[2 * AT_SCREEN_MOST + AT_NR + 16], hi[2 * AT_SCREEN_MOST + AT_NR + 16];
  const __m512 ed = _mm512_set1_ps(at_up_f32(j->d0));
  for (int64_t r = r0; r < r1; r++) {
    const float *V = L->vals + (r - r0) * L->width;
    const int32_t *C = L->cols + (r - r0) * L->width;
    const int64_t n = L->count[r - r0];
    const at_row_eps e = E[r - r0];
    // Each listed column's ε (its coefficients and every operation rounded up: at least the exact
    // one) and [lo, hi] as below with 2.03 for 2.02, each operation rounded outwards, 16 at a time.
    const __m512 ea = _mm512_set1_ps(at_up_f32(e.a)), eb = _mm512_set1_ps(at_up_f32(e.b));
    const __m512 eg = _mm512_set1_ps(at_up_f32(e.g));
    for (int64_t q = 0; q < n; q += 16) {
      const __mmask16 m = at_lanes_below(n - q);
      const __m512i c = _mm512_maskz_loadu_epi32(m, C + q);
      const __m512 h = _mm512_maskz_loadu_ps(m, V + q), z = _mm512_setzero_ps();
      const __m512 g0 = _mm512_mask_i32gather_ps(z, m, c, u0, 4), g1 = _mm512_mask_i32gather_ps(z, m, c, u1, 4);
      const __m512 g2 = _mm512_mask_i32gather_ps(z, m, c, u2, 4);
      const __m512 eps = _mm512_fmadd_round_ps(
          ea, g0, _mm512_fmadd_round_ps(eb, g1, _mm512_fmadd_round_ps(eg, g2, ed, AT_UP), AT_UP), AT_UP);
      const __m512 rel = _mm512_mul_round_ps(_mm512_set1_ps(0x1p-22f), _mm512_abs_ps(h), AT_UP);
      _mm512_storeu_ps(lo + q, _mm512_sub_round_ps(h, _mm512_fmadd_round_ps(_mm512_set1_ps(2.03f), eps, rel, AT_UP),
                                                   AT_DOWN));
      _mm512_storeu_ps(hi + q, _mm512_add_round_ps(h, _mm512_fmadd_round_ps(_mm512_set1_ps(0x1p-20f), eps, rel, AT_UP),
                                                   AT_UP));
    }
    const double Lk = at_unord(at_mth_ord(lo, n, k));
    // The threshold is NaN until the list is first cut: then every column is listed.
    const double hk = L->thr[r - r0];
    const double emax = e.a * umax[0] + e.b * umax[1] + e.g * umax[2] + j->d0;
    if (hk == hk && hk + 0x1p-22 * fabs(hk) + 0x1p-20 * emax >= Lk) {
      if (nfull == most) return -6;
      full[nfull++] = r;
      continue;
    }
    int64_t m = 0;
    for (int64_t q = 0; q < n; q++) {
      if (hi[q] < Lk) continue;
      G->cols[16 * groups + m % 16] = C[q];
      if (++m % 16 == 0) G->row[groups] = (int32_t)r, G->live[groups] = 0xffff, groups++;
    }
    if (m % 16) {
      for (int64_t e2 = m % 16; e2 < 16; e2++) G->cols[16 * groups + e2] = G->cols[16 * groups];
      G->row[groups] = (int32_t)r, G->live[groups] = at_lanes_below(m % 16), groups++;
    }
  }
  at_exact(j, G, groups);
  // Each row's exact k best among its candidates (in column order, as the list was).
  float V[2 * AT_SCREEN_MOST + AT_NR];
  int32_t C[2 * AT_SCREEN_MOST + AT_NR];
  for (int64_t g = 0; g < groups;) {
    const int32_t r = G->row[g];
    int64_t n = 0;
    for (; g < groups && G->row[g] == r; g++) {
      const __m512 v = _mm512_load_ps(G->sum + 16 * g);
      if (_mm512_mask_cmp_ps_mask(G->live[g], v, v, _CMP_UNORD_Q)) return -4;
      _mm512_storeu_ps(V + n, _mm512_maskz_compress_ps(G->live[g], v));
      _mm512_storeu_si512(C + n, _mm512_maskz_compress_epi32(G->live[g], _mm512_load_si512(G->cols + 16 * g)));
      n += __builtin_popcount(G->live[g]);
    }
    at_best(V, C, n, k, j->values + r * k, j->indices + r * k);
  }
  for (int64_t f = 0; f < nfull; f++) {
    const int status = at_full_row(j, full[f]);
    if (status != -1) return status;
  }
  __atomic_fetch_add(&at_full_rows, nfull, __ATOMIC_RELAXED);
  return -1;
}

// The bf16 product on AMX: W packed in VNNI slivers (amx_pack_all) into `packed`, rows of x as bf16
// a block at a time; each 32 × 32 block of the product offered to its rows' lists as it is made.
static void *at_amx_task(void *p) {
  at_job *j = p;
  const int64_t K = j->K, N = j->N, k = j->k, R = j->block, Kp = amx_kp(K);
  const int64_t slivers = (N + 31) / 32;
  const uint16_t *packed = (const uint16_t *)(const void *)j->packed;
  amx_configure();
  uint16_t *A = at_alloc(sizeof(uint16_t) * (size_t)((R + 31) / 32 * 32 * Kp));
  float *tile = at_alloc(sizeof(float) * 32 * 32);
  at_lists L = at_lists_new(R, j->keep ? j->keep : k);
  at_row_eps *E = j->keep ? malloc(sizeof(at_row_eps) * (size_t)R) : 0;
  // The screen's exact sums: at most a list's width (2·keep + one offer) in groups of 16, a row.
  const int64_t most = j->keep ? R * ((2 * j->keep + AT_NR + 15) / 16) : 0;
  at_exact_groups G = {at_alloc(sizeof(int32_t) * (size_t)(16 * most)), at_alloc(sizeof(int32_t) * (size_t)most),
                       at_alloc(sizeof(__mmask16) * (size_t)most), at_alloc(sizeof(float) * (size_t)(16 * most))};
  j->status = -1;
  if (!A || (j->keep && (!E || !G.cols || !G.row || !G.live || !G.sum)) || !tile ||
      !at_lists_ok(&L)) {
    j->status = -2;
    goto done;
  }
  for (int64_t r0 = j->s0; r0 < j->s1; r0 += R) {
    const int64_t r1 = r0 + R < j->s1 ? r0 + R : j->s1, rows = r1 - r0;
    // The screen's bound for each row first: a row out of its range declines the call at once.
    for (int64_t i = 0; j->keep && i < rows; i++) {
      double sq[3];
      if (!at_screen_norms(j->x + (r0 + i) * K, K, sq)) {
        j->status = -6;
        goto done;
      }
      E[i] = at_screen_row(sq, K);
    }
    amx_pack_a(j->x, 0, K, j->M, K, r0, rows, A);
    at_lists_reset(&L, rows);
    for (int64_t js = 0; js < slivers; js++) {
      const int64_t c0 = js * 32;
      const __m512 b0 = _mm512_load_ps(j->bias + c0), b1 = _mm512_load_ps(j->bias + c0 + 16);
      for (int64_t i0 = 0; i0 < rows; i0 += 32) {
        amx_block(A + i0 * Kp, packed + js * Kp * 32, Kp, tile);
        for (int64_t i = i0; i < rows && i < i0 + 32; i++) {
          float *t = tile + (i - i0) * 32;
          __m512 v0 = _mm512_add_ps(_mm512_load_ps(t), b0), v1 = _mm512_add_ps(_mm512_load_ps(t + 16), b1);
          if (j->keep) {
            // Ranked by the upper bound a + ε̂ (ε̂: the bound in f32, coefficients rounded up).
            const at_row_eps e = E[i];
            const __m512 ea = _mm512_set1_ps((float)(e.a * (1 + 0x1p-20)));
            const __m512 eb = _mm512_set1_ps((float)(e.b * (1 + 0x1p-20)));
            const __m512 eg = _mm512_set1_ps((float)(e.g * (1 + 0x1p-20)));
            const __m512 ed = _mm512_set1_ps((float)(j->d0 * (1 + 0x1p-20)));
            const float *u0 = j->ucol + c0, *u1 = u0 + slivers * 32, *u2 = u1 + slivers * 32;
            for (int h = 0; h < 2; h++) {
              const __m512 eps = _mm512_fmadd_ps(
                  ea, _mm512_load_ps(u0 + 16 * h),
                  _mm512_fmadd_ps(eb, _mm512_load_ps(u1 + 16 * h), _mm512_fmadd_ps(eg, _mm512_load_ps(u2 + 16 * h), ed)));
              if (h == 0) v0 = _mm512_add_ps(v0, eps);
              else v1 = _mm512_add_ps(v1, eps);
            }
          }
          _mm512_store_ps(t, v0);
          _mm512_store_ps(t + 16, v1);
          if (!at_offer(&L, i, t, c0, N - c0)) {
            j->status = -4;
            goto done;
          }
        }
      }
    }
    if (!j->keep) {
      at_lists_write(&L, r0, r1, k, j->values, j->indices);
    } else if ((j->status = at_screen(j, &L, r0, r1, E, &G)) != -1) {
      goto done;
    }
  }
done:
  _tile_release();
  free(A), free(tile), free(E), at_lists_free(&L);
  free(G.cols), free(G.row), free(G.live), free(G.sum);
  return 0;
}
#endif

// Each thread's status: -2 before -6 before -4 before -1.
static int32_t at_status(const at_job *jobs, int nt) {
  int status = -1;
  for (int t = 0; t < nt; t++) {
    const int s = jobs[t].status;
    if (s == -2 || (s == -6 && status != -2) || (s == -4 && status == -1)) status = s;
  }
  return status;
}

#ifdef SC_AMX
// W already packed into `packed` (amx_pack_all; for the screen, at_screen_prep, with wt).
static int32_t at_amx(const float *x, int64_t M, int64_t K, const float *w, int32_t wT, int64_t N,
                      const float *bias, int64_t k, float *packed, float *values, int32_t *indices,
                      int nt, int64_t keep, const float *ucol, double d0, const float *wt) {
  const int64_t groups = (M + 31) / 32, R = amx_block_rows(amx_kp(K));
  if (nt > groups) nt = (int)groups;
  at_job jobs[MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    jobs[t] = (at_job){x, packed, bias, M, K,  N,  k,  amx_row_start(M, t, nt), amx_row_start(M, t + 1, nt),
                       R, values, indices, -1, w, wt, wT, keep, ucol, d0};
  }
  run_tasks(at_amx_task, jobs, sizeof(at_job), nt);
  return at_status(jobs, nt);
}
#endif

#ifdef SC_AMX
// ---- The batch's `total` largest through the same screen --------------------------------------
// BatchTopK keeps the `total` largest entries of the whole product x·W + b, ranked as sc_topk_f32
// ranks the flattened [M, N] product (larger first, ties to the lower flat index), with the f32
// sums' bits (at_exact's, the f32 GEMM's); the crosscoder ranks them by fl(e·s_c) instead, for a
// column scale s ≥ 0 (its f·‖W_dec‖), which scales the bounds below. The screen's bound holds
// entry by entry, so one AMX pass keeps, per thread, the entries whose upper bound can still reach
// the batch's cut: a thread that holds `total` entries of lower bound ≥ τ knows the batch's
// `total`-th largest lower bound L is ≥ τ, and drops every entry whose upper bound hi' is below τ
// (cut at 1.5·total entries and when its list fills, in at_screen's double arithmetic). The
// threads also prove a cut together, as a thread alone sees only its share of the rows: each
// publishes the m-th largest lower bound it holds, m = ⌈total/nt⌉, and the least published bound
// has at least nt·m ≥ total entries at or above it (a thread never drops those m: its own cut
// never passes what it published). The lists joined give L; the entries with hi' ≥ L hold every
// winner (an exact value e ≤ hi' < L ≤ the total-th best cannot place, ties included); their exact
// sums (at_exact), in flat order, are ranked by abt_best. The [M, N] product is never written: on
// AMX at d 512, F 8192, batch 2048, k 32 the selection takes ~28 ms against ~61 ms for the f32 GEMM
// and top-k over its 16.8 M entries.

// The total best of n entries (flat indices `at`, ascending) by `key` into values (their `v`) and
// indices, ranked as sc_topk_f32 ranks keys (larger first, −0 as +0, ties to the lower index; no
// NaN here): the complements of the keys' order keys sorted by a stable LSD radix sort (8 bits a
// pass), each carrying its position, so that equal keys keep their ascending positions. a, b: room
// for n each.
static void abt_best(const float *key, const float *v, const int32_t *at, int64_t n, int64_t total, float *values,
                     int32_t *indices, uint64_t *a, uint64_t *b) {
  for (int64_t q = 0; q < n; q += 16) {
    const __mmask16 live = at_lanes_below(n - q);
    uint32_t o[16];
    _mm512_storeu_si512(o, at_ord16(_mm512_maskz_loadu_ps(live, key + q)));
    for (int64_t l = 0; l < 16 && q + l < n; l++) a[q + l] = (uint64_t)~o[l] << 32 | (uint32_t)(q + l);
  }
  for (int shift = 32; shift < 64; shift += 8) {
    int64_t count[257] = {0};
    for (int64_t q = 0; q < n; q++) count[(a[q] >> shift & 0xff) + 1]++;
    for (int d = 0; d < 256; d++) count[d + 1] += count[d];
    for (int64_t q = 0; q < n; q++) b[count[a[q] >> shift & 0xff]++] = a[q];
    uint64_t *t = a;
    a = b, b = t;
  }
  for (int64_t q = 0; q < total; q++) {
    const uint32_t i = (uint32_t)a[q];
    values[q] = v[i], indices[q] = at[i];
  }
}

// The largest float at most l (l finite or -inf).
static inline float abt_down(double l) {
  float f = (float)l;
  if ((double)f <= l) return f;
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u = f > 0 ? u - 1 : f < 0 ? u + 1 : 0x80000001u;  // one step towards -inf (from ±0: -2⁻¹⁴⁹)
  memcpy(&f, &u, sizeof f);
  return f;
}

// The values' order keys, in place (V becomes n uint32 keys).
static const uint32_t *abt_ords(float *V, int64_t n) {
  uint32_t *o = (uint32_t *)(void *)V;
  for (int64_t q = 0; q < n; q += 16) {
    const __mmask16 live = at_lanes_below(n - q);
    _mm512_mask_storeu_epi32(o + q, live, at_ord16(_mm512_maskz_loadu_ps(live, V + q)));
  }
  return o;
}

// at_mth_ord for lists of any length, over order keys (abt_ords).
static uint32_t abt_mth(const uint32_t *o, int64_t n, int64_t m) {
  uint32_t lo = UINT32_MAX, hi = 0;
  for (int64_t q = 0; q < n; q++) lo = o[q] < lo ? o[q] : lo, hi = o[q] > hi ? o[q] : hi;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2 + 1;
    const __m512i mv = _mm512_set1_epi32((int)mid);
    int64_t c = 0, q = 0;
    for (; q + 16 <= n; q += 16) c += __builtin_popcount(_mm512_cmpge_epu32_mask(_mm512_loadu_si512(o + q), mv));
    for (; q < n; q++) c += o[q] >= mid;
    if (c == m) return mid;
    lo = c > m ? mid : lo;
    hi = c > m ? hi : mid - 1;
  }
  return lo;
}

// A thread's kept entries: bounds [lo, hi] of each one's ranking key (its exact value e, or
// fl(e·s_c) with a column scale s), f32 rounded outwards, with its row and column.
typedef struct {
  int64_t n, cap;
  float *lo, *hi;
  float *v;     // bf16: each entry's value (lo = hi = its key); null for the f32 screen
  int64_t *rc;  // row << 32 | column
  double tau;   // the cut: -inf until the list first holds `total`
  float tau_f;  // τ rounded down to f32: a key bound below it is below τ
  int64_t kept;   // entries after the last cut
  double *share;  // the threads' published m-th largest lower bounds (null: one list alone)
  int nt, me;     // how many publish, and which one is this list's
} abt_list;

static void abt_raise(abt_list *L, double t) {
  if (t > L->tau) L->tau = t, L->tau_f = abt_down(t);
}

// The cut the threads prove together: the least of their published bounds (-inf until all have one).
static double abt_shared(const abt_list *L) {
  double t = INFINITY;
  for (int q = 0; q < L->nt; q++) {
    double v;
    __atomic_load(&L->share[q], &v, __ATOMIC_RELAXED);
    t = v < t ? v : t;
  }
  return t;
}

// The list's cut raised to the total-th largest lower bound it holds (when it holds that many) and
// to the threads' shared one (this list's m-th published first), and its entries cut to those whose
// upper bound reaches it (a NaN stays: its exact sum declines the call), in order. scratch: room
// for n floats.
static void abt_cut(abt_list *L, int64_t total, float *scratch) {
  const int64_t m = L->share ? (total + L->nt - 1) / L->nt : total;
  if (L->n >= m) {
    memcpy(scratch, L->lo, sizeof(float) * (size_t)L->n);
    const uint32_t *o = abt_ords(scratch, L->n);
    if (L->n >= total) abt_raise(L, at_unord(abt_mth(o, L->n, total)));
    if (L->share) {
      // Only this thread writes its slot, and what it holds at or above the m-th never leaves.
      const double mine = at_unord(abt_mth(o, L->n, m));
      if (mine > L->share[L->me]) __atomic_store(&L->share[L->me], &mine, __ATOMIC_RELAXED);
      abt_raise(L, abt_shared(L));
    }
  }
  const __m512 tau = _mm512_set1_ps(L->tau_f);
  int64_t kept = 0;
  for (int64_t q = 0; q < L->n; q += 16) {
    const __mmask16 m = at_lanes_below(L->n - q);
    const __m512 lo = _mm512_maskz_loadu_ps(m, L->lo + q), hi = _mm512_maskz_loadu_ps(m, L->hi + q);
    const __mmask16 keep = m & ~_mm512_cmp_ps_mask(hi, tau, _CMP_LT_OQ);
    _mm512_mask_compressstoreu_ps(L->lo + kept, keep, lo);
    _mm512_mask_compressstoreu_ps(L->hi + kept, keep, hi);
    if (L->v) _mm512_mask_compressstoreu_ps(L->v + kept, keep, _mm512_maskz_loadu_ps(m, L->v + q));
    _mm512_mask_compressstoreu_epi64(L->rc + kept, (__mmask8)keep, _mm512_loadu_epi64(L->rc + q));
    _mm512_mask_compressstoreu_epi64(L->rc + kept + __builtin_popcount(keep & 0xff), (__mmask8)(keep >> 8),
                                     _mm512_maskz_loadu_epi64((__mmask8)(m >> 8), L->rc + q + 8));
    kept += __builtin_popcount(keep);
  }
  L->n = L->kept = kept;
}

// Sixteen entries' key bounds from their upper bounds h = fl(a + ε̂) and ε̂ (at least ε: its
// coefficients were rounded up by more than its three roundings): at_screen's [h − 2.02·ε −
// 2⁻²²·|h|, h + 2⁻²²·|h| + 2⁻²⁰·ε] (only wider with ε̂, and with 2.03 for 2.02), times the scale
// s ≥ 0 when there is one, in f32 with every operation rounded outwards, so the interval only
// widens (a wider one keeps more candidates, never a wrong one).
static inline void abt_bounds16(__m512 h, __m512 e, const float *s, __m512 *lo, __m512 *hi) {
  const __m512 rel = _mm512_mul_round_ps(_mm512_set1_ps(0x1p-22f), _mm512_abs_ps(h), AT_UP);
  __m512 l = _mm512_sub_round_ps(h, _mm512_fmadd_round_ps(_mm512_set1_ps(2.03f), e, rel, AT_UP), AT_DOWN);
  __m512 u = _mm512_add_round_ps(h, _mm512_fmadd_round_ps(_mm512_set1_ps(0x1p-20f), e, rel, AT_UP), AT_UP);
  if (s) {
    const __m512 sv = _mm512_load_ps(s);
    l = _mm512_mul_round_ps(l, sv, AT_DOWN), u = _mm512_mul_round_ps(u, sv, AT_UP);
  }
  *lo = l, *hi = u;
}

typedef struct {
  at_job at;  // x, packed, bias, M, K, N, rows [s0, s1), block, ucol, d0
  const at_row_eps *E;  // per row of the whole product
  const float *scale;   // the ranking's column scale (zero past N), or null
  int bf16;             // the product itself from bf16 operands: keys exact, no screen, no E
  int64_t total;
  abt_list L;
  float *scratch;  // for abt_cut: cap
  uint16_t *A;     // x's rows in bf16, a block at a time
  float *tile;     // 32 × 32 sums
  int status;
} abt_job;

// bf16: one row's 32 values from c0 (the tile's sums plus the bias: the bf16 GEMM's bits), those
// whose key (the value, or fl(value·s_c)) reaches the thread's cut appended with lo = hi = key. 0
// when the status is set: a NaN key (-4: the caller composes, as topk ranks NaN first) or a list
// full of ties at the cut (-6).
static int abt_offer_bf16(abt_job *jb, const float *t, __m512 b0, __m512 b1, int64_t r, int64_t c0) {
  abt_list *L = &jb->L;
  const int64_t N = jb->at.N;
  for (int hv = 0; hv < 2; hv++) {
    const __mmask16 lanes = at_lanes_below(N - c0 - 16 * hv);
    const __m512 a = _mm512_add_ps(_mm512_load_ps(t + 16 * hv), hv ? b1 : b0);
    const __m512 key = jb->scale ? _mm512_mul_ps(a, _mm512_load_ps(jb->scale + c0 + 16 * hv)) : a;
    if (_mm512_cmp_ps_mask(key, key, _CMP_UNORD_Q) & lanes) return jb->status = -4, 0;
    const __mmask16 keep = lanes & ~_mm512_cmp_ps_mask(key, _mm512_set1_ps(L->tau_f), _CMP_LT_OQ);
    if (!keep) continue;
    if (L->n + 16 > L->cap) {
      abt_cut(L, jb->total, jb->scratch);
      if (L->n > L->cap - L->cap / 4) return jb->status = -6, 0;
    }
    _mm512_mask_compressstoreu_ps(L->lo + L->n, keep, key);
    _mm512_mask_compressstoreu_ps(L->hi + L->n, keep, key);
    _mm512_mask_compressstoreu_ps(L->v + L->n, keep, a);
    const int64_t rc0 = r << 32 | (c0 + 16 * hv);
    const __m512i lanes8 = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    _mm512_mask_compressstoreu_epi64(L->rc + L->n, (__mmask8)keep, _mm512_add_epi64(_mm512_set1_epi64(rc0), lanes8));
    _mm512_mask_compressstoreu_epi64(L->rc + L->n + __builtin_popcount(keep & 0xff), (__mmask8)(keep >> 8),
                                     _mm512_add_epi64(_mm512_set1_epi64(rc0 + 8), lanes8));
    L->n += __builtin_popcount(keep);
  }
  return 1;
}

static void *abt_amx_task(void *p) {
  abt_job *jb = p;
  const at_job *j = &jb->at;
  const int64_t K = j->K, N = j->N, R = j->block, Kp = amx_kp(K), slivers = (N + 31) / 32;
  const int64_t total15 = jb->total + jb->total / 2;
  const uint16_t *packed = (const uint16_t *)(const void *)j->packed;
  abt_list *L = &jb->L;
  uint16_t *A = jb->A;
  float *tile = jb->tile;
  amx_configure();
  jb->status = -1;
  for (int64_t r0 = j->s0; jb->status == -1 && r0 < j->s1; r0 += R) {
    const int64_t r1 = r0 + R < j->s1 ? r0 + R : j->s1, rows = r1 - r0;
    amx_pack_a(j->x, 0, K, j->M, K, r0, rows, A);
    for (int64_t js = 0; jb->status == -1 && js < slivers; js++) {
      const int64_t c0 = js * 32;
      if (L->share) abt_raise(L, abt_shared(L));  // (another thread's cut may have raised it)
      const __m512 b0 = _mm512_load_ps(j->bias + c0), b1 = _mm512_load_ps(j->bias + c0 + 16);
      const float *u0 = 0, *u1 = 0, *u2 = 0;
      if (!jb->bf16) u0 = j->ucol + c0, u1 = u0 + slivers * 32, u2 = u1 + slivers * 32;
      for (int64_t i0 = 0; jb->status == -1 && i0 < rows; i0 += 32) {
        amx_block(A + i0 * Kp, packed + js * Kp * 32, Kp, tile);
        for (int64_t i = i0; jb->bf16 && i < rows && i < i0 + 32; i++)
          if (!abt_offer_bf16(jb, tile + (i - i0) * 32, b0, b1, r0 + i, c0)) break;
        for (int64_t i = i0; !jb->bf16 && i < rows && i < i0 + 32; i++) {
          const at_row_eps e = jb->E[r0 + i];
          const __m512 ea = _mm512_set1_ps((float)(e.a * (1 + 0x1p-20)));
          const __m512 eb = _mm512_set1_ps((float)(e.b * (1 + 0x1p-20)));
          const __m512 eg = _mm512_set1_ps((float)(e.g * (1 + 0x1p-20)));
          const __m512 ed = _mm512_set1_ps((float)(j->d0 * (1 + 0x1p-20)));
          const __m512 tau = _mm512_set1_ps(L->tau_f);
          for (int hv = 0; hv < 2; hv++) {
            const __m512 eps = _mm512_fmadd_ps(
                ea, _mm512_load_ps(u0 + 16 * hv),
                _mm512_fmadd_ps(eb, _mm512_load_ps(u1 + 16 * hv), _mm512_fmadd_ps(eg, _mm512_load_ps(u2 + 16 * hv), ed)));
            const __m512 a = _mm512_add_ps(_mm512_load_ps(tile + (i - i0) * 32 + 16 * hv), hv ? b1 : b0);
            const __m512 h = _mm512_add_ps(a, eps);
            // An upper bound of the key's bound in f32 (twice its terms: more than this sum's
            // roundings; scaled, widened by 2⁻²² for the product's), so a lane below τ (rounded
            // down) is one abt_cut would drop too. NaN lanes are kept.
            __m512 up = _mm512_add_ps(
                h, _mm512_fmadd_ps(_mm512_abs_ps(h), _mm512_set1_ps(0x1p-21f), _mm512_mul_ps(eps, _mm512_set1_ps(0x1p-19f))));
            if (jb->scale) {
              up = _mm512_mul_ps(up, _mm512_load_ps(jb->scale + c0 + 16 * hv));
              up = _mm512_fmadd_ps(_mm512_abs_ps(up), _mm512_set1_ps(0x1p-22f), up);
            }
            const __mmask16 keep = at_lanes_below(N - c0 - 16 * hv) & ~_mm512_cmp_ps_mask(up, tau, _CMP_LT_OQ);
            if (!keep) continue;
            // Cut at 1.5·total (and a quarter of total since the last cut), long before the list
            // fills: the raised τ keeps later entries out (half as many stored on the bench's
            // shape). Too many near the cut is judged only on a full list.
            const int full = L->n + 16 > L->cap;
            if (full || (L->n >= total15 && L->n >= L->kept + jb->total / 4)) {
              abt_cut(L, jb->total, jb->scratch);
              if (full && L->n > L->cap - L->cap / 4) {  // too many near the cut to be worth it
                jb->status = -6;
                break;
              }
            }
            __m512 lo, hi;
            abt_bounds16(h, eps, jb->scale ? jb->scale + c0 + 16 * hv : 0, &lo, &hi);
            _mm512_mask_compressstoreu_ps(L->lo + L->n, keep, lo);
            _mm512_mask_compressstoreu_ps(L->hi + L->n, keep, hi);
            const int64_t rc0 = (r0 + i) << 32 | (c0 + 16 * hv);
            const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
            _mm512_mask_compressstoreu_epi64(L->rc + L->n, (__mmask8)keep, _mm512_add_epi64(_mm512_set1_epi64(rc0), lanes));
            _mm512_mask_compressstoreu_epi64(L->rc + L->n + __builtin_popcount(keep & 0xff), (__mmask8)(keep >> 8),
                                             _mm512_add_epi64(_mm512_set1_epi64(rc0 + 8), lanes));
            L->n += __builtin_popcount(keep);
          }
          if (jb->status != -1) break;
        }
      }
    }
  }
  if (jb->status == -1) abt_cut(L, jb->total, jb->scratch);
  _tile_release();
  return 0;
}

typedef struct {
  const at_job *at;
  const at_exact_groups *G;
  int64_t g0, g1;
} abt_exact_job;

static void *abt_exact_task(void *p) {
  abt_exact_job *e = p;
  const at_exact_groups G = {e->G->cols + 16 * e->g0, e->G->row + e->g0, e->G->live + e->g0, e->G->sum + 16 * e->g0};
  at_exact(e->at, &G, e->g1 - e->g0);
  return 0;
}

// abt_run's arrays, a phase at a time, each phase carved from one block kept for the next call
// (reuse.h): sized by a counting pass of the same layout function, so the two cannot disagree.
#define ABT_CARVE(a, ptr, count) (((ptr) = reuse_carve(a, sizeof(*(ptr)) * (size_t)(count))) != 0)

// The AMX pass: the bias and bound terms, and each thread's list, cut scratch and tiles.
typedef struct {
  float *bias, *ucol, *sc;
  at_row_eps *E;
  abt_list L[MAX_THREADS];
  float *cut[MAX_THREADS], *tile[MAX_THREADS];
  uint16_t *A[MAX_THREADS];
} abt_pass_mem;

static int abt_pass_lay(reuse_arena *a, abt_pass_mem *m, int64_t M, int64_t K, int64_t N, int64_t cap, int bf16,
                        int scaled, int nt) {
  const int64_t Np = (N + AT_NR - 1) / AT_NR * AT_NR, Kp = amx_kp(K), R = amx_block_rows(Kp);
  int ok = ABT_CARVE(a, m->bias, Np);
  m->ucol = 0, m->sc = 0, m->E = 0;
  if (!bf16) ok &= ABT_CARVE(a, m->ucol, 3 * Np) & ABT_CARVE(a, m->E, M);
  if (scaled) ok &= ABT_CARVE(a, m->sc, Np);
  for (int t = 0; t < nt; t++) {
    abt_list *L = &m->L[t];
    *L = (abt_list){0, cap, 0, 0, 0, 0, -INFINITY, -INFINITY, 0, 0, 0, 0};
    ok &= ABT_CARVE(a, L->lo, cap) & ABT_CARVE(a, L->hi, cap) & ABT_CARVE(a, L->rc, cap);
    ok &= ABT_CARVE(a, m->cut[t], cap) & ABT_CARVE(a, m->A[t], (R + 31) / 32 * 32 * Kp);
    ok &= ABT_CARVE(a, m->tile[t], 32 * 32);
    if (bf16) ok &= ABT_CARVE(a, L->v, cap);
  }
  return ok;
}

// The threads' lists joined (n entries).
static int abt_join_lay(reuse_arena *a, abt_list *all, float **tmp, int64_t n, int bf16) {
  *all = (abt_list){0, n, 0, 0, 0, 0, -INFINITY, -INFINITY, 0, 0, 0, 0};
  int ok = ABT_CARVE(a, all->lo, n + 1) & ABT_CARVE(a, all->hi, n + 1) & ABT_CARVE(a, all->rc, n + 1);
  ok &= ABT_CARVE(a, *tmp, n + 1);
  if (bf16) ok &= ABT_CARVE(a, all->v, n + 1);
  return ok;
}

// The n candidates past the batch's cut: flat order, keys, values, ranking, and (f32) their exact
// sums in groups of up to 16 columns of one row.
typedef struct {
  int64_t *start;
  int32_t *at, *pos;
  float *sums, *keys;
  uint64_t *ra, *rb;
  at_exact_groups G;
} abt_rank_mem;

static int abt_rank_lay(reuse_arena *a, abt_rank_mem *m, int64_t n, int64_t M, int bf16) {
  int ok = ABT_CARVE(a, m->start, M + 1) & ABT_CARVE(a, m->at, n + 1) & ABT_CARVE(a, m->pos, n + 1);
  ok &= ABT_CARVE(a, m->sums, n + 1) & ABT_CARVE(a, m->keys, n + 1);
  ok &= ABT_CARVE(a, m->ra, n + 1) & ABT_CARVE(a, m->rb, n + 1);
  m->G = (at_exact_groups){0, 0, 0, 0};
  const int64_t most = n / 16 + M + 1;
  if (!bf16)
    ok &= ABT_CARVE(a, m->G.cols, 16 * most) & ABT_CARVE(a, m->G.row, most) & ABT_CARVE(a, m->G.live, most) &
          ABT_CARVE(a, m->G.sum, 16 * most);
  return ok;
}

// A phase's block: sized by the layout's counting pass, taken, carved; null when out of memory.
#define ABT_PHASE(lay, ...)                                                   \
  ({                                                                          \
    reuse_arena c_ = reuse_counting();                                        \
    lay(&c_, __VA_ARGS__);                                                    \
    void *b_ = reuse_take(reuse_counted(&c_));                                \
    reuse_arena r_ = reuse_over(b_, reuse_counted(&c_));                      \
    if (b_ && !lay(&r_, __VA_ARGS__)) reuse_give(b_), b_ = 0;                 \
    b_;                                                                       \
  })

// x [M, K] and W [K, N] contiguous, b [N], `scale` [N] (≥ 0, finite) or null; `scratch` as
// sc_affine_topk_f32's (the screen's W in bf16 and transposed). values/indices [total]: the batch's
// total best entries by key (e, or fl(e·scale_c)), their values e and flat indices (r·N + c), best
// first. -1 done, -2 out of memory, -4 a NaN among the candidates' sums, -6 an operand out of the
// screen's range or too many entries near the cut (the caller composes: the GEMM, then top-k).
// With `bf16` the product is the bf16 GEMM's (sc_gemm_bf16_f32 onto the bias: the same tiles, then
// one f32 addition), every key exact: no screen, no bounds, no second sum; any finite scale.
static int32_t abt_run(const float *x, int64_t M, int64_t K, const float *w, int64_t N, const float *b,
                       const float *scale, int64_t total, float *scratch, float *values, int32_t *indices, int nt,
                       int bf16) {
  const int64_t slivers = (N + AT_NR - 1) / AT_NR, Np = slivers * AT_NR, Kp = amx_kp(K);
  float *packed = (float *)(void *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63), *wt = packed + Kp * Np / 2;
  const int64_t groups32 = (M + 31) / 32, R = amx_block_rows(Kp), cap = 4 * total + 64;
  if (nt > groups32) nt = (int)groups32;
  abt_pass_mem pm;
  void *pass = ABT_PHASE(abt_pass_lay, &pm, M, K, N, cap, bf16, scale != 0, nt);
  int32_t status = pass ? -1 : -2;
  float *bias = pm.bias, *ucol = pm.ucol, *sc = pm.sc;
  at_row_eps *E = pm.E;
  double bmax = 0;
  for (int64_t c = 0; c < N; c++) bmax = fmax(bmax, fabs((double)b[c]));
  for (int64_t c = 0; status == -1 && scale && c < Np; c++) {
    sc[c] = c < N ? scale[c] : 0;
    // (a NaN, an infinity or a negative scale: the screen's bounds need s ≥ 0; bf16's keys are exact)
    if (!bf16 && !(sc[c] >= 0 && sc[c] <= 0x1p100f)) status = -6;
  }
  if (bf16 && status == -1) amx_pack_all(w, 0, N, K, N, (uint16_t *)(void *)packed, nt);
  if (!bf16 && status == -1 &&
      (!(bmax <= 0x1p50) || !at_screen_prep(w, K, N, nt, (uint16_t *)(void *)packed, wt, ucol, Np)))
    status = -6;
  for (int64_t r = 0; !bf16 && status == -1 && r < M; r++) {
    double sq[3];
    if (!at_screen_norms(x + r * K, K, sq)) status = -6;
    else E[r] = at_screen_row(sq, K);
  }
  abt_job jobs[MAX_THREADS];
  double share[MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    share[t] = -INFINITY;
    if (nt > 1) pm.L[t].share = share, pm.L[t].nt = nt, pm.L[t].me = t;
  }
  const double d0 = 1.01 * 0x1p-21 * bmax + 0x1p-100;
  if (status == -1) {
    for (int t = 0; t < nt; t++)
      jobs[t] = (abt_job){{x, packed, bias, M, K, N, total, amx_row_start(M, t, nt), amx_row_start(M, t + 1, nt), R,
                           0, 0, -1, w, wt, 0, 0, ucol, d0},
                          E, sc, bf16, total, pm.L[t], pm.cut[t], pm.A[t], pm.tile[t], -1};
    memcpy(bias, b, sizeof(float) * (size_t)N);
    memset(bias + N, 0, sizeof(float) * (size_t)(Np - N));
    run_tasks(abt_amx_task, jobs, sizeof(abt_job), nt);
    for (int t = 0; t < nt; t++) {
      const int s = jobs[t].status;
      if (s == -2 || (s != -1 && status == -1)) status = s;
    }
  }
  // The lists joined (threads own rows in order), the batch's cut L, and the entries that reach it.
  abt_list all;
  float *tmp;
  void *join = 0, *rank = 0;
  if (status == -1) {
    int64_t n = 0;
    for (int t = 0; t < nt; t++) n += jobs[t].L.n;
    join = ABT_PHASE(abt_join_lay, &all, &tmp, n, bf16);
    if (!join) status = -2;
  }
  if (status == -1) {
    for (int t = 0; t < nt; t++) {
      memcpy(all.lo + all.n, jobs[t].L.lo, sizeof(float) * (size_t)jobs[t].L.n);
      memcpy(all.hi + all.n, jobs[t].L.hi, sizeof(float) * (size_t)jobs[t].L.n);
      if (bf16) memcpy(all.v + all.n, jobs[t].L.v, sizeof(float) * (size_t)jobs[t].L.n);
      memcpy(all.rc + all.n, jobs[t].L.rc, sizeof(int64_t) * (size_t)jobs[t].L.n);
      all.n += jobs[t].L.n;
    }
    abt_cut(&all, total, tmp);
    if (all.n < total) status = -6;  // (cannot happen: every entry whose lo reaches L stays)
  }
  // The candidates in flat order: a stable counting sort by row (each row's columns came in order).
  abt_rank_mem rm;
  if (status == -1) {
    rank = ABT_PHASE(abt_rank_lay, &rm, all.n, M, bf16);
    if (!rank) status = -2;
  }
  if (status == -1) {
    memset(rm.start, 0, sizeof(int64_t) * (size_t)(M + 1));
    for (int64_t q = 0; q < all.n; q++) rm.start[(all.rc[q] >> 32) + 1]++;
    for (int64_t r = 0; r < M; r++) rm.start[r + 1] += rm.start[r];
    for (int64_t q = 0; q < all.n; q++) rm.at[rm.start[all.rc[q] >> 32]++] = (int32_t)q;
  }
  if (status == -1 && bf16) {
    // The keys are exact: rank them as they are.
    for (int64_t q = 0; q < all.n; q++) {
      const int64_t rc = all.rc[rm.at[q]];
      rm.pos[q] = (int32_t)((rc >> 32) * N + (rc & 0xffffffff)), rm.sums[q] = all.v[rm.at[q]];
      rm.keys[q] = all.lo[rm.at[q]];
    }
    abt_best(rm.keys, rm.sums, rm.pos, all.n, total, values, indices, rm.ra, rm.rb);
  } else if (status == -1) {
    // Their exact sums, in groups of up to 16 columns of one row (at_exact's unit).
    const at_exact_groups G = rm.G;
    int64_t groups = 0;
    for (int64_t q = 0; q < all.n;) {
      const int64_t r = all.rc[rm.at[q]] >> 32;
      int m = 0;
      for (; q < all.n && m < 16 && all.rc[rm.at[q]] >> 32 == r; q++, m++)
        G.cols[16 * groups + m] = (int32_t)(all.rc[rm.at[q]] & 0xffffffff);
      for (int e2 = m; e2 < 16; e2++) G.cols[16 * groups + e2] = G.cols[16 * groups];
      G.row[groups] = (int32_t)r, G.live[groups] = at_lanes_below(m), groups++;
    }
    abt_exact_job ej[MAX_THREADS];
    for (int t = 0; t < nt; t++) ej[t] = (abt_exact_job){&jobs[0].at, &G, groups * t / nt, groups * (t + 1) / nt};
    run_tasks(abt_exact_task, ej, sizeof(abt_exact_job), nt);
    int64_t m = 0;
    for (int64_t g = 0; g < groups; g++)
      for (int l = 0; l < 16; l++)
        if (G.live[g] >> l & 1) {
          const float v = G.sum[16 * g + l];
          const int32_t c = G.cols[16 * g + l];
          if (v != v) status = -4;
          // The key as the composition forms it: mul(pre, scale), one f32 rounding.
          rm.pos[m] = (int32_t)(G.row[g] * N + c), rm.sums[m] = v, rm.keys[m++] = sc ? v * sc[c] : v;
        }
    if (status == -1) abt_best(rm.keys, rm.sums, rm.pos, m, total, values, indices, rm.ra, rm.rb);
  }
  reuse_give(rank), reuse_give(join), reuse_give(pass);
  return status;
}

#endif

// x [M, K] contiguous; W [K, N] contiguous (or [N, K] when wT); b [N]; scratch: 3/2·⌈K/32⌉·32 ·
// ⌈N/32⌉·32 + 16 floats (W packed in f32; or, for the screen, W in bf16 and W transposed; from its
// first 64-byte boundary, so that tile loads and the transposed rows do not straddle cache lines).
// values/indices [M, k]: each row's k largest of x·W + b, best first. `bf16`: the product on AMX
// tiles from bf16-rounded operands (-5 where this build or the OS has no AMX).
int32_t sc_affine_topk_f32(const float *x, int64_t M, int64_t K, const float *w, int32_t wT, int64_t N,
                           const float *b, int64_t k, float *scratch, float *values, int32_t *indices,
                           int32_t bf16, int32_t threads) {
  if (k < 1 || k > N || M < 1 || K < 1) return -3;
  float *packed = (float *)(void *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  if (k > AT_MAX_K) return -5;
#ifdef SC_AMX
  if (bf16 && !amx_ready()) return -5;
#else
  if (bf16) return -5;
#endif
  const int64_t slivers = (N + AT_NR - 1) / AT_NR, rowSlivers = (M + AT_MR - 1) / AT_MR;
  float *bias = at_alloc(sizeof(float) * (size_t)(slivers * AT_NR));
  if (!bias) return -2;
  memcpy(bias, b, sizeof(float) * (size_t)N);
  memset(bias + N, 0, sizeof(float) * (size_t)(slivers * AT_NR - N));
  int nt = clamp_threads(threads);
#ifdef SC_AMX
  if (bf16) {
    amx_pack_all(w, wT, wT ? K : N, K, N, (uint16_t *)(void *)packed, nt);
    const int32_t status = at_amx(x, M, K, w, wT, N, bias, k, packed, values, indices, nt, 0, 0, 0, 0);
    free(bias);
    return status;
  }
  // f32 through the bf16 screen where AMX runs (at_screen); a row it cannot vouch for, or a NaN,
  // sends the call on to the f32 kernel below. SPARSECODER_TOPK_SCREEN=0 turns it off (A/B timing).
  if (!wT && at_screen_wanted(k, K, N) && amx_ready()) {
    const int64_t Np = slivers * AT_NR;
    float *ucol = at_alloc(sizeof(float) * (size_t)(3 * Np));
    double bmax = 0;
    for (int64_t c = 0; c < N; c++) bmax = fmax(bmax, fabs((double)b[c]));
    // The scratch: W in bf16 (Kp·Np / 2 floats' room), then W transposed (K·N floats).
    float *wt = packed + amx_kp(K) * Np / 2;
    if (ucol && bmax <= 0x1p50 && at_screen_prep(w, K, N, nt, (uint16_t *)(void *)packed, wt, ucol, Np)) {
      const double d0 = 1.01 * 0x1p-21 * bmax + 0x1p-100;
      const int32_t status =
          at_amx(x, M, K, w, wT, N, bias, k, packed, values, indices, nt, at_screen_keep(k), ucol, d0, wt);
      free(ucol), ucol = 0;
      if (status == -1) __atomic_fetch_add(&at_screened, 1, __ATOMIC_RELAXED);
      if (status == -1 || status == -2) {
        free(bias);
        return status;
      }
    }
    free(ucol);
  }
#endif
  at_pack_job pj[MAX_THREADS];
  const int np = nt < slivers ? nt : (int)slivers;
  for (int t = 0; t < np; t++)
    pj[t] = (at_pack_job){w, packed, K, N, slivers * t / np, slivers * (t + 1) / np, wT};
  run_tasks(at_pack_task, pj, sizeof(at_pack_job), np);
  // A block of rows (packed, ~1 MB) stays in L2 while all of W's slivers stream past it.
  int64_t per = (1 << 20) / (int64_t)(sizeof(float) * AT_MR * K);
  per = per < 1 ? 1 : per > 48 ? 48 : per;
  if (nt > rowSlivers) nt = (int)rowSlivers;
  at_job jobs[MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    const int64_t s0 = rowSlivers * t / nt, s1 = rowSlivers * (t + 1) / nt;
    const int64_t blocks = (s1 - s0 + per - 1) / per;
    const int64_t block = blocks > 0 ? (s1 - s0 + blocks - 1) / blocks : 1;
    jobs[t] = (at_job){x, packed, bias, M, K, N, k, s0, s1, block, values, indices, -1, w, 0, wT, 0, 0, 0};
  }
  run_tasks(at_task, jobs, sizeof(at_job), nt);
  free(bias);
  return at_status(jobs, nt);
}

#else

int32_t sc_affine_topk_f32(const float *x, int64_t M, int64_t K, const float *w, int32_t wT, int64_t N,
                           const float *b, int64_t k, float *packed, float *values, int32_t *indices,
                           int32_t bf16, int32_t threads) {
  (void)x, (void)M, (void)K, (void)w, (void)wT, (void)N, (void)b, (void)packed, (void)values;
  (void)indices, (void)bf16, (void)threads;
  return k < 1 || k > N ? -3 : -5;
}

#endif

// f64 has no fused kernel: the caller composes.
int32_t sc_affine_topk_f64(const double *x, int64_t M, int64_t K, const double *w, int32_t wT, int64_t N,
                           const double *b, int64_t k, double *packed, double *values, int32_t *indices,
                           int32_t bf16, int32_t threads) {
  (void)x, (void)M, (void)K, (void)w, (void)wT, (void)b, (void)packed, (void)values, (void)indices;
  (void)bf16, (void)threads;
  return k < 1 || k > N ? -3 : -5;
}

// The batch's `total` best of x·W + b, by value or value·scale_c (see abt_run); with `bf16` of the
// bf16 GEMM's product. -3 bad sizes, -5 not here (no AVX-512 or AMX, M·N ≥ 2³¹; for f32 the screen
// switched off or K > 2¹⁴): the caller composes.
int32_t sc_affine_batch_topk_f32(const float *x, int64_t M, int64_t K, const float *w, int64_t N, const float *b,
                                 const float *scale, int64_t total, float *scratch, float *values, int32_t *indices,
                                 int32_t bf16, int32_t threads) {
  if (M < 1 || K < 1 || N < 1 || total < 1 || total > M * N) return -3;
#if defined(__AVX512F__) && defined(SC_AMX)
  // (at_screen_wanted(1, …): K within the bound's range and SPARSECODER_TOPK_SCREEN not 0)
  if (M * N >= ((int64_t)1 << 31) || (!bf16 && !at_screen_wanted(1, K, N)) || !amx_ready()) return -5;
  return abt_run(x, M, K, w, N, b, scale, total, scratch, values, indices, clamp_threads(threads), bf16);
#else
  (void)x, (void)w, (void)b, (void)scale, (void)scratch, (void)values, (void)indices, (void)bf16, (void)threads;
  return -5;
#endif
}

// f64 has no fused kernel: the caller composes.
int32_t sc_affine_batch_topk_f64(const double *x, int64_t M, int64_t K, const double *w, int64_t N, const double *b,
                                 const double *scale, int64_t total, double *scratch, double *values, int32_t *indices,
                                 int32_t bf16, int32_t threads) {
  (void)x, (void)w, (void)b, (void)scale, (void)scratch, (void)values, (void)indices, (void)bf16, (void)threads;
  return M < 1 || K < 1 || N < 1 || total < 1 || total > M * N ? -3 : -5;
}
