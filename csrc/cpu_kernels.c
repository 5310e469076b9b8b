// Native kernels of the CPU backend, called through FFI (tensor/cpu/native.ts compiles this file
// on first use with the machine's C compiler and caches the library).
//
// Each kernel gives the same bits as its TypeScript twin in tensor/cpu/ (sparse.ts, kernels.ts,
// fused.ts): arithmetic is done in double exactly where JavaScript does it, in the same order,
// and the file is compiled with -ffp-contract=off so no multiply-add is fused behind our back.
// The one exception is the f32 sparse product (spmm), summed in f32 with explicit fused
// multiply-adds within a stated bound (see there).
// The TypeScript kernels stay the reference; these are the same loops where the compiler may use
// SIMD and there is no bounds check per element (indices are checked once, up front).
//
// Kernels that take `threads` split their work over that many POSIX threads (the first slice
// runs on the calling thread). Index errors are returned, never acted on: -1 means success,
// otherwise the position of the first bad entry, so the caller can raise a clear error.

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Hand-written AVX2/FMA paths (f32 sparse products, top-k's filter) where the compiler targets
// them (-march=native on a CPU that has them); portable C otherwise.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SC_AVX2 1
#endif

#include "threads.h"
#include "topk_key.h"
#include "sum_squares.h"

void sc_sum_squares_f32(const float *x, int64_t n, float *out, int32_t threads);
void sc_sum_squares_f64(const double *x, int64_t n, double *out, int32_t threads);

// Where slice t of nt over [0, n) starts: multiples of 16 elements, so slices share no cache line.
static int64_t slice_start(int64_t n, int t, int nt) { return t >= nt ? n : n * t / nt / 16 * 16; }

// ---- Sparse × dense: out[dst[i]] += vals[i] · dense[src[i]] --------------------------------
// The entries are visited grouped by output row, in their original order within a row (a stable
// counting sort), exactly as sparse.ts visits them; threads own disjoint ranges of output rows,
// and each output row is written whole by one call of ROW (no separate zeroing pass).
//
// f64 rows are sparse.ts's loop, bit for bit. f32 rows are summed in f32 registers, 64 columns at
// a time, one fused multiply-add (one rounding) per term in the same order: sparse.ts rounds each
// step twice (to double, then to f32), so the two differ only where that double rounding bites,
// and each output is within γ_n·Σ|w·s| of the exact sum (n its terms, γ_n = n·u/(1 − n·u),
// u = 2⁻²⁴): the bound of any sequential f32 sum, tested against f64 in tests/native.test.ts.
// Without AVX2 and FMA the f32 rows are the double loop (sparse.ts's bits).

#define SPMM_ROW_SCALAR(T)                                                                         \
  for (int64_t c = 0; c < d; c++) o[c] = 0;                                                        \
  for (int64_t q = q0; q < q1; q++) {                                                              \
    const int32_t i = order[q];                                                                    \
    const double w = vals[i];                                                                      \
    if (w == 0) continue;                                                                          \
    const T *s = dense + src[i] * d;                                                               \
    for (int64_t c = 0; c < d; c++) o[c] = (T)((double)o[c] + w * (double)s[c]);                   \
  }

static inline void spmm_row_f64(double *o, const int32_t *order, int64_t q0, int64_t q1,
                                const int32_t *src, const double *vals, const double *dense,
                                int64_t d) {
  SPMM_ROW_SCALAR(double)
}

static inline void spmm_row_f32(float *o, const int32_t *order, int64_t q0, int64_t q1,
                                const int32_t *src, const float *vals, const float *dense,
                                int64_t d) {
#ifdef SC_AVX2
  int64_t c = 0;
  for (; c + 64 <= d; c += 64) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t q = q0; q < q1; q++) {
      const int32_t i = order[q];
      const float w = vals[i];
      if (w == 0) continue;
      const float *s = dense + src[i] * d + c;
      const __m256 v = _mm256_set1_ps(w);
      a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s), a0);
      a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 8), a1);
      a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 16), a2);
      a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 24), a3);
      a4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 32), a4);
      a5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 40), a5);
      a6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 48), a6);
      a7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 56), a7);
    }
    _mm256_storeu_ps(o + c, a0), _mm256_storeu_ps(o + c + 8, a1);
    _mm256_storeu_ps(o + c + 16, a2), _mm256_storeu_ps(o + c + 24, a3);
    _mm256_storeu_ps(o + c + 32, a4), _mm256_storeu_ps(o + c + 40, a5);
    _mm256_storeu_ps(o + c + 48, a6), _mm256_storeu_ps(o + c + 56, a7);
  }
  for (; c + 8 <= d; c += 8) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t q = q0; q < q1; q++) {
      const int32_t i = order[q];
      const float w = vals[i];
      if (w != 0) a = _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(dense + src[i] * d + c), a);
    }
    _mm256_storeu_ps(o + c, a);
  }
  for (; c < d; c++) {
    float a = 0;
    for (int64_t q = q0; q < q1; q++) {
      const int32_t i = order[q];
      const float w = vals[i];
      if (w != 0) a = fmaf(w, dense[src[i] * d + c], a);
    }
    o[c] = a;
  }
#else
  SPMM_ROW_SCALAR(float)
#endif
}

// f32 products whose dense operand is much larger than their output (the decoder's
// Σ_j v·W_dec[idx]: 2 KB rows gathered 8 times each over from 16 MB) run source-major instead:
// entries sorted by source row, so the dense matrix streams through once and each thread adds
// into its own output rows, which stay in cache. Each output is then summed in ascending source
// order, still one rounding per term (the same bound as above) and independent of the threads.
#ifdef SC_AVX2
typedef struct {
  const int32_t *dst, *src, *order; // order: this thread's entries, by source row
  const float *vals, *dense;
  float *out;
  int64_t d, n, lo, hi;
} spmm_src_job;

static void *spmm_src_task(void *p) {
  spmm_src_job *j = p;
  const int64_t d = j->d;
  memset(j->out + j->lo * d, 0, sizeof(float) * (size_t)((j->hi - j->lo) * d));
  for (int64_t q = 0; q < j->n; q++) {
    const int32_t i = j->order[q];
    const float w = j->vals[i];
    if (w == 0) continue;
    const float *s = j->dense + j->src[i] * d;
    float *o = j->out + j->dst[i] * d;
    // The next entry's output row is a random one: fetched while this one is added.
    const char *pf = (const char *)(j->out + j->dst[j->order[q + 1 < j->n ? q + 1 : q]] * d);
    const __m256 v = _mm256_set1_ps(w);
    int64_t c = 0;
    for (; c + 32 <= d; c += 32) {
      _mm_prefetch(pf + 4 * c, _MM_HINT_T0), _mm_prefetch(pf + 4 * c + 64, _MM_HINT_T0);
      _mm256_storeu_ps(o + c, _mm256_fmadd_ps(v, _mm256_loadu_ps(s + c), _mm256_loadu_ps(o + c)));
      _mm256_storeu_ps(o + c + 8, _mm256_fmadd_ps(v, _mm256_loadu_ps(s + c + 8),
                                                  _mm256_loadu_ps(o + c + 8)));
      _mm256_storeu_ps(o + c + 16, _mm256_fmadd_ps(v, _mm256_loadu_ps(s + c + 16),
                                                   _mm256_loadu_ps(o + c + 16)));
      _mm256_storeu_ps(o + c + 24, _mm256_fmadd_ps(v, _mm256_loadu_ps(s + c + 24),
                                                   _mm256_loadu_ps(o + c + 24)));
    }
    for (; c < d; c++) o[c] = fmaf(w, s[c], o[c]);
  }
  return 0;
}

static inline int spmm_src_major_pays(int32_t nnz, int32_t inRows, int32_t outRows) {
  return (int64_t)inRows >= 2 * (int64_t)outRows && nnz >= 2 * (int64_t)inRows;
}

// Returns 0 when it did the product, 1 when it does not pay here, -2 out of memory.
static int spmm_src_major_f32(const int32_t *dst, const int32_t *src, const float *vals, int32_t nnz,
                              const float *dense, int32_t inRows, int32_t d, float *out,
                              int32_t outRows, int32_t threads) {
  if (!spmm_src_major_pays(nnz, inRows, outRows)) return 1;
  const int n = clamp_threads(threads);
  int64_t *by_src = calloc((size_t)inRows + 1, sizeof(int64_t));
  int64_t *by_dst = calloc((size_t)outRows + 1, sizeof(int64_t));
  int32_t *sorted = malloc(sizeof(int32_t) * (size_t)nnz), *order = malloc(sizeof(int32_t) * (size_t)nnz);
  int32_t *thread_of = malloc(sizeof(int32_t) * (size_t)outRows);
  if (!by_src || !by_dst || !sorted || !order || !thread_of) {
    free(by_src), free(by_dst), free(sorted), free(order), free(thread_of);
    return -2;
  }
  for (int32_t i = 0; i < nnz; i++) by_src[src[i] + 1]++, by_dst[dst[i] + 1]++;
  for (int32_t r = 0; r < inRows; r++) by_src[r + 1] += by_src[r];
  for (int32_t r = 0; r < outRows; r++) by_dst[r + 1] += by_dst[r];
  for (int32_t i = 0; i < nnz; i++) sorted[by_src[src[i]]++] = i;
  // Threads own output rows (equal shares of entries); each gets its entries in source order.
  spmm_src_job jobs[MAX_THREADS];
  int64_t at[MAX_THREADS + 1] = {0};
  int32_t r0 = 0;
  for (int t = 0; t < n; t++) {
    const int64_t want = (int64_t)nnz * (t + 1) / n;
    int32_t r1 = r0;
    while (r1 < outRows && by_dst[r1 + 1] <= want) r1++;
    if (t == n - 1) r1 = outRows;
    for (int32_t r = r0; r < r1; r++) thread_of[r] = t;
    at[t + 1] = at[t] + by_dst[r1] - by_dst[r0];
    jobs[t] = (spmm_src_job){dst, src, 0, vals, dense, out, d, at[t + 1] - at[t], r0, r1};
    r0 = r1;
  }
  for (int t = 0; t < n; t++) jobs[t].order = order + at[t];
  for (int32_t q = 0; q < nnz; q++) order[at[thread_of[dst[sorted[q]]]]++] = sorted[q];
  run_tasks(spmm_src_task, jobs, sizeof(spmm_src_job), n);
  free(by_src), free(by_dst), free(sorted), free(order), free(thread_of);
  return 0;
}
#endif

#define SPMM(T, NAME, ROW, FIRST)                                                                       \
  typedef struct {                                                                                 \
    const int32_t *src, *order;                                                                    \
    const int64_t *start;                                                                          \
    const T *vals, *dense;                                                                         \
    T *out;                                                                                        \
    int32_t d, lo, hi;                                                                             \
  } NAME##_job;                                                                                    \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t d = j->d;                                                                        \
    for (int32_t r = j->lo; r < j->hi; r++)                                                        \
      ROW(j->out + r * d, j->order, j->start[r], j->start[r + 1], j->src, j->vals, j->dense, d);   \
    return 0;                                                                                      \
  }                                                                                                \
  int32_t NAME(const int32_t *dst, const int32_t *src, const T *vals, int32_t nnz, const T *dense, \
               int32_t inRows, int32_t d, T *out, int32_t outRows, int32_t threads) {              \
    for (int32_t i = 0; i < nnz; i++)                                                              \
      if ((uint32_t)dst[i] >= (uint32_t)outRows || (uint32_t)src[i] >= (uint32_t)inRows) return i; \
    FIRST                                                                                          \
    int64_t *start = calloc((size_t)outRows + 1, sizeof(int64_t));                                 \
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(nnz ? nnz : 1));                            \
    if (!start || !order) {                                                                        \
      free(start), free(order);                                                                    \
      return -2;                                                                                   \
    }                                                                                              \
    for (int32_t i = 0; i < nnz; i++) start[dst[i] + 1]++;                                         \
    for (int32_t r = 0; r < outRows; r++) start[r + 1] += start[r];                                \
    for (int32_t i = 0; i < nnz; i++) order[start[dst[i]]++] = i;                                  \
    for (int32_t r = outRows; r > 0; r--) start[r] = start[r - 1];                                 \
    start[0] = 0;                                                                                  \
    int n = clamp_threads(threads);                                                                \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    int32_t r0 = 0;                                                                                \
    for (int t = 0; t < n; t++) {                                                                  \
      /* Equal shares of entries and rows (each row is written, empty or not): a few rows may     \
         hold most of the entries. */                                                              \
      const int64_t want = ((int64_t)nnz + outRows) * (t + 1) / n;                                 \
      int32_t r1 = r0;                                                                             \
      while (r1 < outRows && start[r1 + 1] + r1 + 1 <= want) r1++;                                 \
      if (t == n - 1) r1 = outRows;                                                                \
      jobs[t] = (NAME##_job){src, order, start, vals, dense, out, d, r0, r1};                      \
      r0 = r1;                                                                                     \
    }                                                                                              \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), n);                                           \
    free(start), free(order);                                                                      \
    return -1;                                                                                     \
  }

#ifdef SC_AVX2
#define SPMM_F32_FIRST                                                                             \
  {                                                                                                \
    const int rc = spmm_src_major_f32(dst, src, vals, nnz, dense, inRows, d, out, outRows, threads); \
    if (rc != 1) return rc == 0 ? -1 : rc;                                                         \
  }
