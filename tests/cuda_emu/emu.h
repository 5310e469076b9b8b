// A CPU emulation of the small part of CUDA our kernels use, so tests can run the real kernel
// sources (and the backend's real launches) on a machine without a GPU. One OS thread: the threads
// of a block are fibers (ucontext) run in turn; __syncthreads parks a fiber until every live fiber
// of the block has reached it, and a warp shuffle exchanges values through per-thread slots between
// two such waits among the warp's fibers. Blocks run one after another. Deterministic, light on a
// shared machine, and no model of timing or of the memory model: a check of what kernels compute.
#pragma once
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <ucontext.h>
#include <vector>
#include <algorithm>
using namespace std;

#define SC_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

enum EmuState { EMU_RUN, EMU_BLOCK_WAIT, EMU_WARP_WAIT, EMU_DONE };
struct EmuFiber { ucontext_t ctx; EmuState state; };
struct EmuSched {
  ucontext_t main;
  std::vector<EmuFiber> fibers;
  std::vector<std::vector<char>> stacks;
  std::vector<long long> slots;  // one 8-byte slot per thread for shuffles
  unsigned cur = 0;
  const std::function<void()>* body = nullptr;
};
inline EmuSched emu_s;

inline void emu_wait(EmuState why) {
  EmuFiber& f = emu_s.fibers[emu_s.cur];
  f.state = why;
  swapcontext(&f.ctx, &emu_s.main);
}
inline void __syncthreads() { emu_wait(EMU_BLOCK_WAIT); }

template <class V>
inline V __shfl_xor_sync(unsigned, V v, int lane_mask) {
  static_assert(sizeof(V) <= 8, "shuffle of at most 8 bytes");
  unsigned t = threadIdx.x, base = t & ~31u, other = base + ((t - base) ^ (unsigned)lane_mask);
  std::memcpy(&emu_s.slots[t], &v, sizeof(V));
  emu_wait(EMU_WARP_WAIT);
  V r;
  std::memcpy(&r, &emu_s.slots[other], sizeof(V));
  emu_wait(EMU_WARP_WAIT);
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

inline void emu_entry() {
  (*emu_s.body)();
  emu_s.fibers[emu_s.cur].state = EMU_DONE;  // returning resumes uc_link, the scheduler
}

// Run one block's fibers until all finish, releasing barriers when every live fiber waits at one.
inline void emu_block(unsigned bx) {
  for (unsigned t = 0; t < bx; t++) {
    EmuFiber& f = emu_s.fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = emu_s.stacks[t].data();
    f.ctx.uc_stack.ss_size = emu_s.stacks[t].size();
    f.ctx.uc_link = &emu_s.main;
    makecontext(&f.ctx, emu_entry, 0);
    f.state = EMU_RUN;
  }
  for (;;) {
    for (unsigned t = 0; t < bx; t++) {
      if (emu_s.fibers[t].state != EMU_RUN) continue;
      emu_s.cur = t;
      threadIdx = {t, 0, 0};
      swapcontext(&emu_s.main, &emu_s.fibers[t].ctx);
    }
    bool allDone = true, blockWait = true, released = false;
    for (unsigned t = 0; t < bx; t++) {
      EmuState st = emu_s.fibers[t].state;
      if (st != EMU_DONE) allDone = false;
      if (st == EMU_WARP_WAIT) blockWait = false;
    }
    if (allDone) return;
    if (blockWait) {
      for (auto& f : emu_s.fibers) if (f.state == EMU_BLOCK_WAIT) f.state = EMU_RUN, released = true;
    } else {
      for (unsigned w = 0; w * 32 < bx; w++) {
        bool all = true, any = false;
        for (unsigned t = w * 32; t < std::min(bx, w * 32 + 32); t++) {
          EmuState st = emu_s.fibers[t].state;
          if (st == EMU_WARP_WAIT) any = true;
          else if (st != EMU_DONE) all = false;
        }
        if (all && any) {
          for (unsigned t = w * 32; t < std::min(bx, w * 32 + 32); t++) if (emu_s.fibers[t].state == EMU_WARP_WAIT) emu_s.fibers[t].state = EMU_RUN;
          released = true;
        }
      }
    }
    if (!released) { fprintf(stderr, "emulator: threads of a block wait at different barriers (deadlock)\n"); abort(); }
  }
}

// Run a kernel body over the grid: blockDim.x fibers per block, blocks in order.
inline void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, const std::function<void()>& body) {
  emu_s.fibers.resize(bx);
  while (emu_s.stacks.size() < bx) emu_s.stacks.emplace_back(64 * 1024);
  emu_s.slots.assign(bx, 0);
  emu_s.body = &body;
  blockDim = {bx, 1, 1};
  gridDim = {gx, gy, gz};
  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        blockIdx = {x, y, z};
        emu_block(bx);
      }
}
