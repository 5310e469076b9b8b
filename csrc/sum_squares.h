// Σx² in one order that no thread count changes, so a kernel that writes a matrix can hand back
// its sum of squares with the bits the standalone kernel (sc_sum_squares_*) would give.
//
// Each square is rounded to T (as square() then sum() would give it) and accumulated in double:
// the elements fall in blocks of SS_BLOCK; a block's sum is ((l0 + l1) + (l2 + l3)) + ((l4 + l5) +
// (l6 + l7)) of eight lanes (element i in lane i mod 8, each lane summed in index order); the
// blocks' sums are added in block order and the total rounded to T once.
#ifndef SC_SUM_SQUARES_H
#define SC_SUM_SQUARES_H

#include <stdint.h>

#define SS_BLOCK 1024
// Marks a block no kernel has summed yet (a sum of squares is ≥ 0 or NaN).
#define SS_TODO (-1.0)

static inline int64_t ss_blocks(int64_t n) { return (n + SS_BLOCK - 1) / SS_BLOCK; }

#define SS_BLOCK_SUM(T, SUF)                                                                       \
  /* The sum of the n ≤ SS_BLOCK elements of the block that starts at x. */                       \
  static inline double ss_block_##SUF(const T *x, int64_t n) {                                     \
    double s[8] = {0};                                                                             \
    int64_t i = 0;                                                                                 \
    for (; i + 8 <= n; i += 8)                                                                     \
      for (int r = 0; r < 8; r++) {                                                                \
        const T sq = x[i + r] * x[i + r];                                                          \
        s[r] += (double)sq;                                                                        \
      }                                                                                            \
    for (int r = 0; r < (int)(n - i) && r < 8; r++) { /* i is a multiple of 8: lane r */         \
      const T sq = x[i + r] * x[i + r];                                                            \
      s[r] += (double)sq;                                                                          \
    }                                                                                              \
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                      \
  }                                                                                                \
  /* Blocks [b0, b1) of x (n elements) into bs. */                                                 \
  static inline void ss_range_##SUF(const T *x, int64_t n, int64_t b0, int64_t b1, double *bs) {   \
    for (int64_t b = b0; b < b1; b++) {                                                            \
      const int64_t lo = b * SS_BLOCK, len = n - lo < SS_BLOCK ? n - lo : SS_BLOCK;                \
      bs[b] = ss_block_##SUF(x + lo, len);                                                         \
    }                                                                                              \
  }                                                                                                \
  /* A writer of elements [lo, hi) of x in index order, now done up to `done`: the blocks that lie \
     wholly in [lo, done) and are not summed yet (from *next on), summed while in cache. */        \
  static inline void ss_upto_##SUF(const T *x, int64_t n, int64_t lo, int64_t done, int64_t *next, \
                                   double *bs) {                                                   \
    if (!bs) return;                                                                               \
    const int64_t first = (lo + SS_BLOCK - 1) / SS_BLOCK;                                          \
    int64_t b = *next > first ? *next : first;                                                     \
    for (; b * SS_BLOCK < n && (b * SS_BLOCK + SS_BLOCK < n ? b * SS_BLOCK + SS_BLOCK : n) <= done; \
         b++)                                                                                      \
      ss_range_##SUF(x, n, b, b + 1, bs);                                                          \
    *next = b;                                                                                     \
  }                                                                                                \
  /* The total over all of x's blocks, summing those still SS_TODO here, rounded to T. */          \
  static inline T ss_total_##SUF(const T *x, int64_t n, double *bs) {                              \
    double s = 0;                                                                                  \
    for (int64_t b = 0; b < ss_blocks(n); b++) {                                                   \
      if (bs[b] == SS_TODO) ss_range_##SUF(x, n, b, b + 1, bs);                                    \
      s += bs[b];                                                                                  \
    }                                                                                              \
    return (T)s;                                                                                   \
  }

SS_BLOCK_SUM(float, f32)
SS_BLOCK_SUM(double, f64)

// bs for n elements with every block SS_TODO (malloc'd; NULL when out of memory).
static inline double *ss_todo(int64_t n) {
  const int64_t nb = ss_blocks(n);
  double *bs = malloc(sizeof(double) * (size_t)(nb ? nb : 1));
  if (bs)
    for (int64_t b = 0; b < nb; b++) bs[b] = SS_TODO;
  return bs;
}

#endif