#else
#define SPMM_F32_FIRST
#endif
SPMM(float, sc_spmm_f32, spmm_row_f32, SPMM_F32_FIRST)
SPMM(double, sc_spmm_f64, spmm_row_f64, )

// ---- The f32 product above, written transposed: out [d, outRows] ----------------------------
// ∂W_enc comes from Sᵀ·x as [F, d]; the optimiser wants [d, F] (W_enc's layout), which read as a
// transposed view costs it a cache line per element group. Here each thread takes bands of 32
// columns of x (copied first into a contiguous [inRows, 32] slab that stays in cache), and for
// each 8 output rows sums their entries (sorted by output row, in their original order, zero
// weights skipped: the row form's FMA sequence per element, so its bits) into registers, then
// writes them through 8×8 register transposes as runs of 8 floats of out. Returns -1 done, -3 not
// here (no AVX2, d not a multiple of 32, or spmm's source-major form), -2 out of memory, or the
// first bad entry.
#ifdef SC_AVX2
#define SPMM_TT_BAND 32
typedef struct {
  const int64_t *start; // by output row, outRows + 1
  const int32_t *src;   // sources in sorted order
  const float *w, *dense;
  float *out, *slab;
  int64_t d, in_rows, out_rows, b0, b1; // bands [b0, b1) of SPMM_TT_BAND columns
  double *bs;                           // Σ out² by blocks (sum_squares.h), or null
} spmm_tt_job;

// Rows r[0..8) of an 8×8 block become its columns, in place.
static inline void transpose8_ps(__m256 *r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static void *spmm_tt_task(void *p) {
  spmm_tt_job *j = p;
  const int64_t d = j->d, R = j->out_rows;
  float *slab = j->slab;
  float tile[8][SPMM_TT_BAND];
  int64_t next = 0;
  for (int64_t band = j->b0; band < j->b1; band++) {
    const int64_t c0 = band * SPMM_TT_BAND;
    for (int64_t b = 0; b < j->in_rows; b++)
      for (int g = 0; g < SPMM_TT_BAND; g += 8)
        _mm256_storeu_ps(slab + b * SPMM_TT_BAND + g, _mm256_loadu_ps(j->dense + b * d + c0 + g));
    for (int64_t r0 = 0; r0 < R; r0 += 8) {
      const int64_t n = R - r0 < 8 ? R - r0 : 8;
      for (int64_t e = 0; e < 8; e++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (e < n) {
          for (int64_t q = j->start[r0 + e]; q < j->start[r0 + e + 1]; q++) {
            const float w = j->w[q];
            if (w == 0) continue;
            const float *x = slab + j->src[q] * SPMM_TT_BAND;
            const __m256 v = _mm256_set1_ps(w);
            a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x), a0);
            a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + 8), a1);
            a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + 16), a2);
            a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + 24), a3);
          }
        }
        _mm256_storeu_ps(tile[e], a0), _mm256_storeu_ps(tile[e] + 8, a1);
        _mm256_storeu_ps(tile[e] + 16, a2), _mm256_storeu_ps(tile[e] + 24, a3);
      }
      for (int g = 0; g < SPMM_TT_BAND; g += 8) {
        __m256 acc[8];
        for (int e = 0; e < 8; e++) acc[e] = _mm256_loadu_ps(tile[e] + g);
        transpose8_ps(acc);
        float *o = j->out + (c0 + g) * R + r0;
        if (n == 8) {
          for (int e = 0; e < 8; e++) _mm256_storeu_ps(o + e * R, acc[e]);
        } else {
          float tmp[8];
          for (int e = 0; e < 8; e++) {
            _mm256_storeu_ps(tmp, acc[e]);
            for (int64_t x = 0; x < n; x++) o[e * R + x] = tmp[x];
          }
        }
      }
    }
    // The band's rows of out (1 MB at R = 8192, still in L2) into their blocks' sums.
    ss_upto_f32(j->out, d * R, j->b0 * SPMM_TT_BAND * R, (band + 1) * SPMM_TT_BAND * R, &next, j->bs);
  }
  return 0;
}
#endif

int32_t sc_spmm_tt_f32(const int32_t *dst, const int32_t *src, const float *vals, int32_t nnz,
                       const float *dense, int32_t inRows, int32_t d, float *out, int32_t outRows,
                       int32_t threads, float *sumsq) {
#ifdef SC_AVX2
  // (the row form's bits only: where spmm sums source-major, so must its transpose)
  if (d % SPMM_TT_BAND != 0 || spmm_src_major_pays(nnz, inRows, outRows)) return -3;
  for (int32_t i = 0; i < nnz; i++)
    if ((uint32_t)dst[i] >= (uint32_t)outRows || (uint32_t)src[i] >= (uint32_t)inRows) return i;
  const int64_t bands = d / SPMM_TT_BAND;
  int n = clamp_threads(threads);
  if (n > bands) n = bands > 0 ? (int)bands : 1;
  int64_t *start = calloc((size_t)outRows + 1, sizeof(int64_t));
  int32_t *sorted_src = malloc(sizeof(int32_t) * (size_t)(nnz ? nnz : 1));
  float *w = malloc(sizeof(float) * (size_t)(nnz ? nnz : 1));
  float *slab = malloc(sizeof(float) * SPMM_TT_BAND * ((size_t)inRows + 1) * (size_t)n);
  double *bs = sumsq ? ss_todo((int64_t)d * outRows) : 0;
  if (!start || !sorted_src || !w || !slab || (sumsq && !bs)) {
    free(start), free(sorted_src), free(w), free(slab), free(bs);
    return -2;
  }
  // A stable counting sort by output row: each row's entries keep their order.
  for (int32_t i = 0; i < nnz; i++) start[dst[i] + 1]++;
  for (int32_t r = 0; r < outRows; r++) start[r + 1] += start[r];
  for (int32_t i = 0; i < nnz; i++) {
    const int64_t q = start[dst[i]]++;
    sorted_src[q] = src[i], w[q] = vals[i];
  }
  for (int32_t r = outRows; r > 0; r--) start[r] = start[r - 1];
  start[0] = 0;
  spmm_tt_job jobs[MAX_THREADS];
  for (int t = 0; t < n; t++)
    jobs[t] = (spmm_tt_job){start, sorted_src, w, dense, out, slab + (size_t)t * SPMM_TT_BAND * ((size_t)inRows + 1),
                            d, inRows, outRows, bands * t / n, bands * (t + 1) / n, bs};
  run_tasks(spmm_tt_task, jobs, sizeof(spmm_tt_job), n);
  if (sumsq) sumsq[0] = ss_total_f32(out, (int64_t)d * outRows, bs);
  free(start), free(sorted_src), free(w), free(slab), free(bs);
  return -1;
#else
  (void)dst, (void)src, (void)vals, (void)nnz, (void)dense, (void)inRows, (void)d, (void)out;
  (void)outRows, (void)threads, (void)sumsq;
  return -3;
#endif
}
// (f64 products keep their row form: sparse.ts's bits)
int32_t sc_spmm_tt_f64(const int32_t *dst, const int32_t *src, const double *vals, int32_t nnz,
                       const double *dense, int32_t inRows, int32_t d, double *out, int32_t outRows,
                       int32_t threads, double *sumsq) {
  (void)dst, (void)src, (void)vals, (void)nnz, (void)dense, (void)inRows, (void)d, (void)out;
  (void)outRows, (void)threads, (void)sumsq;
  return -3;
}

// ---- Sampled dense-dense: out[i] = a[rows[i]] · b[cols[i]] ---------------------------------
// Four partial sums in double, combined as (s0 + s1) + (s2 + s3), as sparse.ts does. The four sums
// are the lanes of one vector, and four entries run side by side so their add chains overlap
// (one entry's chain alone waits on the add latency), while the next four entries' b rows (random
// rows of a matrix in L3 at best) are prefetched a line at a time; each entry's sums are the same,
// in the same order, so are its bits.

typedef double sc_v4d __attribute__((vector_size(32)));

// Entries out of row order (BatchTopK's code comes best first) gather a row of `a` each; visited
// grouped by row (a stable counting sort) each row is read once for all its entries. Each entry's
// sum is the same, so are its bits. Null: keep the given order (already by row, few entries, or
// out of memory).
static int32_t *sddmm_by_row(const int32_t *rows, int32_t nnz, int32_t na) {
  int32_t i = 1;
  while (i < nnz && rows[i] >= rows[i - 1]) i++;
  if (i >= nnz || nnz < 1024) return 0;
  int64_t *start = calloc((size_t)na + 1, sizeof(int64_t));
  int32_t *order = malloc(sizeof(int32_t) * (size_t)nnz);
  if (!start || !order) {
    free(start), free(order);
    return 0;
  }
  for (int32_t q = 0; q < nnz; q++) start[rows[q] + 1]++;
  for (int32_t r = 0; r < na; r++) start[r + 1] += start[r];
  for (int32_t q = 0; q < nnz; q++) order[start[rows[q]]++] = q;
  free(start);
  return order;
}

// b's row i may be stored in `segs` pieces of d/segs (a decoder kept per input, [L, F, d], read as
// its [F, L·d] flattening without that copy): piece l at b + l·seg_stride + i·(d/segs). Each sum
// runs over the pieces in order, so it is the flat row's sum, bit for bit.
#define SDDMM(T, NAME)                                                                             \
  typedef struct {                                                                                 \
    const T *a, *b;                                                                                \
    const int32_t *rows, *cols;                                                                    \
    const int32_t *order; /* entries by row (sddmm_by_row), or null: as given */                   \
    T *out;                                                                                        \
    int32_t d, lo, hi, segs;                                                                       \
    int64_t seg_stride;                                                                            \
  } NAME##_job;                                                                                    \
  static inline sc_v4d NAME##_quad(const T *x, const T *y) {                                       \
    const sc_v4d xv = {x[0], x[1], x[2], x[3]}, yv = {y[0], y[1], y[2], y[3]};                     \
    return xv * yv;                                                                                \
  }                                                                                                \
  /* One entry's dot product from its four lane sums, then the tail (s0's, as sparse.ts). */       \
  static inline T NAME##_finish(sc_v4d s, const T *x, const T *y, int64_t c, int64_t d) {          \
    double s0 = s[0];                                                                              \
    for (; c < d; c++) s0 += (double)x[c] * (double)y[c];                                          \
    return (T)((s0 + s[1]) + (s[2] + s[3]));                                                       \
  }                                                                                                \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    /* seg: a piece's width (d when whole); d4: the quads of a piece, the rest summed at the end */ \
    const int64_t d = j->d, seg = d / j->segs, d4 = seg / 4 * 4, ss = j->seg_stride;               \
    const int32_t *o = j->order;                                                                   \
    int32_t i = j->lo;                                                                             \
    for (; i + 4 <= j->hi; i += 4) {                                                               \
      const int32_t e0 = o ? o[i] : i, e1 = o ? o[i + 1] : i + 1;                                  \
      const int32_t e2 = o ? o[i + 2] : i + 2, e3 = o ? o[i + 3] : i + 3;                          \
      const T *x0 = j->a + j->rows[e0] * d, *y0 = j->b + j->cols[e0] * seg;                        \
      const T *x1 = j->a + j->rows[e1] * d, *y1 = j->b + j->cols[e1] * seg;                        \
      const T *x2 = j->a + j->rows[e2] * d, *y2 = j->b + j->cols[e2] * seg;                        \
      const T *x3 = j->a + j->rows[e3] * d, *y3 = j->b + j->cols[e3] * seg;                        \
      sc_v4d s0 = {0, 0, 0, 0}, s1 = s0, s2 = s0, s3 = s0;                                         \
      const int nx = i + 8 <= j->hi;                                                               \
      const T *n0 = nx ? j->b + j->cols[o ? o[i + 4] : i + 4] * seg : y0;                          \
      const T *n1 = nx ? j->b + j->cols[o ? o[i + 5] : i + 5] * seg : y0;                          \
      const T *n2 = nx ? j->b + j->cols[o ? o[i + 6] : i + 6] * seg : y0;                          \
      const T *n3 = nx ? j->b + j->cols[o ? o[i + 7] : i + 7] * seg : y0;                          \
      for (int32_t l = 0; l < j->segs; l++) {                                                      \
        const int64_t xo = l * seg, yo = l * ss;                                                   \
        for (int64_t c = 0; c < d4; c += 4) {                                                      \
          if ((c & (64 / sizeof(T) - 1)) == 0) {                                                   \
            __builtin_prefetch(n0 + yo + c), __builtin_prefetch(n1 + yo + c);                      \
            __builtin_prefetch(n2 + yo + c), __builtin_prefetch(n3 + yo + c);                      \
          }                                                                                        \
          s0 += NAME##_quad(x0 + xo + c, y0 + yo + c);                                             \
          s1 += NAME##_quad(x1 + xo + c, y1 + yo + c);                                             \
          s2 += NAME##_quad(x2 + xo + c, y2 + yo + c);                                             \
          s3 += NAME##_quad(x3 + xo + c, y3 + yo + c);                                             \
        }                                                                                          \
      }                                                                                            \
      j->out[e0] = NAME##_finish(s0, x0, y0, d4, seg);                                             \
      j->out[e1] = NAME##_finish(s1, x1, y1, d4, seg);                                             \
      j->out[e2] = NAME##_finish(s2, x2, y2, d4, seg);                                             \
      j->out[e3] = NAME##_finish(s3, x3, y3, d4, seg);                                             \
    }                                                                                              \
    for (; i < j->hi; i++) {                                                                       \
      const int32_t e = o ? o[i] : i;                                                              \
      const T *x = j->a + j->rows[e] * d, *y = j->b + j->cols[e] * seg;                            \
      sc_v4d s = {0, 0, 0, 0};                                                                     \
      for (int32_t l = 0; l < j->segs; l++)                                                        \
        for (int64_t c = 0; c < d4; c += 4) s += NAME##_quad(x + l * seg + c, y + l * ss + c);     \
      j->out[e] = NAME##_finish(s, x, y, d4, seg);                                                 \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  /* segs > 1 needs pieces of a multiple of 4 (no tail between them); -3 otherwise. */             \
  int32_t NAME(const T *a, int32_t na, const T *b, int32_t nb, const int32_t *rows,                \
               const int32_t *cols, int32_t nnz, int32_t d, T *out, int32_t threads, int32_t segs, \
               int64_t seg_stride) {                                                               \
    if (segs < 1 || d % segs != 0 || (segs > 1 && (d / segs) % 4 != 0)) return -3;               \
    for (int32_t i = 0; i < nnz; i++)                                                              \
      if ((uint32_t)rows[i] >= (uint32_t)na || (uint32_t)cols[i] >= (uint32_t)nb) return i;        \
    int n = clamp_threads(threads);                                                                \
    int32_t *order = sddmm_by_row(rows, nnz, na);                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < n; t++)                                                                    \
      jobs[t] = (NAME##_job){a, b, rows, cols, order, out, d, (int32_t)((int64_t)nnz * t / n),     \
                             (int32_t)((int64_t)nnz * (t + 1) / n), segs, seg_stride};             \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), n);                                           \
    free(order);                                                                                   \
    return -1;                                                                                     \
  }

