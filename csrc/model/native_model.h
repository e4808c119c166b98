// NativeModel: the forward pass of Llama and GPT-2 in ATen, behind the Runner
// interface of engine/runner.h, so the native decode loop runs a generation without Python.
//
// It reproduces sprinter_ext/models/runner.py's ModelRunner over transformers'
// LlamaForCausalLM / GPT2LMHeadModel op for op (same ATen ops, same shapes, same
// order), which makes its outputs bitwise equal to ModelRunner's on CPU:
//   * a static KV cache per layer, K and V [1, H_kv, max_len, head_dim] in the model
//     dtype; a forward of n tokens writes slots length .. length+n-1;
//   * attention over the WHOLE cache with the float additive mask [1, 1, n, max_len]
//     ModelRunner builds (0 where key position <= query position, finfo(dtype).min
//     elsewhere), so a rollback is just moving the length;
//   * Llama: RMSNorm, default RoPE (HF's LlamaRotaryEmbedding), GQA as transformers'
//     SDPA path does it (pack_gqa for one query, repeat_kv otherwise), gated MLP;
//   * GPT-2: wte + wpe, LayerNorm, Conv1D (addmm with weight [in, out]);
//   * head: a full nn.Linear, or smol_draft's RestrictedVocabHead (rows of the kept
//     token ids, optional bias, -inf elsewhere); optional final logit softcapping.
//
// Thread-safety: one model is one cache; calls on one object are serialised by an
// internal mutex (length() reads an atomic). Different objects are independent.
// Outputs are inference-mode tensors (as ModelRunner's are).
//
// Python builds one with sprinter_ext.models.native.native_runner(model); the
// binding (native_model_py.cpp) takes a config dict and a {name: tensor} dict with
// transformers' own parameter names.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "linear_cpu.h"
#include "engine/runner.h"

namespace pybind11 {
class module_;
class handle;
}  // namespace pybind11

namespace sprinter {
namespace engine {

// The tokens would not fit in the static KV cache. The Python binding maps it to
// sprinter_ext.errors.CacheOverflowError (a ValueError).
class CacheOverflowError : public std::length_error {
 public:
  using std::length_error::length_error;
};

enum class ModelFamily { kLlama, kGpt2 };
// transformers' ACT2FN names: silu/swish, gelu, gelu_pytorch_tanh, gelu_new, relu.
enum class Activation { kSilu, kGelu, kGeluTanh, kGeluNew, kRelu };
// config._attn_implementation: "sdpa" (at::scaled_dot_product_attention) or "eager"
// (transformers' matmul/softmax eager_attention_forward of the family).
enum class AttentionImpl { kSdpa, kEager };

struct NativeModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  int64_t vocab_size = 0;    // V: the logits' last dimension
  int64_t hidden_size = 0;   // D
  int64_t num_heads = 0;     // H
  int64_t num_kv_heads = 0;  // H_kv (GPT-2: H)
  int64_t head_dim = 0;
  int64_t max_len = 0;       // cache slots
  double norm_eps = 1e-6;    // rms_norm_eps / layer_norm_epsilon
  Activation activation = Activation::kSilu;
  AttentionImpl attention = AttentionImpl::kSdpa;
  // Per layer, the scale transformers hands the attention (module.scaling): head_dim**-0.5,
  // times 1 / (layer + 1) for GPT-2's scale_attn_by_inverse_layer_idx, 1.0 without
  // scale_attn_weights. Its size is the number of layers.
  std::vector<double> attn_scaling;
  double logit_softcap = 0.0;  // final_logit_softcapping; 0 = none
  // The weight-streaming CPU path (CPU models only): every linear of a forward over
  // n <= 16 tokens runs csrc/model/linear_cpu.h's PackedLinear and attention reads only the
  // valid prefix of the cache. Tolerance-equal to transformers, not bitwise; false is the
  // op-for-op path described above.
  bool fast = false;
};

// One decoder layer. Llama fills the nn.Linear weights ([out, in]); GPT-2 the Conv1D
// weights ([in, out]). Biases are optional (undefined tensor = none) except GPT-2's.
struct LayerWeights {
  at::Tensor norm1_w, norm1_b;  // input_layernorm (RMSNorm: no bias) / ln_1
  at::Tensor norm2_w, norm2_b;  // post_attention_layernorm / ln_2
  // Llama
  at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
  at::Tensor gate_w, gate_b, up_w, up_b, down_w, down_b;
  // GPT-2 (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)
  at::Tensor c_attn_w, c_attn_b, attn_proj_w, attn_proj_b, c_fc_w, c_fc_b, mlp_proj_w, mlp_proj_b;
};

struct NativeModelWeights {
  at::Tensor embed;      // [V_embed, D]: embed_tokens / wte
  at::Tensor pos_embed;  // GPT-2 wpe [P, D]
  at::Tensor inv_freq;   // Llama rotary_emb.inv_freq [head_dim / 2], any float dtype
  std::vector<LayerWeights> layers;
  at::Tensor norm_w, norm_b;  // final norm (Llama: no bias)
  at::Tensor head_w;          // [V, D], or [N, D] with head_ids
  at::Tensor head_b;          // optional [V] / [N]
  at::Tensor head_ids;        // optional int64 [N]: RestrictedVocabHead's kept token ids
};

// The PackedLinear of every projection of one layer (the fast path). Llama: qkv = q, k, v
// stacked, gate_up = gate, up stacked (one pass, one pool dispatch each), o, down; GPT-2:
// qkv (c_attn, transposed once), o (attn.c_proj), up (mlp.c_fc), down (mlp.c_proj).
struct LayerPacks {
  cpu::PackedLinear qkv, o, gate_up, up, down;
};

class NativeModel : public Runner {
 public:
  // Validates every shape, dtype and device (std::invalid_argument) and allocates the
  // cache (zeros) on the weights' device. The model dtype is the embedding's.
  NativeModel(NativeModelConfig config, NativeModelWeights weights);

