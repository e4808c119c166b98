// Raw launchers of the CUDA fused ops (csrc/ops/cuda/ops_cuda.cu), the CUDA twins of
// sprinter_ext.ops.draft_sample / verify_tokens (spec: the torch backend in
// sprinter_ext/ops/; CPU twin: csrc/ops/ops_cpu.cpp; Triton twin: kernels/).
//
// Plain CUDA C++17, no torch headers: device pointers, sizes and a cudaStream_t.
// The torch-facing wrapper (csrc/ops/cuda/ops_cuda_torch.cpp) checks the tensors and
// allocates the outputs and workspaces. Nothing here synchronises with the host
// or allocates memory, so both launchers can be captured in a CUDA graph.
//
// Non-finite logits (NaN, +inf, or no finite entry) do not raise: the row is
// flagged in `status` (int8, 1 = non-finite) and gets the same fixed-shape
// "nothing sampled" values as the Triton backend (see each launcher).
#pragma once

#include <cuda_runtime_api.h>

#include <stdint.h>

#include "common/sampling.h"

namespace sprinter {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

constexpr int kMaxVerifierLayers = 8;
constexpr int64_t kMaxVerifierWidth = 1024;  // widest layer output (the input D is free)

// The verifier MLP (sprinter_ext/verifier/model.py): Linear -> ReLU -> ... -> Linear(., 1)
// -> sigmoid. w[l] is a float32 [out[l], in[l]] row-major device buffer, b[l] float32
// [out[l]]; in[0] = D + num_features, in[l] = out[l - 1], out[num_layers - 1] = 1,
// out[l] <= kMaxVerifierWidth.
// features: codes into ("q_token", "max_q", "entropy") in the verifier's order.
// num_layers = 0: no verifier (score 0).
struct Verifier {
  int num_layers;
  const float* w[kMaxVerifierLayers];
  const float* b[kMaxVerifierLayers];
  int64_t in[kMaxVerifierLayers];
  int64_t out[kMaxVerifierLayers];
  int num_features;
  int features[3];
};

// Draft side: one block per row b < B.
//   logits   [B, V] of `dtype`, hidden [B, D] float32, position [B] int64.
//   token    [B] int64 out: the race winner argmax_i q_i / -log u(seed, position, stream, i)
//   probs    [B, V] float32 out: q, the processed distribution (also the row's workspace)
//   q_token  [B] float32 out: q(token)
//   score    [B] float32 out: verifier score (0 without a verifier; 0 for a NaN logit)
//   status   [B] int8 out: 0 ok, 1 non-finite logits (then token -1, q_token 0,
//            score 0 and a zero probs row)
// Returns cudaSuccess, cudaErrorInvalidValue for bad sizes/layers, or the launch error.
cudaError_t draft_sample_cuda(const void* logits, DType dtype, const float* hidden,
                              const int64_t* position, int64_t B, int64_t V, int64_t D,
                              uint64_t seed, uint32_t stream, SamplingSettings sampling,
                              const Verifier& verifier, int64_t* token, float* probs,
                              float* q_token, float* score, int8_t* status,
                              cudaStream_t cuda_stream);

// Target side: one block per (row, position), then one thread per row commits.
//   target_logits  [B, n + 1, V] of `logits_dtype`
//   draft_probs    [B, n, V] of `probs_dtype` (read only for mode sd)
//   draft_tokens   [B, n] int64; start_position [B] int64
//   sd             true: speculative sampling; false: ERSD's race rule
// Workspaces (any contents; overwritten):
//   p_work         [B, n + 1, V] float32: the target distributions
//   flag_work      [B, n + 1] int32: 1 accepted, 0 rejected, -1 non-finite logits
//   cand_work      [B, n + 1] int64: recovered (i < n) or bonus (i == n) token
// Outputs:
//   tokens         [B, n + 1] int64: accepted tokens, the recovered/bonus one, -1 padding
//   num_accepted   [B] int64
//   status         [B] int8: 0 ok, 1 non-finite logits at any position (then
//                  num_accepted -1 and a row of -1)
cudaError_t verify_tokens_cuda(const void* target_logits, DType logits_dtype,
                               const void* draft_probs, DType probs_dtype,
                               const int64_t* draft_tokens, const int64_t* start_position,
                               int64_t B, int64_t n, int64_t V, uint64_t seed, SamplingSettings sampling,
                               bool sd, float* p_work, int32_t* flag_work, int64_t* cand_work,
                               int64_t* tokens, int64_t* num_accepted, int8_t* status,
                               cudaStream_t cuda_stream);

}  // namespace cuda
}  // namespace sprinter