SDDMM(float, sc_sddmm_f32)
SDDMM(double, sc_sddmm_f64)

// ---- Top-k per row -------------------------------------------------------------------------
// A size-k min-heap of (value, index) ranked as kernels.ts ranks them: NaN highest, then larger,
// ties to the lower index. The order is total, so the k best and their sorted order are unique:
// any split of a row's columns, merged, gives the same output as one scan.

static inline int ranks_below(double va, int64_t ia, double vb, int64_t ib) {
  return va != va ? (vb != vb && ia > ib) : (vb != vb || va < vb || (va == vb && ia > ib));
}

static void heap_push(double *hv, int64_t *hi, int64_t size, double v, int64_t i) {
  int64_t c = size;
  while (c > 0) {
    const int64_t up = (c - 1) >> 1;
    if (!ranks_below(v, i, hv[up], hi[up])) break;
    hv[c] = hv[up], hi[c] = hi[up], c = up;
  }
  hv[c] = v, hi[c] = i;
}

static void heap_replace_root(double *hv, int64_t *hi, int64_t size, double v, int64_t i) {
  int64_t c = 0;
  for (;;) {
    const int64_t l = 2 * c + 1;
    if (l >= size) break;
    const int64_t m = l + 1 < size && ranks_below(hv[l + 1], hi[l + 1], hv[l], hi[l]) ? l + 1 : l;
    if (!ranks_below(hv[m], hi[m], v, i)) break;
    hv[c] = hv[m], hi[c] = hi[m], c = m;
  }
  hv[c] = v, hi[c] = i;
}

// Pop the heap's lowest-ranked entry repeatedly, filling values/indices [0, k) from the back.
#define HEAP_DRAIN(hv, hi, k, values, indices)                                                     \
  for (int64_t t_ = (k) - 1; t_ >= 0; t_--) {                                                      \
    (values)[t_] = (hv)[0];                                                                        \
    (indices)[t_] = (int32_t)(hi)[0];                                                              \
    heap_replace_root(hv, hi, t_, (hv)[t_], (hi)[t_]);                                             \
  }

// Offer (v, i) to a full heap of k entries: it enters if the root ranks below it.
static inline void heap_offer(double *hv, int64_t *hi, int64_t k, double v, int64_t i) {
  if (ranks_below(hv[0], hi[0], v, i)) heap_replace_root(hv, hi, k, v, i);
}

// How many of 32 entries are not <= rt (beat the root, or are NaN): a count, so the compiler
// turns the loop into vector compares and one horizontal sum.
#define TOPK_BLOCK 32
static inline int sc_topk_f32_may_win(const float *a, float rt) {
  int n = 0;
  for (int e = 0; e < TOPK_BLOCK; e++) n += !(a[e] <= rt);
  return n;
}
static inline int sc_topk_f64_may_win(const double *a, double rt) {
  int n = 0;
  for (int e = 0; e < TOPK_BLOCK; e++) n += !(a[e] <= rt);
  return n;
}

// A faster first pass for long f32 rows: a bound from a sample, a vector filter, then the heap
// over the survivors only. The r-th best of every 16th entry is a guess τ at a value with a few
// times k entries at or above it; entries below τ cannot be among the k best once at least k
// entries are at or above it, which the filter counts. The survivors are ranked by integer keys
// that order them as the heap does (through the same heap when one is NaN), so the k best and
// their order are exactly the plain scan's; when fewer than k survive (an unlucky sample) or more
// than `cap` do (ties), the row is scanned as before.
#define TOPK_STRIDE 16
static inline int64_t topk_sample_rank(int64_t k) {
  const double per = (double)k / TOPK_STRIDE;
  // The count at or above the sample's r-th best is about 16·Gamma(r): r = k/16 + 3√(k/16) + 2
  // keeps it below k with probability under ~1e-3 (for k = 32: r = 9, ~144 survivors).
  return (int64_t)(per + 3 * sqrt(per) + 2);
}
static inline int64_t topk_filter_cap(int64_t k) { return 2 * k + 1024; }
#define TOPK_LIST 64

#ifdef SC_AVX2
// key[0, n) in descending order (tmp: n more), by 8 passes of a byte-wise counting sort.
static void topk_sort_keys_desc(uint64_t *key, uint64_t *tmp, int64_t n) {
  for (int shift = 0; shift < 64; shift += 8) {
    int64_t at[257] = {0};
    for (int64_t q = 0; q < n; q++) at[((~key[q] >> shift) & 255) + 1]++;
    for (int b = 0; b < 256; b++) at[b + 1] += at[b];
    for (int64_t q = 0; q < n; q++) tmp[at[(~key[q] >> shift) & 255]++] = key[q];
    uint64_t *t = key;
    key = tmp, tmp = t;
  }
}

// 1 when values/indices [0, k) hold the k best of the survivors buf[0, count), best first; 0 when
// one of them is NaN (the heap ranks those). `key` holds 2·count (the sort's second half).
static int topk_keys_f32(const float *a, const int32_t *buf, int64_t count, int64_t k,
                         uint64_t *key, float *values, int32_t *indices) {
  for (int64_t q = 0; q < count; q++) {
    const float v = a[buf[q]];
    if (v != v) return 0;
    key[q] = topk_key_f32(v, buf[q]);
  }
  if (k > TOPK_LIST) topk_sort_keys_desc(key, key + count, count);
  else
    for (int64_t q = 1; q < count; q++) {
    const uint64_t x = key[q];
    if (q >= k && x <= key[k - 1]) continue;
    int64_t j = q < k ? q : k - 1;
    for (; j > 0 && key[j - 1] < x; j--) key[j] = key[j - 1];
    key[j] = x;
    }
  for (int64_t t = 0; t < k; t++) {
    const int32_t i = (int32_t)~(uint32_t)key[t];
    values[t] = a[i], indices[t] = i;
  }
  return 1;
}

// 1 when the k best of a[c0, c1) were left in the heap hv/hi, 2 when they were written to
// values/indices instead (given, with `key` of 2·topk_filter_cap(k)); 0 when the plain scan must
// run.
static int topk_filter_f32(const float *a, int64_t c0, int64_t c1, int64_t k, double *hv,
                           int64_t *hi, int32_t *buf, uint64_t *key, float *values,
                           int32_t *indices) {
  const int64_t n = c1 - c0, m = n / TOPK_STRIDE, r = topk_sample_rank(k), cap = topk_filter_cap(k);
  if (!buf || n < 1024 || 2 * r > m || r > k) return 0;
  // τ: the r-th best sample. Any τ gives the exact k best (the count below decides), so a short
  // sorted list of floats serves for small r (NaNs left out); the heap for large r (k > ~700).
  float t;
  if (r <= TOPK_LIST) {
    float best[TOPK_LIST];
    int64_t size = 0;
    for (int64_t i = 0; i < m; i++) {
      const float v = a[c0 + i * TOPK_STRIDE];
      if (!(size < r || v > best[r - 1])) continue;
      int64_t j = size < r ? size++ : r - 1;
      for (; j > 0 && best[j - 1] < v; j--) best[j] = best[j - 1];
      best[j] = v;
    }
    if (size < r) return 0;
    t = best[r - 1];
  } else {
    // (the heap is free until the survivors fill it)
    for (int64_t i = 0; i < m; i++) {
      const int64_t c = c0 + i * TOPK_STRIDE;
      if (i < r) heap_push(hv, hi, i, a[c], c);
      else heap_offer(hv, hi, r, a[c], c);
    }
    t = (float)hv[0];
  }
  const __m256 thr = _mm256_set1_ps(t);
  int64_t count = 0, c = c0;
  for (; c + 32 <= c1; c += 32) {
    // Not below τ: at or above it, or NaN on either side (which the heap then ranks).
    const unsigned m0 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a + c), thr, _CMP_NLT_UQ));
    const unsigned m1 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a + c + 8), thr, _CMP_NLT_UQ));
    const unsigned m2 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a + c + 16), thr, _CMP_NLT_UQ));
    const unsigned m3 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a + c + 24), thr, _CMP_NLT_UQ));
    uint32_t bits = m0 | m1 << 8 | m2 << 16 | (uint32_t)m3 << 24;
    if (!bits) continue;
    if (count + __builtin_popcount(bits) > cap) return 0;
    for (; bits; bits &= bits - 1) buf[count++] = (int32_t)(c + __builtin_ctz(bits));
  }
  for (; c < c1; c++) {
    if (a[c] < t) continue;
    if (count == cap) return 0;
    buf[count++] = (int32_t)c;
  }
  if (count < k) return 0;
  if (values && topk_keys_f32(a, buf, count, k, key, values, indices)) return 2;
  int64_t q = 0;
  for (; q < k; q++) heap_push(hv, hi, q, a[buf[q]], buf[q]);
  for (; q < count; q++) heap_offer(hv, hi, k, a[buf[q]], buf[q]);
  return 1;
}
#endif
static int topk_filter_f64(const double *a, int64_t c0, int64_t c1, int64_t k, double *hv,
                           int64_t *hi, int32_t *buf, uint64_t *key, double *values,
                           int32_t *indices) {
  (void)a, (void)c0, (void)c1, (void)k, (void)hv, (void)hi, (void)buf, (void)key, (void)values;
  (void)indices;
  return 0;
}

