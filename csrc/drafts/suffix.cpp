// The `suffix` draft (suffix.h): the depth-bounded suffix tries and the proposer.
#include "drafts/suffix.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace sprinter {
namespace drafts {

namespace {

constexpr int64_t kMaxDepthLimit = 1024;  // beyond this a round's O(max_depth) work stops being small
constexpr int64_t kMaxToken = std::numeric_limits<int32_t>::max();

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

}  // namespace

void SuffixOptions::validate() const {
  if (max_depth < 2 || max_depth > kMaxDepthLimit) {
    bad("max_depth must be in [2, " + std::to_string(kMaxDepthLimit) + "] (a context of at least one token and its "
        "continuation), got " + std::to_string(max_depth));
  }
  if (min_match < 1) bad("min_match must be >= 1, got " + std::to_string(min_match));
  if (min_match > max_depth - 1) {
    bad("min_match must be <= max_depth - 1 = " + std::to_string(max_depth - 1) + " (the longest context a trie of "
        "depth max_depth can continue), got min_match=" + std::to_string(min_match) +
        " with max_depth=" + std::to_string(max_depth));
  }
  if (!std::isfinite(alpha) || alpha <= 0.0) bad("alpha must be a finite number > 0, got " + std::to_string(alpha));
  if (!(min_confidence >= 0.0 && min_confidence <= 1.0)) {
    bad("min_confidence must be in [0, 1], got " + std::to_string(min_confidence));
  }
  if (max_global_tokens < 1) {
    bad("max_global_tokens must be >= 1 (the global trie's budget in tokens), got " + std::to_string(max_global_tokens));
  }
}

// ---------------------------------------------------------------------------------------
// SuffixTrie

SuffixTrie::SuffixTrie(int32_t max_depth) : max_depth_(max_depth) { clear(); }

void SuffixTrie::clear() {
  nodes_.assign(1, Node{});
  free_.clear();
  edges_.clear();
  live_ = 1;
}

int32_t SuffixTrie::child(int32_t node, int32_t token) const {
  ++work_;
  auto it = edges_.find(key(node, token));
  return it == edges_.end() ? kNone : it->second;
}

int32_t SuffixTrie::child_or_new(int32_t node, int32_t token) {
  ++work_;
  auto [it, inserted] = edges_.try_emplace(key(node, token), kNone);
  if (!inserted) return it->second;
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
    nodes_[id] = Node{};
  } else {
    if (nodes_.size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      edges_.erase(it);
      throw std::length_error("SuffixTrie: more than 2**31 - 1 nodes");
    }
    id = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
  }
  Node& n = nodes_[id];
  n.token = token;
  n.parent = node;
  n.next = nodes_[node].first_child;
  if (n.next != kNone) nodes_[n.next].prev = id;
  nodes_[node].first_child = id;
  it->second = id;
  ++live_;
  return id;
}

void SuffixTrie::unlink(int32_t id) {
  Node& n = nodes_[id];
  if (n.prev != kNone) {
    nodes_[n.prev].next = n.next;
  } else {
    nodes_[n.parent].first_child = n.next;
  }
  if (n.next != kNone) nodes_[n.next].prev = n.prev;
  edges_.erase(key(n.parent, n.token));
  n = Node{};
  free_.push_back(id);
  --live_;
}

void SuffixTrie::extend(std::vector<int32_t>& frontier, int32_t token) {
  const size_t keep = static_cast<size_t>(max_depth_ - 1);  // deepest suffix worth extending later
  const size_t n = frontier.size();
  if (n < keep) frontier.push_back(kNone);
  // Deepest first, so that frontier[i + 1] is overwritten only after frontier[i + 1] was read.
  for (size_t i = n; i-- > 0;) {
    const int32_t c = child_or_new(frontier[i], token);
    ++nodes_[c].count;
    if (i + 1 < frontier.size()) frontier[i + 1] = c;
  }
  const int32_t c = child_or_new(kRoot, token);
  ++nodes_[c].count;
  frontier[0] = c;
}

