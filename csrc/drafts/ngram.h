// The "ngram" draft: prompt + output lookup (prompt lookup decoding; vLLM's ngram,
// transformers' prompt_lookup_num_tokens, llama.cpp's lookup). Python twin, the
// specification: sprinter_ext/drafts/lookup.py NgramProposer (tests/test_lookup_draft.py
// checks the two propose the same tokens).
//
// Rule: for n = max_n down to min_n, take the last n tokens of the sequence; if the same
// n tokens ended at an earlier position j (the most recent such j), propose the tokens
// that followed them, seq[j+1 .. j+max_tokens] (cut at the sequence's end); the first n
// that matches wins (longest match first). No match: no proposal.
// Incremental: every n-gram is indexed once, when the token that ends it is one position
// behind the end, so a round costs O(new tokens * (max_n - min_n + 1)), not O(length).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/proposer.h"

namespace sprinter {
namespace drafts {

class NgramProposer final : public engine::Proposer {
 public:
  // Throws std::invalid_argument unless 1 <= min_n <= max_n <= 64.
  NgramProposer(int64_t min_n, int64_t max_n);

  void begin(const std::vector<int64_t>& prompt) override;
  engine::LookupDraft propose(const std::vector<int64_t>& seq, int64_t max_tokens) override;
  std::string name() const override { return "NgramProposer"; }

  int64_t min_n() const { return min_n_; }
  int64_t max_n() const { return max_n_; }
  // n-gram ends indexed so far in this request (the incremental-work counter tests read).
  int64_t indexed() const { return indexed_; }

 private:
  struct Hash {
    size_t operator()(const std::vector<int64_t>& v) const;
  };
  void index_to(int64_t end);  // index n-grams ending at positions < end

  int64_t min_n_, max_n_;
  std::vector<int64_t> seq_;  // the request's tokens seen so far
  int64_t next_ = 0;          // n-grams ending at positions < next_ are indexed
  int64_t indexed_ = 0;
  // per n: n-gram -> the latest position it ended at
  std::vector<std::unordered_map<std::vector<int64_t>, int64_t, Hash>> last_;
};

}  // namespace drafts
}  // namespace sprinter