#define TOPK(T, NAME, FILTER)                                                                      \
  typedef struct {                                                                                 \
    const T *x;                                                                                    \
    int64_t n, k, rows, c0, c1;                                                                    \
    double *hv;                                                                                    \
    int64_t *hi;                                                                                   \
    T *values;                                                                                     \
    int32_t *indices;                                                                              \
    int32_t *buf; /* the filter's survivors (topk_filter_cap(k)), or null */                       \
    uint64_t *key; /* their ranking keys (as many) */                                              \
  } NAME##_job;                                                                                    \
  /* The top k of columns [c0, c1) of each row, sorted best first. */                              \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t k = j->k;                                                                        \
    for (int64_t r = 0; r < j->rows; r++) {                                                        \
      const T *a = j->x + r * j->n;                                                                \
      T *const rv = j->values ? j->values + r * k : 0;                                             \
      int32_t *const ri = j->values ? j->indices + r * k : 0;                                      \
      int64_t c = j->c0;                                                                           \
      const int filtered = FILTER(a, j->c0, j->c1, k, j->hv, j->hi, j->buf, j->key, rv, ri);      \
      if (filtered == 2) continue;                                                                 \
      if (filtered) c = j->c1;                                                                     \
      else                                                                                         \
        for (int64_t s = 0; s < k; s++, c++) heap_push(j->hv, j->hi, s, a[c], c);                  \
      double root = j->hv[0];                                                                      \
      while (c < j->c1) {                                                                          \
        /* Most entries lose to the root: a block where none can win is skipped after one pass   \
           of vector compares (the root is a value of T, so comparing in T decides the same). */ \
        int64_t end = c + TOPK_BLOCK;                                                              \
        if (end > j->c1 || NAME##_may_win(a + c, (T)root)) end = end > j->c1 ? j->c1 : end;       \
        else c = end;                                                                              \
        for (; c < end; c++) {                                                                     \
          const double v = a[c];                                                                   \
          /* A later index loses ties, and nothing beats a NaN root. */                           \
          if (v <= root || root != root) continue;                                                 \
          heap_replace_root(j->hv, j->hi, k, v, c);                                                \
          root = j->hv[0];                                                                         \
        }                                                                                          \
      }                                                                                            \
      if (j->values) HEAP_DRAIN(j->hv, j->hi, k, rv, ri);                                          \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  /* x: [rows, n] contiguous; values/indices: [rows, k], each row sorted best first. */            \
  int32_t NAME(const T *x, int32_t rows, int32_t n, int32_t k, T *values, int32_t *indices,       \
               int32_t threads) {                                                                  \
    if (k < 1 || k > n) return -3;                                                                 \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    double *hv = malloc(sizeof(double) * (size_t)k * nt);                                          \
    int64_t *hi = malloc(sizeof(int64_t) * (size_t)k * nt);                                        \
    const int64_t cap = topk_filter_cap(k);                                                        \
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap * nt);                                     \
    uint64_t *key = malloc(sizeof(uint64_t) * 2 * (size_t)cap * nt);                               \
    /* Few long rows: each thread's k best, sorted, before they merge. */                          \
    const int split = !(rows >= nt || nt == 1 || (int64_t)n < 4 * (int64_t)k * nt);                \
    T *tv = split ? malloc(sizeof(T) * (size_t)k * nt) : 0;                                        \
    int32_t *ti = split ? malloc(sizeof(int32_t) * (size_t)k * nt) : 0;                            \
    if (!hv || !hi || !buf || !key || (split && (!tv || !ti))) {                                   \
      free(hv), free(hi), free(buf), free(key), free(tv), free(ti);                                \
      return -2;                                                                                   \
    }                                                                                              \
    if (!split) {                                                                                  \
      /* Rows split among threads. */                                                              \
      if (nt > rows) nt = rows > 0 ? rows : 1;                                                     \
      for (int t = 0; t < nt; t++) {                                                               \
        const int64_t r0 = (int64_t)rows * t / nt, r1 = (int64_t)rows * (t + 1) / nt;              \
        jobs[t] = (NAME##_job){x + r0 * n, n, k, r1 - r0, 0, n, hv + k * t, hi + k * t,            \
                               values + r0 * k, indices + r0 * k, buf + cap * t,                   \
                               key + 2 * cap * t};                                                 \
      }                                                                                            \
      run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                        \
    } else {                                                                                       \
      /* Few long rows: each thread sorts the k best of a column range; the lists then merge,   \
         the best head first (the order is total, so this is the one scan's output). */            \
      for (int64_t r = 0; r < rows; r++) {                                                         \
        for (int t = 0; t < nt; t++)                                                               \
          jobs[t] = (NAME##_job){x + r * n, n, k, 1, (int64_t)n * t / nt, (int64_t)n * (t + 1) / nt, \
                                 hv + k * t, hi + k * t, tv + k * t, ti + k * t, buf + cap * t,    \
                                 key + 2 * cap * t};                                               \
        run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                      \
        int64_t head[MAX_THREADS] = {0};                                                           \
        for (int64_t s = 0; s < k; s++) {                                                          \
          int b = -1;                                                                              \
          for (int t = 0; t < nt; t++) {                                                           \
            if (head[t] == k) continue;                                                            \
            const int64_t q = k * t + head[t];                                                     \
            if (b < 0 || ranks_below(tv[k * b + head[b]], ti[k * b + head[b]], tv[q], ti[q])) b = t; \
          }                                                                                        \
          values[r * k + s] = tv[k * b + head[b]], indices[r * k + s] = ti[k * b + head[b]];       \
          head[b]++;                                                                               \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    free(hv), free(hi), free(buf), free(key), free(tv), free(ti);                                  \
    return -1;                                                                                     \
  }

#ifndef SC_AVX2
#define topk_filter_f32(a, c0, c1, k, hv, hi, buf, key, values, indices) 0
#endif
TOPK(float, sc_topk_f32, topk_filter_f32)
TOPK(double, sc_topk_f64, topk_filter_f64)

// ---- Adam, one leaf ------------------------------------------------------------------------
// The update of fused.ts's adamLoop, in double, term for term.

#define ADAM(T, NAME)                                                                              \
  typedef struct {                                                                                 \
    const T *g, *m, *v, *p;                                                                        \
    T *u, *m2, *v2;                                                                                \
    double b1, b2, eps, c2, scale, decay;                                                          \
    int64_t lo, hi;                                                                                \
  } NAME##_job;                                                                                    \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const double b1 = j->b1, b2 = j->b2, eps = j->eps, c2 = j->c2, scale = j->scale;              \
    for (int64_t i = j->lo; i < j->hi; i++) {                                                      \
      const double gi = j->g[i];                                                                   \
      const double m = b1 * (double)j->m[i] + (1 - b1) * gi;                                       \
      const double v = b2 * (double)j->v[i] + (1 - b2) * gi * gi;                                  \
      j->m2[i] = (T)m;                                                                             \
      j->v2[i] = (T)v;                                                                             \
      j->u[i] = (T)((scale * m) / (sqrt(v / c2) + eps) - (j->p ? j->decay * (double)j->p[i] : 0));  \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *g, const T *m, const T *v, const T *p, T *u, T *m2, T *v2, int64_t n,         \
            double b1, double b2, double eps, double c2, double scale, double decay,              \
            int32_t threads) {                                                                     \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){g, m, v, p, u, m2, v2, b1, b2, eps, c2, scale, decay,                 \
                             slice_start(n, t, nt), slice_start(n, t + 1, nt)};                    \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }

ADAM(float, sc_adam_f32)
ADAM(double, sc_adam_f64)

// ---- Elementwise: relu and its gradient ----------------------------------------------------
// relu as the backend's expression (a == -inf ? 0 : (a > 0)·a + 0: NaN stays NaN, -0 becomes 0);
// the gradient as the rule's g·step(x), so g·0 keeps its sign and NaN·0 is NaN.

#define ELEMENTWISE(T, NAME, EXPR)                                                                 \
  typedef struct {                                                                                 \
    const T *x, *y;                                                                                \
    T *out;                                                                                        \
    int64_t lo, hi;                                                                                \
  } NAME##_job;                                                                                    \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const T *x = j->x, *y = j->y;                                                                  \
    T *out = j->out;                                                                               \
    for (int64_t i = j->lo; i < j->hi; i++) {                                                      \
      const T a = x[i], b = y[i];                                                                  \
      (void)b; /* relu has one operand */                                                          \
      out[i] = (EXPR);                                                                             \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, const T *y, T *out, int64_t n, int32_t threads) {                          \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, y, out, slice_start(n, t, nt), slice_start(n, t + 1, nt)};         \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }

// Written as selects so the compiler vectorises them (a branch per element mispredicts on
// random signs); the values are those of the expressions above (a·0 in the input's width is
// exact, so no double is needed).
#define RELU_EXPR ((a > 0 || a != a) ? a : 0)
// a is the cotangent g here and b the relu's input.
#define RELU_GRAD_EXPR (b > 0 ? a : a * 0)
ELEMENTWISE(float, sc_relu_f32, RELU_EXPR)
ELEMENTWISE(double, sc_relu_f64, RELU_EXPR)
ELEMENTWISE(float, sc_relu_grad_f32, RELU_GRAD_EXPR)
ELEMENTWISE(double, sc_relu_grad_f64, RELU_GRAD_EXPR)

// ---- Sum over the middle axis of a contiguous [outer, n, inner] ----------------------------
// Each output is accumulated in double in index order and rounded once, as kernels.ts's reduce
// does; independent outputs are interleaved (columns side by side, or eight rows at a time) so
// the adds do not wait on each other.

#define SUM(T, NAME)                                                                               \
  typedef struct {                                                                                 \
    const T *x;                                                                                    \
    T *out;                                                                                        \
    int64_t n, inner, o0, o1, i0, i1;                                                              \
    double *acc;                                                                                   \
  } NAME##_job;                                                                                    \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t n = j->n, inner = j->inner;                                                      \
    if (inner == 1) {                                                                              \
      int64_t o = j->o0;                                                                           \
      for (; o + 8 <= j->o1; o += 8) {                                                             \
        double s[8] = {0};                                                                         \
        for (int64_t k = 0; k < n; k++)                                                            \
          for (int r = 0; r < 8; r++) s[r] += j->x[(o + r) * n + k];                               \
        for (int r = 0; r < 8; r++) j->out[o + r] = (T)s[r];                                       \
      }                                                                                            \
      for (; o < j->o1; o++) {                                                                     \
        double s = 0;                                                                              \
        for (int64_t k = 0; k < n; k++) s += j->x[o * n + k];                                      \
        j->out[o] = (T)s;                                                                          \
      }                                                                                            \
      return 0;                                                                                    \
    }                                                                                              \
    double *acc = j->acc;                                                                          \
    const int64_t w = j->i1 - j->i0;                                                               \
    for (int64_t o = j->o0; o < j->o1; o++) {                                                      \
      const T *x = j->x + o * n * inner + j->i0;                                                   \
      for (int64_t i = 0; i < w; i++) acc[i] = 0;                                                  \
      for (int64_t k = 0; k < n; k++, x += inner)                                                  \
        for (int64_t i = 0; i < w; i++) acc[i] += x[i];                                            \
      for (int64_t i = 0; i < w; i++) j->out[o * inner + j->i0 + i] = (T)acc[i];                   \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  int32_t NAME(const T *x, int64_t outer, int64_t n, int64_t inner, T *out, int32_t threads) {     \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    double *acc = inner > 1 ? malloc(sizeof(double) * (size_t)inner) : 0;                          \
    if (inner > 1 && !acc) return -2;                                                              \
    const int split_outer = inner == 1 || outer >= nt;                                             \
    for (int t = 0; t < nt; t++) {                                                                 \
      int64_t o0 = 0, o1 = outer, i0 = 0, i1 = inner;                                              \
      if (split_outer) o0 = outer * t / nt, o1 = outer * (t + 1) / nt;                             \
      else i0 = inner * t / nt / 8 * 8, i1 = t == nt - 1 ? inner : inner * (t + 1) / nt / 8 * 8;  \
      jobs[t] = (NAME##_job){x, out, n, inner, o0, o1, i0, i1, acc ? acc + (split_outer ? 0 : i0) : 0}; \
    }                                                                                              \
    if (split_outer && inner > 1) {                                                                \
      /* Each thread needs its own accumulator row. */                                             \
      free(acc);                                                                                   \
      acc = malloc(sizeof(double) * (size_t)inner * nt);                                           \
      if (!acc) return -2;                                                                         \
      for (int t = 0; t < nt; t++) jobs[t].acc = acc + inner * t;                                  \
    }                                                                                              \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    free(acc);                                                                                     \
    return -1;                                                                                     \
  }

SUM(float, sc_sum_f32)
SUM(double, sc_sum_f64)

// Rows of `cols` split over threads: job t takes rows [lo, hi).
#define ROW_JOBS(NAME, FIELDS)                                                                     \
  typedef struct {                                                                                 \
    FIELDS;                                                                                        \
    int64_t lo, hi;                                                                                \
  } NAME##_job;

// ---- Row sums of squares in double, eight rows side by side --------------------------------
// Σ_c w[r][c]² for rows r = 0 … 7 (row stride C), each summed in double in index order as a loop
// per row would: the f32 squares are exact in double, so each step rounds once whether it is a
// multiply then an add or one fused multiply-add. With `rounded`, each square is rounded to f32
// first (what square() then sum() add up). One row's sum is a chain of dependent adds (4 cycles
// each); eight rows' chains side by side, columns turned into row vectors by 8×8 transposes, take
// the time of one.
#ifdef SC_AVX2
static inline void rows8_sumsq_f32(const float *w, int64_t C, double *out, int rounded) {
  __m256d lo = _mm256_setzero_pd(), hi = lo;  // rows 0–3 and 4–7
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 A[8];
    for (int r = 0; r < 8; r++) A[r] = _mm256_loadu_ps(w + r * C + c);
    transpose8_ps(A);
    for (int i = 0; i < 8; i++) {
      if (rounded) {
        const __m256 q = _mm256_mul_ps(A[i], A[i]);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(q)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(q, 1)));
      } else {
        const __m256d l = _mm256_cvtps_pd(_mm256_castps256_ps128(A[i]));
        const __m256d h = _mm256_cvtps_pd(_mm256_extractf128_ps(A[i], 1));
        lo = _mm256_fmadd_pd(l, l, lo), hi = _mm256_fmadd_pd(h, h, hi);
      }
    }
  }
  _mm256_storeu_pd(out, lo), _mm256_storeu_pd(out + 4, hi);
  for (int r = 0; r < 8; r++)
    for (int64_t t = c; t < C; t++) {
      const float v = w[r * C + t], q = v * v;
      out[r] += rounded ? (double)q : (double)v * (double)v;
    }
}

// Σ w² and Σ g·w for rows 0 … 7 alike (the decoder-gradient projection's two sums), each in
// double in index order; products of two floats are exact in double, so again one rounding a step.
static void rows8_dots_f32(const float *g, const float *w, int64_t C, double *ww, double *gw) {
  __m256d wl = _mm256_setzero_pd(), wh = wl, gl = wl, gh = wl;
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 W[8], G[8];
    for (int r = 0; r < 8; r++) W[r] = _mm256_loadu_ps(w + r * C + c), G[r] = _mm256_loadu_ps(g + r * C + c);
    transpose8_ps(W), transpose8_ps(G);
    for (int i = 0; i < 8; i++) {
      const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(W[i]));
      const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(W[i], 1));
      const __m256d x = _mm256_cvtps_pd(_mm256_castps256_ps128(G[i]));
      const __m256d y = _mm256_cvtps_pd(_mm256_extractf128_ps(G[i], 1));
      wl = _mm256_fmadd_pd(a, a, wl), wh = _mm256_fmadd_pd(b, b, wh);
      gl = _mm256_fmadd_pd(x, a, gl), gh = _mm256_fmadd_pd(y, b, gh);
    }
  }
  _mm256_storeu_pd(ww, wl), _mm256_storeu_pd(ww + 4, wh);
  _mm256_storeu_pd(gw, gl), _mm256_storeu_pd(gw + 4, gh);
  for (int r = 0; r < 8; r++)
    for (int64_t t = c; t < C; t++) {
      ww[r] += (double)w[r * C + t] * (double)w[r * C + t];
      gw[r] += (double)g[r * C + t] * (double)w[r * C + t];
    }
}
#endif

