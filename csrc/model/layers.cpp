// The layer functions of NativeModel's forward (layers.h), moved out of native_model.cpp
// unchanged: each is the transformers 5.23 code it names, op for op.
#include "layers.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>

#include <cmath>

namespace sprinter {
namespace engine {
namespace layers {

using at::Tensor;

namespace {

// LlamaRMSNorm's arithmetic for the fast path in one loop per row (no ATen dispatch):
// h = float(x) * rsqrt(mean(float(x)^2) + eps), then weight * h.to(dtype) in the dtype.
template <typename T>
void rms_norm_rows(const T* x, const T* w, T* out, int64_t rows, int64_t D, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    float ss = 0.0f;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<float>(xr[i]) * static_cast<float>(xr[i]);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + static_cast<float>(eps));
    for (int64_t i = 0; i < D; ++i) {
      out[r * D + i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(static_cast<T>(static_cast<float>(xr[i]) * inv)));
    }
  }
}

}  // namespace

// LlamaRMSNorm.forward.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const auto input_dtype = x.scalar_type();
  Tensor h = x.to(at::kFloat);
  Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(input_dtype);
}

// rotate_half (modeling_llama.py).
Tensor rotate_half(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.slice(-1, 0, half);
  Tensor x2 = x.slice(-1, half);
  return at::cat({-x2, x1}, -1);
}

// repeat_kv (modeling_llama.py / sdpa_attention.py): [1, H_kv, L, d] -> [1, H_kv * n_rep, L, d].
Tensor repeat_kv(const Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const int64_t b = x.size(0), h = x.size(1), l = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, h, n_rep, l, d}).reshape({b, h * n_rep, l, d});
}

// pytorch_utils.Conv1D.forward: addmm(bias, x.view(-1, in), weight [in, out]).
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  std::vector<int64_t> size_out(x.sizes().begin(), x.sizes().end());
  size_out.back() = weight.size(1);
  return at::addmm(bias, x.view({-1, x.size(-1)}), weight).view(size_out);
}

// The bias of stacked projections: undefined if none has one, else each (zeros where absent).
Tensor stacked_bias(const std::vector<Tensor>& biases, const std::vector<Tensor>& weights) {
  bool any = false;
  for (const auto& b : biases) any = any || b.defined();
  if (!any) return Tensor();
  std::vector<Tensor> parts;
  for (size_t i = 0; i < biases.size(); ++i) {
    parts.push_back(biases[i].defined() ? biases[i] : at::zeros({weights[i].size(0)}, weights[i].options()));
  }
  return at::cat(parts);
}

Tensor rms_norm_fast(const Tensor& x, const Tensor& weight, double eps) {
  Tensor xc = x.contiguous();
  Tensor out = at::empty_like(xc);
  const int64_t D = xc.size(-1), rows = xc.numel() / D;
  if (xc.scalar_type() == at::kFloat) {
    rms_norm_rows(xc.const_data_ptr<float>(), weight.const_data_ptr<float>(), out.mutable_data_ptr<float>(), rows, D, eps);
  } else {
    rms_norm_rows(xc.const_data_ptr<c10::BFloat16>(), weight.const_data_ptr<c10::BFloat16>(),
                  out.mutable_data_ptr<c10::BFloat16>(), rows, D, eps);
  }
  return out;
}

}  // namespace layers
}  // namespace engine
}  // namespace sprinter
