// Large temporaries kept for the next call. A fresh block's pages each cost a fault and a clear on
// first touch (BatchTopK's selection spent ~2.5 ms of 19 on them: ~20 MB of candidate lists a
// call), the reason the TypeScript side pools its arrays too. reuse_take hands out a 64-byte
// aligned block of at least `bytes` (a kept one where one fits without being more than twice the
// size asked), reuse_give keeps it while REUSE_SLOTS and REUSE_MAX_BYTES allow, else frees it. The
// blocks' contents are never read before they are written: nothing a call computes depends on what
// a block held. One cache per file that includes this (its state is static); thread-safe.
#ifndef SC_REUSE_H
#define SC_REUSE_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define REUSE_SLOTS 8
#define REUSE_MAX_BYTES ((size_t)256 << 20)

// A block's size sits in the 64 bytes before it.
typedef struct {
  size_t bytes;
} reuse_head;

static pthread_mutex_t reuse_lock = PTHREAD_MUTEX_INITIALIZER;
static void *reuse_kept[REUSE_SLOTS];
static size_t reuse_kept_bytes = 0;

static inline size_t reuse_size(const void *p) { return ((const reuse_head *)((const char *)p - 64))->bytes; }

static void *reuse_take(size_t bytes) {
  pthread_mutex_lock(&reuse_lock);
  int best = -1;
  for (int s = 0; s < REUSE_SLOTS; s++) {
    const size_t have = reuse_kept[s] ? reuse_size(reuse_kept[s]) : 0;
    if (have >= bytes && have / 2 <= bytes && (best < 0 || have < reuse_size(reuse_kept[best]))) best = s;
  }
  void *p = 0;
  if (best >= 0) p = reuse_kept[best], reuse_kept[best] = 0, reuse_kept_bytes -= reuse_size(p);
  pthread_mutex_unlock(&reuse_lock);
  if (p) return p;
  char *base = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!base) return 0;
  ((reuse_head *)base)->bytes = bytes;
  return base + 64;
}

static void reuse_give(void *p) {
  if (!p) return;
  const size_t bytes = reuse_size(p);
  pthread_mutex_lock(&reuse_lock);
  int slot = -1;
  for (int s = 0; s < REUSE_SLOTS && slot < 0; s++)
    if (!reuse_kept[s]) slot = s;
  // Full: the smallest kept block makes room if it is smaller than this one.
  for (int s = 0; s < REUSE_SLOTS && slot < 0; s++)
    if (reuse_size(reuse_kept[s]) < bytes && (slot < 0 || reuse_size(reuse_kept[s]) < reuse_size(reuse_kept[slot])))
      slot = s;
  void *out = p;
  if (slot >= 0 && reuse_kept_bytes - (reuse_kept[slot] ? reuse_size(reuse_kept[slot]) : 0) + bytes <= REUSE_MAX_BYTES) {
    out = reuse_kept[slot];
    if (out) reuse_kept_bytes -= reuse_size(out);
    reuse_kept[slot] = p, reuse_kept_bytes += bytes;
  }
  pthread_mutex_unlock(&reuse_lock);
  if (out) free((char *)out - 64);
}

// A bump allocator over one block: the arrays of one phase of a call, 64-byte aligned. With
// `base` 0 it only counts (take returns addresses from 64 that are never dereferenced), so one
// layout function both sizes the block and carves it.
typedef struct {
  uintptr_t at, end;
} reuse_arena;

static inline reuse_arena reuse_counting(void) { return (reuse_arena){64, UINTPTR_MAX}; }
static inline size_t reuse_counted(const reuse_arena *a) { return a->at - 64; }
static inline reuse_arena reuse_over(void *block, size_t bytes) {
  return (reuse_arena){(uintptr_t)block, (uintptr_t)block + bytes};
}

static inline void *reuse_carve(reuse_arena *a, size_t bytes) {
  const uintptr_t p = (a->at + 63) & ~(uintptr_t)63;
  if (p > a->end || a->end - p < bytes) return 0;
  a->at = p + bytes;
  return (void *)p;
}

#endif