// ---- Adam applied: the new parameter in one pass ------------------------------------------
// p' = p + u with u, m', v' as ADAM above, term for term, after the gradient is scaled by
// *gscale (rounded to T, as a mul by a scalar tensor would) when gscale is given. With `unit`,
// each updated row of `cols` is then scaled to unit L2 norm as fused.ts's unitRowsLoop does (sum
// of squares in double in index order, 1/sqrt, one rounding). The same bits as the composition
// fusedAdam → add → unitRows; the row is still in cache when it is renormalised. With `g_t` the
// gradient is stored transposed ([cols, rows], as a sparse product makes ∂W_enc) and read in
// tiles of 16 rows (one cache line of it per column) × ADAM_TILE_C columns, the next tile's lines
// prefetched, so no transposed copy is made first; each element's arithmetic is the same, so are
// its bits.

// n consecutive elements; `scaled` and `with_decay` are constants at each call of NAME##_span
// below, so each of the four cases is its own loop without branches, and the restrict operands
// (the outputs are fresh arrays) let it vectorise without alias checks.
#define ADAM_APPLY_SPAN(T, NAME)                                                                   \
  static inline __attribute__((always_inline)) void NAME##_span_of(                                \
      const T *restrict g, const T *restrict m, const T *restrict v, const T *restrict p,          \
      T *restrict p2, T *restrict m2, T *restrict v2, int64_t n, const NAME##_job *j,              \
      const int scaled, const int with_decay) {                                                    \
    const double b1 = j->b1, b2 = j->b2, eps = j->eps, c2 = j->c2, scale = j->scale;              \
    const double decay = j->decay, gs = j->gs;                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
      const double gi = scaled ? (double)(T)((double)g[i] * gs) : (double)g[i];                    \
      const double mm = b1 * (double)m[i] + (1 - b1) * gi;                                         \
      const double vv = b2 * (double)v[i] + (1 - b2) * gi * gi;                                    \
      m2[i] = (T)mm;                                                                               \
      v2[i] = (T)vv;                                                                               \
      const T u = (T)((scale * mm) / (sqrt(vv / c2) + eps) - (with_decay ? decay * (double)p[i] : 0)); \
      p2[i] = (T)((double)p[i] + (double)u);                                                       \
    }                                                                                              \
  }                                                                                                \
  /* Elements [o, o + n) of the parameter; their gradient from g (its element 0 is element o's). */ \
  static void NAME##_span(const NAME##_job *j, const T *g, int64_t o, int64_t n) {                 \
    const T *m = j->m + o, *v = j->v + o, *p = j->p + o;                                           \
    T *p2 = j->p2 + o, *m2 = j->m2 + o, *v2 = j->v2 + o;                                           \
    if (j->scaled && j->with_decay) NAME##_span_of(g, m, v, p, p2, m2, v2, n, j, 1, 1);            \
    else if (j->scaled) NAME##_span_of(g, m, v, p, p2, m2, v2, n, j, 1, 0);                        \
    else if (j->with_decay) NAME##_span_of(g, m, v, p, p2, m2, v2, n, j, 0, 1);                    \
    else NAME##_span_of(g, m, v, p, p2, m2, v2, n, j, 0, 0);                                       \
  }

// Columns of a transposed-gradient tile (16 rows): 64, 256, 512 and 1024 measured, 256 best.
#define ADAM_TILE_C 256

#define ADAM_APPLY(T, NAME)                                                                        \
  ROW_JOBS(NAME, const T *g; const T *m; const T *v; const T *p; T *p2; T *m2; T *v2;             \
           int64_t rows; int64_t cols; double gs; double b1; double b2; double eps; double c2;    \
           double scale; double decay; int scaled; int with_decay; int unit; int g_t)             \
  ADAM_APPLY_SPAN(T, NAME)                                                                         \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const int64_t C = j->cols, R = j->rows;                                                        \
    if (j->g_t) {                                                                                  \
      T tile[16 * ADAM_TILE_C];                                                                             \
      for (int64_t r0 = j->lo; r0 < j->hi; r0 += 16) {                                             \
        const int64_t r1 = r0 + 16 < j->hi ? r0 + 16 : j->hi;                                      \
        for (int64_t c0 = 0; c0 < C; c0 += ADAM_TILE_C) {                                          \
          const int64_t c1 = c0 + ADAM_TILE_C < C ? c0 + ADAM_TILE_C : C;                          \
          /* The tile's gradient transposed into a row-major buffer (16 values per g line), */     \
          /* then each row's span as in the contiguous case. */                                    \
          for (int64_t c = c0; c < c1; c++) {                                                      \
            if (c + ADAM_TILE_C < C) __builtin_prefetch(j->g + (c + ADAM_TILE_C) * R + r0);        \
            for (int64_t r = r0; r < r1; r++) tile[(r - r0) * ADAM_TILE_C + (c - c0)] = j->g[c * R + r]; \
          }                                                                                        \
          for (int64_t r = r0; r < r1; r++) NAME##_span(j, tile + (r - r0) * ADAM_TILE_C, r * C + c0, c1 - c0); \
        }                                                                                          \
        if (j->unit) NAME##_unit_rows(j->p2 + r0 * C, C, r1 - r0);                                 \
      }                                                                                            \
      return 0;                                                                                    \
    }                                                                                              \
    /* Eight rows, then their renormalisation while they are in cache. */                         \
    for (int64_t r0 = j->lo; r0 < j->hi; r0 += 8) {                                                \
      const int64_t r1 = r0 + 8 < j->hi ? r0 + 8 : j->hi;                                          \
      for (int64_t r = r0; r < r1; r++) NAME##_span(j, j->g + r * C, r * C, C);                    \
      if (j->unit) NAME##_unit_rows(j->p2 + r0 * C, C, r1 - r0);                                   \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *g, const T *m, const T *v, const T *p, const T *gscale, T *p2, T *m2, T *v2, \
            int64_t rows, int64_t cols, double b1, double b2, double eps, double c2, double scale, \
            double decay, int32_t with_decay, int32_t unit, int32_t g_t, int32_t threads) {        \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    const double gs = gscale ? (double)gscale[0] : 1;                                              \
    for (int t = 0; t < nt; t++) {                                                                 \
      /* Transposed: slices of whole 16-row tiles, so no two threads share a tile's g lines. */    \
      const int64_t lo = g_t ? (t == 0 ? 0 : rows * t / nt / 16 * 16) : rows * t / nt;             \
      const int64_t hi = g_t ? (t == nt - 1 ? rows : rows * (t + 1) / nt / 16 * 16)                \
                             : rows * (t + 1) / nt;                                                \
      jobs[t] = (NAME##_job){g,     m,     v,    p,          p2,         m2,   v2,   rows,        \
                             cols,  gs,    b1,   b2,         eps,        c2,   scale, decay,      \
                             gscale != 0,  with_decay,       unit,       g_t,  lo,   hi};          \
    }                                                                                              \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }

// A row of an updated parameter scaled to unit L2 norm (see ADAM_APPLY).
#define UNIT_ROW(T, NAME)                                                                          \
  static inline void NAME##_scale_row(T *w, int64_t C, double s) {                                 \
    const double inv = 1 / sqrt(s);                                                                \
    for (int64_t c = 0; c < C; c++) w[c] = (T)((double)w[c] * inv);                                \
  }                                                                                                \
  /* n rows from w; f32 rows eight at a time where rows8_sumsq_f32 exists (the same sums). */       \
  static void NAME##_unit_rows(T *w, int64_t C, int64_t n) {                                       \
    int64_t r = 0;                                                                                 \
    UNIT_ROWS8_##T(w, C, n, r, NAME)                                                               \
    for (; r < n; r++) {                                                                           \
      double s = 0;                                                                                \
      for (int64_t c = 0; c < C; c++) s += (double)w[r * C + c] * (double)w[r * C + c];            \
      NAME##_scale_row(w + r * C, C, s);                                                           \
    }                                                                                              \
  }
#ifdef SC_AVX2
#define UNIT_ROWS8_float(w, C, n, r, NAME)                                                         \
  for (; r + 8 <= n; r += 8) {                                                                     \
    double s8[8];                                                                                  \
    rows8_sumsq_f32(w + r * C, C, s8, 0);                                                 \
    for (int q = 0; q < 8; q++) NAME##_scale_row(w + (r + q) * C, C, s8[q]);                       \
  }
#else
#define UNIT_ROWS8_float(w, C, n, r, NAME)
#endif
#define UNIT_ROWS8_double(w, C, n, r, NAME)

// ---- L2 norm of each row: sqrt(sum(square(x), -1)) --------------------------------------------
// The composition's bits in one read: each square rounded to T (the elementwise product), added
// in double in index order and rounded once (the sum), then the square root of that T; f32 rows
// eight at a time through rows8_sumsq_f32 (the same sums).
#define ROW_NORMS(T, NAME, SQRT)                                                                   \
  ROW_JOBS(NAME, const T *x; T *out; int64_t n)                                                    \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t n = j->n;                                                                        \
    int64_t r = j->lo;                                                                             \
    ROW_NORMS8_##T(j, n, r, SQRT)                                                                  \
    for (; r < j->hi; r++) {                                                                       \
      double s = 0;                                                                                \
      for (int64_t k = 0; k < n; k++) {                                                            \
        const T v = j->x[r * n + k], sq = v * v;                                                   \
        s += sq;                                                                                   \
      }                                                                                            \
      j->out[r] = SQRT((T)s);                                                                      \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, int64_t rows, int64_t n, T *out, int32_t threads) {                        \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++) jobs[t] = (NAME##_job){x, out, n, rows * t / nt, rows * (t + 1) / nt}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
#ifdef SC_AVX2
#define ROW_NORMS8_float(j, n, r, SQRT)                                                            \
  for (; r + 8 <= j->hi; r += 8) {                                                                 \
    double s8[8];                                                                                  \
    rows8_sumsq_f32(j->x + r * n, n, s8, 1);                                                       \
    for (int q = 0; q < 8; q++) j->out[r + q] = SQRT((float)s8[q]);                                \
  }
#else
#define ROW_NORMS8_float(j, n, r, SQRT)
#endif
#define ROW_NORMS8_double(j, n, r, SQRT)
ROW_NORMS(float, sc_row_norms_f32, sqrtf)
ROW_NORMS(double, sc_row_norms_f64, sqrt)

UNIT_ROW(float, sc_adam_apply_f32)
UNIT_ROW(double, sc_adam_apply_f64)
ADAM_APPLY(float, sc_adam_apply_f32)
ADAM_APPLY(double, sc_adam_apply_f64)

// ---- Decoder-gradient projection: out = g − ((g·w)/‖w‖²)·w per row ------------------------------
// fused.ts's projectOutRowsLoop term for term (both dot products in double in index order). With
// `sumsq`, also Σ out² (sum_squares.h: the bits of sc_sum_squares), each block summed as soon as
// its rows are written, while they are in cache: the global norm's pass over the gradient saved.

#define PROJECT_OUT_ROWS(T, NAME, SUF)                                                             \
  ROW_JOBS(NAME, const T *g; const T *w; T *out; int64_t cols; double *bs; int64_t n_all)                         \
  static inline void NAME##_row(const T *g, const T *w, T *o, int64_t C, double ww, double gw) {  \
    const double s = gw / ww;                                                                      \
    for (int64_t c = 0; c < C; c++) o[c] = (T)((double)g[c] - s * (double)w[c]);                  \
  }                                                                                                \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const int64_t C = j->cols, n = j->n_all, lo = j->lo * C;                       \
    int64_t r = j->lo, next = 0;                                                                   \
    PROJECT_ROWS8_##T(j, C, r, NAME, SUF)                                                          \
    for (; r < j->hi; r++) {                                                                       \
      const T *g = j->g + r * C, *w = j->w + r * C;                                                \
      double ww = 0, gw = 0;                                                                       \
      for (int64_t c = 0; c < C; c++) {                                                            \
        ww += (double)w[c] * (double)w[c];                                                         \
        gw += (double)g[c] * (double)w[c];                                                         \
      }                                                                                            \
      NAME##_row(g, w, j->out + r * C, C, ww, gw);                                                 \
      ss_upto_##SUF(j->out, n, lo, (r + 1) * C, &next, j->bs);                                     \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *g, const T *w, T *out, int64_t rows, int64_t cols, int32_t threads, T *sumsq) { \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    double *bs = sumsq ? ss_todo(rows * cols) : 0;                                                 \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){g, w, out, cols, bs, rows * cols, rows * t / nt, rows * (t + 1) / nt}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    if (sumsq) {                                                                                   \
      if (bs) sumsq[0] = ss_total_##SUF(out, rows * cols, bs);                                     \
      else sc_sum_squares_##SUF(out, rows * cols, sumsq, 1);                                       \
    }                                                                                              \
    free(bs);                                                                                      \
  }
