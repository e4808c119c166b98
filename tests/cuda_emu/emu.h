// A CPU emulation of the few CUDA features csrc/ops/cuda/ops_cuda.cu uses, so that its
// kernels run (slowly) on a machine without a GPU: one std::thread per CUDA thread,
// std::barrier for __syncthreads and for the warp-synchronous intrinsics.
//
// What it checks: the kernels' logic (indices, the cut and tie rules, the race,
// the verifier MLP, the commit rule) and that every barrier and shuffle is reached
// by the whole block or warp (a divergent one deadlocks; the test has a timeout).
// What it does not: CUDA's expf/logf (glibc's are used), memory-model subtleties
// beyond "a barrier orders everything", occupancy, or speed.
//
// Blocks run one after another, so `__shared__` can be a function-local `static`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuDim3 threadIdx, blockIdx, blockDim;

namespace emu {

struct Block {
  explicit Block(unsigned threads)
      : bar(threads), slots(threads), flags(threads) {
    for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;  // one per thread: shuffles and ballots
  std::vector<int> flags;       // one per thread: __syncthreads_or
};
inline thread_local Block* block = nullptr;

inline std::barrier<>& warp_barrier() { return *block->warps[threadIdx.x / 32]; }

// Runs kernel(args...) on `grid` blocks of `threads` threads (a multiple of 32), block by block.
template <class Kernel, class... Args>
void launch(unsigned grid, unsigned threads, Kernel kernel, Args... args) {
  for (unsigned b = 0; b < grid; ++b) {
    Block blk(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        threadIdx.x = t;
        blockIdx.x = b;
        blockDim.x = threads;
        block = &blk;
        kernel(args...);
      });
    }
    for (auto& th : pool) th.join();
  }
}

}  // namespace emu

inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }

inline int __syncthreads_or(int p) {
  emu::block->flags[threadIdx.x] = p;
  __syncthreads();
  int r = 0;
  for (int f : emu::block->flags) r |= (f != 0);
  __syncthreads();
  return r;
}

inline unsigned __ballot_sync(unsigned /*mask*/, int p) {
  const unsigned base = threadIdx.x / 32 * 32;
  emu::block->slots[threadIdx.x] = p != 0;
  emu::warp_barrier().arrive_and_wait();
  unsigned r = 0;
  for (unsigned l = 0; l < 32; ++l) r |= static_cast<unsigned>(emu::block->slots[base + l]) << l;
  emu::warp_barrier().arrive_and_wait();
  return r;
}

template <class T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "emulated shuffles move up to 8 bytes");
  const unsigned base = threadIdx.x / 32 * 32, lane = threadIdx.x % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  emu::block->slots[threadIdx.x] = bits;
  emu::warp_barrier().arrive_and_wait();
  bits = emu::block->slots[base + (lane ^ static_cast<unsigned>(lane_mask))];
  emu::warp_barrier().arrive_and_wait();
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
