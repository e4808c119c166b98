// NativeModel (native_model.h): transformers' Llama / GPT-2 forward, op for op, in ATen.
//
// Every function below names the transformers 5.23 code it mirrors. "Op for op" is
// literal: the same ATen ops on tensors of the same shapes and strides in the same
// order, because ATen's CPU kernels are only reproducible under that condition (a
// vectorised kernel computes the tail of a buffer with the scalar formula, so e.g.
// cos() of one element can differ by an ulp with the buffer's length; GEMMs pick
// their blocking from the shapes). Do not "simplify" a reshape or fuse two ops here
// without re-running tests/test_native_model.py, which checks bitwise equality.
//
// config.fast (CPU only) swaps two things and leaves every other op as it is: the linears
// of forwards over <= 16 tokens run PackedLinear (csrc/model/linear_cpu.h), which streams each
// weight once for all rows, and attention reads only the valid prefix of the cache (one
// query needs no mask then). Its contract is tolerance, not bits (tests/test_linear_cpu.py).
#include "native_model.h"

#include "layers.h"

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
using namespace layers;  // rms_norm, rotate_half, repeat_kv, conv1d, stacked_bias, rms_norm_fast

// sqrt(2 / pi), as Python's math.sqrt(2.0 / math.pi) computes it (both correctly rounded).
const double kSqrt2OverPi = std::sqrt(2.0 / 3.141592653589793);

}  // namespace

// The constructor (config and weight checks, cache allocation): native_model_init.cpp.

void NativeModel::prefill(const std::vector<int64_t>& ids) { prefill_last(ids); }

void NativeModel::set_feature_layers(const std::vector<int64_t>& layers) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t L = num_layers();
  std::vector<int64_t> slot(L, -1);
  for (size_t j = 0; j < layers.size(); ++j) {
    if (layers[j] < 0 || layers[j] >= L) {
      throw std::invalid_argument("feature layer " + std::to_string(layers[j]) + " is beyond the target's depth (" +
                                  std::to_string(L) + " layers): use indices in [0, " + std::to_string(L - 1) + "], the residual stream entering that layer");
    }
    if (slot[layers[j]] >= 0) throw std::invalid_argument("feature layer " + std::to_string(layers[j]) + " is repeated");
    slot[layers[j]] = static_cast<int64_t>(j);
  }
  feature_layers_ = layers;
  feature_slot_ = layers.empty() ? std::vector<int64_t>() : slot;
  c10::InferenceMode guard;
  features_ = layers.empty() ? Tensor()
                             : at::zeros({config_.max_len, static_cast<int64_t>(layers.size()) * config_.hidden_size},
                                         at::TensorOptions().dtype(dtype()).device(device()));
}

void NativeModel::tap(int64_t layer, const Tensor& x, const Tensor& cache_position) {
  if (feature_slot_.empty() || feature_slot_[layer] < 0) return;
  const int64_t D = config_.hidden_size;
  // index_copy_ at the device-side positions: no host sync, so a CUDA graph can capture it
  features_.narrow(1, feature_slot_[layer] * D, D).index_copy_(0, cache_position, x.select(0, 0));
}

std::pair<Tensor, Tensor> NativeModel::prefill_last(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(mutex_);
  length_.store(0, std::memory_order_release);
  if (ids.empty()) return {Tensor(), Tensor()};
  return forward(ids, /*last_only=*/true);
}

std::pair<Tensor, Tensor> NativeModel::feed(const std::vector<int64_t>& tokens) {
  if (tokens.empty()) throw std::invalid_argument("feed() needs at least one token");
  std::lock_guard<std::mutex> lock(mutex_);
  return forward(tokens, /*last_only=*/false);
}

void NativeModel::truncate(int64_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t held = length_.load(std::memory_order_acquire);
  if (length < 0 || length > held) {
    throw std::invalid_argument("cannot truncate to " + std::to_string(length) + ": the cache holds " +
                                std::to_string(held) + " tokens");
  }
  length_.store(length, std::memory_order_release);
}

void NativeModel::scrub() {
  std::lock_guard<std::mutex> lock(mutex_);
  c10::InferenceMode guard;
  for (auto& t : k_cache_) t.zero_();  // in place: graph-captured addresses stay valid
  for (auto& t : v_cache_) t.zero_();
  length_.store(0, std::memory_order_release);
}

void NativeModel::check_room(int64_t start, int64_t n) const {
  if (start + n > config_.max_len) {
    throw CacheOverflowError(std::to_string(start + n) + " tokens do not fit the static KV cache of " +
                             std::to_string(config_.max_len) +
                             "; use a shorter prompt, fewer new tokens, or a larger max_length");
  }
}