// One row's two sums are chains of dependent adds (4 cycles each, 3 ms a step for [8192, 512]):
// f32 rows go eight at a time through rows8_dots_f32, the same sums side by side.
#ifdef SC_AVX2
#define PROJECT_ROWS8_float(j, C, r, NAME, SUF)                                                    \
  for (; r + 8 <= j->hi; r += 8) {                                                                 \
    double ww[8], gw[8];                                                                           \
    rows8_dots_f32(j->g + r * C, j->w + r * C, C, ww, gw);                                         \
    for (int q = 0; q < 8; q++)                                                                    \
      NAME##_row(j->g + (r + q) * C, j->w + (r + q) * C, j->out + (r + q) * C, C, ww[q], gw[q]);   \
    ss_upto_##SUF(j->out, n, lo, (r + 8) * C, &next, j->bs);                                       \
  }
#else
#define PROJECT_ROWS8_float(j, C, r, NAME, SUF)
#endif
#define PROJECT_ROWS8_double(j, C, r, NAME, SUF)

PROJECT_OUT_ROWS(float, sc_project_out_rows_f32, f32)
PROJECT_OUT_ROWS(double, sc_project_out_rows_f64, f64)

// ---- Sum of squares -------------------------------------------------------------------------
// Σ x² in sum_squares.h's order (blocks summed by the threads, then added in order). That order
// differs from sum()'s one running sum: in f32 the result may differ from sum(square(x)) by one
// rounding (the double sums agree to ~n·2⁻⁵³ relative), in f64 by n·2⁻⁵² relative
// (tests/native_fused_step.test.ts checks both, and that the kernels below that hand it back on
// the way give these bits).

#define SUM_SQUARES(T, SUF)                                                                        \
  typedef struct {                                                                                 \
    const T *x;                                                                                    \
    double *bs;                                                                                    \
    int64_t n, b0, b1;                                                                             \
  } ss_##SUF##_job;                                                                                \
  static void *ss_##SUF##_task(void *q) {                                                          \
    ss_##SUF##_job *j = q;                                                                         \
    ss_range_##SUF(j->x, j->n, j->b0, j->b1, j->bs);                                               \
    return 0;                                                                                      \
  }                                                                                                \
  void sc_sum_squares_##SUF(const T *x, int64_t n, T *out, int32_t threads) {                      \
    const int64_t nb = ss_blocks(n);                                                               \
    double *bs = ss_todo(n);                                                                       \
    if (!bs) { /* one thread needs no list of the blocks' sums */                                  \
      double s = 0;                                                                                \
      for (int64_t b = 0; b < nb; b++)                                                             \
        s += ss_block_##SUF(x + b * SS_BLOCK, n - b * SS_BLOCK < SS_BLOCK ? n - b * SS_BLOCK : SS_BLOCK); \
      out[0] = (T)s;                                                                               \
      return;                                                                                      \
    }                                                                                              \
    int nt = clamp_threads(threads);                                                               \
    if (nt > nb) nt = nb < 1 ? 1 : (int)nb;                                                        \
    ss_##SUF##_job jobs[MAX_THREADS];                                                              \
    for (int t = 0; t < nt; t++) jobs[t] = (ss_##SUF##_job){x, bs, n, nb * t / nt, nb * (t + 1) / nt}; \
    run_tasks(ss_##SUF##_task, jobs, sizeof(ss_##SUF##_job), nt);                                  \
    out[0] = ss_total_##SUF(x, n, bs);                                                             \
    free(bs);                                                                                      \
  }

SUM_SQUARES(float, f32)
SUM_SQUARES(double, f64)

// ---- Σ over columns of the variance over rows, of x or of x − y ------------------------------
// FVU's numerator and denominator: Σ_j var_j over the rows of a [rows, cols] matrix (biased, as
// variance(x, 0) is), in double: column means first, then squared deviations, one rounding at the
// end. The composition (sub, mean, sub, square, sum, div) rounds after every op, so the two agree
// within a few f32 roundings (tests/native_fused_step.test.ts). Threads own column ranges.

#define COL_VAR_SUM(T, NAME)                                                                       \
  ROW_JOBS(NAME, const T *x; const T *y; int64_t rows; int64_t cols; double *acc; double s)        \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const int64_t R = j->rows, C = j->cols, c0 = j->lo, w = j->hi - j->lo;                         \
    double *mu = j->acc, *ss = j->acc + w;                                                         \
    for (int64_t c = 0; c < w; c++) mu[c] = 0, ss[c] = 0;                                          \
    for (int64_t r = 0; r < R; r++) {                                                              \
      const T *a = j->x + r * C + c0, *b = j->y ? j->y + r * C + c0 : 0;                           \
      if (b) for (int64_t c = 0; c < w; c++) mu[c] += (double)a[c] - (double)b[c];                 \
      else for (int64_t c = 0; c < w; c++) mu[c] += (double)a[c];                                  \
    }                                                                                              \
    for (int64_t c = 0; c < w; c++) mu[c] /= (double)R;                                            \
    for (int64_t r = 0; r < R; r++) {                                                              \
      const T *a = j->x + r * C + c0, *b = j->y ? j->y + r * C + c0 : 0;                           \
      for (int64_t c = 0; c < w; c++) {                                                            \
        const double e = (double)a[c] - (b ? (double)b[c] : 0) - mu[c];                            \
        ss[c] += e * e;                                                                            \
      }                                                                                            \
    }                                                                                              \
    double s = 0;                                                                                  \
    for (int64_t c = 0; c < w; c++) s += ss[c] / (double)R;                                        \
    j->s = s;                                                                                      \
    return 0;                                                                                      \
  }                                                                                                \
  int32_t NAME(const T *x, const T *y, int64_t rows, int64_t cols, T *out, int32_t threads) {      \
    int nt = clamp_threads(threads);                                                               \
    if (nt > cols / 8) nt = cols / 8 < 1 ? 1 : (int)(cols / 8);                                    \
    double *acc = malloc(sizeof(double) * 2 * (size_t)(cols > 0 ? cols : 1));                      \
    if (!acc) return -2;                                                                           \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++) {                                                                 \
      const int64_t c0 = t == 0 ? 0 : cols * t / nt / 8 * 8;                                       \
      const int64_t c1 = t == nt - 1 ? cols : cols * (t + 1) / nt / 8 * 8;                         \
      jobs[t] = (NAME##_job){x, y, rows, cols, acc + 2 * c0, 0, c0, c1};                           \
    }                                                                                              \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    double s = 0;                                                                                  \
    for (int t = 0; t < nt; t++) s += jobs[t].s;                                                   \
    out[0] = (T)s;                                                                                 \
    free(acc);                                                                                     \
    return -1;                                                                                     \
  }

COL_VAR_SUM(float, sc_col_var_sum_f32)
COL_VAR_SUM(double, sc_col_var_sum_f64)

// ---- Transpose --------------------------------------------------------------------------------
// out [cols, rows] = x [rows, cols]ᵀ in 32×32 tiles, so reads and writes both stay within a few
// cache lines per tile (a plain strided copy touches a new line on every write). A copy: exact.

#define TRANSPOSE(T, NAME)                                                                         \
  ROW_JOBS(NAME, const T *x; T *out; int64_t rows; int64_t cols)                                   \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const int64_t R = j->rows, C = j->cols;                                                        \
    for (int64_t r0 = j->lo; r0 < j->hi; r0 += 32) {                                               \
      const int64_t r1 = r0 + 32 < j->hi ? r0 + 32 : j->hi;                                        \
      for (int64_t c0 = 0; c0 < C; c0 += 32) {                                                     \
        const int64_t c1 = c0 + 32 < C ? c0 + 32 : C;                                              \
        for (int64_t c = c0; c < c1; c++)                                                          \
          for (int64_t r = r0; r < r1; r++) j->out[c * R + r] = j->x[r * C + c];                   \
      }                                                                                            \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, int64_t rows, int64_t cols, T *out, int32_t threads) {                     \
    int nt = clamp_threads(threads);                                                               \
    const int64_t tiles = (rows + 31) / 32;                                                        \
    if (nt > tiles) nt = tiles < 1 ? 1 : (int)tiles;                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, out, rows, cols, tiles * t / nt * 32,                              \
                             t == nt - 1 ? rows : tiles * (t + 1) / nt * 32};                      \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }

TRANSPOSE(float, sc_transpose_f32)
TRANSPOSE(double, sc_transpose_f64)

// ---- Inference kernels: one pass standing in for a composition of ops -----------------------
// Used only where autodiff watches no operand (a fused kernel has no VJP rule). Unlike the kernels
// above, these have no TypeScript twin with the same bits: they compute in double and round once,
// where the composition they replace rounds after every op, so they agree with it within f32
// rounding (tests/lm_fused.test.ts) and are, if anything, closer to the exact value.


// A row's mean (0 unless center) and inverse scale 1/√(mean (x − mean)² + eps), in double.
#define ROW_STATS(X, C, CENTER, EPS, MEAN, INV)                                                    \
  double MEAN = 0, INV;                                                                            \
  {                                                                                                \
    double ss_ = 0;                                                                                \
    if (CENTER) {                                                                                  \
      for (int64_t c = 0; c < C; c++) MEAN += X[c];                                                \
      MEAN /= (double)C;                                                                           \
    }                                                                                              \
    for (int64_t c = 0; c < C; c++) {                                                              \
      const double d_ = X[c] - MEAN;                                                               \
      ss_ += d_ * d_;                                                                              \
    }                                                                                              \
    INV = 1.0 / sqrt(ss_ / (double)C + EPS);                                                       \
  }

// out = (x − mean)/√(var + eps)·w + b per row (LayerNorm, biased variance) when center, else
// x/√(mean x² + eps)·w (RMSNorm), w taken as 1 + w with plus_one; b may be null.
#define ROW_NORM(T, NAME)                                                                          \
  ROW_JOBS(NAME, const T *x; const T *w; const T *b; T *out; int64_t cols; double eps;             \
           int32_t center; int32_t plus_one)                                                       \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t C = j->cols;                                                                     \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const T *x = j->x + r * C;                                                                   \
      T *o = j->out + r * C;                                                                       \
      ROW_STATS(x, C, j->center, j->eps, mean, inv)                                                \
      for (int64_t c = 0; c < C; c++) {                                                            \
        const double w = j->plus_one ? 1.0 + (double)j->w[c] : (double)j->w[c];                    \
        o[c] = (T)((x[c] - mean) * inv * w + (j->b ? (double)j->b[c] : 0.0));                      \
      }                                                                                            \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, const T *w, const T *b, T *out, int64_t rows, int64_t cols, double eps,    \
            int32_t center, int32_t plus_one, int32_t threads) {                                   \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, w, b, out, cols, eps, center, plus_one, rows * t / nt,             \
                             rows * (t + 1) / nt};                                                 \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
ROW_NORM(float, sc_row_norm_f32)
ROW_NORM(double, sc_row_norm_f64)

