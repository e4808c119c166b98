// The CUDA fused ops on torch tensors: the same signatures and results as the CPU
// twins of csrc/ops/ops_cpu.h (sprinter::cpu::draft_sample / verify_tokens), for CUDA
// tensors. Compiled only when SPRINTER_WITH_CUDA (CMakeLists.txt); kernels in
// csrc/ops/cuda/ops_cuda.cu.
//
// Unlike the CPU twins, these never wait for the GPU: the status tensor ([B] int8,
// 1 = non-finite logits) stays on the device, and such a row gets fixed "nothing
// sampled" values instead (draft: token -1, q_token 0, score 0, a zero q row;
// verify: num_accepted -1 and a row of -1), as the Triton backend returns. The
// caller decides whether to read status (a host sync) or to act on those values.
// Launches go to the current CUDA stream of the inputs' device, allocate only
// through torch's caching allocator, and can be captured in a CUDA graph.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "common/sampling.h"

namespace sprinter {
namespace cuda {

// logits [B, V] (f32/f16/bf16), hidden [B, D] float32, position [B] int64, all on
// one CUDA device. weights[l] [out_l, in_l] float32, biases[l] [out_l] float32 on
// that device (empty: no verifier; at most 8 layers, each at most 1024 wide);
// features: codes into ("q_token", "max_q", "entropy") in the verifier's order.
// Returns (token [B] int64, probs [B, V] f32, q_token [B] f32, score [B] f32, status [B] int8).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draft_sample(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, const SamplingSettings& sampling, const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
    const std::vector<int64_t>& features);

// target_logits [B, n+1, V], draft_probs [B, n, V] (f32/f16/bf16), draft_tokens [B, n] int64,
// start_position [B] int64, all on one CUDA device. sd = true: speculative sampling;
// false: ERSD's race rule. An out-of-range draft token counts as rejected.
// Returns (tokens [B, n+1] int64 padded with -1, num_accepted [B] int64, status [B] int8).
std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tokens(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, const SamplingSettings& sampling, bool sd);

}  // namespace cuda
}  // namespace sprinter