void NativeModel::check_tokens(const std::vector<int64_t>& ids) const {
  const int64_t rows = weights_.embed.size(0);
  for (const int64_t t : ids) {
    if (t < 0 || t >= rows) {
      throw std::out_of_range("token id " + std::to_string(t) + " is out of range for the embedding of " +
                              std::to_string(rows) + " rows");
    }
  }
}

// ModelRunner._forward's mask: 0 where key position <= query position, finfo.min elsewhere.
Tensor NativeModel::causal_mask(const Tensor& cache_position, int64_t kv_len) const {
  const int64_t n = cache_position.size(0);
  const int64_t cols = kv_len > 0 ? kv_len : config_.max_len;
  Tensor allowed = positions_.narrow(0, 0, cols).unsqueeze(0).le(cache_position.unsqueeze(1));  // [n, cols]
  Tensor mask = at::zeros({1, 1, n, cols}, positions_.options().dtype(dtype()));
  mask.masked_fill_(allowed.bitwise_not(), mask_min_);
  return mask;
}

bool NativeModel::packs_gqa_rows(int64_t n, int64_t kv_len) const {
  return kv_len > 0 && n > 1 && config_.attention == AttentionImpl::kSdpa && config_.num_heads > config_.num_kv_heads;
}

Tensor NativeModel::linear(const Tensor& x, const cpu::PackedLinear& p, const Tensor& w, const Tensor& b) const {
  if (config_.fast && x.numel() <= cpu::kMaxSmallRows * x.size(-1)) return p.forward(x);
  return at::linear(x, w, b);
}

Tensor NativeModel::activation(const Tensor& x) const {
  switch (config_.activation) {
    case Activation::kSilu: return at::silu(x);
    case Activation::kGelu: return at::gelu(x);
    case Activation::kGeluTanh: return at::gelu(x, "tanh");
    case Activation::kRelu: return at::relu(x);
    case Activation::kGeluNew:
      // NewGELUActivation: 0.5 * x * (1.0 + tanh(sqrt(2 / pi) * (x + 0.044715 * pow(x, 3.0))))
      return (x * 0.5) * (at::tanh((x + at::pow(x, 3.0) * 0.044715) * kSqrt2OverPi) + 1.0);
  }
  throw std::invalid_argument("NativeModel: unknown activation");
}

// sdpa_attention_forward (integrations/sdpa_attention.py, CPU with a float mask) or the
// family's eager_attention_forward, then the reshape of the attention module.
Tensor NativeModel::attend(int64_t i, const Tensor& q, const Tensor& mask, int64_t kv_len) {
  const int64_t n = q.size(2);
  const double scale = config_.attn_scaling[i];
  const bool llama = config_.family == ModelFamily::kLlama;
  const int64_t n_rep = config_.num_heads / config_.num_kv_heads;
  Tensor key = k_cache_[i], value = v_cache_[i];
  if (kv_len > 0) {  // the fast path: the valid prefix only
    key = key.narrow(2, 0, kv_len);
    value = value.narrow(2, 0, kv_len);
  }
  Tensor out;
  if (config_.attention == AttentionImpl::kSdpa) {
    Tensor query = q;
    const std::optional<Tensor> attn_mask = mask.defined() ? std::optional<Tensor>(mask) : std::nullopt;
    if (n_rep > 1) {  // GPT-2 has no num_key_value_groups: n_rep is 1
      if (n == 1) {
        query = q.reshape({q.size(0), config_.num_kv_heads, n_rep, q.size(3)});  // pack_gqa; the mask stays
      } else if (packs_gqa_rows(n, kv_len)) {
        // The fast path packs GQA for n > 1 too: the n_rep query heads of one KV head become
        // n_rep * n rows (rep-major) of one attention over the shared keys (forward_at repeated
        // the mask's rows once for every layer), instead of copying every cached key and value
        // n_rep times (repeat_kv: 2 * n_rep * kv_len * head_dim values per layer per forward).
        query = q.reshape({q.size(0), config_.num_kv_heads, n_rep * n, q.size(3)});
      } else {
        key = repeat_kv(key, n_rep);
        value = repeat_kv(value, n_rep);
      }
    }
    out = at::scaled_dot_product_attention(query, key, value, attn_mask, /*dropout_p=*/0.0, /*is_causal=*/false,
                                           scale);
    out = out.reshape({out.size(0), -1, n, value.size(-1)}).transpose(1, 2).contiguous();
  } else if (llama) {
    key = repeat_kv(key, n_rep);
    value = repeat_kv(value, n_rep);
    Tensor w = at::matmul(q, key.transpose(2, 3)) * scale;
    if (mask.defined()) w = w + mask;
    w = at::softmax(w, -1, at::kFloat).to(q.scalar_type());
    out = at::matmul(w, value).transpose(1, 2).contiguous();
  } else {
    Tensor w = at::matmul(q, key.transpose(-1, -2)) * scale;
    if (mask.defined()) w = w + mask;
    w = at::softmax(w, -1).to(value.scalar_type());
    out = at::matmul(w, value).transpose(1, 2);
  }
  // LlamaAttention: reshape(*input_shape, -1).contiguous(); GPT2Attention: reshape(*shape[:-2], -1).contiguous()
  return out.reshape({out.size(0), n, -1}).contiguous();
}

