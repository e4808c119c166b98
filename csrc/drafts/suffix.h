// The `suffix` draft: SuffixDecoding (Oliaro et al., arXiv 2411.04975) as an
// engine::Proposer (csrc/engine/proposer.h). The Python reference, which gives the same
// proposals, is sprinter_ext/drafts/suffix.py; its docstring is the specification.
//
// Two depth-bounded suffix tries, each a trie of every n-gram (n <= max_depth) of its
// texts with a count per node (how many times that n-gram occurs):
//   - the request trie: over this request's prompt and output so far, reset by begin();
//     it only grows, one committed token at a time (O(max_depth) work per token: the
//     "frontier" holds the nodes of the suffixes of length 1..max_depth-1 that end at the
//     last token, so a new token extends each of them by one edge);
//   - the global trie: over earlier requests' outputs (given to end()), kept across
//     requests by this object, at most max_global_tokens tokens in all: when a new output
//     would exceed that, the oldest requests' outputs are removed first (FIFO), their
//     n-gram counts decremented and nodes reaching zero freed.
// A proposal, per trie: the match is the longest suffix of the sequence (length in
// [min_match, max_depth-1]) whose trie node has a continuation; then the chain takes the
// most frequent child at each step (ties: the smallest token id), conditional probability
// p = child count / sum of the children's counts, confidence = the running product of the
// p's (the estimate that the target accepts every token up to this one); it stops at
// ceil(alpha * match_length) tokens (and max_tokens), at the first confidence below
// min_confidence, or where the trie has no continuation. When the context reaches
// max_depth-1 tokens, it slides (drops its oldest token) rather than stop. The request
// trie's proposal wins unless the global trie's has a strictly larger score (the sum of its
// confidences, i.e. its expected number of accepted tokens).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/proposer.h"

namespace sprinter {
namespace drafts {

struct SuffixOptions {
  int64_t max_depth = 32;               // longest n-gram indexed; contexts of up to max_depth-1 tokens
  int64_t min_match = 1;                // shortest context match that may propose
  double alpha = 1.0;                   // a match of L tokens proposes at most ceil(alpha * L)
  double min_confidence = 0.1;          // stop before the first token whose confidence is below this
  int64_t max_global_tokens = 1 << 16;  // the global trie's budget in tokens of earlier outputs
  // Throws std::invalid_argument naming the option and the rule it breaks.
  void validate() const;
};

// One depth-bounded suffix trie (nodes in a vector with a free list; edges in a hash map
// keyed by (parent, token); children in a doubly linked list for scans and O(1) unlinks).
class SuffixTrie {
 public:
  explicit SuffixTrie(int32_t max_depth);
  static constexpr int32_t kRoot = 0;
  static constexpr int32_t kNone = -1;

  int32_t child(int32_t node, int32_t token) const;
  // Counts one more occurrence of `token` after each suffix in `frontier` (the nodes of the
  // suffixes of length 1..d that end at the text's last token, d <= max_depth-1) and
  // after the empty one; `frontier` becomes the same list for the text with `token`.
  void extend(std::vector<int32_t>& frontier, int32_t token);
  // Looks the same step up without counting: kNone where a suffix is not in the trie.
  void follow(std::vector<int32_t>& frontier, int32_t token) const;
  void insert(const std::vector<int32_t>& text);
  void remove(const std::vector<int32_t>& text);  // the exact inverse of insert(text)
  void clear();

  // The most frequent child (ties: the smallest token) and the sum of the children's counts.
  int32_t best_child(int32_t node, int64_t* total) const;
  // The node of `tokens[begin, end)` from the root, or kNone.
  int32_t walk(const std::vector<int32_t>& tokens, size_t begin, size_t end) const;

  int32_t token(int32_t node) const { return nodes_[node].token; }
  int64_t count(int32_t node) const { return nodes_[node].count; }
  bool has_children(int32_t node) const { return nodes_[node].first_child != kNone; }
  int32_t max_depth() const { return max_depth_; }
  int64_t size() const { return live_; }  // nodes in use, the root included
  int64_t work() const { return work_; }  // node visits so far (the incrementality test counts them)

 private:
  struct Node {
    int64_t count = 0;
    int32_t token = 0;
    int32_t parent = kNone;
    int32_t first_child = kNone;
    int32_t next = kNone;  // siblings
    int32_t prev = kNone;
  };
  static uint64_t key(int32_t parent, int32_t token) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(parent)) << 32) | static_cast<uint32_t>(token);
  }
  int32_t child_or_new(int32_t node, int32_t token);
  void unlink(int32_t node);

  int32_t max_depth_;
  std::vector<Node> nodes_;
  std::vector<int32_t> free_;
  std::unordered_map<uint64_t, int32_t> edges_;
  int64_t live_ = 1;
  mutable int64_t work_ = 0;
};

class SuffixProposer : public engine::Proposer {
 public:
  explicit SuffixProposer(SuffixOptions options = {});

  void begin(const std::vector<int64_t>& prompt) override;
  engine::LookupDraft propose(const std::vector<int64_t>& seq, int64_t max_tokens) override;
  void end(const std::vector<int64_t>& seq) override;
  std::string name() const override { return "suffix"; }

  const SuffixOptions& options() const { return options_; }
  int64_t nodes() const { return global_.size() + request_.size(); }  // both tries, roots included
  int64_t global_nodes() const { return global_.size(); }
  int64_t request_nodes() const { return request_.size(); }
  int64_t global_tokens() const { return global_tokens_; }
  int64_t global_requests() const { return static_cast<int64_t>(history_.size()); }
  int64_t indexed_tokens() const { return static_cast<int64_t>(seq_.size()); }  // of this request
  int64_t work() const { return global_.work() + request_.work(); }
  bool active() const { return active_; }

 private:
  struct Candidate {
    engine::LookupDraft draft;
    double score = 0.0;
  };
  void index(const std::vector<int64_t>& seq, size_t from);
  Candidate chain(const SuffixTrie& trie, int32_t node, int64_t match, int64_t max_tokens) const;
  static int64_t longest_match(const SuffixTrie& trie, const std::vector<int32_t>& frontier, int64_t min_match);

  SuffixOptions options_;
  SuffixTrie global_;
  SuffixTrie request_;
  std::deque<std::vector<int32_t>> history_;  // the outputs in the global trie, oldest first
  int64_t global_tokens_ = 0;

  bool active_ = false;
  size_t prompt_length_ = 0;
  std::vector<int32_t> seq_;              // the committed tokens indexed so far
  std::vector<int32_t> request_frontier_;  // request-trie nodes of seq_'s suffixes, length 1, 2, ...
  std::vector<int32_t> global_frontier_;   // the same suffixes in the global trie (kNone: absent)
};

}  // namespace drafts
}  // namespace sprinter
