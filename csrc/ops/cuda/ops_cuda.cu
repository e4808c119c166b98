// CUDA twins of sprinter_ext.ops.draft_sample / verify_tokens (declared in ops_cuda.h).
// Plain CUDA C++17, no torch headers; by hand:
//   nvcc -std=c++17 -O3 -arch=sm_90 -I csrc -c csrc/ops/cuda/ops_cuda.cu -o /tmp/ops_cuda.o
// Do not build with --use_fast_math: the processed distribution relies on IEEE
// division and the precise expf/logf (the Triton and C++ twins do the same).
//
// The algorithm is the Triton kernels' (kernels/_sampling.py), one block per row,
// no sort, no host sync:
//   x = logits / T, m = max x, e_i = expf(x_i - m), s = sum e, p_i = e_i / s;
//   top-k: the k-th largest p by a bisection over the float bit patterns (a
//     non-negative float orders like its int32 bits), ties at the cut kept by
//     index (the spec's rank = (p desc, index asc));
//   top-p: over r = p / S_k (p after top-k, renormalised), the smallest bit
//     pattern v* with G(v*) = sum(r > v*) < top_p by the same bisection; tokens
//     above v* are kept, of those equal to v* the first ones while
//     G(v*) + rank * v* < top_p;
//   q = kept p / sum(kept p); the race argmax_i w_i / -log u_i, ties -> lowest i.
// A kept set is stored as (cut bits, index of the last kept tie), as the CPU twin
// stores (vc, ic). p lives in a float32 row workspace (the probs output for the
// draft op), so the ~60 bisection passes read p instead of recomputing expf.
//
// Where results may differ from the CPU twin (and from Triton) in the last bits:
// every sum is a block tree reduction (s, the top-k mass S_k, the top-p masses
// G(t), the kept mass, the entropy, the verifier's dot products) in an order no
// other backend uses; expf/logf are CUDA's (<= 2 ulp / 1 ulp) rather than glibc's
// or Sleef's. So q agrees to float32 rounding, and tokens agree except where two
// race scores, or a cut and a cumulative mass, are within a few ulp (the "ties
// caused by float rounding" of sprinter_ext/ops/). Reductions are deterministic:
// the same inputs give the same bits on every run.
//
// tests/test_cuda_emulation.py compiles this file with g++ against a thread-per-CUDA-
// thread emulation of the intrinsics (tests/cuda_emu/): SPRINTER_CUDA_EMULATION
// leaves out the launchers, SPRINTER_CUDA_THREADS sets a smaller block.
#include "ops_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "common/philox.h"
#include "row_ops.cuh"

#ifndef SPRINTER_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