// e^x in f32 to about 2 ulp, branch-free so that loops over it vectorise (libm's expf does not,
// and at ~8 ns a call it dominated gelu): x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for
// an exact n·ln2_hi), e^r by its degree-6 Taylor polynomial (error r⁷/7! < 2e-7 relative), 2ⁿ
// put into the exponent bits. Clamped to [−87, 88] so 2ⁿ stays a normal float: exp(−87) ≈ 1.6e−38
// stands for every smaller value (it only ever divides or is added to 1 here).
// The clamps are selects only without trapping math (which changes no result here, and is
// switched off for this section alone); with it GCC keeps them as branches and no loop vectorises.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
static inline float exp_f32(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x/ln2), by truncating a positive value (x/ln2 + 128.5 ≥ 3 after the clamp).
  const int32_t n = (int32_t)(x * 1.44269504f + 128.5f) - 128;
  const float r = (x - (float)n * 0.693359375f) - (float)n * -2.12194440e-4f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  const int32_t bits = (n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// erf in f32 by Abramowitz & Stegun 7.1.26: 1 − t·P(t)·e^(−x²), t = 1/(1 + p|x|), odd in x. The
// formula's absolute error is below 1.5e-7; with f32 rounding and exp_f32, |erf_f32 − erf| stays
// below 2.5e-7 (tests/fused_ops.test.ts measures it against f64). Branch-free, so it vectorises.
static inline float erf_f32(float x) {
  const float ax = fabsf(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  const float poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float y = 1.0f - poly * exp_f32(-ax * ax);
  return copysignf(y, x);
}

// Exact gelu in f32: ½x(1 + erf(x/√2)); its error is ½|x| times erf_f32's plus a few roundings.
static inline float gelu_f32(float x) { return 0.5f * x * (1.0f + erf_f32(x * 0.70710678f)); }

static inline double gelu_f64(double a) { return 0.5 * a * (1.0 + erf(a * 0.7071067811865476)); }

// Activations: 0 gelu with tanh (x·σ(2u), u = √(2/π)(x + 0.044715x³), which equals
// ½x(1 + tanh u) without its cancellation), 1 exact gelu ½x(1 + erf(x/√2)), 2 silu x·σ(x).
// EXP is the exponential used: libm's exp for f64, exp_f32 for f32 (its argument rounded to f32
// moves e^y by |y|·6e-8 relative, which matters only where the result is negligible); GELU the
// exact gelu: in double with libm's erf for f64, gelu_f32 (vectorised) for f32.
#define ACTIVATION(T, NAME, EXP, GELU)                                                                   \
  ROW_JOBS(NAME, const T *x; T *out; int32_t kind)                                                 \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const T *x = j->x;                                                                             \
    T *out = j->out;                                                                               \
    if (j->kind == 0) {                                                                            \
      for (int64_t i = j->lo; i < j->hi; i++) {                                                    \
        const double a = x[i], u = 0.7978845608028654 * (a + 0.044715 * a * a * a);                \
        out[i] = (T)(a / (1.0 + EXP(-2.0 * u)));                                                   \
      }                                                                                            \
    } else if (j->kind == 1) {                                                                     \
      for (int64_t i = j->lo; i < j->hi; i++) out[i] = GELU(x[i]);                                 \
    } else {                                                                                       \
      for (int64_t i = j->lo; i < j->hi; i++) {                                                    \
        const double a = x[i];                                                                     \
        out[i] = (T)(a / (1.0 + EXP(-a)));                                                         \
      }                                                                                            \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, T *out, int64_t n, int32_t kind, int32_t threads) {                        \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, out, kind, slice_start(n, t, nt), slice_start(n, t + 1, nt)};      \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
ACTIVATION(float, sc_activation_f32, exp_f32, gelu_f32)
ACTIVATION(double, sc_activation_f64, exp, gelu_f64)

// Causal attention's pattern from raw scores [B·H, T, T]: s·scale, soft-capped c·tanh(s/c) when
// softcap > 0, keys whose mask byte (mask [B, T], may be null) is 0 set to −1e30, keys after the
// query or at least `window` before it (window ≤ 0: none) excluded, then a softmax over the row.
#define ATTN_SOFTMAX(T, NAME)                                                                      \
  ROW_JOBS(NAME, const T *s; T *out; const uint8_t *mask; int64_t t; int64_t heads;               \
           double scale; double softcap; int64_t window; double *row)                              \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t Tn = j->t;                                                                       \
    double *v = j->row;                                                                            \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const int64_t i = r % Tn, bh = r / Tn;                                                       \
      const uint8_t *m = j->mask ? j->mask + (bh / j->heads) * Tn : 0;                             \
      const T *s = j->s + r * Tn;                                                                  \
      T *o = j->out + r * Tn;                                                                      \
      const int64_t lo = j->window > 0 && i - j->window + 1 > 0 ? i - j->window + 1 : 0;           \
      double mx = -INFINITY, sum = 0;                                                              \
      for (int64_t k = lo; k <= i; k++) {                                                          \
        double a = s[k] * j->scale;                                                                \
        if (j->softcap > 0) a = j->softcap * tanh(a / j->softcap);                                 \
        if (m && !m[k]) a = -1e30;                                                                 \
        v[k] = a;                                                                                  \
        if (a > mx) mx = a;                                                                        \
      }                                                                                            \
      for (int64_t k = lo; k <= i; k++) sum += v[k] = exp(v[k] - mx);                              \
      for (int64_t k = 0; k < lo; k++) o[k] = 0;                                                   \
      for (int64_t k = lo; k <= i; k++) o[k] = (T)(v[k] / sum);                                    \
      for (int64_t k = i + 1; k < Tn; k++) o[k] = 0;                                               \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  int32_t NAME(const T *s, T *out, const uint8_t *mask, int64_t rows, int64_t t, int64_t heads,    \
               double scale, double softcap, int64_t window, int32_t threads) {                    \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    double *row = malloc(sizeof(double) * (size_t)(t > 0 ? t : 1) * (size_t)nt);                   \
    if (!row) return 0;                                                                            \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int u = 0; u < nt; u++)                                                                   \
      jobs[u] = (NAME##_job){s,     out,    mask,      t,           heads,                         \
                             scale, softcap, window,   row + u * t, rows * u / nt,                 \
                             rows * (u + 1) / nt};                                                 \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    free(row);                                                                                     \
    return -1;                                                                                     \
  }
ATTN_SOFTMAX(float, sc_attn_softmax_f32)
ATTN_SOFTMAX(double, sc_attn_softmax_f64)

// out[i] = x[i] + y[i mod m] (or −, ×): a sum of two arrays of one shape (m = n) or of an array and a
// row broadcast over it (m = the row's length; 1 for a scalar). The same bits as the backend's
// TypeScript add/sub/mul (one correctly rounded operation either way).
#define ROWS_OP(T, NAME, OP)                                                                       \
  ROW_JOBS(NAME, const T *x; const T *y; T *out; int64_t m)                                        \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const T *x = j->x, *y = j->y;                                                                  \
    T *out = j->out;                                                                               \
    const int64_t m = j->m;                                                                        \
    if (m == 0) {                                                                                  \
      for (int64_t i = j->lo; i < j->hi; i++) out[i] = x[i] OP y[i];                                  \
      return 0;                                                                                    \
    }                                                                                              \
    for (int64_t r = j->lo; r < j->hi; r++)                                                        \
      for (int64_t c = 0; c < m; c++) out[r * m + c] = x[r * m + c] OP y[c];                        \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, const T *y, T *out, int64_t n, int64_t m, int32_t threads) {               \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    if (m == n) { /* elements split over threads; m = 0 marks the flat loop */                     \
      for (int t = 0; t < nt; t++)                                                                 \
        jobs[t] = (NAME##_job){x, y, out, 0, slice_start(n, t, nt), slice_start(n, t + 1, nt)};    \
    } else { /* rows split over threads */                                                         \
      const int64_t rows = n / m;                                                                  \
      if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                \
      for (int t = 0; t < nt; t++)                                                                 \
        jobs[t] = (NAME##_job){x, y, out, m, rows * t / nt, rows * (t + 1) / nt};                  \
    }                                                                                              \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
ROWS_OP(float, sc_add_rows_f32, +)
ROWS_OP(double, sc_add_rows_f64, +)
ROWS_OP(float, sc_sub_rows_f32, -)
ROWS_OP(double, sc_sub_rows_f64, -)
ROWS_OP(float, sc_mul_rows_f32, *)
ROWS_OP(double, sc_mul_rows_f64, *)

// out [rows, m] = the row y in every row (the encoder's bias, before the GEMM adds onto it):
// one core's stores alone do not reach the memory's write rate.
#define FILL_ROWS(T, NAME)                                                                         \
  ROW_JOBS(NAME, const T *y; T *out; int64_t m)                                                    \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    for (int64_t r = j->lo; r < j->hi; r++) memcpy(j->out + r * j->m, j->y, sizeof(T) * (size_t)j->m); \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *y, T *out, int64_t rows, int64_t m, int32_t threads) {                        \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++) jobs[t] = (NAME##_job){y, out, m, rows * t / nt, rows * (t + 1) / nt}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
FILL_ROWS(float, sc_fill_rows_f32)
FILL_ROWS(double, sc_fill_rows_f64)

// ---- A copy with element spans zeroed (the DFC's gradient masks) -----------------------------
// out = src but for elements [spans[2i], spans[2i + 1]) (ascending, disjoint; elements of `size`
// bytes), which are zero bytes: each byte written once, threads on equal slices of the bytes.
typedef struct {
  const uint8_t *src;
  uint8_t *out;
  const int32_t *spans;
  int64_t nsp, size, lo, hi;
} zero_spans_job;

static void *zero_spans_task(void *p) {
  const zero_spans_job *j = p;
  // The first span that ends past this slice's start.
  int64_t s = 0, e = j->nsp;
  while (s < e) {
    const int64_t m = (s + e) / 2;
    if ((int64_t)j->spans[2 * m + 1] * j->size <= j->lo) s = m + 1;
    else e = m;
  }
  for (int64_t at = j->lo; at < j->hi; s++) {
    int64_t a = j->hi, b = j->hi;
    if (s < j->nsp) {
      a = (int64_t)j->spans[2 * s] * j->size, b = (int64_t)j->spans[2 * s + 1] * j->size;
      a = a < at ? at : a > j->hi ? j->hi : a;
      b = b > j->hi ? j->hi : b < a ? a : b;
    }
    if (a > at) memcpy(j->out + at, j->src + at, (size_t)(a - at));
    if (b > a) memset(j->out + a, 0, (size_t)(b - a));
    at = b;
  }
  return 0;
}

void sc_zero_spans(const uint8_t *src, uint8_t *out, int64_t n, int32_t size, const int32_t *spans, int64_t nsp,
                   int32_t threads) {
  const int64_t bytes = n * size;
  int nt = clamp_threads(threads);
  zero_spans_job jobs[MAX_THREADS];
  for (int t = 0; t < nt; t++)
    jobs[t] = (zero_spans_job){src, out, spans, nsp, size, t == 0 ? 0 : bytes * t / nt / 64 * 64,
                               t == nt - 1 ? bytes : bytes * (t + 1) / nt / 64 * 64};
  run_tasks(zero_spans_task, jobs, sizeof(zero_spans_job), nt);
}

// ---- Training kernels: forward and backward of fused ops under autodiff ---------------------
// autodiff/fused_ops.ts wraps these in customVjp rules: the forward pass keeps what the backward
// needs (a row's log-sum-exp) and the backward pass reads the inputs again rather than keeping
// [N, V] temporaries. Like the inference kernels, they agree with their compositions within
// rounding, not bit for bit: f64 in double with libm throughout; f32 with exp_f32/erf_f32, whose
// loops vectorise (the compositions run one libm call per element).

// out = g·act'(x): 0 gelu's tanh form, y = x·s with s = σ(2u), so y' = s + 2x·s(1 − s)·u' and
// u' = √(2/π)(1 + 3·0.044715x²); 1 exact gelu, y' = Φ(x) + x·φ(x); 2 silu, y' = σ(1 + x(1 − σ)).
// 1 − σ(z) is taken as e^(−z)·σ(z): no cancellation where σ is near 1.
#define ACT_GRAD_BODY(T, EXP, ERF)                                                                 \
  if (j->kind == 0) {                                                                              \
    for (int64_t i = j->lo; i < j->hi; i++) {                                                      \
      const T a = x[i], u = (T)0.7978845608028654 * (a + (T)0.044715 * a * a * a);                 \
      const T e = EXP(-(T)2 * u), s = (T)1 / ((T)1 + e);                                           \
      const T du = (T)0.7978845608028654 * ((T)1 + (T)0.134145 * a * a);                           \
      out[i] = g[i] * (s + (T)2 * a * s * (e * s) * du);                                           \
    }                                                                                              \
  } else if (j->kind == 1) {                                                                       \
    for (int64_t i = j->lo; i < j->hi; i++) {                                                      \
      const T a = x[i];                                                                            \
      const T cdf = (T)0.5 * ((T)1 + ERF(a * (T)0.7071067811865476));                              \
      out[i] = g[i] * (cdf + a * (T)0.3989422804014327 * EXP((T)-0.5 * a * a));                   \
    }                                                                                              \
  } else {                                                                                         \
    for (int64_t i = j->lo; i < j->hi; i++) {                                                      \
      const T a = x[i], e = EXP(-a), s = (T)1 / ((T)1 + e);                                        \
      out[i] = g[i] * (s * ((T)1 + a * (e * s)));                                                  \
    }                                                                                              \
  }

#define ACTIVATION_GRAD(T, NAME, EXP, ERF)                                                         \
  ROW_JOBS(NAME, const T *g; const T *x; T *out; int32_t kind)                                     \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const T *g = j->g, *x = j->x;                                                                  \
    T *out = j->out;                                                                               \
    ACT_GRAD_BODY(T, EXP, ERF)                                                                     \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *g, const T *x, T *out, int64_t n, int32_t kind, int32_t threads) {            \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){g, x, out, kind, slice_start(n, t, nt), slice_start(n, t + 1, nt)};   \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
ACTIVATION_GRAD(float, sc_activation_grad_f32, exp_f32, erf_f32)
ACTIVATION_GRAD(double, sc_activation_grad_f64, exp, erf)

// The squared error's cotangent: mean over rows of Σ (x − y)² has ∂x = 2·(s·r) and ∂y = −2·(s·r)
// for r = x − y and s = g/rows. The composition's rules form s·r once for each factor of r·r,
// add the two and negate for y; q + q is exact, so one product per element gives their bits.
#define SQUARED_ERROR_GRAD(T, NAME)                                                                \
  ROW_JOBS(NAME, const T *r; T s; T *out; int32_t negate)                                          \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const T *restrict r = j->r, s = j->s;                                                          \
    T *restrict out = j->out;                                                                      \
    if (j->negate) {                                                                               \
      for (int64_t i = j->lo; i < j->hi; i++) {                                                    \
        const T q = s * r[i];                                                                      \
        out[i] = -(q + q);                                                                         \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = j->lo; i < j->hi; i++) {                                                    \
        const T q = s * r[i];                                                                      \
        out[i] = q + q;                                                                            \
      }                                                                                            \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *r, const T *s, T *out, int64_t n, int32_t negate, int32_t threads) {          \
    int nt = clamp_threads(threads);                                                               \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){r, *s, out, negate, slice_start(n, t, nt), slice_start(n, t + 1, nt)}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
SQUARED_ERROR_GRAD(float, sc_squared_error_grad_f32)
SQUARED_ERROR_GRAD(double, sc_squared_error_grad_f64)

// Its forward half: r = x − y and each row's Σ r², as sub, mul and a sum over the last axis give
// them (r and r·r rounded to T, the squares summed in double in index order, rounded once), in
// one pass over [rows, cols].
#define SQUARED_ERROR_ROWS(T, NAME)                                                                \
  ROW_JOBS(NAME, const T *x; const T *y; T *r; T *s; int64_t cols)                                 \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t C = j->cols;                                                                     \
    for (int64_t row = j->lo; row < j->hi; row++) {                                                \
      const T *restrict x = j->x + row * C, *restrict y = j->y + row * C;                          \
      T *restrict r = j->r + row * C;                                                              \
      double acc = 0;                                                                              \
      for (int64_t c = 0; c < C; c++) {                                                            \
        const T d = x[c] - y[c];                                                                   \
        const T q = d * d;                                                                         \
        r[c] = d;                                                                                  \
        acc += q;                                                                                  \
      }                                                                                            \
      j->s[row] = (T)acc;                                                                          \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, const T *y, T *r, T *s, int64_t rows, int64_t cols, int32_t threads) {     \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows > 0 ? (int)rows : 1;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, y, r, s, cols, rows * t / nt, rows * (t + 1) / nt};                \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
SQUARED_ERROR_ROWS(float, sc_squared_error_rows_f32)
SQUARED_ERROR_ROWS(double, sc_squared_error_rows_f64)

// Softmax cross-entropy per row of x [rows, V] with target tgt[r] (rows whose target is `ignore`
// get loss 0 and lse 0): lse = max + log Σ e^(x − max), loss = lse − x[tgt]. Returns -1, or the
// first row whose target is neither in [0, V) nor `ignore`. f32 keeps 16 partial maxima and sums
// (vectorised; the sums are added in double at the end).
#define CE_LANES 16
static double ce_row_f32(const float *x, int64_t V) {
  float m16[CE_LANES], s16[CE_LANES];
  int64_t c = 0;
  for (int k = 0; k < CE_LANES; k++) m16[k] = -INFINITY, s16[k] = 0;
  for (; c + CE_LANES <= V; c += CE_LANES)
    for (int k = 0; k < CE_LANES; k++) m16[k] = x[c + k] > m16[k] ? x[c + k] : m16[k];
  float mx = -INFINITY;
  for (int k = 0; k < CE_LANES; k++) mx = m16[k] > mx ? m16[k] : mx;
  for (int64_t i = c; i < V; i++) mx = x[i] > mx ? x[i] : mx;
  if (mx == -INFINITY || mx != mx) return mx;  // all −∞ (lse −∞) or a NaN (NaN)
  for (c = 0; c + CE_LANES <= V; c += CE_LANES)
    for (int k = 0; k < CE_LANES; k++) s16[k] += exp_f32(x[c + k] - mx);
  double s = 0;
  for (int k = 0; k < CE_LANES; k++) s += s16[k];
  for (int64_t i = c; i < V; i++) s += exp_f32(x[i] - mx);
  return (double)mx + log(s);
}

static double ce_row_f64(const double *x, int64_t V) {
  double mx = -INFINITY, s = 0;
  for (int64_t i = 0; i < V; i++) mx = x[i] > mx || x[i] != x[i] ? x[i] : mx;
  if (mx == -INFINITY || mx != mx) return mx;
  for (int64_t i = 0; i < V; i++) s += exp(x[i] - mx);
  return mx + log(s);
}

#define CROSS_ENTROPY(T, NAME, ROW)                                                                \
  ROW_JOBS(NAME, const T *x; const int32_t *tgt; T *loss; T *lse; int64_t V; int32_t ignore;       \
           int64_t bad)                                                                            \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    j->bad = -1;                                                                                   \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const int32_t t = j->tgt[r];                                                                 \
      if (t == j->ignore) {                                                                        \
        j->loss[r] = 0, j->lse[r] = 0;                                                             \
        continue;                                                                                  \
      }                                                                                            \
      if (t < 0 || t >= j->V) {                                                                    \
        if (j->bad < 0) j->bad = r;                                                                \
        continue;                                                                                  \
      }                                                                                            \
      const T *x = j->x + r * j->V;                                                                \
      const double l = ROW(x, j->V);                                                               \
      j->lse[r] = (T)l;                                                                            \
      j->loss[r] = (T)(l - (double)x[t]);                                                          \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  int64_t NAME(const T *x, const int32_t *tgt, T *loss, T *lse, int64_t rows, int64_t V,           \
               int32_t ignore, int32_t threads) {                                                  \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, tgt, loss, lse, V, ignore, -1, rows * t / nt, rows * (t + 1) / nt}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    for (int t = 0; t < nt; t++)                                                                   \
      if (jobs[t].bad >= 0) return jobs[t].bad;                                                    \
    return -1;                                                                                     \
  }
CROSS_ENTROPY(float, sc_cross_entropy_f32, ce_row_f32)
CROSS_ENTROPY(double, sc_cross_entropy_f64, ce_row_f64)

// ∂x = (softmax(x) − onehot(tgt))·g[r] per row, from the forward pass's lse: e^(x − lse) is the
// softmax. Rows whose target is `ignore` get 0. Targets were checked by the forward pass; one out
// of range here is skipped (its row gets no −g), never written.
#define CROSS_ENTROPY_GRAD(T, NAME, EXP)                                                           \
  ROW_JOBS(NAME, const T *x; const int32_t *tgt; const T *lse; const T *g; T *out; int64_t V;      \
           int32_t ignore)                                                                         \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t V = j->V;                                                                        \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const int32_t t = j->tgt[r];                                                                 \
      const T *x = j->x + r * V;                                                                   \
      T *o = j->out + r * V;                                                                       \
      if (t == j->ignore) {                                                                        \
        memset(o, 0, sizeof(T) * (size_t)V);                                                       \
        continue;                                                                                  \
      }                                                                                            \
      const T l = j->lse[r], gr = j->g[r];                                                         \
      for (int64_t c = 0; c < V; c++) o[c] = EXP(x[c] - l) * gr;                                   \
      if (t >= 0 && t < V) o[t] -= gr;                                                             \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *x, const int32_t *tgt, const T *lse, const T *g, T *out, int64_t rows,        \
            int64_t V, int32_t ignore, int32_t threads) {                                          \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){x, tgt, lse, g, out, V, ignore, rows * t / nt, rows * (t + 1) / nt};  \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
