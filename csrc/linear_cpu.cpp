// PackedLinear (linear_cpu.h): the weight-streaming small-n linear of the CPU decode path.
//
// Structure of a forward (n <= 16 rows):
//   1. x is copied once into a zero-padded [n, Kp] scratch (float32, or bfloat16 for the
//      AVX-512-BF16 kernel) so that the micro-kernels have no tails;
//   2. the output rows are cut into groups of 4 weight rows, the groups split over ATen's
//      thread pool;
//   3. per group, every chunk of up to 4 input rows runs one micro-kernel: R x C float32
//      accumulators over K, one reduction each, bias added, stored in the output dtype.
// The first chunk pulls the group's 4 weight rows from memory; later chunks find them in
// L1 (4 * Kp * 4 bytes = 24 KiB at K = 1536), so the weight is streamed once per forward.
#include "linear_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SPRINTER_X86 1
#endif

namespace sprinter {
namespace cpu {
namespace {

using at::Tensor;

// out[c * R + r] = sum_k w[r * ldw + k] * x[c * ldx + k], k < Kp (Kp a multiple of kPad).
using MicroKernel = void (*)(const void* w, const void* x, int64_t ldw, int64_t ldx, int64_t Kp, float* out);

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---------------------------------------------------------------- scalar ----
template <typename W, int R, int C>
void mk_scalar(const void* wv, const void* xv, int64_t ldw, int64_t ldx, int64_t Kp, float* out) {
  const W* w = static_cast<const W*>(wv);
  const float* x = static_cast<const float*>(xv);
  float acc[R][C] = {};
  for (int64_t k = 0; k < Kp; ++k) {
    float wk[R];
    for (int r = 0; r < R; ++r) {
      if constexpr (std::is_same_v<W, float>) {
        wk[r] = w[r * ldw + k];
      } else {
        wk[r] = bf16_to_float(w[r * ldw + k]);
      }
    }
    for (int c = 0; c < C; ++c) {
      const float xk = x[c * ldx + k];
      for (int r = 0; r < R; ++r) acc[r][c] += wk[r] * xk;
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) out[c * R + r] = acc[r][c];
}

#ifdef SPRINTER_X86
// ------------------------------------------------------------------ AVX2 ----
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) inline __m256 load8_avx2(const float* p) { return _mm256_loadu_ps(p); }
// 8 bf16 -> 8 float32: the bf16 bits are the high half of the float's.
__attribute__((target("avx2,fma"))) inline __m256 load8_avx2(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

template <typename W, int R, int C>
__attribute__((target("avx2,fma"))) void mk_avx2(const void* wv, const void* xv, int64_t ldw, int64_t ldx,
                                                 int64_t Kp, float* out) {
  const W* w = static_cast<const W*>(wv);
  const float* x = static_cast<const float*>(xv);
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 8) {
    __m256 wk[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wk[r] = load8_avx2(w + r * ldw + k);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m256 xk = _mm256_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wk[r], xk, acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) out[c * R + r] = hsum256(acc[r][c]);
}

// --------------------------------------------------------------- AVX-512 ----
template <int R, int C>
__attribute__((target("avx512f"))) void mk_avx512_f32(const void* wv, const void* xv, int64_t ldw, int64_t ldx,
                                                      int64_t Kp, float* out) {
  const float* w = static_cast<const float*>(wv);
  const float* x = static_cast<const float*>(xv);
  __m512 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 16) {
    __m512 wk[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wk[r] = _mm512_loadu_ps(w + r * ldw + k);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512 xk = _mm512_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wk[r], xk, acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) out[c * R + r] = _mm512_reduce_add_ps(acc[r][c]);
}

// vdpbf16ps: each float32 lane accumulates the products of one pair of bf16 lanes.
template <int R, int C>
__attribute__((target("avx512f,avx512bf16"))) void mk_avx512_bf16(const void* wv, const void* xv, int64_t ldw,
                                                                  int64_t ldx, int64_t Kp, float* out) {
  const uint16_t* w = static_cast<const uint16_t*>(wv);
  const uint16_t* x = static_cast<const uint16_t*>(xv);
  __m512 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 32) {
    __m512bh wk[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wk[r] = (__m512bh)_mm512_loadu_si512(w + r * ldw + k);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512bh xk = (__m512bh)_mm512_loadu_si512(x + c * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wk[r], xk);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) out[c * R + r] = _mm512_reduce_add_ps(acc[r][c]);
}
#endif  // SPRINTER_X86

// table[R - 1][C - 1] of one kernel family.
struct KernelTable {
  MicroKernel k[4][4];
  int max_cols;     // input rows per micro-kernel call (register budget)
  bool x_is_bf16;   // the scratch copy of x is bfloat16 (else float32)
};

template <template <int, int> class F>
constexpr KernelTable make_table(int max_cols, bool x_is_bf16) {
  return KernelTable{{{F<1, 1>::f, F<1, 2>::f, F<1, 3>::f, F<1, 4>::f},
                      {F<2, 1>::f, F<2, 2>::f, F<2, 3>::f, F<2, 4>::f},
                      {F<3, 1>::f, F<3, 2>::f, F<3, 3>::f, F<3, 4>::f},
                      {F<4, 1>::f, F<4, 2>::f, F<4, 3>::f, F<4, 4>::f}},
                     max_cols,
                     x_is_bf16};
}

template <int R, int C> struct ScalarF32 { static constexpr MicroKernel f = mk_scalar<float, R, C>; };
template <int R, int C> struct ScalarBf16 { static constexpr MicroKernel f = mk_scalar<uint16_t, R, C>; };
#ifdef SPRINTER_X86
template <int R, int C> struct Avx2F32 { static constexpr MicroKernel f = mk_avx2<float, R, C>; };
template <int R, int C> struct Avx2Bf16 { static constexpr MicroKernel f = mk_avx2<uint16_t, R, C>; };
template <int R, int C> struct Avx512F32 { static constexpr MicroKernel f = mk_avx512_f32<R, C>; };
template <int R, int C> struct Avx512Bf16 { static constexpr MicroKernel f = mk_avx512_bf16<R, C>; };
#endif

// NOTE: AVX2 has 16 vector registers: 4 x 2 accumulators + 4 weight + 1 input fit, 4 x 4
// would spill, hence max_cols 2 there; AVX-512's 32 registers take 4 x 4.
const KernelTable& kernels(bool bf16_weight, Isa isa) {
  static const KernelTable scalar_f32 = make_table<ScalarF32>(4, false);
  static const KernelTable scalar_bf16 = make_table<ScalarBf16>(4, false);
#ifdef SPRINTER_X86
  static const KernelTable avx2_f32 = make_table<Avx2F32>(2, false);
  static const KernelTable avx2_bf16 = make_table<Avx2Bf16>(2, false);
  static const KernelTable avx512_f32 = make_table<Avx512F32>(4, false);
  static const KernelTable avx512_bf16 = make_table<Avx512Bf16>(4, true);
  if (bf16_weight) {
    // NOTE: without BF16 dot products the AVX2 widening kernel serves AVX-512 CPUs too.
    if (isa >= Isa::kAvx512Bf16) return avx512_bf16;
    if (isa >= Isa::kAvx2) return avx2_bf16;
    return scalar_bf16;
  }
  if (isa >= Isa::kAvx512) return avx512_f32;
  if (isa >= Isa::kAvx2) return avx2_f32;
  return scalar_f32;
#else
  (void)isa;
  return bf16_weight ? scalar_bf16 : scalar_f32;
#endif
}

Isa detect_isa() {
#ifdef SPRINTER_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    return __builtin_cpu_supports("avx512bf16") ? Isa::kAvx512Bf16 : Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

[[noreturn]] void invalid(const std::string& msg) { throw std::invalid_argument("PackedLinear: " + msg); }

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512_bf16";
  }
  return "unknown";
}

PackedLinear::PackedLinear(const Tensor& weight, const Tensor& bias) {
  if (!weight.defined() || weight.dim() != 2) invalid("weight must be a 2-D tensor [N, K]");
  if (!weight.device().is_cpu()) invalid("weight must be on the CPU, got " + weight.device().str());
  const auto dtype = weight.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16) {
    invalid("weight must be float32 or bfloat16, got " + std::string(c10::toString(dtype)));
  }
  N_ = weight.size(0);
  K_ = weight.size(1);
  if (N_ < 1 || K_ < 1) invalid("weight must have at least one row and one column");
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != N_ || bias.scalar_type() != dtype || !bias.device().is_cpu()) {
      invalid("bias must be a CPU tensor [N] of the weight's dtype");
    }
    bias_orig_ = bias;
    bias_ = bias.to(at::kFloat).contiguous();
  }
  weight_ = weight;
  Kp_ = (K_ + kPad - 1) / kPad * kPad;
  if (Kp_ == K_ && weight.is_contiguous()) {
    packed_ = weight;  // NOTE: no copy: the padded layout is the weight's own
  } else {
    packed_ = at::zeros({N_, Kp_}, weight.options());
    packed_.narrow(1, 0, K_).copy_(weight);
  }
}

