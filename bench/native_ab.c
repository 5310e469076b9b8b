// A/B of two builds of csrc/cpu_kernels.c on the TopK step's sparse kernels (bench/native_ab.sh
// builds them): the decoder's gather Σ_j v·W_dec[idx], the scatter of ∂W_dec / ∂W_enc, the
// sampled products and top-k, at d=512, F=8192, B=2048, k=32. Old and new alternate (the order
// swapped each round); medians are printed with the load average before and after, and the new
// outputs are compared with the old (top-k must be identical).
//   cc -O3 -march=native bench/native_ab.c -o ab -ldl -lm && ./ab old.so new.so [threads] [rounds]
// SC_CPU_TIME=1 times CPU instead of wall time.
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { B = 2048, K = 32, D = 512, F = 8192 };

typedef int32_t (*spmm_fn)(const int32_t *, const int32_t *, const float *, int32_t, const float *,
                           int32_t, int32_t, float *, int32_t, int32_t);
// (segs = 1 and the stride: b's rows whole; a build from before those arguments ignores them)
typedef int32_t (*sddmm_fn)(const float *, int32_t, const float *, int32_t, const int32_t *,
                            const int32_t *, int32_t, int32_t, float *, int32_t, int32_t, int64_t);
typedef int32_t (*topk_fn)(const float *, int32_t, int32_t, int32_t, float *, int32_t *, int32_t);

typedef struct {
  spmm_fn spmm;
  sddmm_fn sddmm;
  topk_fn topk;
} lib;

static lib open_lib(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) fprintf(stderr, "%s\n", dlerror()), exit(1);
  return (lib){dlsym(h, "sc_spmm_f32"), dlsym(h, "sc_sddmm_f32"), dlsym(h, "sc_topk_f32")};
}

// Wall time, or with SC_CPU_TIME=1 the process's CPU time (all threads: on a shared machine it
// leaves out the time other jobs held the cores, not their cache traffic).
static clockid_t clock_id = CLOCK_MONOTONIC;
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(clock_id, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (rng >> 11) * 0x1.0p-53;
}
static float normal(void) {
  return (float)(sqrt(-2 * log(uniform() + 1e-300)) * cos(6.283185307179586 * uniform()));
}

static int cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void loadavg(const char *when) {
  char buf[64] = {0};
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) fgets(buf, sizeof buf, f), fclose(f);
  printf("load average %s: %s", when, buf);
}

// Largest |a − b| / (|b| + 1e-6·scale) over n values.
static double max_rel(const float *a, const float *b, int64_t n) {
  double scale = 0, m = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
  for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]) / (fabs(b[i]) + 1e-6 * scale));
  return m;
}

int main(int argc, char **argv) {
  if (argc < 3) return fprintf(stderr, "usage: %s old.so new.so [threads] [rounds]\n", argv[0]), 2;
  lib L[2] = {open_lib(argv[1]), open_lib(argv[2])};
  if (getenv("SC_CPU_TIME") && atoi(getenv("SC_CPU_TIME"))) clock_id = CLOCK_PROCESS_CPUTIME_ID;
  const int threads = argc > 3 ? atoi(argv[3]) : 2, rounds = argc > 4 ? atoi(argv[4]) : 15;
  float *W = malloc(sizeof(float) * F * D), *g = malloc(sizeof(float) * B * D);
  float *pre = malloc(sizeof(float) * B * F), *vals = malloc(sizeof(float) * B * K);
  int32_t *rows = malloc(sizeof(int32_t) * B * K), *idx = malloc(sizeof(int32_t) * B * K);
  for (int64_t i = 0; i < (int64_t)F * D; i++) W[i] = normal() * 0.05f;
  for (int64_t i = 0; i < (int64_t)B * D; i++) g[i] = normal();
  for (int64_t i = 0; i < (int64_t)B * F; i++) pre[i] = normal();
  float *out[2], *tv[2];
  int32_t *ti[2];
  for (int v = 0; v < 2; v++) {
    out[v] = malloc(sizeof(float) * F * D), tv[v] = malloc(sizeof(float) * B * K);
    ti[v] = malloc(sizeof(int32_t) * B * K);
  }
  // The codes: each row's top k of the pre-activations (distinct features, as training has).
  L[0].topk(pre, B, F, K, vals, idx, threads);
  for (int64_t i = 0; i < B * K; i++) rows[i] = (int32_t)(i / K), vals[i] = fabsf(vals[i]);
  printf("d=%d F=%d B=%d k=%d, %d threads, %d rounds, median %s ms old → new\n", D, F, B, K,
         threads, rounds, clock_id == CLOCK_MONOTONIC ? "wall" : "CPU");
  loadavg("before");
  const char *names[] = {"spmm gather (decoder forward)", "spmm scatter (dW_dec, dW_enc)",
                         "sddmm (d values)", "topk 2048x8192"};
  for (int kind = 0; kind < 4; kind++) {
    double *ms[2] = {malloc(sizeof(double) * rounds), malloc(sizeof(double) * rounds)};
    for (int r = -2; r < rounds; r++) {
      for (int s = 0; s < 2; s++) {
        const int v = (r + s) & 1;
        const double t0 = now_ms();
        if (kind == 0) L[v].spmm(rows, idx, vals, B * K, W, F, D, out[v], B, threads);
        if (kind == 1) L[v].spmm(idx, rows, vals, B * K, g, B, D, out[v], F, threads);
        if (kind == 2) L[v].sddmm(g, B, W, F, rows, idx, B * K, D, out[v], threads, 1, 0);
        if (kind == 3) L[v].topk(pre, B, F, K, tv[v], ti[v], threads);
        if (r >= 0) ms[v][r] = now_ms() - t0;
      }
    }
    const double a = median(ms[0], rounds), b = median(ms[1], rounds);
    printf("%-32s %8.2f → %8.2f  (%.2f×)", names[kind], a, b, a / b);
    if (kind < 3) {
      const int64_t n = kind == 0 ? (int64_t)B * D : kind == 1 ? (int64_t)F * D : (int64_t)B * K;
      printf("  max rel. diff %.2e\n", max_rel(out[1], out[0], n));
    } else {
      printf("  %s\n", memcmp(tv[0], tv[1], sizeof(float) * B * K) ||
                               memcmp(ti[0], ti[1], sizeof(int32_t) * B * K)
                           ? "DIFFERENT"
                           : "identical");
    }
    free(ms[0]), free(ms[1]);
  }
  loadavg("after");
  return 0;
}