namespace sprinter {
namespace cuda {
namespace {

using namespace row;  // kThreads, kWarps, BlockScratch, Best, Cut, block_*, process_row, ...

__device__ __forceinline__ philox::U32x4 philox_quad(long long i0, uint32_t pos, uint32_t stream,
                                                     uint32_t k0, uint32_t k1) {
  return philox::block_words(static_cast<uint32_t>(i0 >> 2), pos, stream, k0, k1);
}

// --------------------------------------------------------------- verifier ----
// The verifier MLP on z = [hidden (D), features (F)], one warp per output unit;
// layer 0 reads hidden from global memory, later layers their input from `buf`
// (shared memory, 2 * kMaxVerifierWidth floats).
// NOTE: the dot products are warp-strided sums: last-bit differences from the CPU
// twin's vectorised dot, well inside the score tolerance.
__device__ float verifier_score(const Verifier& mlp, const float* __restrict__ hrow, long long D,
                                const float feat[3], float* buf) {
  const int lane = lane_id(), warp = warp_id();
  float* cur = buf;
  float* nxt = buf + kMaxVerifierWidth;
  for (int l = 0; l < mlp.num_layers; ++l) {
    const float* __restrict__ W = mlp.w[l];
    const long long in = mlp.in[l], out = mlp.out[l];
    const bool last = l + 1 == mlp.num_layers;
    for (long long o = warp; o < out; o += kWarps) {
      const float* wr = W + o * in;
      float acc = 0.0f;
      if (l == 0) {
        for (long long j = lane; j < D; j += 32) acc += wr[j] * hrow[j];
        if (lane < mlp.num_features) acc += wr[D + lane] * feat[lane];
      } else {
        for (long long j = lane; j < in; j += 32) acc += wr[j] * cur[j];
      }
      acc = warp_sum(acc);
      if (lane == 0) {
        const float h = acc + mlp.b[l][o];
        nxt[o] = (!last && h < 0.0f) ? 0.0f : h;  // ReLU between layers; NaN passes, as torch.relu
      }
    }
    __syncthreads();
    float* t = cur;
    cur = nxt;
    nxt = t;
  }
  const float logit = cur[0];
  return logit != logit ? 0.0f : 1.0f / (1.0f + expf(-logit));  // NaN logit: flag the token
}

// ----------------------------------------------------------------- kernels ----
template <typename T>
__global__ void __launch_bounds__(kThreads)
    draft_sample_kernel(const T* __restrict__ logits,          // [B, V]
                        const float* __restrict__ hidden,      // [B, D]
                        const int64_t* __restrict__ position,  // [B]
                        long long V, long long D, uint32_t k0, uint32_t k1, uint32_t stream,
                        SamplingSettings s, Verifier mlp,
                        int64_t* __restrict__ token,    // [B] out
                        float* probs,                   // [B, V] out: p, then q (no __restrict__:
                                                        // written and re-read by other threads)
                        float* __restrict__ q_token,    // [B] out
                        float* __restrict__ score,      // [B] out
                        int8_t* __restrict__ status) {  // [B] out
  __shared__ BlockScratch sh;
  __shared__ float mlp_buf[2 * kMaxVerifierWidth];
  const long long row = blockIdx.x;
  const T* lrow = logits + row * V;
  float* qrow = probs + row * V;
  Cut cut;
  if (!process_row(lrow, V, s, qrow, cut, sh)) {
    for (long long i = threadIdx.x; i < V; i += kThreads) qrow[i] = 0.0f;
    if (threadIdx.x == 0) {
      token[row] = -1;
      q_token[row] = 0.0f;
      score[row] = 0.0f;
      status[row] = 1;
    }
    return;
  }
  const uint32_t pos = static_cast<uint32_t>(static_cast<uint64_t>(position[row]));
  // the race, q, max q and the entropy in one pass; 4 consecutive tokens per thread
  // (one Philox block); a quad of zero weights skips Philox (a zero score cannot win
  // over the positive ones, and q has a positive entry).
  Best best{-1.0f, V, 0.0f};
  float qmax = 0.0f, ent = 0.0f;
  for (long long i0 = 4ll * threadIdx.x; i0 < V; i0 += 4ll * kThreads) {
    float q[4];
    bool any = false;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const long long i = i0 + j;
      q[j] = i < V ? cut.q(i, qrow[i]) : 0.0f;
      if (i < V) qrow[i] = q[j];
      any |= q[j] > 0.0f;
      qmax = fmaxf(qmax, q[j]);
      if (q[j] > 0.0f) ent += q[j] * logf(q[j]);
    }
    if (!any) continue;
    const philox::U32x4 w = philox_quad(i0, pos, stream, k0, k1);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float sc = q[j] / -logf(philox::word_to_uniform(w.v[j]));
      if (q[j] > 0.0f && sc > best.v) best = Best{sc, i0 + j, q[j]};
    }
  }
  best = block_best(best, sh);
  qmax = block_max(qmax, sh);
  const float entropy = -block_sum(ent, sh);
  if (best.i >= V) best = Best{0.0f, 0, qrow[0]};  // unreachable: q sums to 1
  float sc = 0.0f;
  if (mlp.num_layers > 0) {
    float feat[3] = {0.0f, 0.0f, 0.0f};  // codes: 0 q_token, 1 max_q, 2 entropy
    for (int f = 0; f < mlp.num_features; ++f) {
      const int code = mlp.features[f];
      feat[f] = code == 0 ? best.q : code == 1 ? qmax : entropy;
    }
    sc = verifier_score(mlp, hidden + row * D, D, feat, mlp_buf);
  }
  if (threadIdx.x == 0) {
    token[row] = best.i;
    q_token[row] = best.q;
    score[row] = sc;
    status[row] = 0;
  }
}

// One block per (row, position i <= n): the target distribution p_i, the race over
// the residual max(p_i - q_i, 0) (sd, i < n) or p_i (the bonus, or ERSD's race),
// and the acceptance flag. The first rejection is found by commit_kernel.
template <typename T, typename Q>
__global__ void __launch_bounds__(kThreads)
    verify_position_kernel(const T* __restrict__ logits,         // [B, n + 1, V]
                           const Q* __restrict__ draft_probs,    // [B, n, V]
                           const int64_t* __restrict__ x_all,    // [B, n]
                           const int64_t* __restrict__ start,    // [B]
                           long long n, long long V, uint32_t k0, uint32_t k1, SamplingSettings s,
                           bool sd,
                           float* p_work,                        // [B, n + 1, V] workspace
                           int32_t* __restrict__ flags,          // [B, n + 1] out
                           int64_t* __restrict__ cand) {         // [B, n + 1] out
  __shared__ BlockScratch sh;
  const long long n1 = n + 1;
  const long long row = blockIdx.x / n1, i = blockIdx.x % n1;
  const T* lrow = logits + (row * n1 + i) * V;
  float* prow = p_work + (row * n1 + i) * V;
  Cut cut;
  if (!process_row(lrow, V, s, prow, cut, sh)) {
    if (threadIdx.x == 0) {
      flags[row * n1 + i] = -1;
      cand[row * n1 + i] = -1;
    }
    return;
  }
  const uint32_t pos = static_cast<uint32_t>(static_cast<uint64_t>(start[row] + i));
  const bool is_draft = i < n;
  const bool residual = sd && is_draft;
  const Q* qrow = residual ? draft_probs + (row * n + i) * V : nullptr;
  const uint32_t stream = residual ? philox::RESIDUAL : philox::TARGET;
  Best best{-1.0f, V, 0.0f};
  for (long long i0 = 4ll * threadIdx.x; i0 < V; i0 += 4ll * kThreads) {
    float w[4];
    bool any = false;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const long long t = i0 + j;
      float pt = t < V ? cut.q(t, prow[t]) : 0.0f;
      if (residual && t < V) pt = fmaxf(pt - to_f32(qrow[t]), 0.0f);
      w[j] = pt;
      any |= pt > 0.0f;
    }
    if (!any) continue;
    const philox::U32x4 u = philox_quad(i0, pos, stream, k0, k1);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float sc = w[j] / -logf(philox::word_to_uniform(u.v[j]));
      if (w[j] > 0.0f && sc > best.v) best = Best{sc, i0 + j, w[j]};
    }
  }
  best = block_best(best, sh);
  // every weight 0 (the residual of q >= p): the race's argmax of zeros is index 0
  const long long c = best.i < V ? best.i : 0;
  if (threadIdx.x == 0) {
    const long long x = is_draft ? x_all[row * n + i] : -1;
    const bool x_ok = x >= 0 && x < V;
    bool accepted;
    if (sd) {
      const float px = x_ok ? cut.q(x, prow[x]) : 0.0f;
      const float qx = x_ok ? to_f32(draft_probs[(row * n + i) * V + x]) : 0.0f;
      const float coin = philox::word_to_uniform(philox::block_words(0, pos, philox::COIN, k0, k1).v[0]);
      accepted = x_ok && coin * qx < px;
    } else {
      accepted = x_ok && c == x;
    }
    flags[row * n1 + i] = accepted ? 1 : 0;
    cand[row * n1 + i] = c;
  }
}