void SuffixTrie::follow(std::vector<int32_t>& frontier, int32_t token) const {
  const size_t keep = static_cast<size_t>(max_depth_ - 1);
  const size_t n = frontier.size();
  if (n < keep) frontier.push_back(kNone);
  for (size_t i = n; i-- > 0;) {
    const int32_t c = frontier[i] == kNone ? kNone : child(frontier[i], token);
    if (i + 1 < frontier.size()) frontier[i + 1] = c;
  }
  frontier[0] = child(kRoot, token);
}

void SuffixTrie::insert(const std::vector<int32_t>& text) {
  std::vector<int32_t> frontier;
  frontier.reserve(static_cast<size_t>(max_depth_));
  for (int32_t t : text) extend(frontier, t);
}

void SuffixTrie::remove(const std::vector<int32_t>& text) {
  std::vector<int32_t> path;
  path.reserve(static_cast<size_t>(max_depth_));
  for (size_t start = 0; start < text.size(); ++start) {
    const size_t stop = std::min(text.size(), start + static_cast<size_t>(max_depth_));
    path.clear();
    int32_t node = kRoot;
    for (size_t i = start; i < stop; ++i) {
      node = child(node, text[i]);
      if (node == kNone) throw std::logic_error("SuffixTrie::remove: a text that was never inserted");
      --nodes_[node].count;
      path.push_back(node);
    }
    // A child never counts more than its parent, so a node at zero has no live children
    // left once the deeper nodes of the same path are gone.
    for (size_t i = path.size(); i-- > 0;) {
      if (nodes_[path[i]].count == 0) unlink(path[i]);
    }
  }
}

int32_t SuffixTrie::best_child(int32_t node, int64_t* total) const {
  int32_t best = kNone;
  int64_t sum = 0;
  for (int32_t c = nodes_[node].first_child; c != kNone; c = nodes_[c].next) {
    ++work_;
    const Node& n = nodes_[c];
    sum += n.count;
    if (best == kNone || n.count > nodes_[best].count || (n.count == nodes_[best].count && n.token < nodes_[best].token)) {
      best = c;
    }
  }
  *total = sum;
  return best;
}

int32_t SuffixTrie::walk(const std::vector<int32_t>& tokens, size_t begin, size_t end) const {
  int32_t node = kRoot;
  for (size_t i = begin; i < end && node != kNone; ++i) node = child(node, tokens[i]);
  return node;
}

// ---------------------------------------------------------------------------------------
// SuffixProposer

SuffixProposer::SuffixProposer(SuffixOptions options)
    : options_((options.validate(), options)),
      global_(static_cast<int32_t>(options_.max_depth)),
      request_(static_cast<int32_t>(options_.max_depth)) {}

void SuffixProposer::index(const std::vector<int64_t>& seq, size_t from) {
  for (size_t i = from; i < seq.size(); ++i) {  // all checked before anything is indexed
    if (seq[i] < 0 || seq[i] > kMaxToken) {
      bad("token ids must be in [0, 2**31 - 1], got " + std::to_string(seq[i]) + " at position " + std::to_string(i));
    }
  }
  for (size_t i = from; i < seq.size(); ++i) {
    const auto t = static_cast<int32_t>(seq[i]);
    request_.extend(request_frontier_, t);
    global_.follow(global_frontier_, t);
    seq_.push_back(t);
  }
}

void SuffixProposer::begin(const std::vector<int64_t>& prompt) {
  // A request that was begun and never ended is dropped without being learned from.
  active_ = false;
  request_.clear();
  request_frontier_.clear();
  global_frontier_.clear();
  seq_.clear();
  index(prompt, 0);
  prompt_length_ = prompt.size();
  active_ = true;
}

int64_t SuffixProposer::longest_match(const SuffixTrie& trie, const std::vector<int32_t>& frontier,
                                      int64_t min_match) {
  for (int64_t d = static_cast<int64_t>(frontier.size()); d >= min_match; --d) {
    const int32_t node = frontier[static_cast<size_t>(d - 1)];
    if (node != SuffixTrie::kNone && trie.has_children(node)) return d;
  }
  return 0;
}

