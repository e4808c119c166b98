// Block-wide building blocks of the CUDA fused ops (included by ops_cuda.cu only):
// reductions, the tie-aware nth-index scan, the top-k / top-p cut, and the
// processed distribution of one logits row (the algorithm: ops_cuda.cu's top).
//
// Every function here that contains __syncthreads() must be called by all threads
// of the block, with block-uniform arguments; its result is the same in every
// thread. Reduction orders are fixed (a butterfly in the warp, then warps 0 ..
// kWarps-1 in sequence), so results are deterministic run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "ops_cuda.h"

#ifndef SPRINTER_CUDA_THREADS
#define SPRINTER_CUDA_THREADS 1024
#endif

namespace sprinter {
namespace cuda {
namespace row {

constexpr int kThreads = SPRINTER_CUDA_THREADS;  // one block per row
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
constexpr int kWarps = kThreads / 32;
constexpr int kInfBits = 0x7F800000;  // bits of +inf

// ----------------------------------------------------------------- loads ----
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// ------------------------------------------------------- block reductions ----
struct BlockScratch {
  float f[kWarps];
  float g[kWarps];
  long long l[kWarps];
  int w[kWarps];
  long long found;
};

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ long long warp_sum(long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ inline float block_sum(float v, BlockScratch& sh) {
  v = warp_sum(v);
  if (lane_id() == 0) sh.f[warp_id()] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < kWarps; ++w) r += sh.f[w];
  __syncthreads();
  return r;
}

__device__ inline long long block_sum(long long v, BlockScratch& sh) {
  v = warp_sum(v);
  if (lane_id() == 0) sh.l[warp_id()] = v;
  __syncthreads();
  long long r = 0;
  for (int w = 0; w < kWarps; ++w) r += sh.l[w];
  __syncthreads();
  return r;
}

__device__ inline float block_max(float v, BlockScratch& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane_id() == 0) sh.f[warp_id()] = v;
  __syncthreads();
  float r = sh.f[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, sh.f[w]);
  __syncthreads();
  return r;
}

// An argmax candidate: value, index, and a payload carried with it (q at the index).
struct Best {
  float v;
  long long i;
  float q;
};

// a beats b: larger value, or the same value at a lower index (values are never NaN).
__device__ __forceinline__ bool beats(const Best& a, const Best& b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

__device__ inline Best block_best(Best x, BlockScratch& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best y;
    y.v = __shfl_xor_sync(0xffffffffu, x.v, o);
    y.i = __shfl_xor_sync(0xffffffffu, x.i, o);
    y.q = __shfl_xor_sync(0xffffffffu, x.q, o);
    if (beats(y, x)) x = y;
  }
  if (lane_id() == 0) {
    sh.f[warp_id()] = x.v;
    sh.l[warp_id()] = x.i;
    sh.g[warp_id()] = x.q;
  }
  __syncthreads();
  Best r{sh.f[0], sh.l[0], sh.g[0]};
  for (int w = 1; w < kWarps; ++w) {
    const Best y{sh.f[w], sh.l[w], sh.g[w]};
    if (beats(y, r)) r = y;
  }
  __syncthreads();
  return r;
}

// The index of the nth (1-based, nth >= 1, block-uniform) i < V in index order with
// pred(i), or V if there are fewer. One pass over the row in tiles of kThreads
// indices, stopping at the tile that holds it: a ballot gives the rank in the warp,
// the warps' counts the rank in the tile, `carry` the count of earlier tiles.
template <class Pred>
__device__ inline long long nth_index(const Pred& pred, long long V, long long nth, BlockScratch& sh) {
  const int lane = lane_id(), warp = warp_id();
  const unsigned lower_lanes = (1u << lane) - 1u;
  if (threadIdx.x == 0) sh.found = V;
  long long carry = 0;  // block-uniform
  for (long long base = 0; base < V; base += kThreads) {
    const long long i = base + threadIdx.x;
    const bool f = i < V && pred(i);
    const unsigned ballot = __ballot_sync(0xffffffffu, f);
    if (lane == 0) sh.w[warp] = __popc(ballot);
    __syncthreads();
    int before = __popc(ballot & lower_lanes), tile = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int c = sh.w[w];
      tile += c;
      if (w < warp) before += c;
    }
    if (f && carry + before + 1 == nth) sh.found = i;  // exactly one thread, if any
    __syncthreads();
    carry += tile;
    if (carry >= nth) break;
  }
  const long long r = sh.found;
  __syncthreads();
  return r;
}

// ------------------------------------------------------------ the cut ----
// The kept set of a processed row: keep(i) = keep_k(i) && keep_p(i) with
//   keep_k: bits(p_i) > kbits, or == kbits and i <= kidx        (top-k)
//   keep_p: bits(r_i) > pbits, or == pbits and i <= pidx        (top-p on r)
// and q_i = p_i / total for kept tokens. Greedy and "no cut" keep everything.
struct Cut {
  bool use_k = false, use_p = false;
  int kbits = 0;
  long long kidx = 0;
  float sk = 1.0f;  // kept mass after top-k: r = p / sk
  int pbits = 0;
  long long pidx = 0;
  float total = 1.0f;  // kept mass: q = p / total

