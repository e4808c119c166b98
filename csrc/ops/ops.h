// The signatures of the fused ops' twins, written once: the CPU twins (ops_cpu.h,
// sprinter::cpu) and the CUDA twins (cuda/ops_cuda_torch.h, sprinter::cuda) each
// declare `DraftSample draft_sample;` and `VerifyTokens verify_tokens;`, so the
// bindings (ops_py.cpp) and the native loop (engine/engine.cpp) call either alike.
// Spec: the torch backends of sprinter_ext/ops/ (_draft_sample.py, _verify_tokens.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "common/sampling.h"

namespace sprinter {

// logits [B, V] (f32/f16/bf16), hidden [B, D] float32, position [B] int64.
// weights[l] [out_l, in_l] float32, biases[l] [out_l] float32 (empty: no verifier);
// features: codes into ("q_token", "max_q", "entropy") in the verifier's order.
// Returns (token [B] int64, probs [B, V] f32, q_token [B] f32, score [B] f32, status [B] int8).
using DraftSample = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, const SamplingSettings& sampling, const std::vector<at::Tensor>& weights,
    const std::vector<at::Tensor>& biases, const std::vector<int64_t>& features);

// target_logits [B, n+1, V], draft_probs [B, n, V] (f32/f16/bf16), draft_tokens [B, n] int64,
// start_position [B] int64. sd = true: speculative sampling; false: ERSD's race rule.
// Returns (tokens [B, n+1] int64 padded with -1, num_accepted [B] int64, status [B] int8).
using VerifyTokens = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, const SamplingSettings& sampling, bool sd);

}  // namespace sprinter
