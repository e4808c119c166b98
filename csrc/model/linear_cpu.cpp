// PackedLinear (linear_cpu.h): the weight-streaming small-n linear of the CPU decode path.
//
// Structure of a forward (n <= 16 rows):
//   1. x is copied once into a zero-padded [n, Kp] scratch (float32, or bfloat16 for the
//      AVX-512-BF16 kernel) so that the micro-kernels have no tails;
//   2. the output rows are cut into groups of 4 weight rows, the groups split over ATen's
//      thread pool;
//   3. per group, every chunk of up to 6 (AVX-512) / 3 (AVX2) input rows runs one micro-kernel: R x C float32
//      accumulators over K, one reduction each, bias added, stored in the output dtype.
// The first chunk pulls the group's 4 weight rows from memory; later chunks find them in
// L1 (4 * Kp * 4 bytes = 24 KiB at K = 1536), so the weight is streamed once per forward.
#include "linear_cpu.h"

#include "linear_half_cpu.h"
#include "linear_quant_cpu.h"

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

// The packed layout: output rows in groups of kGroup (N padded with zero rows); inside a
// group, K in blocks of B elements (B = 16 float32 or 32 bf16: one zmm), and inside a
// block the kGroup rows one after another:
//   packed[((g * (Kp / B) + kb) * kGroup + r) * B + i] = W[g * kGroup + r, kb * B + i].
// NOTE: so a group is ONE sequential stream. With rows kept apart (4 streams 2.3 KB
// apart) a 1-row forward read only ~12 GB/s here against ~22 GB/s for a plain sum.
constexpr int kGroup = 4;

// out[c * kGroup + r] = sum_k W_group[r, k] * x[c * ldx + k], k < Kp; w = the group's block.
// `prefetch`: bytes ahead in the weight stream to request into L2 per block (0: none; only the
// AVX2 kernels use it).
using MicroKernel = void (*)(const void* w, const void* x, int64_t ldx, int64_t Kp, float* out, int64_t prefetch);

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename W> constexpr int64_t block_of() { return std::is_same_v<W, float> ? 16 : 32; }

