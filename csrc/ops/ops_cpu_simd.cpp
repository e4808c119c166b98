// Vectorised row primitives of the CPU fused ops (declared in ops_cpu_simd.h, used by
// ops_cpu.cpp). The loops are branch-free over float arrays with `#pragma omp simd`
// (reductions included; -fopenmp-simd, no OpenMP runtime) or GCC vector extensions,
// so that GCC vectorises them; on x86-64 each function is compiled twice (AVX2 and
// baseline SSE2, picked at load time by target_clones), and the Philox block of the
// race has a hand-written AVX2 version.
#include "ops_cpu_simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/philox.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SPRINTER_VEC __attribute__((target_clones("avx2", "default")))
#else
#define SPRINTER_VEC
#endif

namespace sprinter {
namespace cpu {
namespace simd {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 (x < -87, -inf included, gives 0); Cephes' expf polynomial,
// about 1 ulp. Written once for 8 lanes with GCC vector extensions (the compiler
// would not vectorise the scalar form); tails call it on a padded vector.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

__attribute__((always_inline)) inline v8f exp_nonpos8(v8f x) {
  const v8f xc = x < -87.0f ? v8f{} - 87.0f : x;
  const v8i n = __builtin_convertvector(xc * 1.44269504088896341f - 0.5f, v8i);  // round(x / ln 2)
  const v8f nf = __builtin_convertvector(n, v8f);
  v8f r = xc - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  v8f y = v8f{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const v8f scale = (v8f)((n + 127) << 23);
  return x < -87.0f ? v8f{} : y * scale;
}

// out[j] = u(seed, position, stream, 4 * block0 + j) for j < 64 (16 Philox blocks at once,
// structure of arrays, so the 32x32->64 multiplies vectorise). Bit-identical to philox.h.
SPRINTER_VEC void uniform64(Key key, uint32_t position, uint32_t stream, uint32_t block0, float* out) {
  uint32_t c0[16], c1[16], c2[16], c3[16];
  for (int j = 0; j < 16; ++j) {
    c0[j] = block0 + static_cast<uint32_t>(j);
    c1[j] = position;
    c2[j] = stream;
    c3[j] = 0u;
  }
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int r = 0; r < philox::kRounds; ++r) {
    for (int j = 0; j < 16; ++j) {
      const uint64_t p0 = static_cast<uint64_t>(philox::kM0) * c0[j];
      const uint64_t p1 = static_cast<uint64_t>(philox::kM1) * c2[j];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[j] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[j] ^ k1;
      c1[j] = static_cast<uint32_t>(p1);
      c3[j] = static_cast<uint32_t>(p0);
      c0[j] = n0;
      c2[j] = n2;
    }
    k0 += philox::kW0;
    k1 += philox::kW1;
  }
  for (int j = 0; j < 16; ++j) {
    out[4 * j + 0] = philox::word_to_uniform(c0[j]);
    out[4 * j + 1] = philox::word_to_uniform(c1[j]);
    out[4 * j + 2] = philox::word_to_uniform(c2[j]);
    out[4 * j + 3] = philox::word_to_uniform(c3[j]);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define SPRINTER_HAVE_AVX2_PHILOX 1
// uniform64 with AVX2 intrinsics: GCC does not vectorise the 32x32->64 multiplies of
// the portable loop. vpmuludq multiplies the even 32-bit lanes; the odd lanes go
// through a 64-bit shift, and blends reassemble (hi, lo). Same bits as philox.h.
__attribute__((target("avx2"))) void uniform64_avx2(Key key, uint32_t position, uint32_t stream,
                                                   uint32_t block0, float* out) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(philox::kM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(philox::kM1));
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 scale = _mm256_set1_ps(philox::kTwoPowMinus23);
  for (int g = 0; g < 2; ++g) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(block0 + 8u * g)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(position));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(stream));
    __m256i c3 = _mm256_setzero_si256();
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < philox::kRounds; ++r) {
      const __m256i e0 = _mm256_mul_epu32(c0, m0);
      const __m256i o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i e1 = _mm256_mul_epu32(c2, m1);
      const __m256i o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);
      const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
      k0 += philox::kW0;
      k1 += philox::kW1;
    }
    alignas(32) float w[4][8];
    const __m256i c[4] = {c0, c1, c2, c3};
    for (int j = 0; j < 4; ++j) {  // ((word >> 9) + 0.5) * 2**-23: exact, as word_to_uniform
      const __m256 f = _mm256_cvtepi32_ps(_mm256_srli_epi32(c[j], 9));
      _mm256_store_ps(w[j], _mm256_mul_ps(_mm256_add_ps(f, half), scale));
    }
    for (int b = 0; b < 8; ++b) {
      for (int j = 0; j < 4; ++j) out[32 * g + 4 * b + j] = w[j][b];
    }
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

float uniform_at(Key key, uint32_t position, uint32_t stream, int64_t index) {
  const auto w = philox::block_words(static_cast<uint32_t>(index >> 2), position, stream, key.k0, key.k1);
  return philox::word_to_uniform(w.v[index & 3]);
}

// The exponential race argmax_i w_i / E_i, E_i = -log u_i; ties -> lowest index.
// NOTE: -log u >= 1 - u, so w / (1 - u) bounds a score from above; a token whose
// bound (with a 1e-5 margin for the rounding of both sides) is below the best score
// so far cannot win and skips the log. The result is that of the full race.
SPRINTER_VEC int64_t race(const float* w, int64_t V, Key key, uint32_t position, uint32_t stream) {
  float best = -1.0f;
  int64_t arg = 0;
  alignas(64) float u[64];
  for (int64_t base = 0; base < V; base += 64) {
    const int64_t len = std::min<int64_t>(64, V - base);
    const float* wb = w + base;
    float wmax = 0.0f;
#pragma omp simd reduction(max : wmax)
    for (int64_t j = 0; j < len; ++j) wmax = std::max(wmax, wb[j]);
    if (wmax == 0.0f && best >= 0.0f) continue;  // all zero: score 0 cannot beat best >= 0
#ifdef SPRINTER_HAVE_AVX2_PHILOX
    if (cpu_has_avx2()) {
      uniform64_avx2(key, position, stream, static_cast<uint32_t>(base >> 2), u);
    } else {
      uniform64(key, position, stream, static_cast<uint32_t>(base >> 2), u);
    }
#else
    uniform64(key, position, stream, static_cast<uint32_t>(base >> 2), u);
#endif
    int any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t j = 0; j < len; ++j) any |= !(wb[j] * 1.00001f < best * (1.0f - u[j]));
    if (!any) continue;
    for (int64_t j = 0; j < len; ++j) {
      const float wj = w[base + j];
      if (wj * 1.00001f < best * (1.0f - u[j])) continue;
      const float score = wj / -std::log(u[j]);
      if (score > best) {
        best = score;
        arg = base + j;
      }
    }
  }
  return arg;
}