// One thread per row: the first rejection, the committed tokens and the count.
__global__ void verify_commit_kernel(const int32_t* __restrict__ flags,  // [B, n + 1]
                                     const int64_t* __restrict__ cand,   // [B, n + 1]
                                     const int64_t* __restrict__ x_all,  // [B, n]
                                     long long B, long long n,
                                     int64_t* __restrict__ tokens,       // [B, n + 1] out
                                     int64_t* __restrict__ num,          // [B] out
                                     int8_t* __restrict__ status) {      // [B] out
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= B) return;
  const long long n1 = n + 1;
  const int32_t* f = flags + row * n1;
  bool bad = false;
  for (long long i = 0; i < n1; ++i) bad |= f[i] < 0;
  long long k = n;  // first rejected draft position, or n (the bonus) when all pass
  for (long long i = 0; i < n; ++i) {
    if (f[i] == 0) {
      k = i;
      break;
    }
  }
  int64_t* out = tokens + row * n1;
  for (long long i = 0; i < n1; ++i) {
    out[i] = bad ? -1 : i < k ? x_all[row * n + i] : i == k ? cand[row * n1 + k] : -1;
  }
  num[row] = bad ? -1 : k;
  status[row] = bad ? 1 : 0;
}

// ---------------------------------------------------------------- launchers ----
#ifndef SPRINTER_CUDA_EMULATION