  void prefill(const std::vector<int64_t>& ids) override;
  std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) override;
  void truncate(int64_t length) override;
  int64_t length() const override { return length_.load(std::memory_order_acquire); }
  void scrub() override;
  std::string name() const override { return "NativeModel"; }  // no snapshot/restore

  // prefill() that also returns (logits [1, V] float32, hidden [1, D]) of the last
  // position, computed as ModelRunner.prefill does (head on the last row only);
  // two undefined tensors when `ids` is empty.
  std::pair<at::Tensor, at::Tensor> prefill_last(const std::vector<int64_t>& ids);

  // Feature tap for a draft head (sprinter_ext/drafts): from now on every forward also
  // writes, for each of its positions, the residual stream entering each layer in `layers`
  // (0 <= layer < num_layers), concatenated, into features() at
  // those cache positions. An empty list turns it off. Valid rows: [0, length()).
  void set_feature_layers(const std::vector<int64_t>& layers);
  const at::Tensor& features() const { return features_; }  // [max_len, len(layers) * D]
  const std::vector<int64_t>& feature_layers() const { return feature_layers_; }

  // The fast path's small-n linear `name` ("layers.<i>.qkv", ".o", ".gate_up", ".up", ".down"
  // or "head") runs over GGUF weight blocks from now on (cpu::PackedLinear::with_blocks:
  // Q4_1 / Q8_0, float32 activations; prefill keeps the float32 weight). Call before the
  // first forward. std::invalid_argument off the fast path, for an unknown name or
  // blocks of another shape.
  void quantize_linear(const std::string& name, const at::Tensor& blocks, cpu::QuantFormat format);
  // The same over 16-bit weight storage (cpu::PackedLinear::with_weight16: float16 or
  // bfloat16 [N, K], float32 activations; prefill keeps the float32 weight).
  void store_linear16(const std::string& name, const at::Tensor& weight16);
  // The float32 [N, K] weight the fast path's linear `name` was built from (the model's
  // own tensors, stacked as the pack stacks them: q, k, v; gate, up).
  at::Tensor linear_weight(const std::string& name) const;
  // Every fast-path linear's name ("head" last), in forward order; empty off the fast path.
  std::vector<std::string> linear_names() const;
  // Bytes a forward of n <= 16 tokens reads from the linears' weights (fast path; 0 off it).
  int64_t linear_weight_bytes() const;

