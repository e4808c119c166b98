// NativeModel's constructor (native_model.h): checks the config and every weight with a
// named error (std::invalid_argument "NativeModel: ..." -> ValueError), packs the fast
// path's linears and allocates the static KV cache. The forward is native_model.cpp.
#include "native_model.h"

#include "layers.h"
#include "linear_quant_cpu.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>

namespace sprinter {
namespace engine {
namespace {

using at::Tensor;
using layers::stacked_bias;

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

[[noreturn]] void invalid(const std::string& msg) { throw std::invalid_argument("NativeModel: " + msg); }

// `t` must be defined (unless optional), on `device`, of `dtype`, with `shape`.
void expect(const Tensor& t, const std::string& name, std::vector<int64_t> shape, c10::ScalarType dtype,
            c10::Device device, bool optional = false) {
  if (!t.defined()) {
    if (optional) return;
    invalid(name + " is missing");
  }
  if (t.sizes() != at::IntArrayRef(shape)) {
    invalid(name + " has shape " + shape_str(t.sizes()) + ", expected " + shape_str(shape));
  }
  if (t.scalar_type() != dtype) {
    invalid(name + " has dtype " + std::string(c10::toString(t.scalar_type())) + ", expected " +
            c10::toString(dtype) + " (all weights share the embedding's dtype)");
  }
  if (t.device() != device) {
    invalid(name + " is on " + t.device().str() + ", expected " + device.str() + " (the embedding's device)");
  }
}

double dtype_min(c10::ScalarType dtype) {  // torch.finfo(dtype).min
  switch (dtype) {
    case at::kFloat: return std::numeric_limits<float>::lowest();
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    default: invalid("the model dtype must be float32, float64, float16 or bfloat16, got " +
                     std::string(c10::toString(dtype)));
  }
}

}  // namespace

NativeModel::NativeModel(NativeModelConfig config, NativeModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  const auto& c = config_;
  auto& w = weights_;
  if (!w.embed.defined() || w.embed.dim() != 2) invalid("embed must be a 2-D tensor [V, D]");
  const auto dtype = w.embed.scalar_type();
  const auto device = w.embed.device();
  mask_min_ = dtype_min(dtype);
  const int64_t D = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, hd = c.head_dim;
  const int64_t n_layers = static_cast<int64_t>(w.layers.size());
  if (D <= 0 || H <= 0 || Hkv <= 0 || hd <= 0 || c.vocab_size <= 0) {
    invalid("hidden_size, num_heads, num_kv_heads, head_dim and vocab_size must be positive");
  }
  if (H % Hkv != 0) invalid("num_heads must be a multiple of num_kv_heads");
  if (c.max_len < 2) invalid("max_len must be >= 2, got " + std::to_string(c.max_len));
  if (n_layers == 0) invalid("the model has no layers");
  if (static_cast<int64_t>(c.attn_scaling.size()) != n_layers) {
    invalid("attn_scaling has " + std::to_string(c.attn_scaling.size()) + " entries for " +
            std::to_string(n_layers) + " layers");
  }
  if (!(c.logit_softcap >= 0.0)) invalid("logit_softcap must be >= 0 (0: none)");
  expect(w.embed, "embed", {w.embed.size(0), D}, dtype, device);
  const bool llama = c.family == ModelFamily::kLlama;
  if (llama) {
    if (!w.inv_freq.defined() || w.inv_freq.sizes() != at::IntArrayRef({hd / 2}) || hd % 2 != 0) {
      invalid("inv_freq must have shape [head_dim / 2] = [" + std::to_string(hd / 2) + "]");
    }
    if (w.inv_freq.device() != device) invalid("inv_freq is not on the embedding's device");
    // LlamaRotaryEmbedding.forward: self.inv_freq.to(dtype=torch.float) on every call.
    w.inv_freq = w.inv_freq.to(at::kFloat);
  } else {
    if (H != Hkv || H * hd != D) invalid("GPT-2 needs num_kv_heads == num_heads and num_heads * head_dim == hidden_size");
    expect(w.pos_embed, "pos_embed", {w.pos_embed.defined() ? w.pos_embed.size(0) : 0, D}, dtype, device);
    if (w.pos_embed.size(0) < c.max_len) {
      invalid("pos_embed has " + std::to_string(w.pos_embed.size(0)) + " positions, fewer than max_len=" +
              std::to_string(c.max_len));
    }
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    const auto& L = w.layers[i];
    const std::string p = "layers[" + std::to_string(i) + "].";
    expect(L.norm1_w, p + "norm1_w", {D}, dtype, device);
    expect(L.norm2_w, p + "norm2_w", {D}, dtype, device);
    if (llama) {
      if (!L.gate_w.defined()) invalid(p + "gate_w is missing");
      const int64_t I = L.gate_w.size(0);
      expect(L.q_w, p + "q_w", {H * hd, D}, dtype, device);
      expect(L.k_w, p + "k_w", {Hkv * hd, D}, dtype, device);
      expect(L.v_w, p + "v_w", {Hkv * hd, D}, dtype, device);
      expect(L.o_w, p + "o_w", {D, H * hd}, dtype, device);
      expect(L.q_b, p + "q_b", {H * hd}, dtype, device, true);
      expect(L.k_b, p + "k_b", {Hkv * hd}, dtype, device, true);
      expect(L.v_b, p + "v_b", {Hkv * hd}, dtype, device, true);
      expect(L.o_b, p + "o_b", {D}, dtype, device, true);
      expect(L.gate_w, p + "gate_w", {I, D}, dtype, device);
      expect(L.up_w, p + "up_w", {I, D}, dtype, device);
      expect(L.down_w, p + "down_w", {D, I}, dtype, device);
      expect(L.gate_b, p + "gate_b", {I}, dtype, device, true);
      expect(L.up_b, p + "up_b", {I}, dtype, device, true);
      expect(L.down_b, p + "down_b", {D}, dtype, device, true);
    } else {
      if (!L.c_fc_w.defined()) invalid(p + "c_fc_w is missing");
      const int64_t I = L.c_fc_w.size(-1);
      expect(L.norm1_b, p + "norm1_b", {D}, dtype, device);
      expect(L.norm2_b, p + "norm2_b", {D}, dtype, device);
      expect(L.c_attn_w, p + "c_attn_w", {D, 3 * D}, dtype, device);
      expect(L.c_attn_b, p + "c_attn_b", {3 * D}, dtype, device);
      expect(L.attn_proj_w, p + "attn_proj_w", {D, D}, dtype, device);
      expect(L.attn_proj_b, p + "attn_proj_b", {D}, dtype, device);
      expect(L.c_fc_w, p + "c_fc_w", {D, I}, dtype, device);
      expect(L.c_fc_b, p + "c_fc_b", {I}, dtype, device);
      expect(L.mlp_proj_w, p + "mlp_proj_w", {I, D}, dtype, device);
      expect(L.mlp_proj_b, p + "mlp_proj_b", {D}, dtype, device);
    }
  }
  expect(w.norm_w, "norm_w", {D}, dtype, device);
  expect(w.norm_b, "norm_b", {D}, dtype, device, /*optional=*/llama);
  if (!w.head_w.defined()) invalid("head_w is missing");
  const int64_t rows = w.head_ids.defined() ? w.head_ids.numel() : c.vocab_size;
  expect(w.head_w, "head_w", {rows, D}, dtype, device);
  expect(w.head_b, "head_b", {rows}, dtype, device, true);
  if (w.head_ids.defined()) {
    expect(w.head_ids, "head_ids", {rows}, at::kLong, device);
    const Tensor ids = w.head_ids.cpu();
    const int64_t* v = ids.const_data_ptr<int64_t>();
    if (rows == 0 || *std::min_element(v, v + rows) < 0 || *std::max_element(v, v + rows) >= c.vocab_size) {
      invalid("head_ids must be a non-empty set of token ids in [0, " + std::to_string(c.vocab_size) + ")");
    }
  }

  if (c.fast) {
    if (!device.is_cpu()) invalid("the fast path runs on the CPU only (the CUDA path keeps static shapes)");
    if (dtype != at::kFloat && dtype != at::kBFloat16) {
      invalid("the fast path needs float32 or bfloat16 weights, got " + std::string(c10::toString(dtype)));
    }
    // NOTE: packing happens once here and copies the projection and head weights (the
    // originals stay for prefill, which keeps at::linear).
    for (const auto& L : w.layers) {
      LayerPacks P;
      if (llama) {
        P.qkv = cpu::PackedLinear(at::cat({L.q_w, L.k_w, L.v_w}), stacked_bias({L.q_b, L.k_b, L.v_b}, {L.q_w, L.k_w, L.v_w}));
        P.o = cpu::PackedLinear(L.o_w, L.o_b);
        P.gate_up = cpu::PackedLinear(at::cat({L.gate_w, L.up_w}), stacked_bias({L.gate_b, L.up_b}, {L.gate_w, L.up_w}));
        P.down = cpu::PackedLinear(L.down_w, L.down_b);
      } else {
        P.qkv = cpu::PackedLinear(L.c_attn_w.t(), L.c_attn_b);
        P.o = cpu::PackedLinear(L.attn_proj_w.t(), L.attn_proj_b);
        P.up = cpu::PackedLinear(L.c_fc_w.t(), L.c_fc_b);
        P.down = cpu::PackedLinear(L.mlp_proj_w.t(), L.mlp_proj_b);
      }
      packs_.push_back(std::move(P));
    }
    head_pack_ = cpu::PackedLinear(w.head_w, w.head_b);
  }

  c10::InferenceMode guard;  // the cache is only ever touched in inference mode
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t i = 0; i < n_layers; ++i) {
    // transformers' StaticLayer allocates zeros as well
    k_cache_.push_back(at::zeros({1, Hkv, c.max_len, hd}, opts));
    v_cache_.push_back(at::zeros({1, Hkv, c.max_len, hd}, opts));
  }
  positions_ = at::arange(c.max_len, at::TensorOptions().dtype(at::kLong).device(device));
}

}  // namespace engine
}  // namespace sprinter

