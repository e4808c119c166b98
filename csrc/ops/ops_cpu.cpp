// CPU twins of sprinter_ext.ops.draft_sample / verify_tokens (spec: their torch backends, sprinter_ext/ops/).
//
// One row at a time (rows in parallel with at::parallel_for); the vectorised passes
// over a row (softmax, cut, race, ...) live in ops_cpu_simd.cpp. Streams and the seed
// key come from common/philox.h, the settings struct from common/sampling.h.
//
// The processed distribution (sprinter_ext/sampling.py): x = logits / T, p = softmax(x);
// top-k / top-p keep a prefix of the ranking (p desc, index asc). The prefix is found
// without a full sort: a bisection on the value finds a threshold `lo` such that the
// tokens with p > lo surely contain the prefix, and only those few candidates are sorted.
// The kept set is then "p > vc, or p == vc and index <= ic" for the last kept (vc, ic).
#include "ops_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ops_cpu_simd.h"

namespace sprinter {
namespace cpu {
namespace detail {

using namespace ::sprinter::cpu::simd;

using ::sprinter::philox::COIN;
using ::sprinter::philox::RESIDUAL;
using ::sprinter::philox::TARGET;
using Settings = ::sprinter::SamplingSettings;

// What the processed row needs besides q itself (for the draft features).
struct RowInfo {
  float max_q = 1.0f;
  float entropy = 0.0f;
};

struct Scratch {
  std::vector<float> x, aux;
  std::vector<std::pair<float, int64_t>> cand;
  explicit Scratch(int64_t V) : x(V), aux(V) {}
};

template <typename T>
void to_float(const T* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// Finds the last kept (value, index) of the top-k / top-p prefix of p (sums to ~1).
void find_cut(const float* p, int64_t V, const Settings& s, Scratch& sc, float* vc, int64_t* ic) {
  const bool use_k = s.top_k > 0 && s.top_k < V;
  // Bisection on the value: `lo` keeps the prefix inside {p > lo}; stop when few remain.
  constexpr int64_t kFew = 2048;
  float lo = -1.0f, hi = 0.0f;
  for (int64_t i = 0; i < V; ++i) hi = std::max(hi, p[i]);
  int64_t count = V;
  for (int it = 0; it < 40 && count > kFew; ++it) {
    const float mid = lo < 0.0f ? 0.5f * hi : 0.5f * (lo + hi);
    if (!(mid > lo && mid < hi)) break;
    int64_t c;
    float mass;
    count_mass_gt(p, V, mid, &c, &mass);
    // NOTE: the 1e-4 margin keeps a float-rounding slack between this test and the
    // exact cumulative test below, so the candidates always contain the kept prefix.
    const bool enough = use_k ? c >= s.top_k : mass >= s.top_p + 1e-4f;
    if (enough) {
      lo = mid;
      count = c;
    } else {
      hi = mid;
    }
  }
  auto& cand = sc.cand;
  cand.clear();
  for (int64_t i = 0; i < V; ++i) {
    if (p[i] > lo) cand.emplace_back(p[i], i);
  }
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  int64_t m = static_cast<int64_t>(cand.size());
  float sk = 1.0f;
  if (use_k) {
    m = std::min<int64_t>(m, s.top_k);
    float acc = 0.0f;
    for (int64_t r = 0; r < m; ++r) acc += cand[r].first;
    sk = acc;
  }
  if (s.top_p < 1.0f) {
    double cum = 0.0;  // the reference's cumsum, then minus the value: mass ranked before
    for (int64_t r = 0; r < m; ++r) {
      const float v = use_k ? cand[r].first / sk : cand[r].first;
      cum += v;
      const float before = static_cast<float>(cum) - v;
      if (!(before < s.top_p)) {
        m = r;
        break;
      }
    }
  }
  m = std::max<int64_t>(m, 1);
  *vc = cand[m - 1].first;
  *ic = cand[m - 1].second;
}

// The processed distribution of one logits row into q [V]; false on non-finite logits.
template <typename T>
bool process_row(const T* logits, int64_t V, const Settings& s, float* q, Scratch& sc, RowInfo* info,
                 int64_t* greedy_token) {
  const float* x;
  const bool scaled = s.temperature != 1.0f && s.temperature > 0.0f;
  if constexpr (std::is_same_v<T, float>) {
    x = logits;  // x = logits / 1 (or the raw logits for greedy): no copy
  }
  if (!std::is_same_v<T, float> || scaled) {
    float* xs = sc.x.data();
    const float t = scaled ? s.temperature : 1.0f;
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) xs[i] = static_cast<float>(logits[i]) / t;
    x = xs;
  }
  float m;
  int64_t arg;
  if (!scan_max(x, V, s.temperature == 0.0f, &m, &arg)) return false;
  *greedy_token = -1;
  if (s.temperature == 0.0f) {  // greedy: one-hot at the first argmax
    std::fill(q, q + V, 0.0f);
    q[arg] = 1.0f;
    info->max_q = 1.0f;
    info->entropy = 0.0f;
    *greedy_token = arg;
    return true;
  }
  const float sum = exp_shift(x, V, m, q);
  scale_div(q, V, sum);  // q = softmax(x)
  float vc = -1.0f;
  int64_t ic = V;
  if ((s.top_k > 0 && s.top_k < V) || s.top_p < 1.0f) find_cut(q, V, s, sc, &vc, &ic);
  float ent, qmax;
  const float kept = apply_cut(q, x, V, vc, ic, m, &ent, &qmax);
  // log q_i = (x_i - m) - log(sum) - log(kept) for kept tokens: no log per token.
  info->entropy = std::log(sum) + std::log(kept) - ent;
  info->max_q = qmax;
  return true;
}

template <typename T>
void draft_rows(const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position,
                Key key, uint32_t stream, const Settings& s, const std::vector<const float*>& W,
                const std::vector<const float*>& bias, const std::vector<int64_t>& in_dim,
                const std::vector<int64_t>& out_dim, const std::vector<int64_t>& features,
                at::Tensor& token, at::Tensor& probs, at::Tensor& q_token, at::Tensor& score,
                at::Tensor& status) {
  const int64_t B = logits.size(0), V = logits.size(1), D = hidden.size(1);
  const T* L = logits.data_ptr<T>();
  const float* H = hidden.data_ptr<float>();
  const int64_t* P = position.data_ptr<int64_t>();
  int64_t* tok = token.data_ptr<int64_t>();
  float* Q = probs.data_ptr<float>();
  float* qt = q_token.data_ptr<float>();
  float* sc_out = score.data_ptr<float>();
  int8_t* st = status.data_ptr<int8_t>();
  int64_t widest = D + static_cast<int64_t>(features.size());
  for (auto o : out_dim) widest = std::max(widest, o);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    Scratch sc(V);
    std::vector<float> za(widest), zb(widest);
    for (int64_t b = begin; b < end; ++b) {
      float* q = Q + b * V;
      RowInfo info;
      int64_t greedy;
      if (!process_row(L + b * V, V, s, q, sc, &info, &greedy)) {
        st[b] = 1;
        tok[b] = -1;
        qt[b] = 0.0f;
        sc_out[b] = 0.0f;
        continue;
      }
      const uint32_t pos = static_cast<uint32_t>(static_cast<uint64_t>(P[b]));
      const int64_t t = greedy >= 0 ? greedy : race(q, V, key, pos, stream);
      tok[b] = t;
      qt[b] = q[t];
      if (W.empty()) {
        sc_out[b] = 0.0f;
        continue;
      }
      std::copy(H + b * D, H + (b + 1) * D, za.data());
      for (size_t f = 0; f < features.size(); ++f) {
        const int64_t code = features[f];
        za[D + f] = code == 0 ? q[t] : code == 1 ? info.max_q : info.entropy;
      }
      float* in = za.data();
      float* out = zb.data();
      for (size_t l = 0; l < W.size(); ++l) {
        for (int64_t o = 0; o < out_dim[l]; ++o) {
          const float h = dot(W[l] + o * in_dim[l], in, in_dim[l]) + bias[l][o];
          out[o] = (l + 1 < W.size() && h < 0.0f) ? 0.0f : h;
        }
        std::swap(in, out);
      }
      const float logit = in[0];
      sc_out[b] = logit != logit ? 0.0f : 1.0f / (1.0f + std::exp(-logit));
    }
  });
}

template <typename T, typename Q>
void verify_rows(const at::Tensor& target_logits, const at::Tensor& draft_probs,
                 const at::Tensor& draft_tokens, const at::Tensor& start_position, Key key,
                 const Settings& s, bool sd, at::Tensor& tokens, at::Tensor& num,
                 at::Tensor& status) {
  const int64_t B = target_logits.size(0), n1 = target_logits.size(1), V = target_logits.size(2);
  const int64_t n = n1 - 1;
  const T* L = target_logits.data_ptr<T>();
  const Q* Dq = draft_probs.data_ptr<Q>();
  const int64_t* X = draft_tokens.data_ptr<int64_t>();
  const int64_t* S0 = start_position.data_ptr<int64_t>();
  int64_t* out = tokens.data_ptr<int64_t>();
  int64_t* cnt = num.data_ptr<int64_t>();
  int8_t* st = status.data_ptr<int8_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    Scratch sc(V);
    std::vector<float> p(V), qrow(V);
    for (int64_t b = begin; b < end; ++b) {
      int64_t* row = out + b * n1;
      for (int64_t i = 0; i <= n; ++i) {
        RowInfo info;
        int64_t greedy;
        if (!process_row(L + (b * n1 + i) * V, V, s, p.data(), sc, &info, &greedy)) {
          st[b] = 1;
          break;
        }
        const uint32_t pos = static_cast<uint32_t>(static_cast<uint64_t>(S0[b] + i));
        const int64_t x = i < n ? X[b * n + i] : -1;
        const bool in_range = x >= 0 && x < V;
        if (i == n || !sd) {
          const int64_t t = race(p.data(), V, key, pos, TARGET);
          if (i < n && t == x) {
            row[i] = x;
            continue;
          }
          row[i] = t;
          cnt[b] = i;
          break;
        }
        const Q* qsrc = Dq + (b * n + i) * V;
        const float px = in_range ? p[x] : 0.0f;
        const float qx = in_range ? static_cast<float>(qsrc[x]) : 0.0f;
        if (uniform_at(key, pos, COIN, 0) * qx < px) {
          row[i] = x;
          continue;
        }
        const float* q;
        if constexpr (std::is_same_v<Q, float>) {
          q = qsrc;
        } else {
          to_float(qsrc, V, qrow.data());
          q = qrow.data();
        }
        residual(p.data(), q, V, sc.aux.data());
        row[i] = race(sc.aux.data(), V, key, pos, RESIDUAL);
        cnt[b] = i;
        break;
      }
      // Positions after the first rejection are not needed, but non-finite logits
      // there still fail the call, as in the reference (which checks every row).
      for (int64_t i = cnt[b] + 1; cnt[b] >= 0 && i <= n && st[b] == 0; ++i) {
        float m;
        int64_t arg;
        to_float(L + (b * n1 + i) * V, V, sc.x.data());
        if (!scan_max(sc.x.data(), V, false, &m, &arg)) st[b] = 1;
      }
    }
  });
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

}  // namespace detail

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draft_sample(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, const SamplingSettings& s, const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
    const std::vector<int64_t>& features) {
  using detail::require;
  require(logits.dim() == 2 && logits.is_contiguous() && logits.device().is_cpu(),
          "logits must be a contiguous CPU tensor [B, V]");
  require(hidden.dim() == 2 && hidden.is_contiguous() && hidden.size(0) == logits.size(0) &&
              hidden.scalar_type() == at::kFloat && hidden.device().is_cpu(),
          "hidden must be a contiguous float32 CPU tensor [B, D]");
  require(position.dim() == 1 && position.size(0) == logits.size(0) &&
              position.scalar_type() == at::kLong && position.is_contiguous() && position.device().is_cpu(),
          "position must be a contiguous int64 CPU tensor [B]");
  require(weights.size() == biases.size(), "weights and biases must have the same length");
  const int64_t B = logits.size(0), V = logits.size(1);
  std::vector<const float*> W, Bs;
  std::vector<int64_t> in_dim, out_dim;
  int64_t expect_in = hidden.size(1) + static_cast<int64_t>(features.size());
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    require(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 2 && w.size(1) == expect_in &&
                w.device().is_cpu() && b.device().is_cpu(),
            "verifier layer " + std::to_string(l) + " weight must be float32 [out, " +
                std::to_string(expect_in) + "], contiguous, on the CPU (bias too)");
    require(b.scalar_type() == at::kFloat && b.is_contiguous() && b.dim() == 1 && b.size(0) == w.size(0),
            "verifier layer " + std::to_string(l) + " bias must be float32 [out]");
    W.push_back(w.data_ptr<float>());
    Bs.push_back(b.data_ptr<float>());
    in_dim.push_back(w.size(1));
    out_dim.push_back(w.size(0));
    expect_in = w.size(0);
  }
  require(weights.empty() || expect_in == 1, "the verifier's last layer must have one output");
  for (auto f : features) require(f >= 0 && f <= 2, "feature codes must be 0, 1 or 2");

  const auto opts = logits.options();
  at::Tensor token = at::empty({B}, opts.dtype(at::kLong));
  at::Tensor probs = at::empty({B, V}, opts.dtype(at::kFloat));
  at::Tensor q_token = at::empty({B}, opts.dtype(at::kFloat));
  at::Tensor score = at::empty({B}, opts.dtype(at::kFloat));
  at::Tensor status = at::zeros({B}, opts.dtype(at::kChar));
  const auto key = philox::seed_key(seed);
  switch (logits.scalar_type()) {
    case at::kFloat:
      detail::draft_rows<float>(logits, hidden, position, key, stream, s, W, Bs, in_dim, out_dim,
                                features, token, probs, q_token, score, status);
      break;
    case at::kHalf:
      detail::draft_rows<c10::Half>(logits, hidden, position, key, stream, s, W, Bs, in_dim,
                                    out_dim, features, token, probs, q_token, score, status);
      break;
    case at::kBFloat16:
      detail::draft_rows<c10::BFloat16>(logits, hidden, position, key, stream, s, W, Bs, in_dim,
                                        out_dim, features, token, probs, q_token, score, status);
      break;
    default:
      throw std::invalid_argument("logits must be float32, float16 or bfloat16");
  }
  return {token, probs, q_token, score, status};
}