int64_t PackedLinear::weight_bytes() const {
  return N_ * Kp_ * static_cast<int64_t>(packed_.element_size()) + (bias_.defined() ? N_ * 4 : 0);
}

Tensor PackedLinear::forward(const Tensor& x, Isa isa) const {
  if (!defined()) invalid("forward() on an empty PackedLinear");
  if (!x.defined() || x.dim() < 1 || x.size(-1) != K_) invalid("x must have K=" + std::to_string(K_) + " columns");
  if (x.scalar_type() != weight_.scalar_type()) {
    invalid("x has dtype " + std::string(c10::toString(x.scalar_type())) + ", the weight " +
            c10::toString(weight_.scalar_type()));
  }
  if (!x.device().is_cpu()) invalid("x must be on the CPU");
  const int64_t n = x.numel() / K_;
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N_;
  if (n > kMaxSmallRows) {
    return at::linear(x, weight_, bias_orig_);
  }
  Tensor out = at::empty(out_shape, x.options());
  if (n == 0) return out;
  isa = std::min(isa, cpu_isa());
  const bool bf16 = weight_.scalar_type() == at::kBFloat16;
  const KernelTable& table = kernels(bf16, isa);

  // 1. the padded scratch copy of x, in the kernel's input dtype
  Tensor x2 = x.reshape({n, K_});
  Tensor xs = at::zeros({n, Kp_}, x.options().dtype(table.x_is_bf16 ? at::kBFloat16 : at::kFloat));
  xs.narrow(1, 0, K_).copy_(x2);

  const char* wp = static_cast<const char*>(packed_.const_data_ptr());
  const char* xp = static_cast<const char*>(xs.const_data_ptr());
  const int64_t w_es = packed_.element_size(), x_es = xs.element_size();
  const float* bp = bias_.defined() ? bias_.const_data_ptr<float>() : nullptr;
  float* of = bf16 ? nullptr : out.mutable_data_ptr<float>();
  c10::BFloat16* ob = bf16 ? out.mutable_data_ptr<c10::BFloat16>() : nullptr;
  const int64_t N = N_, Kp = Kp_;
  const int64_t groups = (N + 3) / 4;
  // NOTE: a task should stream at least ~32 KiB of weight, or the pool's wake-up costs
  // more than the split saves.
  const int64_t grain = std::max<int64_t>(1, (32 << 10) / (4 * Kp * w_es));

  // 2./3. groups of 4 output rows over the thread pool
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    float acc[16];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t j0 = 4 * g;
      const int R = static_cast<int>(std::min<int64_t>(4, N - j0));
      for (int64_t c0 = 0; c0 < n; c0 += table.max_cols) {
        const int C = static_cast<int>(std::min<int64_t>(table.max_cols, n - c0));
        table.k[R - 1][C - 1](wp + j0 * Kp * w_es, xp + c0 * Kp * x_es, Kp, Kp, Kp, acc);
        for (int c = 0; c < C; ++c) {
          for (int r = 0; r < R; ++r) {
            const float v = acc[c * R + r] + (bp ? bp[j0 + r] : 0.0f);
            const int64_t o = (c0 + c) * N + j0 + r;
            if (of) {
              of[o] = v;
            } else {
              ob[o] = c10::BFloat16(v);
            }
          }
        }
      }
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace sprinter
