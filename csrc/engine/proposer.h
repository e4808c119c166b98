// Model-free drafts: the interface the native loop (engine.cpp) asks for draft tokens
// when a pair's draft is a lookup over text rather than a model (draft kinds "ngram",
// "suffix"; the Python twin is sprinter_ext.drafts.lookup.Proposer).
//
// A proposer is deterministic: its q is one-hot on each proposed token, so sd accepts
// token x with probability p(x) and, on a rejection, resamples from p with x removed
// (norm(max(p - onehot(x), 0))); ersd accepts x iff it is the target's race winner, so
// ersd stays drafter-invariant. It may propose fewer tokens than asked, or none: the
// round is then a plain target step.
//
// Life cycle per request: begin(prompt), then propose(seq, n) once per round with the
// committed sequence so far (prompt + output; it only ever grows within a request),
// then end(seq) when the request finishes (a proposer with memory across requests, like
// the suffix draft's global tree, learns from it there). A proposer is used by one
// generation at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sprinter {
namespace engine {

struct LookupDraft {
  std::vector<int64_t> tokens;
  // Per token, the proposer's own estimate in [0, 1] that the target continues with it
  // (a match's frequency; the cost model reads it). Same length as tokens.
  std::vector<float> confidence;
  // The length of the context match the proposal came from (0 when none).
  int64_t match_length = 0;
};

class Proposer {
 public:
  virtual ~Proposer() = default;
  virtual void begin(const std::vector<int64_t>& prompt) = 0;
  // At most max_tokens tokens to follow `seq` (max_tokens >= 0).
  virtual LookupDraft propose(const std::vector<int64_t>& seq, int64_t max_tokens) = 0;
  virtual void end(const std::vector<int64_t>& seq) { (void)seq; }
  virtual std::string name() const { return "Proposer"; }
};

}  // namespace engine
}  // namespace sprinter
