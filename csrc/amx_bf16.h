// bf16 matrix products on Intel AMX tiles, shared by the fused encoder (affine_topk.c) and the
// plain bf16 GEMM (gemm_bf16.c): operands rounded to bf16 (to nearest even) as they are packed,
// products summed in f32 by TDPBF16PS, 32 rows × 32 columns (four 16 × 16 tiles) at a time.
// Defines SC_AMX where the compiler targets AMX-BF16 and AVX512-BF16 (-march=native on such a CPU).
#ifndef SC_AMX_BF16_H
#define SC_AMX_BF16_H

#include <stdint.h>
#include <string.h>

#include "threads.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define SC_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

// Linux grants a process AMX's tile state on request only (arch_prctl ARCH_REQ_XCOMP_PERM for
// XTILEDATA); 1 once granted. A kernel or hypervisor that refuses leaves the f32 paths.
static inline int amx_ready(void) {
  static volatile int state = 0;  // 0 not asked, 1 granted, -1 refused
  if (state == 0) state = syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 1 : -1;
  return state == 1;
}

// Palette 1, tiles 0-7 each 16 rows of 64 bytes (16 f32 or 32 bf16); per thread.
static inline void amx_configure(void) {
  struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t = 0; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
  _tile_loadconfig(&c);
}

// f32 → bf16, rounded to nearest even (a NaN stays a quiet NaN): VCVTNE2PS2BF16's rounding.
static inline uint16_t amx_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

// What bf16 rounding leaves of v: v − bf16(v), exact in f32 (the f32 top-k's screen bounds it,
// affine_topk.c).
static inline float amx_resid(float v) {
  const uint32_t h = (uint32_t)amx_bf16(v) << 16;
  float r;
  memcpy(&r, &h, sizeof r);
  return v - r;
}

static inline __m512 amx_resid16(__m512 v) {
  const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
  return _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
}

// K rounded up to whole tile steps (32 bf16).
static inline int64_t amx_kp(int64_t K) { return (K + 31) / 32 * 32; }

// Rows k (lo) and k + 1 (hi) of 16 columns as 16 VNNI pairs (k even): converted together, then
// interleaved column by column into dst (32 values).
static inline void amx_pack_pair(__m512 lo, __m512 hi, uint16_t *dst) {
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                         22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  _mm512_storeu_si512((void *)dst, _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)));
}

// Column sliver s (32 columns) of B ([K, N] with row stride ldb, or stored [N, K] when bT) in
// VNNI form: two halves of 16 columns, each Kp/2 rows of (k even, k odd) pairs per column;
// zero past K and N. dst holds Kp · 32 values.
static inline void amx_pack_b(const float *b, int bT, int64_t ldb, int64_t K, int64_t N, int64_t s,
                              uint16_t *dst) {
  const int64_t Kp = amx_kp(K);
  if (!bT && (s + 1) * 32 <= N) {
    for (int64_t k = 0; k < Kp; k += 2)
      for (int64_t h = 0; h < 2; h++) {
        const float *r0 = b + k * ldb + s * 32 + h * 16;
        const __m512 lo = k < K ? _mm512_loadu_ps(r0) : _mm512_setzero_ps();
        const __m512 hi = k + 1 < K ? _mm512_loadu_ps(r0 + ldb) : _mm512_setzero_ps();
        amx_pack_pair(lo, hi, dst + h * Kp * 16 + (k >> 1) * 32);
      }
    return;
  }
  for (int64_t h = 0; h < 2; h++) {
    uint16_t *d = dst + h * Kp * 16;
    for (int64_t n = 0; n < 16; n++) {
      const int64_t c = s * 32 + h * 16 + n;
      for (int64_t k = 0; k < Kp; k++) {
        const float v = c < N && k < K ? (bT ? b[c * ldb + k] : b[k * ldb + c]) : 0.0f;
        d[(k >> 1) * 32 + n * 2 + (k & 1)] = amx_bf16(v);
      }
    }
  }
}

typedef struct {
  const float *b;
  uint16_t *packed;
  int64_t ldb, K, N, s0, s1;
  int bT;
} amx_pack_job;

static void *amx_pack_task(void *p) {
  const amx_pack_job *j = p;
  const int64_t Kp = amx_kp(j->K);
  for (int64_t s = j->s0; s < j->s1; s++)
    amx_pack_b(j->b, j->bT, j->ldb, j->K, j->N, s, j->packed + s * Kp * 32);
  return 0;
}

// All of B's slivers into packed (⌈K/32⌉·32 · ⌈N/32⌉·32 values), split over nt threads.
static inline void amx_pack_all(const float *b, int bT, int64_t ldb, int64_t K, int64_t N,
                                uint16_t *packed, int nt) {
  const int64_t slivers = (N + 31) / 32;
  amx_pack_job jobs[MAX_THREADS];
  const int np = nt < slivers ? nt : (int)slivers;
  for (int t = 0; t < np; t++)
    jobs[t] = (amx_pack_job){b, packed, ldb, K, N, slivers * t / np, slivers * (t + 1) / np, bT};
  run_tasks(amx_pack_task, jobs, sizeof(amx_pack_job), np);
}

// Rows of A a thread packs at a time: ~512 KB of bf16, which stays in L2 while B's slivers pass.
static inline int64_t amx_block_rows(int64_t Kp) {
  const int64_t R = (1 << 19) / (int64_t)(sizeof(uint16_t) * Kp) / 32 * 32;
  return R < 32 ? 32 : R > 512 ? 512 : R;
}

// Where thread t of nt starts among M rows dealt in whole groups of 32 (t = nt: M).
static inline int64_t amx_row_start(int64_t M, int t, int nt) {
  return t >= nt ? M : (M + 31) / 32 * t / nt * 32;
}

// Rows [r0, r0 + rows) of A ([M, K] with row stride lda, or stored [K, M] when aT) as bf16 rows of
// Kp values into dst, then zero rows up to a multiple of 32 (rows past M are zero too).
static inline void amx_pack_a(const float *a, int aT, int64_t lda, int64_t M, int64_t K, int64_t r0,
                              int64_t rows, uint16_t *dst) {
  const int64_t Kp = amx_kp(K), padded = (rows + 31) / 32 * 32;
  for (int64_t i = 0; i < padded; i++) {
    const int64_t r = r0 + i;
    uint16_t *d = dst + i * Kp;
    if (i >= rows || r >= M) {
      memset(d, 0, sizeof(uint16_t) * (size_t)Kp);
      continue;
    }
    int64_t k = 0;
    if (!aT) {
      const float *x = a + r * lda;
      for (; k + 32 <= K; k += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_storeu_si512((void *)(d + k), (__m512i)v);
      }
    }
    for (; k < K; k++) d[k] = amx_bf16(aT ? a[k * lda + r] : a[r * lda + k]);
    for (; k < Kp; k++) d[k] = 0;
  }
}

// C[32][32] (row stride 32) = A[32 rows of Kp] · B (a sliver from amx_pack_b), summed in f32.
static inline void amx_block(const uint16_t *A, const uint16_t *B, int64_t Kp, float *C) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t k0 = 0; k0 < Kp; k0 += 32) {
    _tile_loadd(4, A + k0, Kp * 2);
    _tile_loadd(5, A + 16 * Kp + k0, Kp * 2);
    _tile_loadd(6, B + k0 * 16, 64);
    _tile_loadd(7, B + Kp * 16 + k0 * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, C, 128);
  _tile_stored(1, C + 16, 128);
  _tile_stored(2, C + 16 * 32, 128);
  _tile_stored(3, C + 16 * 32 + 16, 128);
}

#endif
#endif