namespace sprinter {
namespace engine {

cpu::PackedLinear& NativeModel::find_linear(const std::string& name) {
  if (!config_.fast) invalid("linear '" + name + "' needs the fast path (fast=True): the op-for-op path runs at::linear");
  cpu::PackedLinear* target = nullptr;
  if (name == "head") {
    target = &head_pack_;
  } else if (name.rfind("layers.", 0) == 0) {
    const auto dot = name.find('.', 7);
    const std::string idx = name.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
    const std::string part = dot == std::string::npos ? "" : name.substr(dot + 1);
    int64_t i = -1;
    if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 9) i = std::stoll(idx);
    if (i >= 0 && i < num_layers()) {
      LayerPacks& P = packs_[i];
      if (part == "qkv") target = &P.qkv;
      if (part == "o") target = &P.o;
      if (part == "gate_up") target = &P.gate_up;
      if (part == "up") target = &P.up;
      if (part == "down") target = &P.down;
    }
  }
  if (target == nullptr || !target->defined()) {
    invalid("no linear '" + name + "': use 'head' or 'layers.<i>.<part>' with i < " + std::to_string(num_layers()) +
            " and part qkv, o, gate_up, down (Llama) or qkv, o, up, down (GPT-2)");
  }
  return *target;
}

void NativeModel::quantize_linear(const std::string& name, const at::Tensor& blocks, cpu::QuantFormat format) {
  if (!config_.fast) invalid("quantize_linear needs the fast path (fast=True): the op-for-op path runs at::linear");
  cpu::PackedLinear& target = find_linear(name);
  target = target.with_blocks(blocks, format);
}

void NativeModel::store_linear16(const std::string& name, const at::Tensor& weight16) {
  if (!config_.fast) invalid("store_linear16 needs the fast path (fast=True): the op-for-op path runs at::linear");
  cpu::PackedLinear& target = find_linear(name);
  target = target.with_weight16(weight16);
}

at::Tensor NativeModel::linear_weight(const std::string& name) const {
  return const_cast<NativeModel*>(this)->find_linear(name).weight();
}

std::vector<std::string> NativeModel::linear_names() const {
  std::vector<std::string> names;
  if (!config_.fast) return names;
  for (int64_t i = 0; i < num_layers(); ++i) {
    const LayerPacks& P = packs_[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    if (P.qkv.defined()) names.push_back(p + "qkv");
    if (P.o.defined()) names.push_back(p + "o");
    if (P.gate_up.defined()) names.push_back(p + "gate_up");
    if (P.up.defined()) names.push_back(p + "up");
    if (P.down.defined()) names.push_back(p + "down");
  }
  names.push_back("head");
  return names;
}

int64_t NativeModel::linear_weight_bytes() const {
  if (!config_.fast) return 0;
  int64_t total = head_pack_.weight_bytes();
  for (const auto& P : packs_) {
    for (const cpu::PackedLinear* p : {&P.qkv, &P.o, &P.gate_up, &P.up, &P.down}) {
      if (p->defined()) total += p->weight_bytes();
    }
  }
  return total;
}

}  // namespace engine
}  // namespace sprinter