CROSS_ENTROPY_GRAD(float, sc_cross_entropy_grad_f32, exp_f32)
CROSS_ENTROPY_GRAD(double, sc_cross_entropy_grad_f64, exp)

// The row norm's backward (see ROW_NORM), in double per row: with x̂ the normalised row, r the
// inverse scale and d = g·w (w as 1 + w with plus_one): ∂x = r·(d − mean d − x̂·mean(d·x̂)) for
// LayerNorm, r·(d − x̂·mean(d·x̂)) for RMSNorm; ∂w = Σ_rows g·x̂, ∂b = Σ_rows g (db may be null).
// Each thread sums its rows' ∂w, ∂b in double (acc, 2·cols per thread), added in thread order.
#define ROW_NORM_GRAD(T, NAME)                                                                     \
  ROW_JOBS(NAME, const T *g; const T *x; const T *w; T *dx; int64_t cols; double eps;              \
           int32_t center; int32_t plus_one; double *acc)                                          \
  static void *NAME##_task(void *p) {                                                              \
    NAME##_job *j = p;                                                                             \
    const int64_t C = j->cols;                                                                     \
    double *aw = j->acc, *ab = j->acc + C;                                                         \
    for (int64_t c = 0; c < 2 * C; c++) j->acc[c] = 0;                                             \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const T *x = j->x + r * C, *g = j->g + r * C;                                                \
      T *dx = j->dx + r * C;                                                                       \
      ROW_STATS(x, C, j->center, j->eps, mean, inv)                                                \
      double md = 0, mdx = 0;                                                                      \
      for (int64_t c = 0; c < C; c++) {                                                            \
        const double xh = (x[c] - mean) * inv, gc = g[c];                                          \
        const double d = gc * (j->plus_one ? 1.0 + (double)j->w[c] : (double)j->w[c]);             \
        md += d, mdx += d * xh;                                                                    \
        aw[c] += gc * xh, ab[c] += gc;                                                             \
      }                                                                                            \
      md = j->center ? md / (double)C : 0, mdx /= (double)C;                                       \
      for (int64_t c = 0; c < C; c++) {                                                            \
        const double xh = (x[c] - mean) * inv;                                                     \
        const double d = g[c] * (j->plus_one ? 1.0 + (double)j->w[c] : (double)j->w[c]);           \
        dx[c] = (T)(inv * (d - md - xh * mdx));                                                    \
      }                                                                                            \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  int32_t NAME(const T *g, const T *x, const T *w, T *dx, T *dw, T *db, int64_t rows,             \
               int64_t cols, double eps, int32_t center, int32_t plus_one, int32_t threads) {     \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    double *acc = malloc(sizeof(double) * 2 * (size_t)(cols > 0 ? cols : 1) * (size_t)nt);        \
    if (!acc) return 0;                                                                            \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int t = 0; t < nt; t++)                                                                   \
      jobs[t] = (NAME##_job){g,        x,   w, dx, cols, eps, center, plus_one, acc + 2 * cols * t, \
                             rows * t / nt, rows * (t + 1) / nt};                                  \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
    for (int64_t c = 0; c < cols; c++) {                                                           \
      double sw = 0, sb = 0;                                                                       \
      for (int t = 0; t < nt; t++) sw += acc[2 * cols * t + c], sb += acc[2 * cols * t + cols + c]; \
      dw[c] = (T)sw;                                                                               \
      if (db) db[c] = (T)sb;                                                                       \
    }                                                                                              \
    free(acc);                                                                                     \
    return -1;                                                                                     \
  }
ROW_NORM_GRAD(float, sc_row_norm_grad_f32)
ROW_NORM_GRAD(double, sc_row_norm_grad_f64)

// Causal attention's pattern backward (see ATTN_SOFTMAX, without a soft cap): from the pattern p
// and its cotangent g, ∂s = scale·p·(g − Σ_k g·p) over the keys up to the query, 0 after it and
// where the key mask (may be null) hides the key.
#define ATTN_SOFTMAX_GRAD(T, NAME)                                                                 \
  ROW_JOBS(NAME, const T *g; const T *p; const uint8_t *mask; T *out; int64_t t; int64_t heads;    \
           double scale)                                                                           \
  static void *NAME##_task(void *q) {                                                              \
    NAME##_job *j = q;                                                                             \
    const int64_t Tn = j->t;                                                                       \
    for (int64_t r = j->lo; r < j->hi; r++) {                                                      \
      const int64_t i = r % Tn, bh = r / Tn;                                                       \
      const uint8_t *m = j->mask ? j->mask + (bh / j->heads) * Tn : 0;                             \
      const T *g = j->g + r * Tn, *p = j->p + r * Tn;                                              \
      T *o = j->out + r * Tn;                                                                      \
      double dot = 0;                                                                              \
      for (int64_t k = 0; k <= i; k++) dot += (double)g[k] * (double)p[k];                         \
      for (int64_t k = 0; k <= i; k++)                                                             \
        o[k] = m && !m[k] ? 0 : (T)(j->scale * (double)p[k] * ((double)g[k] - dot));              \
      for (int64_t k = i + 1; k < Tn; k++) o[k] = 0;                                               \
    }                                                                                              \
    return 0;                                                                                      \
  }                                                                                                \
  void NAME(const T *g, const T *p, const uint8_t *mask, T *out, int64_t rows, int64_t t,          \
            int64_t heads, double scale, int32_t threads) {                                        \
    int nt = clamp_threads(threads);                                                               \
    if (nt > rows) nt = rows < 1 ? 1 : (int)rows;                                                  \
    NAME##_job jobs[MAX_THREADS];                                                                  \
    for (int u = 0; u < nt; u++)                                                                   \
      jobs[u] = (NAME##_job){g, p, mask, out, t, heads, scale, rows * u / nt, rows * (u + 1) / nt}; \
    run_tasks(NAME##_task, jobs, sizeof(NAME##_job), nt);                                          \
  }
ATTN_SOFTMAX_GRAD(float, sc_attn_softmax_grad_f32)
ATTN_SOFTMAX_GRAD(double, sc_attn_softmax_grad_f64)

#pragma GCC pop_options