// LlamaDecoderLayer.forward with LlamaAttention, apply_rotary_pos_emb and LlamaMLP.
Tensor NativeModel::llama_layer(int64_t i, const Tensor& x, const Tensor& cos, const Tensor& sin,
                                const Tensor& mask, const Tensor& cache_position, int64_t kv_len) {
  const auto& L = weights_.layers[i];
  const int64_t n = x.size(1), hd = config_.head_dim;
  Tensor residual = x;
  const bool fast = config_.fast && n <= cpu::kMaxSmallRows;
  Tensor h = fast ? rms_norm_fast(x, L.norm1_w, config_.norm_eps) : rms_norm(x, L.norm1_w, config_.norm_eps);
  static const LayerPacks kNone;
  const LayerPacks& P = config_.fast ? packs_[i] : kNone;
  Tensor q, k, v;
  if (fast) {  // one pass over the stacked q, k, v weights
    const int64_t Dq = L.q_w.size(0), Dkv = L.k_w.size(0);
    Tensor qkv = P.qkv.forward(h);
    q = qkv.narrow(-1, 0, Dq).view({1, n, -1, hd}).transpose(1, 2);
    k = qkv.narrow(-1, Dq, Dkv).view({1, n, -1, hd}).transpose(1, 2);
    v = qkv.narrow(-1, Dq + Dkv, Dkv).view({1, n, -1, hd}).transpose(1, 2);
  } else {
    q = at::linear(h, L.q_w, L.q_b).view({1, n, -1, hd}).transpose(1, 2);
    k = at::linear(h, L.k_w, L.k_b).view({1, n, -1, hd}).transpose(1, 2);
    v = at::linear(h, L.v_w, L.v_b).view({1, n, -1, hd}).transpose(1, 2);
  }
  q = (q * cos) + (rotate_half(q) * sin);
  k = (k * cos) + (rotate_half(k) * sin);
  k_cache_[i].index_copy_(2, cache_position, k);  // StaticLayer.update
  v_cache_[i].index_copy_(2, cache_position, v);
  h = linear(attend(i, q, mask, kv_len), P.o, L.o_w, L.o_b);
  h = residual + h;
  residual = h;
  if (fast) {  // one pass over the stacked gate, up weights
    h = P.gate_up.forward(rms_norm_fast(h, L.norm2_w, config_.norm_eps));
    const int64_t I = L.gate_w.size(0);
    h = P.down.forward(activation(h.narrow(-1, 0, I)) * h.narrow(-1, I, I));
  } else {
    h = rms_norm(h, L.norm2_w, config_.norm_eps);
    h = at::linear(activation(at::linear(h, L.gate_w, L.gate_b)) * at::linear(h, L.up_w, L.up_b), L.down_w,
                   L.down_b);
  }
  return residual + h;
}

// GPT2Block.forward with GPT2Attention and GPT2MLP (dropout is the identity in eval).
Tensor NativeModel::gpt2_layer(int64_t i, const Tensor& x, const Tensor& mask, const Tensor& cache_position,
                               int64_t kv_len) {
  const auto& L = weights_.layers[i];
  const int64_t n = x.size(1), D = config_.hidden_size, hd = config_.head_dim;
  Tensor residual = x;
  Tensor h = at::layer_norm(x, {D}, L.norm1_w, L.norm1_b, config_.norm_eps, /*cudnn_enable=*/true);
  const bool fast = config_.fast && n <= cpu::kMaxSmallRows;
  auto conv = [&](const Tensor& in, const cpu::PackedLinear& p, const Tensor& w, const Tensor& b) {
    return fast ? p.forward(in) : conv1d(in, w, b);
  };
  static const LayerPacks kNone;
  const LayerPacks& P = config_.fast ? packs_[i] : kNone;
  auto qkv = conv(h, P.qkv, L.c_attn_w, L.c_attn_b).split(D, 2);
  Tensor k = qkv[1].view({1, n, -1, hd}).transpose(1, 2);
  Tensor v = qkv[2].view({1, n, -1, hd}).transpose(1, 2);
  Tensor q = qkv[0].view({1, n, -1, hd}).transpose(1, 2);
  k_cache_[i].index_copy_(2, cache_position, k);  // StaticLayer.update
  v_cache_[i].index_copy_(2, cache_position, v);
  h = conv(attend(i, q, mask, kv_len), P.o, L.attn_proj_w, L.attn_proj_b);
  h = h + residual;
  residual = h;
  h = at::layer_norm(h, {D}, L.norm2_w, L.norm2_b, config_.norm_eps, /*cudnn_enable=*/true);
  h = conv(activation(conv(h, P.up, L.c_fc_w, L.c_fc_b)), P.down, L.mlp_proj_w, L.mlp_proj_b);
  return residual + h;
}

