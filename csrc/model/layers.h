// The transformers layer functions NativeModel's forward is built from (layers.cpp),
// each naming the transformers code it mirrors op for op (see native_model.cpp's NOTE:
// same ATen ops, same shapes, same order, or the bitwise equality with ModelRunner goes).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace sprinter {
namespace engine {
namespace layers {

// LlamaRMSNorm.forward.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// rotate_half (modeling_llama.py).
at::Tensor rotate_half(const at::Tensor& x);
// repeat_kv (modeling_llama.py / sdpa_attention.py): [1, H_kv, L, d] -> [1, H_kv * n_rep, L, d].
at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep);
// pytorch_utils.Conv1D.forward: addmm(bias, x.view(-1, in), weight [in, out]).
at::Tensor conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
// The bias of stacked projections: undefined if none has one, else each (zeros where absent).
at::Tensor stacked_bias(const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& weights);
// LlamaRMSNorm's arithmetic for the fast path (float32 or bfloat16), one loop per row.
at::Tensor rms_norm_fast(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace layers
}  // namespace engine
}  // namespace sprinter
