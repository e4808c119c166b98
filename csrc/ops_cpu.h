// CPU twins of the fused ops of sprinter_ext.ops (reference: their torch backends, sprinter_ext/ops/).
//
// Inputs are validated in Python (sprinter_ext/ops/_common.py, _check_tensor); these
// functions re-check only what would make them read out of bounds. Both return
// a per-row status tensor (int8 [B], 0 = ok, 1 = non-finite logits) that the
// Python wrapper turns into NonFiniteLogitsError.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace sprinter {
namespace cpu {

// logits [B, V] (f32/f16/bf16), hidden [B, D] float32, position [B] int64.
// weights[l] [out_l, in_l] float32, biases[l] [out_l] float32 (empty: no verifier);
// features: codes into ("q_token", "max_q", "entropy") in the verifier's order.
// Returns (token [B] int64, probs [B, V] f32, q_token [B] f32, score [B] f32, status [B] int8).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draft_sample(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, double temperature, int64_t top_k, double top_p,
    const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
    const std::vector<int64_t>& features);

// target_logits [B, n+1, V], draft_probs [B, n, V] (f32/f16/bf16), draft_tokens [B, n] int64,
// start_position [B] int64. sd = true: speculative sampling; false: ERSD's race rule.
// Returns (tokens [B, n+1] int64 padded with -1, num_accepted [B] int64, status [B] int8).
std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tokens(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, double temperature, int64_t top_k,
    double top_p, bool sd);

}  // namespace cpu
}  // namespace sprinter