// ModelRunner._forward after the base model: the head (nn.Linear or RestrictedVocabHead),
// softcapping, .float().
Tensor NativeModel::head(const Tensor& hidden) const {
  const auto& w = weights_;
  Tensor logits = linear(hidden, head_pack_, w.head_w, w.head_b);
  if (w.head_ids.defined()) {  // RestrictedVocabHead.forward
    Tensor out = at::full({logits.size(0), config_.vocab_size}, -std::numeric_limits<double>::infinity(),
                          logits.options());
    logits = out.index_copy_(-1, w.head_ids, logits);
  }
  if (config_.logit_softcap > 0.0) {
    logits = at::tanh(logits / config_.logit_softcap) * config_.logit_softcap;
  }
  return logits.to(at::kFloat);
}

std::pair<Tensor, Tensor> NativeModel::forward(const std::vector<int64_t>& ids, bool last_only) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t start = length_.load(std::memory_order_acquire);
  check_room(start, n);
  check_tokens(ids);
  c10::InferenceMode guard;
  Tensor input_ids = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  std::memcpy(input_ids.mutable_data_ptr<int64_t>(), ids.data(), sizeof(int64_t) * n);
  auto out = forward_at(input_ids.to(device()), positions_.narrow(0, start, n), last_only,
                        config_.fast ? start + n : -1);
  length_.store(start + n, std::memory_order_release);
  return out;
}

std::pair<Tensor, Tensor> NativeModel::forward_at(const Tensor& ids, const Tensor& cache_position, bool last_only,
                                                  int64_t kv_len) {
  const int64_t n = ids.size(0);
  Tensor input_ids = ids.unsqueeze(0);                   // [1, n]
  Tensor position_ids = cache_position.unsqueeze(0);     // [1, n]
  // [1, 1, n, max_len], or [1, 1, n, kv_len] on the fast path (none for one query: every
  // slot of the valid prefix is visible to it)
  Tensor mask = (kv_len > 0 && n == 1) ? Tensor() : causal_mask(cache_position, kv_len);
  if (packs_gqa_rows(n, kv_len)) {  // [1, 1, n_rep * n, kv_len]: attend's packed query rows
    mask = mask.repeat({1, 1, config_.num_heads / config_.num_kv_heads, 1});
  }
  Tensor x = at::embedding(weights_.embed, input_ids);   // [1, n, D]
  if (config_.family == ModelFamily::kLlama) {
    // LlamaRotaryEmbedding.forward (default rope: attention_scaling is 1.0, and the
    // multiplications by it are left out: x * 1.0 == x exactly).
    Tensor freqs = position_ids.unsqueeze(-1).to(at::kFloat) * weights_.inv_freq;  // [1, n, hd / 2]
    Tensor emb = at::cat({freqs, freqs}, -1);
    Tensor cos = emb.cos().to(x.scalar_type()).unsqueeze(1);  // [1, 1, n, hd]
    Tensor sin = emb.sin().to(x.scalar_type()).unsqueeze(1);
    for (int64_t i = 0; i < num_layers(); ++i) {
      tap(i, x, cache_position);
      x = llama_layer(i, x, cos, sin, mask, cache_position, kv_len);
    }
    x = (config_.fast && n <= cpu::kMaxSmallRows) ? rms_norm_fast(x, weights_.norm_w, config_.norm_eps)
                                                   : rms_norm(x, weights_.norm_w, config_.norm_eps);
  } else {
    x = x + at::embedding(weights_.pos_embed, position_ids);
    for (int64_t i = 0; i < num_layers(); ++i) {
      tap(i, x, cache_position);
      x = gpt2_layer(i, x, mask, cache_position, kv_len);
    }
    x = at::layer_norm(x, {config_.hidden_size}, weights_.norm_w, weights_.norm_b, config_.norm_eps, true);
  }
  Tensor hidden = x.select(0, 0);  // [n, D]: last_hidden_state[0]
  if (last_only) hidden = hidden.narrow(0, n - 1, 1);
  return {head(hidden), hidden};
}

}  // namespace engine
}  // namespace sprinter