  __device__ __forceinline__ bool keep_k(long long i, float p) const {
    if (!use_k) return true;
    const int b = __float_as_int(p);
    return b > kbits || (b == kbits && i <= kidx);
  }
  // r_i, the top-p ranking value (0 for a token top-k dropped).
  __device__ __forceinline__ float r(long long i, float p) const {
    if (!use_k) return p;
    return keep_k(i, p) ? p / sk : 0.0f;
  }
  __device__ __forceinline__ bool keep(long long i, float p) const {
    if (!keep_k(i, p)) return false;
    if (!use_p) return true;
    const int b = __float_as_int(use_k ? p / sk : p);
    return b > pbits || (b == pbits && i <= pidx);
  }
  // q_i from p_i.
  __device__ __forceinline__ float q(long long i, float p) const {
    return keep(i, p) ? p / total : 0.0f;
  }
};

// How many of p's tokens have bits > t (p >= 0, so bits order like the values).
__device__ inline long long count_gt(const float* p, long long V, int t, BlockScratch& sh) {
  long long c = 0;
  for (long long i = threadIdx.x; i < V; i += kThreads) c += __float_as_int(p[i]) > t ? 1 : 0;
  return block_sum(c, sh);
}

// G(t) = sum of r_i with bits(r_i) > t.
__device__ inline float mass_gt(const float* p, long long V, const Cut& cut, int t, BlockScratch& sh) {
  float g = 0.0f;
  for (long long i = threadIdx.x; i < V; i += kThreads) {
    const float r = cut.r(i, p[i]);
    g += __float_as_int(r) > t ? r : 0.0f;
  }
  return block_sum(g, sh);
}

// Fills cut.{kbits, kidx, sk} (use_k) and cut.{pbits, pidx} (use_p) for the row p [V].
__device__ inline void find_cuts(const float* p, long long V, const SamplingSettings& s, Cut& cut,
                          BlockScratch& sh) {
  if (cut.use_k) {
    // invariant: count(bits >= lo) >= k > count(bits >= hi); lo, hi block-uniform
    int lo = 0, hi = kInfBits;
    while (hi - lo > 1) {
      const int mid = lo + (hi - lo) / 2;
      if (count_gt(p, V, mid - 1, sh) >= s.top_k) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    cut.kbits = lo;
    const long long kc = s.top_k - count_gt(p, V, lo, sh);  // >= 1: ties at the cut kept
    const int kbits = lo;
    cut.kidx = nth_index([&](long long i) { return __float_as_int(p[i]) == kbits; }, V, kc, sh);
    float sk = 0.0f;
    for (long long i = threadIdx.x; i < V; i += kThreads) {
      const float pi = p[i];
      sk += cut.keep_k(i, pi) ? pi : 0.0f;
    }
    cut.sk = block_sum(sk, sh);
  }
  if (cut.use_p) {
    // invariant: G(lo) >= top_p > G(hi) (G(-1) is the whole mass, G(inf bits) = 0)
    int lo = -1, hi = kInfBits;
    while (hi - lo > 1) {
      const int mid = lo + (hi - lo) / 2;
      if (mass_gt(p, V, cut, mid, sh) < s.top_p) {
        hi = mid;
      } else {
        lo = mid;
      }
    }
    const int pbits = hi;
    cut.pbits = pbits;
    const float pg = mass_gt(p, V, cut, pbits, sh);
    const float vstar = __int_as_float(pbits);
    // ties at v*: the first `keep_ties` by index, those with pg + rank * v* < top_p
    // (monotone in rank: a binary search; every thread computes the same value).
    // NOTE: explicit _rn operations, no FMA contraction (Triton may fuse them).
    long long ties = 0;
    for (long long i = threadIdx.x; i < V; i += kThreads) {
      const float pi = p[i];
      ties += (cut.keep_k(i, pi) && __float_as_int(cut.r(i, pi)) == pbits) ? 1 : 0;
    }
    ties = block_sum(ties, sh);
    long long a = 0, b = ties;  // first rank whose tie is dropped, in [0, ties]
    while (a < b) {
      const long long mid = a + (b - a) / 2;
      if (__fadd_rn(pg, __fmul_rn(static_cast<float>(mid), vstar)) < s.top_p) {
        a = mid + 1;
      } else {
        b = mid;
      }
    }
    const long long keep_ties = a;
    cut.pidx = -1;
    if (keep_ties > 0) {
      const Cut k_only = cut;  // the predicate uses the top-k part only
      cut.pidx = nth_index(
          [&](long long i) {
            const float pi = p[i];
            return k_only.keep_k(i, pi) && __float_as_int(k_only.r(i, pi)) == pbits;
          },
          V, keep_ties, sh);
    }
  }
}

// ------------------------------------------------------ one logits row ----
// The processed distribution of one logits row: leaves p in prow [V] (softmax of
// logits / T, or one-hot at the first argmax for greedy) and the kept set in `cut`,
// so that q_i = cut.q(i, prow[i]). Returns false (block-uniform) on NaN/+inf or a
// row without a finite value; prow is then unspecified.
template <typename T>
__device__ inline bool process_row(const T* __restrict__ lrow, long long V, const SamplingSettings& s, float* prow,
                            Cut& cut, BlockScratch& sh) {
  const bool greedy = s.temperature == 0.0f;
  // pass 1: max of x (raw logits for greedy), its first index, and the bad flag
  Best mx{-INFINITY, V, 0.0f};
  int bad = 0;
  for (long long i = threadIdx.x; i < V; i += kThreads) {
    float x = to_f32(lrow[i]);
    if (!greedy) x = x / s.temperature;
    bad |= (x != x) | (x == INFINITY);
    if (x > mx.v) {  // NaN never wins; per thread, i grows: the first index of the max
      mx.v = x;
      mx.i = i;
    }
  }
  bad = __syncthreads_or(bad);
  mx = block_best(mx, sh);
  if (bad || mx.v == -INFINITY) return false;
  cut = Cut{};
  if (greedy) {
    for (long long i = threadIdx.x; i < V; i += kThreads) prow[i] = i == mx.i ? 1.0f : 0.0f;
    __syncthreads();
    return true;
  }
  // pass 2: e_i = expf(x_i - m) into prow, s = sum e; pass 3: p = e / s in place
  // (each thread touches its own indices in both passes)
  const float m = mx.v;
  float acc = 0.0f;
  for (long long i = threadIdx.x; i < V; i += kThreads) {
    const float e = expf(to_f32(lrow[i]) / s.temperature - m);
    prow[i] = e;
    acc += e;
  }
  const float sum = block_sum(acc, sh);
  for (long long i = threadIdx.x; i < V; i += kThreads) prow[i] = prow[i] / sum;
  __syncthreads();
  cut.use_k = s.top_k > 0 && s.top_k < V;
  cut.use_p = s.top_p < 1.0f;
  if (cut.use_k || cut.use_p) find_cuts(prow, V, s, cut, sh);
  float kept = 0.0f;
  for (long long i = threadIdx.x; i < V; i += kThreads) {
    const float pi = prow[i];
    kept += cut.keep(i, pi) ? pi : 0.0f;
  }
  cut.total = block_sum(kept, sh);
  return true;
}

}  // namespace row
}  // namespace cuda
}  // namespace sprinter
