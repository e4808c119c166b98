// HeadModel: a draft head's decode-time forward (sprinter_ext/drafts: EAGLE-3 style, one
// decoder layer over the target's own features) in ATen, behind the Runner interface of
// engine/runner.h, so the native loop drafts with a head without taking the GIL.
//
// It is sprinter_ext/drafts/runner.py's HeadRunner with its packed CPU path (_PackedHead)
// op for op: the same ATen ops and PackedLinear projections on the same shapes in the same
// order, so on the CPU its logits and hidden states are bitwise equal to
// HeadRunner(fast=True)'s over a NativeModel target (tests/test_head_model.py). Off the
// packed path (a CUDA head, or `fast` false) the linears are at::linear over the same
// stacked weights: tolerance-equal to the eager head, not bitwise.
//
// Where the features come from: the target NativeModel's feature tap
// (NativeModel::set_feature_layers), rows [0, target->length()) valid; no extra target
// work. The head's input at position p is (f_p, x_{p+1}), f_p = fc(target features at p)
// where the target has run p, else the head's own output at p-1; entries made from own
// features are recomputed from the target's as soon as the target has run them (the
// HeadRunner docstring has the whole state machine).
//
// feed() returns (logits [n, V] float32 over the target's vocabulary, -inf outside the
// head's draft vocabulary; hidden [n, H + 2]: the head's normed output with its raw
// confidence, max probability and entropy, what SPRINTER's verifier scores). No
// snapshot/restore: ssd runs its head draft through the Python HeadRunner.
//
// Thread-safety: calls on one object are serialised by an internal mutex; the target must
// not run concurrently with a feed (the native loop drives both from one thread).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/runner.h"
#include "linear_cpu.h"
#include "native_model.h"

namespace pybind11 {
class module_;
class handle;
}  // namespace pybind11

namespace sprinter {
namespace engine {

struct HeadModelConfig {
  int64_t hidden_size = 0;        // H (the target's)
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;         // V: the target's vocabulary (the logits' width)
  int64_t max_len = 0;            // cache slots (at most the target's)
  double norm_eps = 1e-6;
  std::vector<int64_t> feature_layers;  // must equal the target's tap
  // PackedLinear projections (CPU, float32/bfloat16): what HeadRunner(fast=True) runs.
  bool fast = true;
};

struct HeadModelWeights {
  at::Tensor embed;   // the target's input embedding [V_embed, H] (shared, not copied)
  at::Tensor fc;      // [H, m * H]
  // q [nh * hd, 2H], k and v [nkv * hd, 2H], o [H, nh * hd]; the projections (q..down,
  // lm_head) are released once the model holds its stacked copies
  at::Tensor q, k, v, o;
  at::Tensor gate, up, down;
  at::Tensor input_norm, hidden_norm, post_norm, norm;  // [H]
  at::Tensor lm_head;  // [Vd, H]
  at::Tensor d2t;      // int64 [Vd]: the target id of each draft-vocabulary row
  at::Tensor cos, sin; // rotary tables [max_len, 1, hd] (drafts.head.rope_tables), head dtype
};

class HeadModel : public Runner {
 public:
  // Validates every shape, dtype and device (std::invalid_argument) and allocates the
  // cache. The head's dtype is fc's; the target's tap must record exactly
  // config.feature_layers.
  HeadModel(HeadModelConfig config, HeadModelWeights weights, std::shared_ptr<NativeModel> target);

  void prefill(const std::vector<int64_t>& ids) override { prefill_last(ids); }
  std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) override;
  std::pair<at::Tensor, at::Tensor> feed_last(const std::vector<int64_t>& tokens) override;
  void truncate(int64_t length) override;
  int64_t length() const override { return length_.load(std::memory_order_acquire); }
  void scrub() override;
  std::string name() const override { return "HeadModel"; }

  // prefill() returning (logits [1, V], hidden [1, H + 2]) of the last position; undefined
  // tensors when `ids` is empty.
  std::pair<at::Tensor, at::Tensor> prefill_last(const std::vector<int64_t>& ids);

  const HeadModelConfig& config() const { return config_; }
  int64_t max_len() const { return config_.max_len; }
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t hidden_size() const { return config_.hidden_size + 2; }  // the verifier's input width
  c10::Device device() const { return weights_.fc.device(); }
  c10::ScalarType dtype() const { return weights_.fc.scalar_type(); }
  bool fast() const { return config_.fast; }
  const std::shared_ptr<NativeModel>& target() const { return target_; }

 private:
  // last_only: outputs for the last fed token only (prefill), else one row per token.
  std::pair<at::Tensor, at::Tensor> feed_locked(const std::vector<int64_t>& tokens, bool last_only);
  // Inputs lo..hi-1 causally after the entries before lo (HeadRunner._run).
  void run(int64_t lo, int64_t hi, bool from_target);
  at::Tensor linear(const at::Tensor& x, const cpu::PackedLinear& p, const at::Tensor& w) const;
  at::Tensor attend(const at::Tensor& q, int64_t lo, int64_t hi) const;

  HeadModelConfig config_;
  HeadModelWeights weights_;
  std::shared_ptr<NativeModel> target_;
  at::Tensor fc_w_, qkv_w_, o_w_, gate_up_w_, down_w_, lm_w_;  // stacked [out, in] weights
  cpu::PackedLinear fc_, qkv_, o_, gate_up_, down_, lm_;        // fast path only
  at::Tensor tokens_;  // int64 [max_len] on the CPU
  at::Tensor g_;       // [max_len, H]: the head's output per input
  at::Tensor k_, v_;   // [max_len, nkv, hd]
  int64_t entries_ = 0;      // inputs processed (<= length - 1)
  int64_t from_target_ = 0;  // leading inputs made from the target's features
  std::mutex mutex_;
  std::atomic<int64_t> length_{0};
};

// Registers sprinter_ext._C.HeadModel (a subclass of the registered Runner class).
// Defined in head_model_py.cpp.
void register_head_model(pybind11::module_& m, pybind11::handle runner_base);

}  // namespace engine
}  // namespace sprinter
