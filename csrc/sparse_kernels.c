// prototype
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef struct { const int32_t *dst, *src, *order; const float *vals, *dense; float *out; int32_t d; int64_t lo, hi; const int64_t *start; } spmm_job;

static void *spmm_run(void *p) {
  spmm_job *j = p;
  const int32_t d = j->d;
  for (int64_t r = j->lo; r < j->hi; r++) {
    float *o = j->out + (int64_t)r * d;
    for (int64_t q = j->start[r]; q < j->start[r + 1]; q++) {
      int32_t i = j->order[q];
      float w = j->vals[i];
      if (w == 0) continue;
      const float *s = j->dense + (int64_t)j->src[i] * d;
      for (int32_t c = 0; c < d; c++) o[c] += w * s[c];
    }
  }
  return 0;
}

// out[dst[i]] += vals[i] * dense[src[i]]; returns -1, or the first entry whose index is out of range.
int64_t sc_spmm_f32(const int32_t *dst, const int32_t *src, const float *vals, int64_t nnz, const float *dense, int32_t inRows, int32_t d, float *out, int32_t outRows, int32_t threads) {
  for (int64_t i = 0; i < nnz; i++) if ((uint32_t)dst[i] >= (uint32_t)outRows || (uint32_t)src[i] >= (uint32_t)inRows) return i;
  int64_t *start = calloc((size_t)outRows + 1, sizeof(int64_t));
  int32_t *order = malloc(sizeof(int32_t) * (size_t)(nnz ? nnz : 1));
  for (int64_t i = 0; i < nnz; i++) start[dst[i] + 1]++;
  for (int32_t r = 0; r < outRows; r++) start[r + 1] += start[r];
  int64_t *fill = malloc(sizeof(int64_t) * (size_t)(outRows ? outRows : 1));
  memcpy(fill, start, sizeof(int64_t) * outRows);
  for (int64_t i = 0; i < nnz; i++) order[fill[dst[i]]++] = (int32_t)i;
  free(fill);
  memset(out, 0, sizeof(float) * (size_t)outRows * d);
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  spmm_job jobs[64]; pthread_t th[64];
  int64_t r0 = 0;
  for (int t = 0; t < threads; t++) {
    int64_t want = nnz * (t + 1) / threads, r1 = r0;
    while (r1 < outRows && start[r1] < want) r1++;
    if (t == threads - 1) r1 = outRows;
    jobs[t] = (spmm_job){dst, src, order, vals, dense, out, d, r0, r1, start};
    r0 = r1;
  }
  for (int t = 1; t < threads; t++) pthread_create(&th[t], 0, spmm_run, &jobs[t]);
  spmm_run(&jobs[0]);
  for (int t = 1; t < threads; t++) pthread_join(th[t], 0);
  free(start); free(order);
  return -1;
}