template <typename T>
cudaError_t launch_draft(const void* logits, const float* hidden, const int64_t* position,
                         int64_t B, int64_t V, int64_t D, uint32_t k0, uint32_t k1, uint32_t stream,
                         SamplingSettings s, const Verifier& mlp, int64_t* token, float* probs,
                         float* q_token, float* score, int8_t* status, cudaStream_t cs) {
  draft_sample_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, cs>>>(
      static_cast<const T*>(logits), hidden, position, V, D, k0, k1, stream, s, mlp, token, probs,
      q_token, score, status);
  return cudaGetLastError();
}

template <typename T, typename Q>
cudaError_t launch_verify(const void* logits, const void* draft_probs, const int64_t* x,
                          const int64_t* start, int64_t B, int64_t n, int64_t V, uint32_t k0,
                          uint32_t k1, SamplingSettings s, bool sd, float* p_work, int32_t* flags,
                          int64_t* cand, cudaStream_t cs) {
  verify_position_kernel<T, Q><<<static_cast<unsigned>(B * (n + 1)), kThreads, 0, cs>>>(
      static_cast<const T*>(logits), static_cast<const Q*>(draft_probs), x, start, n, V, k0, k1,
      s, sd, p_work, flags, cand);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_verify_q(DType qt, const void* logits, const void* draft_probs,
                            const int64_t* x, const int64_t* start, int64_t B, int64_t n,
                            int64_t V, uint32_t k0, uint32_t k1, SamplingSettings s, bool sd,
                            float* p_work, int32_t* flags, int64_t* cand, cudaStream_t cs) {
  switch (qt) {
    case DType::kFloat32:
      return launch_verify<T, float>(logits, draft_probs, x, start, B, n, V, k0, k1, s, sd, p_work,
                                     flags, cand, cs);
    case DType::kFloat16:
      return launch_verify<T, __half>(logits, draft_probs, x, start, B, n, V, k0, k1, s, sd,
                                      p_work, flags, cand, cs);
    case DType::kBFloat16:
      return launch_verify<T, __nv_bfloat16>(logits, draft_probs, x, start, B, n, V, k0, k1, s, sd,
                                             p_work, flags, cand, cs);
  }
  return cudaErrorInvalidValue;
}

#endif  // SPRINTER_CUDA_EMULATION

constexpr int64_t kMaxBlocks = 0x7FFFFFFF;  // gridDim.x

// The verifier shapes the kernel relies on (the wrapper gives named errors first).
bool verifier_ok(const Verifier& v, int64_t D) {
  if (v.num_layers < 0 || v.num_layers > kMaxVerifierLayers || v.num_features < 0 ||
      v.num_features > 3) {
    return false;
  }
  int64_t in = D + v.num_features;
  for (int l = 0; l < v.num_layers; ++l) {
    if (v.in[l] != in || v.out[l] < 1 || v.out[l] > kMaxVerifierWidth) return false;
    if (v.w[l] == nullptr || v.b[l] == nullptr) return false;
    in = v.out[l];
  }
  for (int f = 0; f < v.num_features; ++f) {
    if (v.features[f] < 0 || v.features[f] > 2) return false;
  }
  return v.num_layers == 0 || in == 1;
}

}  // namespace

