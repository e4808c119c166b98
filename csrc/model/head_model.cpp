// HeadModel (head_model.h): sprinter_ext/drafts/runner.py's HeadRunner + _PackedHead in
// ATen. Each function names the Python it mirrors; as in native_model.cpp, "op for op" is
// literal (same ATen ops, shapes, strides and order), because that is what makes the CPU
// outputs bitwise equal to the Python head's (tests/test_head_model.py). Change both sides
// together.
#include "head_model.h"

#include "layers.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>

namespace sprinter {
namespace engine {
namespace {

using at::Tensor;
using layers::rms_norm;

[[noreturn]] void invalid(const std::string& msg) { throw std::invalid_argument("HeadModel: " + msg); }

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

void expect(const Tensor& t, const std::string& name, std::vector<int64_t> shape, c10::ScalarType dtype,
            c10::Device device) {
  if (!t.defined()) invalid(name + " is missing");
  if (t.sizes() != at::IntArrayRef(shape)) {
    invalid(name + " has shape " + shape_str(t.sizes()) + ", expected " + shape_str(shape));
  }
  if (t.scalar_type() != dtype) {
    invalid(name + " is " + std::string(c10::toString(t.scalar_type())) + ", expected " + c10::toString(dtype) +
            " (the head's dtype: fc's)");
  }
  if (t.device() != device) invalid(name + " is on " + t.device().str() + ", expected " + device.str());
}

// drafts.head.apply_rope: x * cos + cat([-x2, x1], -1) * sin.
Tensor apply_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t hd = x.size(-1);
  Tensor x1 = x.slice(-1, 0, hd / 2);
  Tensor x2 = x.slice(-1, hd / 2);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

}  // namespace

HeadModel::HeadModel(HeadModelConfig config, HeadModelWeights weights, std::shared_ptr<NativeModel> target)
    : config_(std::move(config)), weights_(std::move(weights)), target_(std::move(target)) {
  const auto& c = config_;
  auto& w = weights_;
  if (!target_) invalid("target is missing (a NativeModel with a feature tap)");
  if (c.hidden_size < 1 || c.num_heads < 1 || c.num_kv_heads < 1 || c.head_dim < 1 || c.intermediate_size < 1 ||
      c.vocab_size < 1 || c.max_len < 1) {
    invalid("hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size, vocab_size and max_len must be >= 1");
  }
  if (c.num_heads % c.num_kv_heads != 0) invalid("num_heads must be a multiple of num_kv_heads");
  if (c.feature_layers.empty()) invalid("feature_layers is empty");
  if (target_->feature_layers() != c.feature_layers) {
    std::ostringstream s;
    s << "the target records feature layers " << at::IntArrayRef(target_->feature_layers()) << " but the head reads "
      << at::IntArrayRef(c.feature_layers) << "; call set_feature_layers on the target first";
    invalid(s.str());
  }
  if (c.max_len > target_->max_len()) {
    invalid("max_len " + std::to_string(c.max_len) + " exceeds the target's " + std::to_string(target_->max_len()));
  }
  if (target_->hidden_size() != c.hidden_size) {
    invalid("hidden_size " + std::to_string(c.hidden_size) + " differs from the target's " +
            std::to_string(target_->hidden_size()));
  }
  if (c.vocab_size != target_->vocab_size()) {
    invalid("vocab_size " + std::to_string(c.vocab_size) + " differs from the target's " +
            std::to_string(target_->vocab_size()));
  }
  if (!w.fc.defined()) invalid("fc is missing");
  const auto dt = w.fc.scalar_type();
  const auto dev = w.fc.device();
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf && dt != at::kDouble) {
    invalid(std::string("the head must be a floating dtype, got ") + c10::toString(dt));
  }
  if (target_->device() != dev) invalid("the head is on " + dev.str() + " but the target on " + target_->device().str());
  const int64_t H = c.hidden_size, m = static_cast<int64_t>(c.feature_layers.size());
  const int64_t nq = c.num_heads * c.head_dim, nkv = c.num_kv_heads * c.head_dim, I = c.intermediate_size;
  expect(w.fc, "fc", {H, m * H}, dt, dev);
  expect(w.q, "q_proj", {nq, 2 * H}, dt, dev);
  expect(w.k, "k_proj", {nkv, 2 * H}, dt, dev);
  expect(w.v, "v_proj", {nkv, 2 * H}, dt, dev);
  expect(w.o, "o_proj", {H, nq}, dt, dev);
  expect(w.gate, "gate_proj", {I, H}, dt, dev);
  expect(w.up, "up_proj", {I, H}, dt, dev);
  expect(w.down, "down_proj", {H, I}, dt, dev);
  for (auto* p : {&w.input_norm, &w.hidden_norm, &w.post_norm, &w.norm}) expect(*p, "a norm weight", {H}, dt, dev);
  if (!w.lm_head.defined() || w.lm_head.dim() != 2) invalid("lm_head must be [draft_vocab, hidden]");
  const int64_t Vd = w.lm_head.size(0);
  expect(w.lm_head, "lm_head", {Vd, H}, dt, dev);
  if (!w.d2t.defined() || w.d2t.scalar_type() != at::kLong || w.d2t.dim() != 1 || w.d2t.size(0) != Vd) {
    invalid("d2t must be an int64 tensor of the draft vocabulary's size (" + std::to_string(Vd) + ")");
  }
  {
    c10::InferenceMode guard;
    Tensor d = w.d2t.cpu();
    if (Vd > 0 && (d.min().item<int64_t>() < 0 || d.max().item<int64_t>() >= c.vocab_size)) {
      invalid("d2t maps outside the target's vocabulary of " + std::to_string(c.vocab_size));
    }
    w.d2t = w.d2t.to(dev);
  }
  if (!w.embed.defined() || w.embed.dim() != 2 || w.embed.size(1) != H) invalid("embed must be [vocab, hidden]");
  if (w.embed.device() != dev) invalid("embed is on " + w.embed.device().str() + ", expected " + dev.str());
  expect(w.cos, "rope cos", {c.max_len, 1, c.head_dim}, dt, dev);
  expect(w.sin, "rope sin", {c.max_len, 1, c.head_dim}, dt, dev);
  if (c.fast && (dev.type() != c10::DeviceType::CPU || (dt != at::kFloat && dt != at::kBFloat16))) {
    invalid("the packed path needs a float32 or bfloat16 head on the CPU; pass fast=False");
  }

