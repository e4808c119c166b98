// The "ngram" draft (see ngram.h).
#include "ngram.h"

#include <algorithm>
#include <stdexcept>

namespace sprinter {
namespace drafts {

size_t NgramProposer::Hash::operator()(const std::vector<int64_t>& v) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the ids' 64-bit values
  for (const int64_t t : v) {
    h ^= static_cast<uint64_t>(t);
    h *= 1099511628211ull;
  }
  return static_cast<size_t>(h ^ (h >> 29));
}

NgramProposer::NgramProposer(int64_t min_n, int64_t max_n) : min_n_(min_n), max_n_(max_n) {
  if (min_n < 1) throw std::invalid_argument("ngram: min_n must be >= 1, got " + std::to_string(min_n));
  if (max_n > 64) throw std::invalid_argument("ngram: max_n must be <= 64, got " + std::to_string(max_n));
  if (max_n < min_n) {
    throw std::invalid_argument("ngram: the n range is reversed (min_n " + std::to_string(min_n) + " > max_n " +
                                std::to_string(max_n) + "); pass min_n <= max_n");
  }
  last_.resize(static_cast<size_t>(max_n_ + 1));
}

void NgramProposer::begin(const std::vector<int64_t>& prompt) {
  seq_ = prompt;
  next_ = 0;
  indexed_ = 0;
  for (auto& m : last_) m.clear();
}

void NgramProposer::index_to(int64_t end) {
  for (; next_ < end; ++next_) {
    for (int64_t n = min_n_; n <= max_n_ && n <= next_ + 1; ++n) {
      std::vector<int64_t> key(seq_.begin() + (next_ + 1 - n), seq_.begin() + (next_ + 1));
      last_[static_cast<size_t>(n)][std::move(key)] = next_;
      ++indexed_;
    }
  }
}

engine::LookupDraft NgramProposer::propose(const std::vector<int64_t>& seq, int64_t max_tokens) {
  const size_t have = seq_.size();
  if (seq.size() < have || !std::equal(seq_.begin(), seq_.end(), seq.begin())) {
    throw std::invalid_argument("ngram: propose() got a sequence that does not extend the request's; call begin() first");
  }
  seq_.insert(seq_.end(), seq.begin() + static_cast<std::ptrdiff_t>(have), seq.end());
  const int64_t L = static_cast<int64_t>(seq_.size());
  engine::LookupDraft out;
  if (L == 0 || max_tokens <= 0) return out;
  index_to(L - 1);  // every n-gram ending before the last position
  for (int64_t n = std::min<int64_t>(max_n_, L); n >= min_n_; --n) {
    std::vector<int64_t> key(seq_.end() - n, seq_.end());
    const auto& m = last_[static_cast<size_t>(n)];
    auto it = m.find(key);
    if (it == m.end()) continue;
    const int64_t j = it->second;
    const int64_t stop = std::min<int64_t>(L, j + 1 + max_tokens);
    out.tokens.assign(seq_.begin() + (j + 1), seq_.begin() + stop);
    out.match_length = n;
    const float c = static_cast<float>(n) / static_cast<float>(max_n_);
    out.confidence.assign(out.tokens.size(), c);
    return out;
  }
  return out;
}

}  // namespace drafts
}  // namespace sprinter
