// Top-k candidates ranked by one integer each, shared by the CPU backend's C files.
#ifndef SC_TOPK_KEY_H
#define SC_TOPK_KEY_H

#include <stdint.h>
#include <string.h>

// (value, index) as one integer whose order is the top-k heap's (the float's bits made monotone,
// −0 as +0 so that zeros tie, then the index reversed so that lower indices win ties): the k
// largest can be kept sorted by insertion. No NaN may take part.
static inline uint64_t topk_key_f32(float v, int32_t i) {
  if (v == 0) v = 0.0f;
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t)u << 32 | (uint32_t)~(uint32_t)i;
}

#endif
