// k="auto": the per-round draft-length rule, the C++ twin of sprinter_ext/cost_model.py
// CostModel (the specification: read its docstring). Same arithmetic in the same order
// (doubles), so the native loop chooses the lengths the Python engines do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sprinter {
namespace engine {

class CostModel {
 public:
  static constexpr int64_t kBuckets = 5;  // 0: a draft model; 1..4: a lookup match length

  CostModel(std::vector<double> target_ms, double draft_ms, int64_t k_max, double prior, double weight, double decay,
            int64_t probe_every)
      : target_ms_(std::move(target_ms)), draft_ms_(draft_ms), prior_(prior), weight_(weight), decay_(decay),
        probe_every_(probe_every) {
    if (target_ms_.size() < 2) throw std::invalid_argument("a cost profile needs target_ms for n = 1 and 2 at least");
    for (double t : target_ms_) {
      if (!(t > 0)) throw std::invalid_argument("cost profile times must be > 0");
    }
    if (!(draft_ms >= 0)) throw std::invalid_argument("draft_ms must be >= 0");
    if (k_max < 1) throw std::invalid_argument("k_max must be >= 1");
    if (!(weight > 0) || !(prior >= 0 && prior <= 1) || !(decay > 0 && decay <= 1) || probe_every < 1) {
      throw std::invalid_argument("cost model: need weight > 0, prior in [0, 1], decay in (0, 1], probe_every >= 1");
    }
    k_max_ = std::min<int64_t>(k_max, static_cast<int64_t>(target_ms_.size()) - 1);
    reset();
  }

  // Back to the prior (each generation starts here; cost_model.py CostModel.reset).
  void reset() {
    tried_.assign(kBuckets, std::vector<double>(k_max_ + 1, 0.0));
    accepted_ = tried_;
    idle_.assign(kBuckets, 0);
    interval_.assign(kBuckets, probe_every_);
  }

  int64_t k_max() const { return k_max_; }
  double alpha(int64_t bucket, int64_t depth) const {
    return (accepted_[bucket][depth] + prior_ * weight_) / (tried_[bucket][depth] + weight_);
  }
  // (length, expected tokens per ms): a draft model's choice this round / a lookup proposal's
  std::pair<int64_t, double> draft_choice() { return best(0, k_max_, draft_ms_); }
  std::pair<int64_t, double> lookup_choice(int64_t proposed, int64_t match_length) {
    return best(bucket_of(match_length), std::min(proposed, k_max_), 0.0);
  }
  int64_t draft_length() { return draft_choice().first; }
  int64_t lookup_length(int64_t proposed, int64_t match_length) { return lookup_choice(proposed, match_length).first; }
  void observe(int64_t verified, int64_t accepted, int64_t match_length) {
    if (verified <= 0) return;
    const int64_t b = bucket_of(match_length);
    auto& tried = tried_[b];
    auto& acc = accepted_[b];
    for (int64_t d = 1; d <= k_max_; ++d) {
      tried[d] *= decay_;
      acc[d] *= decay_;
    }
    const int64_t top = std::min(verified, accepted + 1);
    for (int64_t d = 1; d <= top; ++d) {
      tried[d] += 1.0;
      if (d <= accepted) acc[d] += 1.0;
    }
  }

 private:
  static int64_t bucket_of(int64_t m) { return m <= 0 ? 0 : std::min<int64_t>(m, kBuckets - 1); }

  std::pair<int64_t, double> best(int64_t bucket, int64_t n_max, double draft_ms) {
    int64_t best_k = 0;
    double best_rate = 1.0 / target_ms_[0];
    double rate1 = best_rate;
    double expect = 1.0, run = 1.0;
    for (int64_t k = 1; k <= n_max; ++k) {
      run *= alpha(bucket, k);
      expect += run;
      const double rate = expect / (static_cast<double>(k) * draft_ms + target_ms_[k]);
      if (k == 1) rate1 = rate;
      if (rate > best_rate) {
        best_k = k;
        best_rate = rate;
      }
    }
    if (best_k == 0 && n_max > 0) {
      idle_[bucket] += 1;
      if (idle_[bucket] >= interval_[bucket]) {
        idle_[bucket] = 0;
        interval_[bucket] *= 2;  // a probe that changes nothing waits twice as long next time
        return {1, rate1};
      }
    } else {
      idle_[bucket] = 0;
      interval_[bucket] = probe_every_;
    }
    return {best_k, best_rate};
  }

  std::vector<double> target_ms_;
  double draft_ms_, prior_, weight_, decay_;
  int64_t probe_every_, k_max_ = 1;
  std::vector<std::vector<double>> tried_, accepted_;
  std::vector<int64_t> idle_, interval_;
};

}  // namespace engine
}  // namespace sprinter