namespace detail {
template <typename T>
void verify_dispatch_q(const at::Tensor& tl, const at::Tensor& dp, const at::Tensor& dt,
                       const at::Tensor& sp, Key key, const Settings& s, bool sd, at::Tensor& tokens,
                       at::Tensor& num, at::Tensor& status) {
  switch (dp.scalar_type()) {
    case at::kFloat:
      verify_rows<T, float>(tl, dp, dt, sp, key, s, sd, tokens, num, status);
      break;
    case at::kHalf:
      verify_rows<T, c10::Half>(tl, dp, dt, sp, key, s, sd, tokens, num, status);
      break;
    case at::kBFloat16:
      verify_rows<T, c10::BFloat16>(tl, dp, dt, sp, key, s, sd, tokens, num, status);
      break;
    default:
      throw std::invalid_argument("draft_probs must be float32, float16 or bfloat16");
  }
}
}  // namespace detail

std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tokens(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, const SamplingSettings& s, bool sd) {
  using detail::require;
  require(target_logits.dim() == 3 && target_logits.is_contiguous() && target_logits.device().is_cpu(),
          "target_logits must be a contiguous CPU tensor [B, n + 1, V]");
  const int64_t B = target_logits.size(0), n1 = target_logits.size(1), V = target_logits.size(2);
  require(draft_probs.dim() == 3 && draft_probs.is_contiguous() && draft_probs.device().is_cpu() &&
              draft_probs.size(0) == B &&
              draft_probs.size(1) == n1 - 1 && draft_probs.size(2) == V,
          "draft_probs must be a contiguous [B, n, V] tensor");
  require(draft_tokens.dim() == 2 && draft_tokens.is_contiguous() && draft_tokens.device().is_cpu() &&
              draft_tokens.size(0) == B &&
              draft_tokens.size(1) == n1 - 1 && draft_tokens.scalar_type() == at::kLong,
          "draft_tokens must be a contiguous int64 [B, n] tensor");
  require(start_position.dim() == 1 && start_position.size(0) == B &&
              start_position.scalar_type() == at::kLong && start_position.is_contiguous() &&
              start_position.device().is_cpu(),
          "start_position must be a contiguous int64 [B] tensor");
  const auto opts = target_logits.options();
  at::Tensor tokens = at::full({B, n1}, -1, opts.dtype(at::kLong));
  at::Tensor num = at::full({B}, -1, opts.dtype(at::kLong));
  at::Tensor status = at::zeros({B}, opts.dtype(at::kChar));
  const auto key = philox::seed_key(seed);
  switch (target_logits.scalar_type()) {
    case at::kFloat:
      detail::verify_dispatch_q<float>(target_logits, draft_probs, draft_tokens, start_position, key,
                                       s, sd, tokens, num, status);
      break;
    case at::kHalf:
      detail::verify_dispatch_q<c10::Half>(target_logits, draft_probs, draft_tokens, start_position,
                                           key, s, sd, tokens, num, status);
      break;
    case at::kBFloat16:
      detail::verify_dispatch_q<c10::BFloat16>(target_logits, draft_probs, draft_tokens,
                                               start_position, key, s, sd, tokens, num, status);
      break;
    default:
      throw std::invalid_argument("target_logits must be float32, float16 or bfloat16");
  }
  return {tokens, num, status};
}

}  // namespace cpu
}  // namespace sprinter