#ifndef SPRINTER_CUDA_EMULATION

cudaError_t draft_sample_cuda(const void* logits, DType dtype, const float* hidden,
                              const int64_t* position, int64_t B, int64_t V, int64_t D,
                              uint64_t seed, uint32_t stream, SamplingSettings sampling,
                              const Verifier& verifier, int64_t* token, float* probs,
                              float* q_token, float* score, int8_t* status,
                              cudaStream_t cuda_stream) {
  if (B < 0 || B > kMaxBlocks || V < 1 || V > (4ll << 32) || D < 0) return cudaErrorInvalidValue;
  if (!verifier_ok(verifier, D)) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const philox::Key key = philox::seed_key(seed);
  const uint32_t k0 = key.k0, k1 = key.k1;
  switch (dtype) {
    case DType::kFloat32:
      return launch_draft<float>(logits, hidden, position, B, V, D, k0, k1, stream, sampling,
                                 verifier, token, probs, q_token, score, status, cuda_stream);
    case DType::kFloat16:
      return launch_draft<__half>(logits, hidden, position, B, V, D, k0, k1, stream, sampling,
                                  verifier, token, probs, q_token, score, status, cuda_stream);
    case DType::kBFloat16:
      return launch_draft<__nv_bfloat16>(logits, hidden, position, B, V, D, k0, k1, stream,
                                         sampling, verifier, token, probs, q_token, score, status,
                                         cuda_stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t verify_tokens_cuda(const void* target_logits, DType logits_dtype,
                               const void* draft_probs, DType probs_dtype,
                               const int64_t* draft_tokens, const int64_t* start_position,
                               int64_t B, int64_t n, int64_t V, uint64_t seed, SamplingSettings sampling,
                               bool sd, float* p_work, int32_t* flag_work, int64_t* cand_work,
                               int64_t* tokens, int64_t* num_accepted, int8_t* status,
                               cudaStream_t cuda_stream) {
  if (B < 0 || n < 0 || V < 1 || V > (4ll << 32)) return cudaErrorInvalidValue;
  if (B > 0 && (n + 1) > kMaxBlocks / B) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const philox::Key key = philox::seed_key(seed);
  const uint32_t k0 = key.k0, k1 = key.k1;
  cudaError_t err = cudaErrorInvalidValue;
  switch (logits_dtype) {
    case DType::kFloat32:
      err = launch_verify_q<float>(probs_dtype, target_logits, draft_probs, draft_tokens,
                                   start_position, B, n, V, k0, k1, sampling, sd, p_work,
                                   flag_work, cand_work, cuda_stream);
      break;
    case DType::kFloat16:
      err = launch_verify_q<__half>(probs_dtype, target_logits, draft_probs, draft_tokens,
                                    start_position, B, n, V, k0, k1, sampling, sd, p_work,
                                    flag_work, cand_work, cuda_stream);
      break;
    case DType::kBFloat16:
      err = launch_verify_q<__nv_bfloat16>(probs_dtype, target_logits, draft_probs, draft_tokens,
                                           start_position, B, n, V, k0, k1, sampling, sd, p_work,
                                           flag_work, cand_work, cuda_stream);
      break;
  }
  if (err != cudaSuccess) return err;
  constexpr int kCommitThreads = 128;
  const int64_t blocks = (B + kCommitThreads - 1) / kCommitThreads;
  verify_commit_kernel<<<static_cast<unsigned>(blocks), kCommitThreads, 0, cuda_stream>>>(
      flag_work, cand_work, draft_tokens, B, n, tokens, num_accepted, status);
  return cudaGetLastError();
}
#endif  // SPRINTER_CUDA_EMULATION

}  // namespace cuda
}  // namespace sprinter
