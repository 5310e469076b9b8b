// C = A·B + beta·C with A and B rounded to bf16 and the products summed in f32 on AMX tiles
// (amx_bf16.h): what cblas_sbgemm computes, for a BLAS without it. Row-major f32 operands; A is
// [M, K] (stored [K, M] when aT), B is [K, N] (stored [N, K] when bT). Threads take whole 32-row
// groups of C; B is packed once (VNNI slivers of 32 columns) into `packed` (⌈K/32⌉·32·⌈N/32⌉·32
// values) and shared. Returns -1 done, -2 out of memory, -5 no AMX in this build or process.

#include <stdint.h>
#include <stdlib.h>

#include "amx_bf16.h"
#include "threads.h"

#ifdef SC_AMX
typedef struct {
  const float *a;
  const uint16_t *packed;
  float *c;
  int64_t lda, ldc, M, N, K, r0, r1;
  float beta;
  int aT, status;
} gb_job;

static void *gb_task(void *p) {
  gb_job *j = p;
  const int64_t K = j->K, N = j->N, Kp = amx_kp(K), slivers = (N + 31) / 32;
  const int64_t R = amx_block_rows(Kp);
  uint16_t *A = aligned_alloc(64, sizeof(uint16_t) * (size_t)(R * Kp));
  float *tile = aligned_alloc(64, sizeof(float) * 32 * 32);
  j->status = -1;
  if (!A || !tile) {
    j->status = -2;
    free(A), free(tile);
    return 0;
  }
  amx_configure();
  for (int64_t r0 = j->r0; r0 < j->r1; r0 += R) {
    const int64_t rows = j->r1 - r0 < R ? j->r1 - r0 : R;
    amx_pack_a(j->a, j->aT, j->lda, j->M, K, r0, rows, A);
    for (int64_t js = 0; js < slivers; js++) {
      const int64_t c0 = js * 32, n = N - c0 < 32 ? N - c0 : 32;
      for (int64_t i0 = 0; i0 < rows; i0 += 32) {
        amx_block(A + i0 * Kp, j->packed + js * Kp * 32, Kp, tile);
        for (int64_t i = i0; i < rows && i < i0 + 32; i++) {
          float *out = j->c + (r0 + i) * j->ldc + c0;
          const float *t = tile + (i - i0) * 32;
          if (j->beta == 0)
            for (int64_t e = 0; e < n; e++) out[e] = t[e];
          else
            for (int64_t e = 0; e < n; e++) out[e] = t[e] + j->beta * out[e];
        }
      }
    }
  }
  _tile_release();
  free(A), free(tile);
  return 0;
}
#endif

int32_t sc_gemm_bf16_f32(const float *a, int32_t aT, int64_t lda, const float *b, int32_t bT,
                         int64_t ldb, int64_t M, int64_t N, int64_t K, float beta, float *c,
                         int64_t ldc, float *packed, int32_t threads) {
#ifdef SC_AMX
  if (!amx_ready()) return -5;
  if (M < 1 || N < 1 || K < 1) return -3;
  const int64_t groups = (M + 31) / 32;
  int nt = clamp_threads(threads);
  uint16_t *p16 = (uint16_t *)(void *)packed;
  amx_pack_all(b, bT, ldb, K, N, p16, nt);
  if (nt > groups) nt = (int)groups;
  gb_job jobs[MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    jobs[t] = (gb_job){a, p16, c, lda, ldc, M, N, K, amx_row_start(M, t, nt), amx_row_start(M, t + 1, nt),
                       beta, aT, -1};
  }
  run_tasks(gb_task, jobs, sizeof(gb_job), nt);
  for (int t = 0; t < nt; t++)
    if (jobs[t].status == -2) return -2;
  return -1;
#else
  (void)a, (void)aT, (void)lda, (void)b, (void)bT, (void)ldb, (void)M, (void)N, (void)K, (void)beta;
  (void)c, (void)ldc, (void)packed, (void)threads;
  return -5;
#endif
}

// 1 where this build has AMX-BF16 and the OS granted the process its tile state.
int32_t sc_amx_bf16_ready(void) {
#ifdef SC_AMX
  return amx_ready();
#else
  return 0;
#endif
}