  c10::InferenceMode guard;
  // _PackedHead: q/k/v one projection, gate/up one
  fc_w_ = w.fc.contiguous();
  qkv_w_ = at::cat({w.q, w.k, w.v}).contiguous();
  o_w_ = w.o.contiguous();
  gate_up_w_ = at::cat({w.gate, w.up}).contiguous();
  down_w_ = w.down.contiguous();
  lm_w_ = w.lm_head.contiguous();
  // the stacked copies replace the separate projections: keep one of each
  w.q = w.k = w.v = w.o = w.gate = w.up = w.down = w.lm_head = Tensor();
  if (c.fast) {
    const Tensor none;
    fc_ = cpu::PackedLinear(fc_w_, none);
    qkv_ = cpu::PackedLinear(qkv_w_, none);
    o_ = cpu::PackedLinear(o_w_, none);
    gate_up_ = cpu::PackedLinear(gate_up_w_, none);
    down_ = cpu::PackedLinear(down_w_, none);
    lm_ = cpu::PackedLinear(lm_w_, none);
  }
  const auto opts = at::TensorOptions().dtype(dt).device(dev);
  tokens_ = at::zeros({c.max_len}, at::TensorOptions().dtype(at::kLong));
  g_ = at::zeros({c.max_len, H}, opts);
  k_ = at::zeros({c.max_len, c.num_kv_heads, c.head_dim}, opts);
  v_ = at::zeros_like(k_);
}

// _PackedHead's P.fc / P.qkv_ ... forward, or at::linear off the packed path.
Tensor HeadModel::linear(const Tensor& x, const cpu::PackedLinear& p, const Tensor& w) const {
  return config_.fast ? p.forward(x) : at::linear(x, w);
}

// _PackedHead.attend: the rep query heads of a KV head are rows of one attention (no repeated
// keys); one query sees every key, so it needs no mask. q [n, nh, hd] at positions lo..hi-1.
Tensor HeadModel::attend(const Tensor& q, int64_t lo, int64_t hi) const {
  const auto& c = config_;
  const int64_t n = q.size(0), L = hi, nkv = c.num_kv_heads, rep = c.num_heads / nkv, hd = c.head_dim;
  Tensor qq = q.view({n, nkv, rep, hd}).permute({1, 2, 0, 3}).reshape({nkv, rep * n, hd});
  Tensor k = k_.slice(0, 0, L), v = v_.slice(0, 0, L);
  std::optional<Tensor> mask;
  if (n > 1) {
    const auto lopts = at::TensorOptions().dtype(at::kLong);
    Tensor m = at::arange(L, lopts).unsqueeze(0) <= at::arange(lo, lo + n, lopts).unsqueeze(1);
    mask = m.repeat({rep, 1}).to(device());
  }
  Tensor o = at::scaled_dot_product_attention(qq.unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
                                              v.transpose(0, 1).unsqueeze(0), mask);
  return o.view({nkv, rep, n, hd}).permute({2, 0, 1, 3}).reshape({n, c.num_heads * hd});
}

// HeadRunner._run with _PackedHead's qkv / attend / finish.
void HeadModel::run(int64_t lo, int64_t hi, bool from_target) {
  const auto& c = config_;
  const auto& w = weights_;
  const int64_t n = hi - lo;
  Tensor feat;
  if (from_target) {
    feat = linear(target_->features().slice(0, lo, hi).to(dtype()), fc_, fc_w_);
  } else {
    feat = lo > 0 ? g_.slice(0, lo - 1, lo) : at::zeros_like(g_.slice(0, 0, 1));
  }
  Tensor ids = tokens_.slice(0, lo + 1, hi + 1).to(w.embed.device());
  Tensor emb = w.embed.index_select(0, ids).to(dtype());
  // P.qkv
  Tensor x = at::cat({rms_norm(emb, w.input_norm, c.norm_eps), rms_norm(feat, w.hidden_norm, c.norm_eps)}, -1);
  const int64_t nq = c.num_heads * c.head_dim, nkv = c.num_kv_heads * c.head_dim;
  auto parts = linear(x, qkv_, qkv_w_).split_with_sizes({nq, nkv, nkv}, -1);
  Tensor cos = w.cos.slice(0, lo, hi), sin = w.sin.slice(0, lo, hi);
  Tensor q = apply_rope(parts[0].view({n, c.num_heads, c.head_dim}), cos, sin);
  Tensor k = apply_rope(parts[1].view({n, c.num_kv_heads, c.head_dim}), cos, sin);
  Tensor v = parts[2].view({n, c.num_kv_heads, c.head_dim});
  k_.slice(0, lo, hi).copy_(k);
  v_.slice(0, lo, hi).copy_(v);
  // P.finish(feat, P.attend(...))
  Tensor h = feat + linear(attend(q, lo, hi), o_, o_w_);
  auto gu = linear(rms_norm(h, w.post_norm, c.norm_eps), gate_up_, gate_up_w_).chunk(2, -1);
  g_.slice(0, lo, hi).copy_(h + linear(at::silu(gu[0]) * gu[1], down_, down_w_));
}

std::pair<Tensor, Tensor> HeadModel::prefill_last(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(mutex_);
  length_.store(0, std::memory_order_release);
  entries_ = from_target_ = 0;
  if (ids.empty()) return {Tensor(), Tensor()};
  return feed_locked(ids, /*last_only=*/true);
}

std::pair<Tensor, Tensor> HeadModel::feed(const std::vector<int64_t>& tokens) {
  if (tokens.empty()) throw std::invalid_argument("feed() needs at least one token");
  std::lock_guard<std::mutex> lock(mutex_);
  return feed_locked(tokens, /*last_only=*/false);
}

std::pair<Tensor, Tensor> HeadModel::feed_last(const std::vector<int64_t>& tokens) {
  if (tokens.empty()) throw std::invalid_argument("feed() needs at least one token");
  std::lock_guard<std::mutex> lock(mutex_);
  return feed_locked(tokens, /*last_only=*/true);
}

// HeadRunner._feed.
std::pair<Tensor, Tensor> HeadModel::feed_locked(const std::vector<int64_t>& tokens, bool last_only) {
  const auto& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start_len = length_.load(std::memory_order_acquire);
  if (start_len + n > c.max_len) {
    throw CacheOverflowError(std::to_string(start_len + n) + " tokens do not fit the head's cache of " +
                             std::to_string(c.max_len));
  }
  const int64_t rows = weights_.embed.size(0);
  for (const int64_t t : tokens) {
    if (t < 0 || t >= rows) {
      throw std::out_of_range("token id " + std::to_string(t) + " is out of range for the embedding of " +
                              std::to_string(rows) + " rows");
    }
  }
  c10::InferenceMode guard;
  std::memcpy(tokens_.mutable_data_ptr<int64_t>() + start_len, tokens.data(), sizeof(int64_t) * n);
  const int64_t first_out = start_len - 1;  // input whose output predicts the token after the first fed
  const int64_t len = start_len + n;
  length_.store(len, std::memory_order_release);
  const int64_t need = len - 1;  // inputs 0..len-2
  // inputs the target has run since: recompute them (and everything after) from its features
  const int64_t avail = std::min(target_->length(), need);
  const int64_t redo = avail > from_target_ ? from_target_ : entries_;
  int64_t start = std::min(redo, entries_);
  if (start < avail) {
    run(start, avail, /*from_target=*/true);
    from_target_ = avail;
    start = avail;
  }
  for (int64_t p = start; p < need; ++p) run(p, p + 1, /*from_target=*/false);  // own features
  entries_ = need;
  const int64_t lo = std::max<int64_t>(first_out, 0);
  Tensor g = g_.slice(0, lo, need);
  if (first_out < 0) g = at::cat({at::zeros_like(g_.slice(0, 0, 1)), g});  // a one-token prompt
  if (last_only) g = g.slice(0, g.size(0) - 1);  // prefill: only the last position's outputs
  // P.logits(g).float(), spread over the target's vocabulary
  Tensor normed = rms_norm(g, weights_.norm, c.norm_eps);
  Tensor logits = linear(normed, lm_, lm_w_).to(at::kFloat);
  Tensor full = at::full({g.size(0), c.vocab_size}, -std::numeric_limits<float>::infinity(),
                         at::TensorOptions().dtype(at::kFloat).device(device()));
  full.index_copy_(1, weights_.d2t, logits);
  // DraftHead.verifier_state(g, logits): [norm(g), max p, entropy] with p = softmax(raw logits)
  Tensor lp = at::log_softmax(logits, -1);  // logits are float32 already
  Tensor p = lp.exp();
  Tensor conf = at::stack({p.amax(-1), -(p * lp).sum(-1)}, -1);
  Tensor hidden = at::cat({normed.to(at::kFloat), conf}, -1).to(dtype());
  return {full, hidden};
}

// HeadRunner.truncate.
void HeadModel::truncate(int64_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t held = length_.load(std::memory_order_acquire);
  if (length < 0 || length > held) {
    throw std::invalid_argument("cannot truncate to " + std::to_string(length) + ": the head holds " +
                                std::to_string(held) + " tokens");
  }
  length_.store(length, std::memory_order_release);
  entries_ = std::min(entries_, std::max<int64_t>(length - 1, 0));
  from_target_ = std::min(from_target_, entries_);
}

void HeadModel::scrub() {
  std::lock_guard<std::mutex> lock(mutex_);
  c10::InferenceMode guard;
  g_.zero_();
  k_.zero_();
  v_.zero_();
  length_.store(0, std::memory_order_release);
  entries_ = from_target_ = 0;
}

}  // namespace engine
}  // namespace sprinter
