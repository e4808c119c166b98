// HalfLinear (linear_half_cpu.h): float16 / bfloat16 weight storage x float32 activations.
//
// Packed group block (4 output rows x 16 elements of K): the 4 rows' 16 elements one after
// another, 2 bytes each (128 bytes, two cache lines); a group is Kp / 16 such blocks.
// Per block the kernel widens each row's 16 elements once (one vcvtph2ps / one shift on
// AVX-512, two on AVX2) and feeds the chunk's input rows with FMAs. The loops are
// PackedLinear's float32 kernels (linear_cpu.cpp) with the load replaced by load + widen,
// which is what keeps the sums bitwise equal to the float32 kernel over the widened weight.
#include "linear_half_cpu.h"

#include "group_stream.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SPRINTER_X86 1
#endif

namespace sprinter {
namespace cpu {
namespace {

using at::Tensor;

constexpr int kRows = kGroupRows;  // output rows per group (one stream)
constexpr int64_t kB = 16;   // elements per block and row
constexpr int kMaxCols = 6;  // input rows per micro-kernel call, at most

// out[c * kRows + r] = sum_k float32(W_group)[r, k] * x[c * ldx + k], k < Kp.
// `pf`: bytes ahead in the weight stream to prefetch (into L1) per block; 0: none.
using HalfKernel = void (*)(const uint16_t* w, const float* x, int64_t ldx, int64_t Kp, float* out, int64_t pf);

template <bool F16> inline float widen1(uint16_t b) {
  if constexpr (F16) {
    return static_cast<float>(c10::Half(b, c10::Half::from_bits()));
  } else {
    uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
}

// ---------------------------------------------------------------- scalar ----
// PackedLinear's mk_scalar<float, C> with the weight widened: one float32 sum per (row, input).
template <bool F16, int C>
void hk_scalar(const uint16_t* w, const float* x, int64_t ldx, int64_t Kp, float* out, int64_t /*pf*/) {
  float acc[kRows][C] = {};
  for (int64_t kb = 0; kb < Kp; kb += kB) {
    const uint16_t* blk = w + kb * kRows;
    for (int r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < kB; ++i) {
        const float wk = widen1<F16>(blk[r * kB + i]);
        for (int c = 0; c < C; ++c) acc[r][c] += wk * x[c * ldx + kb + i];
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = acc[r][c];
}

#ifdef SPRINTER_X86
// The 2 cache lines of the block `pf` bytes further down the stream, into L1.
// NOTE: past the last group this points beyond the buffer; a prefetch never faults.
inline void prefetch_block(const uint16_t* blk, int64_t pf) {
  const char* p = reinterpret_cast<const char*>(blk) + pf;
  _mm_prefetch(p, _MM_HINT_T0);
  _mm_prefetch(p + 64, _MM_HINT_T0);
}

// ------------------------------------------------------------------ AVX2 ----
__attribute__((target("avx2,fma,f16c"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <bool F16> __attribute__((target("avx2,fma,f16c"))) inline __m256 widen8(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (F16) {
    return _mm256_cvtph_ps(v);
  } else {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
}

// PackedLinear's mk_avx2<float, C>: 8 lanes at a time, one weight row at a time, the C
// inputs as FMA memory operands (4 x 3 accumulators + 1 weight fit 16 registers).
template <bool F16, int C>
__attribute__((target("avx2,fma,f16c"))) void hk_avx2(const uint16_t* w, const float* x, int64_t ldx, int64_t Kp,
                                                      float* out, int64_t pf) {
  __m256 acc[kRows][C];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t kb = 0; kb < Kp; kb += kB) {
    const uint16_t* blk = w + kb * kRows;
    if (pf > 0) prefetch_block(blk, pf);
#pragma GCC unroll 2
    for (int64_t i = 0; i < kB; i += 8) {
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        const __m256 wk = widen8<F16>(blk + r * kB + i);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(x + c * ldx + kb + i), acc[r][c]);
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = hsum8(acc[r][c]);
}

// --------------------------------------------------------------- AVX-512 ----
template <bool F16> __attribute__((target("avx512f"))) inline __m512 widen16(const uint16_t* p) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (F16) {
    return _mm512_cvtph_ps(v);
  } else {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
}

// PackedLinear's mk_avx512_f32<C>: 16 lanes, the 4 rows' widened weights held while the C
// inputs pass (4 x 6 accumulators + 4 weights + 1 input fit 32 registers).
template <bool F16, int C>
__attribute__((target("avx512f"))) void hk_avx512(const uint16_t* w, const float* x, int64_t ldx, int64_t Kp,
                                                  float* out, int64_t pf) {
  __m512 acc[kRows][C];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += kB) {
    const uint16_t* blk = w + k * kRows;
    if (pf > 0) prefetch_block(blk, pf);
    __m512 wk[kRows];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) wk[r] = widen16<F16>(blk + r * kB);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512 xk = _mm512_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[r][c] = _mm512_fmadd_ps(wk[r], xk, acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = _mm512_reduce_add_ps(acc[r][c]);
}
#endif  // SPRINTER_X86

struct HalfTable {
  HalfKernel k[kMaxCols];
  int max_cols;
};

template <template <bool, int> class K, bool F16>
constexpr HalfTable make_table(int max_cols) {
  return HalfTable{{K<F16, 1>::f, K<F16, 2>::f, K<F16, 3>::f, K<F16, 4>::f, K<F16, 5>::f, K<F16, 6>::f}, max_cols};
}

template <bool F16, int C> struct Scalar { static constexpr HalfKernel f = hk_scalar<F16, C>; };
#ifdef SPRINTER_X86
// NOTE: the AVX2 table is only ever called with C <= 3 (max_cols), as PackedLinear's.
template <bool F16, int C> struct Avx2 { static constexpr HalfKernel f = hk_avx2<F16, C>; };
template <bool F16, int C> struct Avx512 { static constexpr HalfKernel f = hk_avx512<F16, C>; };

bool has_f16c() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") != 0;
  }();
  return yes;
}
#endif

const HalfTable& kernels(bool f16, Isa isa) {
  static const HalfTable s16 = make_table<Scalar, true>(4);
  static const HalfTable sbf = make_table<Scalar, false>(4);
#ifdef SPRINTER_X86
  static const HalfTable a2_16 = make_table<Avx2, true>(3);
  static const HalfTable a2_bf = make_table<Avx2, false>(3);
  static const HalfTable a5_16 = make_table<Avx512, true>(6);
  static const HalfTable a5_bf = make_table<Avx512, false>(6);
  // NOTE: the AVX2 kernels are compiled with F16C (every AVX2 CPU we know has it); a CPU
  // without it falls back to scalar rather than fault.
  if (isa >= Isa::kAvx512) return f16 ? a5_16 : a5_bf;
  if (isa >= Isa::kAvx2 && has_f16c()) return f16 ? a2_16 : a2_bf;
#else
  (void)isa;
#endif
  return f16 ? s16 : sbf;
}

[[noreturn]] void invalid(const std::string& msg) { throw std::invalid_argument("HalfLinear: " + msg); }

}  // namespace

HalfLinear::HalfLinear(const Tensor& weight, const Tensor& bias) {
  if (!weight.defined() || weight.dim() != 2) invalid("weight must be a 2-D tensor [N, K]");
  if (!weight.device().is_cpu()) invalid("weight must be on the CPU, got " + weight.device().str());
  dtype_ = weight.scalar_type();
  if (dtype_ != at::kHalf && dtype_ != at::kBFloat16) {
    invalid("weight must be float16 or bfloat16, got " + std::string(c10::toString(dtype_)));
  }
  N_ = weight.size(0);
  K_ = weight.size(1);
  if (N_ < 1 || K_ < 1) invalid("weight must have at least one row and one column");
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != N_ || bias.scalar_type() != at::kFloat || !bias.device().is_cpu()) {
      invalid("bias must be a float32 CPU tensor [N]");
    }
    bias_ = bias.contiguous();
  }
  Kp_ = (K_ + kPad - 1) / kPad * kPad;
  const int64_t groups = (N_ + kRows - 1) / kRows;
  // [N, K] -> zero-padded [G * 4, Kp] -> [G, 4, Kp / 16, 16] -> [G, Kp / 16, 4, 16]
  Tensor padded = at::zeros({groups * kRows, Kp_}, weight.options());
  padded.narrow(0, 0, N_).narrow(1, 0, K_).copy_(weight);
  packed_ = padded.view({groups, kRows, Kp_ / kB, kB}).permute({0, 2, 1, 3}).contiguous();
}

int64_t HalfLinear::weight_bytes() const {
  return packed_.numel() * 2 + (bias_.defined() ? N_ * 4 : 0);
}

Tensor HalfLinear::forward(const Tensor& x, Isa isa) const {
  if (!defined()) invalid("forward() on an empty HalfLinear");
  int64_t n = 0;
  Tensor out = small_linear_out(x, K_, N_, "HalfLinear", &n);
  if (n == 0) return out;
  isa = std::min(isa, cpu_isa());
  const HalfTable& table = kernels(dtype_ == at::kHalf, isa);

  // the zero-padded float32 scratch copy of x (none needed when K is a multiple of kPad)
  Tensor x2 = x.reshape({n, K_});
  Tensor xs;
  if (Kp_ == K_ && x2.is_contiguous()) {
    xs = x2;
  } else {
    xs = at::zeros({n, Kp_}, x.options());
    xs.narrow(1, 0, K_).copy_(x2);
  }
  const float* xp = xs.const_data_ptr<float>();
  const uint16_t* wp = static_cast<const uint16_t*>(packed_.const_data_ptr());
  const float* bp = bias_.defined() ? bias_.const_data_ptr<float>() : nullptr;
  float* op = out.mutable_data_ptr<float>();
  const int64_t N = N_, Kp = Kp_;
  const int64_t group_elems = kRows * Kp;
  // NOTE: as in PackedLinear, a task should stream at least ~32 KiB of weight.
  const int64_t grain = std::max<int64_t>(1, (32 << 10) / (group_elems * 2));
  // NOTE: at every n the first chunk of each group asks for the weights 8 KiB further down
  // the stream into L1, so memory keeps streaming while the kernel widens and later chunks
  // compute. Measured on a 2-core AMD EPYC (AVX-512, ~37.6 GB/s read at 1 thread), SmolLM2-
  // 135M's 121 linears in float16, 1 thread, ms at n = 1 / 4 / 8: no prefetch 8.9 / 12.3 /
  // 30.9; L2 (T1) 16 KiB ahead from n = 2 (PackedLinear's AVX2 rule) 8.9 / 9.2 / 16.4; L1
  // (T0) 2 / 4 / 8 / 16 KiB ahead 8.5 / 8.0 / 8.0 / 8.1 at n = 1, 9.0-9.2 at 4, 15.3 at 8
  // (the floor, 269 MB at 37.6 GB/s, is 7.1). AVX2 the same way: 10.8 -> 9.5 at n = 1.
  const int64_t pf = 8 << 10;
  for (int64_t r0 = 0; r0 < n; r0 += kMaxSmallRows) {
    const int64_t m = std::min<int64_t>(kMaxSmallRows, n - r0);
    const float* xr = xp + r0 * Kp;
    stream_groups<kMaxCols>(m, N, table.max_cols, grain, bp, op + r0 * N,
                            [&](int64_t g, int64_t c0, int C, float* acc, bool first) {
                              table.k[C - 1](wp + g * group_elems, xr + c0 * Kp, Kp, Kp, acc, first ? pf : 0);
                            });
  }
  return out;
}

}  // namespace cpu
}  // namespace sprinter
