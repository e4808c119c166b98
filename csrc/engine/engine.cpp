// The native decode loop (see engine.h). Each function names the Python
// function of sprinter_ext/methods/ it mirrors; keep the two in step.
#include "engine.h"

#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <tuple>

#include "ops/ops_cpu.h"
#ifdef SPRINTER_WITH_CUDA
#include "ops/cuda/ops_cuda_torch.h"
#endif

namespace sprinter {
namespace engine {
namespace {

using philox::DRAFT;
using philox::TARGET;

// The fused ops on the logits' device: the C++ twins on CPU, the CUDA kernels on CUDA
// (csrc/ops/cuda/ops_cuda_torch.h, same signatures; their status stays on the device).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draft_sample_on(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, const SamplingSettings& sampling, const std::vector<at::Tensor>& weights,
    const std::vector<at::Tensor>& biases, const std::vector<int64_t>& features) {
  if (logits.is_cuda()) {
#ifdef SPRINTER_WITH_CUDA
    return cuda::draft_sample(logits, hidden, position, seed, stream, sampling, weights, biases, features);
#else
    throw std::invalid_argument("the native loop got CUDA logits, but this build of sprinter_ext._C has no CUDA");
#endif
  }
  return cpu::draft_sample(logits, hidden, position, seed, stream, sampling, weights, biases, features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tokens_on(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, const SamplingSettings& sampling, bool sd) {
  if (target_logits.is_cuda()) {
#ifdef SPRINTER_WITH_CUDA
    return cuda::verify_tokens(target_logits, draft_probs, draft_tokens, start_position, seed, sampling, sd);
#else
    throw std::invalid_argument("the native loop got CUDA logits, but this build of sprinter_ext._C has no CUDA");
#endif
  }
  return cpu::verify_tokens(target_logits, draft_probs, draft_tokens, start_position, seed, sampling, sd);
}

}  // namespace

Method parse_method(const std::string& name) {
  constexpr size_t n = std::size(kMethodNames);
  std::string known;  // "ar, sd, ersd and sprinter"
  for (size_t i = 0; i < n; ++i) {
    if (name == kMethodNames[i]) return static_cast<Method>(i);
    known += (i == 0 ? "" : i + 1 == n ? " and " : ", ") + std::string(kMethodNames[i]);
  }
  throw std::invalid_argument("the native engine runs " + known + ", not '" + name + "'");
}

const char* method_name(Method method) { return kMethodNames[static_cast<size_t>(method)]; }

// ------------------------------------------------------------------- Lane ----

void Lane::prefill(const std::vector<int64_t>& ids) {
  runner->prefill(ids);
  tokens = ids;
  agreed = tokens.size();
}

std::pair<at::Tensor, at::Tensor> Lane::feed(const std::vector<int64_t>& toks) { return run(toks, false); }

std::pair<at::Tensor, at::Tensor> Lane::feed_last(const std::vector<int64_t>& toks) { return run(toks, true); }

std::pair<at::Tensor, at::Tensor> Lane::run(const std::vector<int64_t>& toks, bool last_only) {
  const int64_t start = static_cast<int64_t>(tokens.size());
  const int64_t n = static_cast<int64_t>(toks.size());
  calls += 1;
  fed += n;
  attended += n * start + n * (n + 1) / 2;
  auto out = last_only && n > 1 ? runner->feed_last(toks) : runner->feed(toks);
  tokens.insert(tokens.end(), toks.begin(), toks.end());
  return out;
}

std::vector<int64_t> Lane::pending(const std::vector<int64_t>& seq) const {
  return std::vector<int64_t>(seq.begin() + static_cast<std::ptrdiff_t>(tokens.size()), seq.end());
}

void Lane::sync(const std::vector<int64_t>& seq) {
  const size_t limit = std::min(tokens.size(), seq.size() - 1);
  size_t n = std::min(agreed, limit);  // only tokens added since the last sync need comparing
  while (n < limit && tokens[n] == seq[n]) ++n;
  if (n < tokens.size()) {
    runner->truncate(static_cast<int64_t>(n));
    tokens.resize(n);
  }
  agreed = n;
}

// ------------------------------------------------------------- Generation ----

Generation::Generation(std::shared_ptr<Runner> target, std::shared_ptr<Runner> draft, GenerationConfig config,
                       std::shared_ptr<Proposer> proposer, std::shared_ptr<CostModel> cost)
    : proposer_(std::move(proposer)), cost_(std::move(cost)), cfg_(std::move(config)), eos_(cfg_.eos.begin(), cfg_.eos.end()), seq_(cfg_.prompt), seed_(cfg_.seed),
      max_new_(cfg_.max_new_tokens) {
  if (!target) throw std::invalid_argument("the native engine needs a target runner");
  if (seq_.empty()) throw std::invalid_argument("the prompt is empty: give at least one token");
  if (cfg_.method != Method::AR && !draft && !proposer_) {
    throw std::invalid_argument("this method needs a draft runner, but none was given");
  }
  if (cfg_.method == Method::SPRINTER && proposer_ && !draft) {
    throw std::invalid_argument("sprinter cannot run a model-free draft (" + proposer_->name() +
                                "): its verifier reads the draft model's hidden state; use sd or ersd, or a "
                                "head / standalone draft");
  }
  if (cfg_.method == Method::AR || cfg_.method == Method::SPRINTER) proposer_.reset();
  if (cfg_.k < 1 || cfg_.max_run < 1) throw std::invalid_argument("k and max_run must be >= 1");
  target_.runner = std::move(target);
  if (cfg_.method != Method::AR) draft_.runner = std::move(draft);
}

// Session.sample (fused path): one ops.draft_sample row.
Generation::Sampled Generation::sample(const at::Tensor& logits, const at::Tensor* hidden, int64_t position,
                                       uint32_t stream, bool with_verifier) {
  const auto dev = logits.device();
  at::Tensor h = hidden != nullptr ? hidden->unsqueeze(0).to(at::kFloat)
                                   : at::zeros({1, 1}, logits.options().dtype(at::kFloat));
  at::Tensor pos = at::tensor({position}, at::TensorOptions().dtype(at::kLong).device(dev));
  static const std::vector<at::Tensor> kNone;
  static const std::vector<int64_t> kNoFeatures;
  auto [token_d, q, q_token, score_d, status_d] = draft_sample_on(
      logits.unsqueeze(0), h, pos, seed_, stream, cfg_.sampling,
      with_verifier ? cfg_.verifier_weights : kNone, with_verifier ? cfg_.verifier_biases : kNone,
      with_verifier ? cfg_.verifier_features : kNoFeatures);
  // The decision buffers only (3 scalars) come back to the host; q stays on the device.
  const at::Tensor token = token_d.cpu(), score = score_d.cpu(), status = status_d.cpu();
  if (status.data_ptr<int8_t>()[0] != 0 || token.data_ptr<int64_t>()[0] < 0) {
    throw NonFiniteLogits(kNonFiniteMessage);
  }
  return Sampled{token.data_ptr<int64_t>()[0], q[0], with_verifier ? score.data_ptr<float>()[0] : 0.0f};
}

// Session.propose: draft up to k tokens, stopping after the first flagged one.
Generation::Proposal Generation::propose(int64_t k, uint32_t stream, bool with_verifier) {
  auto [logits, hidden] = draft_.feed_last(draft_.pending(seq_));  // only the last row drafts
  Proposal out{{}, {}, false};
  std::vector<at::Tensor> qs;
  out.tokens.reserve(k);
  qs.reserve(k);
  for (int64_t i = 0; i < k; ++i) {
    at::Tensor lrow = logits[logits.size(0) - 1];
    at::Tensor hrow = hidden[hidden.size(0) - 1];
    Sampled s = sample(lrow, &hrow, position() + i, stream, with_verifier);
    out.tokens.push_back(s.token);
    qs.push_back(s.q);
    if (with_verifier && static_cast<double>(s.score) < cfg_.threshold) {
      out.flagged = true;
      break;
    }
    if (i + 1 < k) std::tie(logits, hidden) = draft_.feed({s.token});
  }
  stats_.draft_tokens += static_cast<int64_t>(out.tokens.size());
  out.q = at::stack(qs);
  return out;
}

// A round with no drafts: the target's own sample, as ar's (the same token verify_tokens
// would give as the bonus of zero drafts: TARGET noise at this position), without its op.
std::vector<int64_t> Generation::target_step() {
  at::Tensor logits = target_rows({});
  return {sample(logits[0], nullptr, position(), TARGET, false).token};
}

// methods/_session.py Session.draft_round + sd.py / ersd.py round(): this round's drafts from
// the lookup (cut to k, or to the cost model's length) or the model (k, or the cost model's
// length; 0: a plain target step), verified; with k="auto" the cost model hears the outcome.
std::vector<int64_t> Generation::speculate(bool sd) {
  if (proposer_) {
    LookupDraft d = proposer_->propose(seq_, cost_ ? cost_->k_max() : cfg_.k);
    int64_t n = std::min<int64_t>(static_cast<int64_t>(d.tokens.size()), cost_ ? cost_->k_max() : cfg_.k);
    double rate = 0.0;
    if (cost_) std::tie(n, rate) = cost_->lookup_choice(n, d.match_length);
    bool use = true;
    int64_t k = cfg_.k;
    if (draft_.runner) {  // a hybrid: the lookup when it expects more tokens per ms
      if (cost_) {
        auto [k_model, rate_model] = cost_->draft_choice();
        k = k_model;
        use = n > 0 && rate >= rate_model;
      } else {
        use = n > 0;
      }
    }
    if (!use) return model_round(k, sd);
    if (n == 0) return target_step();
    d.tokens.resize(n);
    stats_.draft_tokens += n;
    std::vector<int64_t> out = check_lookup(d.tokens, sd);
    if (cost_) cost_->observe(n, static_cast<int64_t>(out.size()) - 1, d.match_length);
    return out;
  }
  return model_round(cost_ ? cost_->draft_length() : cfg_.k, sd);
}

std::vector<int64_t> Generation::model_round(int64_t k, bool sd) {
  if (k == 0) return target_step();
  Proposal p = propose(k, sd ? DRAFT : TARGET, false);  // ersd: the draft races with the target's noise
  std::vector<int64_t> out = check(p.tokens, p.q, target_rows(p.tokens), 0, sd);
  if (cost_) cost_->observe(static_cast<int64_t>(p.tokens.size()), static_cast<int64_t>(out.size()) - 1, 0);
  return out;
}

// sd / ersd over a deterministic draft: q is one-hot on each proposed token (none: the
// target's own sample, as ar's).
std::vector<int64_t> Generation::check_lookup(const std::vector<int64_t>& drafts, bool sd) {
  at::Tensor logits = target_rows(drafts);  // [n+1, V]
  const int64_t n = static_cast<int64_t>(drafts.size());
  const int64_t V = logits.size(1);
  at::Tensor q = at::zeros({n, V}, at::TensorOptions().dtype(at::kFloat));  // built on the host, one write a row
  float* qp = q.mutable_data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) qp[i * V + drafts[static_cast<size_t>(i)]] = 1.0f;
  if (!logits.is_cpu()) q = q.to(logits.device());
  return check(drafts, q, logits, 0, sd);
}

void Generation::finish() {
  done_ = true;
  if (proposer_) proposer_->end(seq_);
}

// Session.target_rows: target logits for positions L .. L+len(drafts).
at::Tensor Generation::target_rows(const std::vector<int64_t>& drafts) {
  std::vector<int64_t> fed = target_.pending(seq_);
  const int64_t n_pending = static_cast<int64_t>(fed.size());
  fed.insert(fed.end(), drafts.begin(), drafts.end());
  auto [logits, hidden] = target_.feed(fed);
  return logits.slice(0, n_pending - 1);
}

// Session.check (fused path): one ops.verify_tokens call.
std::vector<int64_t> Generation::check(const std::vector<int64_t>& drafts, const at::Tensor& q,
                                       const at::Tensor& logits, int64_t offset, bool sd) {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(logits.device());
  at::Tensor x = at::tensor(drafts, opts).view({1, static_cast<int64_t>(drafts.size())});
  at::Tensor start = at::tensor({position() + offset}, opts);
  auto [tokens_d, num_d, status_d] =
      verify_tokens_on(logits.unsqueeze(0), q.unsqueeze(0), x, start, seed_, cfg_.sampling, sd);
  const at::Tensor tokens = tokens_d.cpu(), num = num_d.cpu(), status = status_d.cpu();
  if (status.data_ptr<int8_t>()[0] != 0 || num.data_ptr<int64_t>()[0] < 0) {
    throw NonFiniteLogits(kNonFiniteMessage);
  }
  const int64_t n = num.data_ptr<int64_t>()[0];
  stats_.accepted_tokens += n;
  const int64_t* t = tokens.data_ptr<int64_t>();
  return std::vector<int64_t>(t, t + n + 1);
}

// methods/{ar,sd,ersd,sprinter}.py round().
std::vector<int64_t> Generation::decide() {
  switch (cfg_.method) {
    case Method::AR:
      return target_step();
    case Method::SD:
      return speculate(true);
    case Method::ERSD:
      return speculate(false);
    case Method::SPRINTER: {
      Proposal p = propose(cfg_.max_run, DRAFT, true);
      const int64_t n = static_cast<int64_t>(p.tokens.size());
      stats_.flagged_runs += p.flagged;
      at::Tensor logits = target_rows(p.tokens);  // [n+1, V]
      if (cfg_.verify_all) return check(p.tokens, p.q, logits, 0, true);
      // flagged: tokens[:n-1] go through unchecked; the last one meets the SD rule
      stats_.accepted_tokens += n - 1;
      stats_.unchecked += n - 1;
      std::vector<int64_t> out(p.tokens.begin(), p.tokens.end() - 1);
      auto tail = check({p.tokens.back()}, p.q.slice(0, n - 1), logits.slice(0, n - 1), n - 1, true);
      out.insert(out.end(), tail.begin(), tail.end());
      return out;
    }
  }
  throw std::logic_error("unknown method");
}

// methods/_session.py run(): one iteration of the driver.
std::vector<int64_t> Generation::round() {
  if (done_) return {};
  try {
    return round_unguarded();
  } catch (...) {
    // NOTE: a failed round (NaN logits, a runner error) may have written NaN keys/values
    // into the caches; scrub them so the runners serve the next generation (runner.h).
    done_ = true;
    target_.runner->scrub();
    if (draft_.runner) draft_.runner->scrub();
    throw;
  }
}

std::vector<int64_t> Generation::round_unguarded() {
  c10::InferenceMode guard;
  if (!started_) {
    std::vector<int64_t> head(seq_.begin(), seq_.end() - 1);
    target_.prefill(head);
    if (draft_.runner) draft_.prefill(head);
    if (proposer_) proposer_->begin(seq_);  // a lookup draft indexes the whole prompt
    if (cost_) cost_->reset();             // k="auto": every generation starts from the prior
    started_ = true;
    if (max_new_ <= 0) {
      finish();
      return {};
    }
  }
  const int64_t accepted0 = stats_.accepted_tokens, unchecked0 = stats_.unchecked;
  std::vector<int64_t> toks = decide();
  stats_.rounds += 1;
  const int64_t room = max_new_ - stats_.new_tokens;
  if (static_cast<int64_t>(toks.size()) > room) toks.resize(room);
  bool stop = false;
  for (size_t i = 0; i < toks.size(); ++i) {
    if (eos_.count(toks[i])) {
      toks.resize(i + 1);
      stop = true;
      break;
    }
  }
  // Accepted drafts are the head of the round's tokens: count only those kept (methods/_session.py run()).
  const int64_t kept = static_cast<int64_t>(toks.size());
  stats_.accepted_tokens = accepted0 + std::min(stats_.accepted_tokens - accepted0, kept);
  stats_.unchecked = unchecked0 + std::min(stats_.unchecked - unchecked0, kept);
  seq_.insert(seq_.end(), toks.begin(), toks.end());
  stats_.new_tokens += static_cast<int64_t>(toks.size());
  target_.sync(seq_);
  if (draft_.runner) draft_.sync(seq_);
  if (stop || stats_.new_tokens >= max_new_) finish();
  return toks;
}

std::vector<int64_t> Generation::run() {
  std::vector<int64_t> out;
  while (!done_) {
    auto toks = round();
    out.insert(out.end(), toks.begin(), toks.end());
  }
  return out;
}

}  // namespace engine
}  // namespace sprinter