  const NativeModelConfig& config() const { return config_; }
  int64_t max_len() const { return config_.max_len; }
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t hidden_size() const { return config_.hidden_size; }
  int64_t num_layers() const { return static_cast<int64_t>(weights_.layers.size()); }
  c10::Device device() const { return weights_.embed.device(); }
  c10::ScalarType dtype() const { return weights_.embed.scalar_type(); }

 private:
  friend class GraphModel;  // cuda/graph_model.cpp captures forward_at

  // Runs `ids` at positions length() .. length()+n-1 and moves the length; the caller
  // holds mutex_.
  std::pair<at::Tensor, at::Tensor> forward(const std::vector<int64_t>& ids, bool last_only);
  // The forward proper: ids [n] int64 written to the cache slots cache_position [n]
  // (int64), both on the device. No host synchronisation and no host-dependent
  // addresses, so a CUDA graph can capture it; it neither checks nor moves the length.
  // kv_len > 0 (the fast path): attention reads only cache slots [0, kv_len).
  std::pair<at::Tensor, at::Tensor> forward_at(const at::Tensor& ids, const at::Tensor& cache_position,
                                               bool last_only, int64_t kv_len = -1);
  void check_room(int64_t start, int64_t n) const;  // CacheOverflowError unless start + n <= max_len
  void check_tokens(const std::vector<int64_t>& ids) const;  // std::out_of_range for ids outside the embedding
  // [1, 1, n, kv_len] (kv_len <= 0: max_len).
  at::Tensor causal_mask(const at::Tensor& cache_position, int64_t kv_len) const;
  // at::linear(x, w, b), or on the fast path p.forward(x) for n <= 16 rows.
  at::Tensor linear(const at::Tensor& x, const cpu::PackedLinear& p, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor llama_layer(int64_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                         const at::Tensor& mask, const at::Tensor& cache_position, int64_t kv_len);
  at::Tensor gpt2_layer(int64_t i, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& cache_position,
                        int64_t kv_len);
  // q [1, H, n, hd] against the cache of layer i (already written); returns [1, n, H * hd].
  at::Tensor attend(int64_t i, const at::Tensor& q, const at::Tensor& mask, int64_t kv_len);
  // Whether attend() runs the n_rep query heads of a KV head as rows of one attention for a
  // forward of n > 1 tokens (the fast path's SDPA with GQA); forward_at then repeats the mask.
  bool packs_gqa_rows(int64_t n, int64_t kv_len) const;
  at::Tensor activation(const at::Tensor& x) const;
  at::Tensor head(const at::Tensor& hidden) const;
  // The fast path's linear `name` (see quantize_linear); std::invalid_argument naming the
  // valid names when there is none.
  cpu::PackedLinear& find_linear(const std::string& name);

  NativeModelConfig config_;
  NativeModelWeights weights_;
  std::vector<LayerPacks> packs_;              // fast path only
  cpu::PackedLinear head_pack_;                // fast path only
  std::vector<at::Tensor> k_cache_, v_cache_;  // per layer [1, H_kv, max_len, head_dim]
  std::vector<int64_t> feature_layers_;        // set_feature_layers
  std::vector<int64_t> feature_slot_;          // per layer: its slot in features_, or -1
  at::Tensor features_;                        // [max_len, slots * D] or undefined
  void tap(int64_t layer, const at::Tensor& x, const at::Tensor& cache_position);
  at::Tensor positions_;                       // arange(max_len), int64, on the device
  double mask_min_ = 0.0;                      // finfo(dtype).min
  std::mutex mutex_;
  std::atomic<int64_t> length_{0};
};

// Registers sprinter_ext._C.NativeModel (held by std::shared_ptr, a subclass of the
// already registered `runner_base`, the py::class_ of Runner) and the translation of
// CacheOverflowError. Defined in native_model_py.cpp.
void register_native_model(pybind11::module_& m, pybind11::handle runner_base);

}  // namespace engine
}  // namespace sprinter
