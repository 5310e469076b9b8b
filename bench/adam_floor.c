// How close the fused Adam step is to the memory floor: one pass over a [512, 8192] f32 leaf that
// reads p, g, m, v and writes p', m', v' (7 arrays, 117 MB) with trivial arithmetic, beside the
// native kernel (csrc/cpu_kernels.c, compiled in with the backend's flags) on a contiguous
// gradient, on a transposed one ([8192, 512] as ∂W_enc comes from the sparse product), and the
// transposed one copied first (the tiled transpose, then Adam). Medians of 15 interleaved runs.
//   cc -O3 -march=native -ffp-contract=off -fno-math-errno -pthread bench/adam_floor.c -lm \
//     -o /tmp/adam_floor && /tmp/adam_floor
#include "../csrc/cpu_kernels.c"

#include <stdio.h>
#include <time.h>

enum { R = 512, C = 8192, N = R * C, RUNS = 15 };

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int by_value(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  const float *p, *g, *m, *v;
  float *p2, *m2, *v2;
  int64_t lo, hi;
} stream_job;

static void *stream_task(void *q) {
  stream_job *j = q;
  const float *restrict p = j->p, *restrict g = j->g, *restrict m = j->m, *restrict v = j->v;
  float *restrict p2 = j->p2, *restrict m2 = j->m2, *restrict v2 = j->v2;
  for (int64_t i = j->lo; i < j->hi; i++) {
    p2[i] = p[i] + g[i];
    m2[i] = m[i] * 0.9f;
    v2[i] = v[i] + g[i] * g[i];
  }
  return 0;
}

static float *P, *G, *GT, *M, *V, *P2, *M2, *V2, *TMP, GSCALE = 0.5f;
static int THREADS;

static void run_floor(void) {
  stream_job jobs[MAX_THREADS];
  for (int t = 0; t < THREADS; t++)
    jobs[t] = (stream_job){P, G, M, V, P2, M2, V2, slice_start(N, t, THREADS),
                           slice_start(N, t + 1, THREADS)};
  run_tasks(stream_task, jobs, sizeof(stream_job), THREADS);
}

// As the backend calls it without unit rows: rows of 4096, clipping's scale, no decay.
static void run_adam(void) {
  sc_adam_apply_f32(G, M, V, P, &GSCALE, P2, M2, V2, N / 4096, 4096, 0.9, 0.999, 1e-8, 0.02, -1e-3,
                    0, 0, 0, 0, THREADS);
}

static void run_adam_transposed(void) {
  sc_adam_apply_f32(GT, M, V, P, &GSCALE, P2, M2, V2, R, C, 0.9, 0.999, 1e-8, 0.02, -1e-3, 0, 0, 0,
                    1, THREADS);
}

static void run_transpose_then_adam(void) {
  sc_transpose_f32(GT, C, R, TMP, THREADS);
  sc_adam_apply_f32(TMP, M, V, P, &GSCALE, P2, M2, V2, N / 4096, 4096, 0.9, 0.999, 1e-8, 0.02,
                    -1e-3, 0, 0, 0, 0, THREADS);
}

int main(void) {
  float **arrays[] = {&P, &G, &GT, &M, &V, &P2, &M2, &V2, &TMP};
  for (size_t a = 0; a < sizeof arrays / sizeof *arrays; a++) {
    *arrays[a] = aligned_alloc(64, sizeof(float) * N);
    for (int64_t i = 0; i < N; i++) (*arrays[a])[i] = (float)((i * 2654435761u >> 8) % 1000) / 1000.f + 0.01f;
  }
  void (*runs[])(void) = {run_floor, run_adam, run_adam_transposed, run_transpose_then_adam};
  const char *names[] = {"floor (one pass, 7 arrays)", "Adam", "Adam, g transposed",
                         "transpose, then Adam"};
  for (THREADS = 1; THREADS <= 2; THREADS++) {
    double t[4][RUNS];
    for (int i = 0; i < RUNS + 2; i++)
      for (int k = 0; k < 4; k++) {
        const double a = now_ms();
        runs[k]();
        if (i >= 2) t[k][i - 2] = now_ms() - a;
      }
    printf("%d thread(s):", THREADS);
    for (int k = 0; k < 4; k++) {
      qsort(t[k], RUNS, sizeof(double), by_value);
      printf("  %s %.1f ms%s", names[k], t[k][RUNS / 2], k < 3 ? " |" : "");
    }
    printf("  (floor %.1f GB/s)\n", 7.0 * sizeof(float) * N / 1e6 / t[0][RUNS / 2]);
  }
  return 0;
}