// Largest value (and its first index if want_arg); false if the row holds NaN/+inf or nothing finite.
SPRINTER_VEC bool scan_max(const float* x, int64_t V, bool want_arg, float* max_out, int64_t* arg_out) {
  float m = kNegInf;
  int bad = 0;
  constexpr float kInf = std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m) reduction(| : bad)
  for (int64_t i = 0; i < V; ++i) {
    const float v = x[i];
    bad |= (v != v) | (v == kInf);
    m = std::max(m, v);
  }
  int64_t arg = 0;
  while (want_arg && arg < V && !(x[arg] == m)) ++arg;  // first index of the max (greedy)
  *max_out = m;
  *arg_out = arg < V ? arg : 0;
  return !bad && m != kNegInf;
}

// p_i = exp(x_i - m); returns sum p (8 lanes of partial sums).
SPRINTER_VEC float exp_shift(const float* x, int64_t V, float m, float* p) {
  v8f acc{};
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) {
    v8f v;
    std::memcpy(&v, x + i, sizeof(v));
    const v8f e = exp_nonpos8(v - m);
    std::memcpy(p + i, &e, sizeof(e));
    acc += e;
  }
  if (i < V) {  // tail: pad with -inf (exp = 0)
    v8f v = v8f{} + kNegInf;
    for (int64_t j = 0; i + j < V; ++j) v[j] = x[i + j];
    const v8f e = exp_nonpos8(v - m);
    for (int64_t j = 0; i + j < V; ++j) p[i + j] = e[j];
    acc += e;
  }
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s;
}

SPRINTER_VEC void scale_div(float* p, int64_t V, float s) {
#pragma omp simd
  for (int64_t i = 0; i < V; ++i) p[i] = p[i] / s;
}

// Count and mass of the entries > t.
SPRINTER_VEC void count_mass_gt(const float* p, int64_t V, float t, int64_t* count, float* mass) {
  int32_t ct = 0;  // V < 2**31 (checked by the callers' shapes)
  float mt = 0.0f;
#pragma omp simd reduction(+ : ct, mt)
  for (int64_t i = 0; i < V; ++i) {
    const bool g = p[i] > t;
    ct += g ? 1 : 0;
    mt += g ? p[i] : 0.0f;
  }
  *count = ct;
  *mass = mt;
}

// Keep p_i iff p_i > vc or (p_i == vc and i <= ic); renormalise in place. Returns the
// kept mass; `ent` += sum q_i * x_i over kept tokens (for the entropy), max q in *qmax.
SPRINTER_VEC float apply_cut(float* p, const float* x, int64_t V, float vc, int64_t ic, float m,
                             float* ent, float* qmax) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < V; ++i) {
    const float v = p[i];
    const bool keep = (v > vc) | ((v == vc) & (i <= ic));
    const float k = keep ? v : 0.0f;
    p[i] = k;
    s += k;
  }
  // q = p / s, the entropy's sum and the max in a second sweep
  float e = 0.0f, mx = 0.0f;
#pragma omp simd reduction(+ : e) reduction(max : mx)
  for (int64_t i = 0; i < V; ++i) {
    const float q = p[i] / s;
    p[i] = q;
    // max(., lowest): a dropped -inf logit has q = 0 and must add 0, not 0 * -inf
    e += q * std::max(x[i] - m, std::numeric_limits<float>::lowest());
    mx = std::max(mx, q);
  }
  *ent = e;
  *qmax = mx;
  return s;
}

SPRINTER_VEC void residual(const float* p, const float* q, int64_t V, float* r) {
#pragma omp simd
  for (int64_t i = 0; i < V; ++i) r[i] = std::max(p[i] - q[i], 0.0f);
}

SPRINTER_VEC float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace simd
}  // namespace cpu
}  // namespace sprinter
