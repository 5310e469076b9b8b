// A CPU emulation of the small part of CUDA our kernels use, so tests can run the real kernel
// sources (and the backend's real launches) on a machine without a GPU. Blocks run one after
// another; the threads of a block run concurrently as std::threads, so __syncthreads is a block
// barrier and warp shuffles exchange through per-warp slots between two warp barriers. Atomics
// are std::atomic_ref. Not fast and not a model of timing: a check of what the kernels compute.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
#include <algorithm>
using namespace std;

#define SC_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

struct EmuBlock {
  std::barrier<>* block;
  std::vector<std::barrier<>*> warps;
  std::vector<long long> slots;  // one 8-byte slot per thread for shuffles
};
inline thread_local EmuBlock* emu_block = nullptr;

inline void __syncthreads() { emu_block->block->arrive_and_wait(); }

template <class V>
inline V __shfl_xor_sync(unsigned, V v, int lane_mask) {
  static_assert(sizeof(V) <= 8, "shuffle of at most 8 bytes");
  unsigned t = threadIdx.x, w = t / 32, base = w * 32, other = base + ((t - base) ^ (unsigned)lane_mask);
  std::memcpy(&emu_block->slots[t], &v, sizeof(V));
  emu_block->warps[w]->arrive_and_wait();
  V r;
  std::memcpy(&r, &emu_block->slots[other], sizeof(V));
  emu_block->warps[w]->arrive_and_wait();
  return r;
}

template <class T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
inline int atomicCAS(int* p, int expected, int desired) {
  std::atomic_ref<int>(*p).compare_exchange_strong(expected, desired);
  return expected;
}

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline double __longlong_as_double(long long u) { double f; std::memcpy(&f, &u, 8); return f; }
inline long long __double_as_longlong(double f) { long long u; std::memcpy(&u, &f, 8); return u; }

// IEEE half conversions in software (round to nearest even), for h2f/f2h.
inline float h2f(unsigned short h) {
  unsigned s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0x1f) return __uint_as_float(s | 0x7f800000u | (m << 13));
  if (e == 0) { float f = std::ldexp((float)m, -24); return s ? -f : f; }
  return __uint_as_float(s | ((e + 112) << 23) | (m << 13));
}
inline unsigned short f2h(float f) {
  unsigned u = __float_as_uint(f), s = (u >> 16) & 0x8000u;
  float a = std::fabs(f);
  if (a != a) return (unsigned short)(s | 0x7e00u);
  if (a >= 65520.0f) return (unsigned short)(s | 0x7c00u);
  if (a < 6.103515625e-05f) return (unsigned short)(s | (unsigned)std::nearbyint(a * 16777216.0f));  // subnormal: units of 2^-24
  int e; float m = std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1)
  unsigned mant = (unsigned)std::nearbyint((m * 2.0f - 1.0f) * 1024.0f);
  unsigned exp = (unsigned)(e - 1 + 15);
  if (mant == 1024) { mant = 0; exp++; }
  return (unsigned short)(s | (exp << 10) | mant);
}

// Run a kernel body over the grid: blockDim.x threads, blocks in order.
inline void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, const std::function<void()>& body) {
  std::barrier<> block((std::ptrdiff_t)bx);
  std::vector<std::barrier<>*> warps;
  for (unsigned w = 0; w < (bx + 31) / 32; w++) warps.push_back(new std::barrier<>((std::ptrdiff_t)std::min(32u, bx - w * 32)));
  EmuBlock shared{&block, warps, std::vector<long long>(bx)};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < bx; t++) {
    threads.emplace_back([&, t] {
      emu_block = &shared;
      threadIdx = {t, 0, 0};
      blockDim = {bx, 1, 1};
      gridDim = {gx, gy, gz};
      for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
          for (unsigned x = 0; x < gx; x++) {
            blockIdx = {x, y, z};
            body();
            block.arrive_and_wait();  // __shared__ statics are reused by the next block
          }
    });
  }
  for (auto& th : threads) th.join();
  for (auto* w : warps) delete w;
}