// ---------------------------------------------------------------- scalar ----
template <typename W, int C>
void mk_scalar(const void* wv, const void* xv, int64_t ldx, int64_t Kp, float* out, int64_t /*prefetch*/) {
  constexpr int64_t B = block_of<W>();
  const W* w = static_cast<const W*>(wv);
  const float* x = static_cast<const float*>(xv);
  float acc[kGroup][C] = {};
  for (int64_t kb = 0; kb < Kp; kb += B) {
    const W* blk = w + kb * kGroup;
    for (int r = 0; r < kGroup; ++r) {
      for (int64_t i = 0; i < B; ++i) {
        float wk;
        if constexpr (std::is_same_v<W, float>) {
          wk = blk[r * B + i];
        } else {
          wk = bf16_to_float(blk[r * B + i]);
        }
        for (int c = 0; c < C; ++c) acc[r][c] += wk * x[c * ldx + kb + i];
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kGroup; ++r) out[c * kGroup + r] = acc[r][c];
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

// 8 lanes at a time through each B-block (2 steps for float32, 4 for bf16), one weight row
// at a time: the C inputs are read from L1 by the FMAs themselves, so 4 x C accumulators + 1
// weight register fit AVX2's 16 registers up to C = 3 (4 x 2 with all 4 rows held was the
// limit before). `prefetch` > 0: the block `prefetch` bytes further down the stream is
// requested into L2, so memory stays busy while the micro-kernel computes (see forward()).
template <typename W, int C>
__attribute__((target("avx2,fma"))) void mk_avx2(const void* wv, const void* xv, int64_t ldx, int64_t Kp,
                                                 float* out, int64_t prefetch) {
  constexpr int64_t B = block_of<W>();
  const W* w = static_cast<const W*>(wv);
  const float* x = static_cast<const float*>(xv);
  __m256 acc[kGroup][C];
#pragma GCC unroll 8
  for (int r = 0; r < kGroup; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t kb = 0; kb < Kp; kb += B) {
    const W* blk = w + kb * kGroup;
    if (prefetch > 0) {
      // a block is kGroup * B weights = 256 bytes (float32 and bf16 alike): 4 cache lines.
      // NOTE: past the last group this points beyond the buffer; a prefetch never faults.
      const char* p = reinterpret_cast<const char*>(blk) + prefetch;
      _mm_prefetch(p, _MM_HINT_T1);
      _mm_prefetch(p + 64, _MM_HINT_T1);
      _mm_prefetch(p + 128, _MM_HINT_T1);
      _mm_prefetch(p + 192, _MM_HINT_T1);
    }
#pragma GCC unroll 8
    for (int64_t i = 0; i < B; i += 8) {
#pragma GCC unroll 8
      for (int r = 0; r < kGroup; ++r) {
        const __m256 wk = load8_avx2(blk + r * B + i);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(x + c * ldx + kb + i), acc[r][c]);
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kGroup; ++r) out[c * kGroup + r] = hsum256(acc[r][c]);
}

// --------------------------------------------------------------- AVX-512 ----
template <int C>
__attribute__((target("avx512f"))) void mk_avx512_f32(const void* wv, const void* xv, int64_t ldx, int64_t Kp,
                                                      float* out, int64_t /*prefetch*/) {
  const float* w = static_cast<const float*>(wv);
  const float* x = static_cast<const float*>(xv);
  __m512 acc[kGroup][C];
#pragma GCC unroll 8
  for (int r = 0; r < kGroup; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 16) {
    __m512 wk[kGroup];
#pragma GCC unroll 8
    for (int r = 0; r < kGroup; ++r) wk[r] = _mm512_loadu_ps(w + k * kGroup + r * 16);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512 xk = _mm512_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 8
      for (int r = 0; r < kGroup; ++r) acc[r][c] = _mm512_fmadd_ps(wk[r], xk, acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kGroup; ++r) out[c * kGroup + r] = _mm512_reduce_add_ps(acc[r][c]);
}

// vdpbf16ps: each float32 lane accumulates the products of one pair of bf16 lanes.
template <int C>
__attribute__((target("avx512f,avx512bf16"))) void mk_avx512_bf16(const void* wv, const void* xv, int64_t ldx,
                                                                  int64_t Kp, float* out, int64_t /*prefetch*/) {
  const uint16_t* w = static_cast<const uint16_t*>(wv);
  const uint16_t* x = static_cast<const uint16_t*>(xv);
  __m512 acc[kGroup][C];
#pragma GCC unroll 8
  for (int r = 0; r < kGroup; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 32) {
    __m512bh wk[kGroup];
#pragma GCC unroll 8
    for (int r = 0; r < kGroup; ++r) wk[r] = (__m512bh)_mm512_loadu_si512(w + k * kGroup + r * 32);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512bh xk = (__m512bh)_mm512_loadu_si512(x + c * ldx + k);
#pragma GCC unroll 8
      for (int r = 0; r < kGroup; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wk[r], xk);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kGroup; ++r) out[c * kGroup + r] = _mm512_reduce_add_ps(acc[r][c]);
}
#endif  // SPRINTER_X86

// k[C - 1]: the kernel for C input rows, of one family.
constexpr int kMaxCols = 6;

struct KernelTable {
  MicroKernel k[kMaxCols];
  int max_cols;    // input rows per micro-kernel call (register budget)
  bool x_is_bf16;  // the scratch copy of x is bfloat16 (else float32)
  bool prefetch;   // the kernels take a software-prefetch distance (forward() picks it)
};

template <template <int> class F>
constexpr KernelTable make_table(int max_cols, bool x_is_bf16, bool prefetch = false) {
  return KernelTable{{F<1>::f, F<2>::f, F<3>::f, F<4>::f, F<5>::f, F<6>::f}, max_cols, x_is_bf16, prefetch};
}

template <int C> struct ScalarF32 { static constexpr MicroKernel f = mk_scalar<float, C>; };
template <int C> struct ScalarBf16 { static constexpr MicroKernel f = mk_scalar<uint16_t, C>; };
#ifdef SPRINTER_X86
template <int C> struct Avx2F32 { static constexpr MicroKernel f = mk_avx2<float, C>; };
template <int C> struct Avx2Bf16 { static constexpr MicroKernel f = mk_avx2<uint16_t, C>; };
template <int C> struct Avx512F32 { static constexpr MicroKernel f = mk_avx512_f32<C>; };
template <int C> struct Avx512Bf16 { static constexpr MicroKernel f = mk_avx512_bf16<C>; };
#endif

// NOTE: AVX2 has 16 vector registers: 4 x 3 accumulators + 1 weight row fit (the inputs are
// FMA memory operands), 4 x 4 would spill, hence max_cols 3 there; AVX-512's 32 registers take 4 x 6 (24 + 4 + 1), so
// a verification of 5-6 tokens is one pass instead of 4 + 1 or 4 + 2.
const KernelTable& kernels(bool bf16_weight, Isa isa) {
  static const KernelTable scalar_f32 = make_table<ScalarF32>(4, false);
  static const KernelTable scalar_bf16 = make_table<ScalarBf16>(4, false);
#ifdef SPRINTER_X86
  static const KernelTable avx2_f32 = make_table<Avx2F32>(3, false, true);
  static const KernelTable avx2_bf16 = make_table<Avx2Bf16>(3, false, true);
  static const KernelTable avx512_f32 = make_table<Avx512F32>(6, false);
  static const KernelTable avx512_bf16 = make_table<Avx512Bf16>(6, true);
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

Isa isa_from_name(const std::string& name) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("isa must be one of scalar, avx2, avx512, avx512_bf16 (or None: the CPU's best), got '" +
                              name + "'");
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
  const int64_t B = dtype == at::kFloat ? 16 : 32;  // block_of<W>()
  const int64_t groups = (N_ + kGroup - 1) / kGroup;
  // [N, K] -> zero-padded [G * kGroup, Kp] -> [G, kGroup, Kp / B, B] -> [G, Kp / B, kGroup, B]
  Tensor padded = at::zeros({groups * kGroup, Kp_}, weight.options());
  padded.narrow(0, 0, N_).narrow(1, 0, K_).copy_(weight);
  packed_ = padded.view({groups, kGroup, Kp_ / B, B}).permute({0, 2, 1, 3}).contiguous();
}

PackedLinear PackedLinear::with_blocks(const Tensor& blocks, QuantFormat format) const {
  if (!defined()) invalid("with_blocks() on an empty PackedLinear");
  if (weight_.scalar_type() != at::kFloat) invalid("GGUF blocks replace float32 weights only");
  auto q = std::make_shared<const QuantLinear>(blocks, format, bias_);
  if (q->out_features() != N_ || q->in_features() != K_) {
    invalid("the " + quant_format_name(format) + " blocks stand for a [" + std::to_string(q->out_features()) + ", " +
            std::to_string(q->in_features()) + "] weight, this linear is [" + std::to_string(N_) + ", " +
            std::to_string(K_) + "]");
  }
  PackedLinear out = *this;
  out.quant_ = std::move(q);
  out.half_ = nullptr;
  out.packed_ = Tensor();  // the blocks serve every small-n forward now
  return out;
}

PackedLinear PackedLinear::with_weight16(const Tensor& weight16) const {
  if (!defined()) invalid("with_weight16() on an empty PackedLinear");
  if (weight_.scalar_type() != at::kFloat) invalid("16-bit weights replace float32 weights only");
  if (!weight16.defined() || weight16.dim() != 2 || weight16.size(0) != N_ || weight16.size(1) != K_) {
    invalid("the 16-bit weight must be [" + std::to_string(N_) + ", " + std::to_string(K_) + "] like this linear's");
  }
  auto h = std::make_shared<const HalfLinear>(weight16, bias_);
  PackedLinear out = *this;
  out.half_ = std::move(h);
  out.quant_ = nullptr;
  out.packed_ = Tensor();  // the 16-bit weight serves every small-n forward now
  return out;
}

int64_t PackedLinear::weight_bytes() const {
  if (half_) return half_->weight_bytes();
  if (quant_) return quant_->weight_bytes();
  return packed_.numel() * static_cast<int64_t>(packed_.element_size()) + (bias_.defined() ? N_ * 4 : 0);
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
  if (quant_) return quant_->forward(x, isa);
  if (half_) return half_->forward(x, isa);
  Tensor out = at::empty(out_shape, x.options());
  if (n == 0) return out;
  isa = std::min(isa, cpu_isa());
  const bool bf16 = weight_.scalar_type() == at::kBFloat16;
  const KernelTable& table = kernels(bf16, isa);

  // 1. the padded scratch copy of x, in the kernel's input dtype
  Tensor x2 = x.reshape({n, K_});
  const auto x_dtype = table.x_is_bf16 ? at::kBFloat16 : at::kFloat;
  Tensor xs;
  if (Kp_ == K_ && x2.is_contiguous() && x2.scalar_type() == x_dtype) {
    xs = x2;  // NOTE: no copy needed (SmolLM2's K = 576 and 1536): saves two ATen calls per linear
  } else {
    xs = at::zeros({n, Kp_}, x.options().dtype(x_dtype));
    xs.narrow(1, 0, K_).copy_(x2);
  }

  const char* wp = static_cast<const char*>(packed_.const_data_ptr());
  const char* xp = static_cast<const char*>(xs.const_data_ptr());
  const int64_t w_es = packed_.element_size(), x_es = xs.element_size();
  const float* bp = bias_.defined() ? bias_.const_data_ptr<float>() : nullptr;
  float* of = bf16 ? nullptr : out.mutable_data_ptr<float>();
  c10::BFloat16* ob = bf16 ? out.mutable_data_ptr<c10::BFloat16>() : nullptr;
  const int64_t N = N_, Kp = Kp_;
  const int64_t groups = (N + kGroup - 1) / kGroup;
  const int64_t group_bytes = kGroup * Kp * w_es;
  // NOTE: a task should stream at least ~32 KiB of weight, or the pool's wake-up costs
  // more than the split saves.
  const int64_t grain = std::max<int64_t>(1, (32 << 10) / group_bytes);
  // input rows per micro-kernel call: as few, equal chunks as the register budget allows
  // (n = 8 on AVX-512: 4 + 4, not 6 + 2)
  const int64_t passes = (n + table.max_cols - 1) / table.max_cols;
  const int64_t chunk = (n + passes - 1) / passes;
  // Software prefetch (AVX2 kernels): from 2 rows up, the first chunk of each group asks for
  // the weights one group (at least 16 KiB) further down the stream, into L2, so the memory
  // keeps streaming while later chunks compute from L1. Measured on a 2-core AMD EPYC (AVX2,
  // ~12-17 GB/s per core), a forward over 3-8 rows then costs ~1.1-1.4x one row instead of
  // 1.3-2x; at n = 1 the hardware prefetcher alone was faster (software prefetch cost 10-15%).
  const int64_t prefetch = table.prefetch && n >= 2 ? std::max<int64_t>(group_bytes, 16 << 10) : 0;

  // 2./3. groups of 4 output rows over the thread pool
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    float acc[kGroup * kMaxCols];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t j0 = kGroup * g;
      const int R = static_cast<int>(std::min<int64_t>(kGroup, N - j0));  // the last group's rows are padding beyond R
      for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int C = static_cast<int>(std::min<int64_t>(chunk, n - c0));
        table.k[C - 1](wp + g * group_bytes, xp + c0 * Kp * x_es, Kp, Kp, acc, c0 == 0 ? prefetch : 0);
        for (int c = 0; c < C; ++c) {
          for (int r = 0; r < R; ++r) {
            const float v = acc[c * kGroup + r] + (bp ? bp[j0 + r] : 0.0f);
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
