// The native decode loop: the per-round state machine of ar, sd, ersd and
// sprinter in C++ (the readable specification is sprinter_ext/methods/; this
// file follows it call for call, so the same seed gives the same tokens).
//
// A Generation owns one generation: two Lanes (a Runner plus the token ids its
// KV cache holds) and a GenerationConfig (method, sampling settings, seed, prompt and
// the method's options; bound as _C.GenerationConfig and mirrored by the dataclass
// sprinter_ext._generation.GenerationConfig).
// Each round drafts with the fused draft op (ops/ops_cpu.h draft_sample), runs the
// target once over everything pending and decides with the fused verify op
// (verify_tokens), then commits the tokens and rolls both caches back to the
// longest prefix that agrees with the committed sequence. Nothing here touches
// Python: a PyRunner takes the GIL for its own calls, a NativeModel never does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/philox.h"
#include "common/sampling.h"
#include "cost_model.h"
#include "proposer.h"
#include "runner.h"

namespace sprinter {
namespace engine {

// Logits with NaN/+inf (the binding maps it to sprinter_ext.errors.NonFiniteLogitsError).
struct NonFiniteLogits : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The methods this loop runs, in kMethodNames' order (bound as _C.native_methods(); the
// Python method registry is checked against it by tests/test_native_boundary.py).
enum class Method { AR, SD, ERSD, SPRINTER };
constexpr const char* kMethodNames[] = {"ar", "sd", "ersd", "sprinter"};

Method parse_method(const std::string& name);  // throws std::invalid_argument
const char* method_name(Method method);

// Everything one generation needs besides its runners (the 17 arguments of old, in one
// struct). Validated by its binding (engine_py.cpp), not here.
struct GenerationConfig {
  Method method = Method::SD;
  int64_t k = 4;
  SamplingSettings sampling;
  std::vector<int64_t> eos;
  // sprinter: the verifier MLP (float32, on the logits' device), its feature codes
  // (verifier/model.py FEATURES order), the threshold, the longest run, and the verify mode.
  std::vector<at::Tensor> verifier_weights;
  std::vector<at::Tensor> verifier_biases;
  std::vector<int64_t> verifier_features;
  double threshold = 0.0;
  int64_t max_run = 20;
  bool verify_all = false;
  std::vector<int64_t> prompt;  // non-empty
  uint64_t seed = 0;
  int64_t max_new_tokens = 0;
};

// One model's runner and the tokens its cache holds (methods/_session.py Lane).
struct Lane {
  std::shared_ptr<Runner> runner;
  std::vector<int64_t> tokens;
  size_t agreed = 0;
  int64_t calls = 0, fed = 0, attended = 0;

  void prefill(const std::vector<int64_t>& ids);
  std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& toks);
  std::pair<at::Tensor, at::Tensor> feed_last(const std::vector<int64_t>& toks);  // the last row only
  std::pair<at::Tensor, at::Tensor> run(const std::vector<int64_t>& toks, bool last_only);  // counts, feeds
  std::vector<int64_t> pending(const std::vector<int64_t>& seq) const;
  void sync(const std::vector<int64_t>& seq);
};

struct Stats {
  int64_t new_tokens = 0, rounds = 0, draft_tokens = 0, accepted_tokens = 0;
  int64_t flagged_runs = 0, unchecked = 0;  // sprinter only
};

class Generation {
 public:
  // `draft` may be null for ar. `config.prompt` must be non-empty; validation of ids,
  // settings and options is the Python API's job (sprinter_ext/decoding.py) and the
  // binding's (engine_py.cpp). A model-free draft (proposer.h) comes as `proposer` with
  // `draft` null: sd and ersd run it (q one-hot), sprinter refuses it (its verifier reads
  // a draft model's hidden state). Both given: a hybrid draft, sd and ersd take the lookup's
  // proposal or the model's drafts each round (Session.draft_round); sprinter the model's.
  // `cost` (k="auto", cost_model.h): sd and ersd verify the length it picks each round (at
  // most its k_max) instead of config.k, and tell it what was accepted.
  Generation(std::shared_ptr<Runner> target, std::shared_ptr<Runner> draft, GenerationConfig config,
             std::shared_ptr<Proposer> proposer = nullptr, std::shared_ptr<CostModel> cost = nullptr);

  // One round: the committed tokens (cut at EOS / max_new_tokens); empty once done.
  std::vector<int64_t> round();
  // Every remaining round: all new tokens.
  std::vector<int64_t> run();
  bool done() const { return done_; }

  const Stats& stats() const { return stats_; }
  const Lane& target() const { return target_; }
  const Lane& draft() const { return draft_; }
  bool has_draft() const { return draft_.runner != nullptr; }
  bool has_proposer() const { return proposer_ != nullptr; }

 private:
  struct Sampled {
    int64_t token;
    at::Tensor q;  // [V] processed distribution
    float score;   // verifier score (0 without a verifier)
  };
  struct Proposal {
    std::vector<int64_t> tokens;
    at::Tensor q;  // [n, V]
    bool flagged;
  };

  int64_t position() const { return static_cast<int64_t>(seq_.size()); }
  Sampled sample(const at::Tensor& logits, const at::Tensor* hidden, int64_t position, uint32_t stream,
                 bool with_verifier);
  Proposal propose(int64_t k, uint32_t stream, bool with_verifier);
  std::vector<int64_t> speculate(bool sd);  // methods/sd.py / ersd.py round() with any draft
  std::vector<int64_t> model_round(int64_t k, bool sd);  // draft k with the model (0: a plain target step)
  std::vector<int64_t> target_step();  // ar's round: the target's own sample
  std::vector<int64_t> check_lookup(const std::vector<int64_t>& drafts, bool sd);
  void finish();  // done: tell the proposer the request's sequence
  at::Tensor target_rows(const std::vector<int64_t>& drafts);
  std::vector<int64_t> check(const std::vector<int64_t>& drafts, const at::Tensor& q,
                             const at::Tensor& logits, int64_t offset, bool sd);
  std::vector<int64_t> decide();  // the method's round
  std::vector<int64_t> round_unguarded();  // round() without the scrub on failure

  Lane target_, draft_;
  std::shared_ptr<Proposer> proposer_;
  std::shared_ptr<CostModel> cost_;
  GenerationConfig cfg_;
  std::unordered_set<int64_t> eos_;
  std::vector<int64_t> seq_;
  uint64_t seed_;
  int64_t max_new_;
  bool started_ = false, done_ = false;
  Stats stats_;
};

}  // namespace engine
}  // namespace sprinter