SuffixProposer::Candidate SuffixProposer::chain(const SuffixTrie& trie, int32_t node, int64_t match,
                                                int64_t max_tokens) const {
  Candidate out;
  const double cap = std::ceil(options_.alpha * static_cast<double>(match));
  const int64_t limit = cap >= static_cast<double>(max_tokens) ? max_tokens : static_cast<int64_t>(cap);
  const size_t window = static_cast<size_t>(options_.max_depth - 1);
  std::vector<int32_t> ctx(seq_.end() - static_cast<std::ptrdiff_t>(std::min(seq_.size(), window)), seq_.end());
  int64_t depth = match;
  double confidence = 1.0;
  while (static_cast<int64_t>(out.draft.tokens.size()) < limit) {
    int64_t total = 0;
    const int32_t best = trie.best_child(node, &total);
    if (best == SuffixTrie::kNone || total <= 0) break;
    confidence *= static_cast<double>(trie.count(best)) / static_cast<double>(total);
    if (confidence < options_.min_confidence) break;
    const int32_t token = trie.token(best);
    out.draft.tokens.push_back(token);
    out.draft.confidence.push_back(static_cast<float>(confidence));
    out.score += confidence;
    ctx.push_back(token);
    if (depth + 1 <= options_.max_depth - 1) {
      node = best;
      ++depth;
    } else {  // the context is as long as the trie can continue: drop its oldest token
      node = trie.walk(ctx, ctx.size() - window, ctx.size());
      if (node == SuffixTrie::kNone) break;  // cannot happen: every suffix of an indexed n-gram is indexed
    }
  }
  out.draft.match_length = out.draft.tokens.empty() ? 0 : match;
  return out;
}

engine::LookupDraft SuffixProposer::propose(const std::vector<int64_t>& seq, int64_t max_tokens) {
  if (!active_) throw std::logic_error("SuffixProposer.propose before begin(prompt)");
  if (max_tokens < 0) bad("max_tokens must be >= 0, got " + std::to_string(max_tokens));
  if (seq.size() < seq_.size() || (!seq_.empty() && seq[seq_.size() - 1] != seq_.back())) {
    bad("seq must extend the sequence proposed from before (prompt + committed output; it only grows within a "
        "request): " + std::to_string(seq_.size()) + " tokens were indexed, seq has " + std::to_string(seq.size()));
  }
  index(seq, seq_.size());
  if (max_tokens == 0) return {};
  Candidate local, global;
  if (int64_t m = longest_match(request_, request_frontier_, options_.min_match)) {
    local = chain(request_, request_frontier_[static_cast<size_t>(m - 1)], m, max_tokens);
  }
  if (int64_t m = longest_match(global_, global_frontier_, options_.min_match)) {
    global = chain(global_, global_frontier_[static_cast<size_t>(m - 1)], m, max_tokens);
  }
  return global.score > local.score ? std::move(global.draft) : std::move(local.draft);
}

void SuffixProposer::end(const std::vector<int64_t>& seq) {
  if (!active_) throw std::logic_error("SuffixProposer.end before begin(prompt)");
  if (seq.size() < prompt_length_) {
    bad("end(seq): seq has " + std::to_string(seq.size()) + " tokens, fewer than the prompt's " +
        std::to_string(prompt_length_));
  }
  for (size_t i = prompt_length_; i < seq.size(); ++i) {
    if (seq[i] < 0 || seq[i] > kMaxToken) {
      bad("token ids must be in [0, 2**31 - 1], got " + std::to_string(seq[i]) + " at position " + std::to_string(i));
    }
  }
  // An output longer than the whole budget keeps its last max_global_tokens tokens.
  const size_t budget = static_cast<size_t>(options_.max_global_tokens);
  const size_t first = prompt_length_ + (seq.size() - prompt_length_ > budget ? seq.size() - prompt_length_ - budget : 0);
  std::vector<int32_t> output(seq.begin() + static_cast<std::ptrdiff_t>(first), seq.end());

  active_ = false;
  request_.clear();
  request_frontier_.clear();
  global_frontier_.clear();
  seq_.clear();
  prompt_length_ = 0;

  if (output.empty()) return;
  // Oldest first, evict until the new output fits; then learn it.
  while (!history_.empty() && global_tokens_ + static_cast<int64_t>(output.size()) > options_.max_global_tokens) {
    global_.remove(history_.front());
    global_tokens_ -= static_cast<int64_t>(history_.front().size());
    history_.pop_front();
  }
  global_.insert(output);
  global_tokens_ += static_cast<int64_t>(output.size());
  history_.push_back(std::move(output));
}

}  // namespace drafts
}  // namespace sprinter
