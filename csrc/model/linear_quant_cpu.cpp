// QuantLinear (linear_quant_cpu.h): GGUF Q4_1 / Q8_0 weight blocks x float32 activations.
//
// Packed group block (4 output rows, one 32-weight block of K each):
//   Q4_1: 4 x 16 bytes of nibbles, then d[4], m[4] as float32      (96 bytes / 128 weights)
//   Q8_0: 4 x 32 int8, then d[4] as float32                        (144 bytes / 128 weights)
// Scales are widened from f16 once at packing (exact), so the kernels broadcast them from
// memory. Per block and row the kernel unpacks the 32 quants to float32 once, dequantises
// with one fma (Q4_1) or one multiply (Q8_0), both exact, and feeds the chunk's input rows.
#include "linear_quant_cpu.h"

#include "group_stream.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
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

constexpr int kRows = kGroupRows;  // output rows per group (one stream)
constexpr int kMaxCols = 6;  // input rows per micro-kernel call, at most

// Bytes of one packed group block (kRows rows x one 32-weight block, scales widened).
constexpr int64_t group_block_bytes(QuantFormat f) {
  return f == QuantFormat::kQ4_1 ? kRows * 16 + 2 * kRows * 4 : kRows * 32 + kRows * 4;
}

// out[c * kRows + r] = sum_k dequant(W_group)[r, k] * x[c * ldx + k] over nb blocks.
// `pf`: bytes ahead in the weight stream to prefetch per block (0: none).
using QuantKernel = void (*)(const uint8_t* w, const float* x, int64_t ldx, int64_t nb, float* out, int64_t pf);

inline float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// ---------------------------------------------------------------- scalar ----
// Row r of one packed group block `blk`, dequantised: the reference arithmetic (the scalar
// kernel and dequantize() both use it).
inline void dequant_row(QuantFormat f, const uint8_t* blk, int r, float* out) {
  if (f == QuantFormat::kQ4_1) {
    const float* dm = reinterpret_cast<const float*>(blk + kRows * 16);
    for (int i = 0; i < 16; ++i) {
      const uint8_t b = blk[r * 16 + i];
      out[i] = std::fma(dm[r], static_cast<float>(b & 0x0F), dm[kRows + r]);
      out[i + 16] = std::fma(dm[r], static_cast<float>(b >> 4), dm[kRows + r]);
    }
  } else {
    const float d = reinterpret_cast<const float*>(blk + kRows * 32)[r];
    for (int i = 0; i < 32; ++i) out[i] = d * static_cast<float>(static_cast<int8_t>(blk[r * 32 + i]));
  }
}

// The fallback kernel: dequantise, then one float32 sum per row.
template <QuantFormat F, int C>
void qk_scalar(const uint8_t* w, const float* x, int64_t ldx, int64_t nb, float* out, int64_t /*pf*/) {
  constexpr int64_t GB = group_block_bytes(F);
  float acc[kRows][C] = {};
  for (int64_t kb = 0; kb < nb; ++kb) {
    const uint8_t* blk = w + kb * GB;
    for (int r = 0; r < kRows; ++r) {
      float wk[kQuantBlock];
      dequant_row(F, blk, r, wk);
      for (int c = 0; c < C; ++c) {
        const float* xb = x + c * ldx + kb * kQuantBlock;
        for (int i = 0; i < kQuantBlock; ++i) acc[r][c] += wk[i] * xb[i];
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = acc[r][c];
}

#ifdef SPRINTER_X86
// The cache lines of one group block (GB bytes, not line-aligned) `pf` bytes ahead.
// NOTE: past the last group this points beyond the buffer; a prefetch never faults.
template <int64_t GB> inline void prefetch_block(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p) + GB - 1, _MM_HINT_T0);
  if constexpr (GB > 128) _mm_prefetch(reinterpret_cast<const char*>(p) + 64, _MM_HINT_T0);
}

// ------------------------------------------------------------------ AVX2 ----
__attribute__((target("avx2,fma"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 quants at a time (one ymm), used at once by the C input rows (memory operands), so
// 4 x C accumulators + d, m and one weight vector fit AVX2's 16 registers for C <= 2.
template <QuantFormat F, int C>
__attribute__((target("avx2,fma"))) void qk_avx2(const uint8_t* w, const float* x, int64_t ldx, int64_t nb,
                                                 float* out, int64_t pf) {
  constexpr int64_t GB = group_block_bytes(F);
  __m256 acc[kRows][C];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m128i low = _mm_set1_epi8(0x0F);
  for (int64_t kb = 0; kb < nb; ++kb) {
    const uint8_t* blk = w + kb * GB;
    const float* xb = x + kb * kQuantBlock;
    if (pf > 0) prefetch_block<GB>(blk + pf);
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      __m128i part[4];  // the block's quants, 8 per part, in element order
      __m256 dv, mv = _mm256_setzero_ps();
      if constexpr (F == QuantFormat::kQ4_1) {
        const float* dm = reinterpret_cast<const float*>(blk + kRows * 16);
        dv = _mm256_broadcast_ss(dm + r);
        mv = _mm256_broadcast_ss(dm + kRows + r);
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + r * 16));
        const __m128i lo = _mm_and_si128(q, low), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
        part[0] = lo;
        part[1] = _mm_srli_si128(lo, 8);
        part[2] = hi;
        part[3] = _mm_srli_si128(hi, 8);
      } else {
        dv = _mm256_broadcast_ss(reinterpret_cast<const float*>(blk + kRows * 32) + r);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) part[j] = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + r * 32 + 8 * j));
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m256 wk;
        if constexpr (F == QuantFormat::kQ4_1) {
          wk = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[j])), dv, mv);
        } else {
          wk = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j])), dv);
        }
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(xb + c * ldx + 8 * j), acc[r][c]);
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = hsum8(acc[r][c]);
}

// --------------------------------------------------------------- AVX-512 ----
// 16 quants per zmm: two per row and block; 4 x 6 accumulators + 2 weights + d, m fit 32.
template <QuantFormat F, int C>
__attribute__((target("avx512f"))) void qk_avx512(const uint8_t* w, const float* x, int64_t ldx, int64_t nb,
                                                  float* out, int64_t pf) {
  constexpr int64_t GB = group_block_bytes(F);
  __m512 acc[kRows][C];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  const __m128i low = _mm_set1_epi8(0x0F);
  for (int64_t kb = 0; kb < nb; ++kb) {
    const uint8_t* blk = w + kb * GB;
    const float* xb = x + kb * kQuantBlock;
    if (pf > 0) prefetch_block<GB>(blk + pf);
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      __m512 w0, w1;
      if constexpr (F == QuantFormat::kQ4_1) {
        const float* dm = reinterpret_cast<const float*>(blk + kRows * 16);
        const __m512 dv = _mm512_set1_ps(dm[r]), mv = _mm512_set1_ps(dm[kRows + r]);
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + r * 16));
        w0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, low)));
        w1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), low)));
        w0 = _mm512_fmadd_ps(w0, dv, mv);
        w1 = _mm512_fmadd_ps(w1, dv, mv);
      } else {
        const __m512 dv = _mm512_set1_ps(reinterpret_cast<const float*>(blk + kRows * 32)[r]);
        const __m128i* q = reinterpret_cast<const __m128i*>(blk + r * 32);
        w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), dv);
        w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), dv);
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        acc[r][c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb + c * ldx), acc[r][c]);
        acc[r][c] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + c * ldx + 16), acc[r][c]);
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < kRows; ++r) out[c * kRows + r] = _mm512_reduce_add_ps(acc[r][c]);
}
#endif  // SPRINTER_X86

struct QuantTable {
  QuantKernel k[kMaxCols];
  int max_cols;
};

template <template <QuantFormat, int> class K, QuantFormat F>
constexpr QuantTable make_table(int max_cols) {
  return QuantTable{{K<F, 1>::f, K<F, 2>::f, K<F, 3>::f, K<F, 4>::f, K<F, 5>::f, K<F, 6>::f}, max_cols};
}

template <QuantFormat F, int C> struct Scalar { static constexpr QuantKernel f = qk_scalar<F, C>; };
#ifdef SPRINTER_X86
// NOTE: the AVX2 table is only ever called with C <= 2 (max_cols); the wider entries exist
// to keep one table shape.
template <QuantFormat F, int C> struct Avx2 { static constexpr QuantKernel f = qk_avx2<F, C>; };
template <QuantFormat F, int C> struct Avx512 { static constexpr QuantKernel f = qk_avx512<F, C>; };
#endif

const QuantTable& kernels(QuantFormat f, Isa isa) {
  static const QuantTable s41 = make_table<Scalar, QuantFormat::kQ4_1>(4);
  static const QuantTable s80 = make_table<Scalar, QuantFormat::kQ8_0>(4);
  const bool q41 = f == QuantFormat::kQ4_1;
#ifdef SPRINTER_X86
  static const QuantTable a2_41 = make_table<Avx2, QuantFormat::kQ4_1>(2);
  static const QuantTable a2_80 = make_table<Avx2, QuantFormat::kQ8_0>(2);
  static const QuantTable a5_41 = make_table<Avx512, QuantFormat::kQ4_1>(6);
  static const QuantTable a5_80 = make_table<Avx512, QuantFormat::kQ8_0>(6);
  if (isa >= Isa::kAvx512) return q41 ? a5_41 : a5_80;
  if (isa >= Isa::kAvx2) return q41 ? a2_41 : a2_80;
#else
  (void)isa;
#endif
  return q41 ? s41 : s80;
}

[[noreturn]] void invalid(const std::string& msg) { throw std::invalid_argument("QuantLinear: " + msg); }

}  // namespace

QuantFormat quant_format(const std::string& name) {
  if (name == "q4_1") return QuantFormat::kQ4_1;
  if (name == "q8_0") return QuantFormat::kQ8_0;
  invalid("unknown block format '" + name + "': one of q4_1, q8_0");
}

std::string quant_format_name(QuantFormat f) { return f == QuantFormat::kQ4_1 ? "q4_1" : "q8_0"; }

int64_t quant_block_bytes(QuantFormat f) { return f == QuantFormat::kQ4_1 ? 20 : 34; }

QuantLinear::QuantLinear(const Tensor& blocks, QuantFormat format, const Tensor& bias) : format_(format) {
  if (!blocks.defined() || blocks.dim() != 2) invalid("blocks must be a 2-D uint8 tensor [N, K / 32 * block_bytes]");
  if (blocks.scalar_type() != at::kByte) invalid("blocks must be uint8, got " + std::string(c10::toString(blocks.scalar_type())));
  if (!blocks.device().is_cpu()) invalid("blocks must be on the CPU, got " + blocks.device().str());
  const int64_t bb = quant_block_bytes(format);
  N_ = blocks.size(0);
  if (N_ < 1 || blocks.size(1) < bb || blocks.size(1) % bb != 0) {
    invalid("blocks must have at least one row and a whole number (>= 1) of " + std::to_string(bb) + "-byte " +
            quant_format_name(format) + " blocks per row, got shape [" + std::to_string(N_) + ", " +
            std::to_string(blocks.size(1)) + "]");
  }
  const int64_t nb = blocks.size(1) / bb;
  K_ = nb * kQuantBlock;
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != N_ || bias.scalar_type() != at::kFloat || !bias.device().is_cpu()) {
      invalid("bias must be a float32 CPU tensor [N]");
    }
    bias_ = bias.contiguous();
  }
  const Tensor src = blocks.contiguous();
  const uint8_t* s = src.const_data_ptr<uint8_t>();
  const int64_t groups = (N_ + kRows - 1) / kRows, GB = group_block_bytes(format);
  packed_ = at::zeros({groups, nb, GB}, blocks.options());  // padding rows: zero scales, zero quants
  uint8_t* p = packed_.mutable_data_ptr<uint8_t>();
  const int64_t qbytes = format == QuantFormat::kQ4_1 ? 16 : 32;
  for (int64_t j = 0; j < N_; ++j) {
    const int64_t g = j / kRows, r = j % kRows;
    for (int64_t kb = 0; kb < nb; ++kb) {
      const uint8_t* in = s + j * nb * bb + kb * bb;
      uint8_t* out = p + (g * nb + kb) * GB;
      float* scales = reinterpret_cast<float*>(out + kRows * qbytes);
      const float d = half_to_float(in);
      const float m = format == QuantFormat::kQ4_1 ? half_to_float(in + 2) : 0.0f;
      if (!std::isfinite(d) || !std::isfinite(m)) {
        invalid("row " + std::to_string(j) + ", block " + std::to_string(kb) + " has a non-finite scale");
      }
      scales[r] = d;
      if (format == QuantFormat::kQ4_1) scales[kRows + r] = m;
      std::memcpy(out + r * qbytes, in + (bb - qbytes), qbytes);
    }
  }
}

int64_t QuantLinear::weight_bytes() const {
  return packed_.numel() + (bias_.defined() ? N_ * 4 : 0);
}

Tensor QuantLinear::dequantize() const {
  if (!defined()) invalid("dequantize() on an empty QuantLinear");
  Tensor w = at::empty({N_, K_}, at::TensorOptions().dtype(at::kFloat));
  float* o = w.mutable_data_ptr<float>();
  const uint8_t* p = packed_.const_data_ptr<uint8_t>();
  const int64_t nb = K_ / kQuantBlock, GB = group_block_bytes(format_);
  for (int64_t j = 0; j < N_; ++j) {
    const int64_t g = j / kRows, r = j % kRows;
    for (int64_t kb = 0; kb < nb; ++kb) {
      dequant_row(format_, p + (g * nb + kb) * GB, static_cast<int>(r), o + j * K_ + kb * kQuantBlock);
    }
  }
  return w;
}

Tensor QuantLinear::forward(const Tensor& x, Isa isa) const {
  if (!defined()) invalid("forward() on an empty QuantLinear");
  int64_t n = 0;
  Tensor out = small_linear_out(x, K_, N_, "QuantLinear", &n);
  if (n == 0) return out;
  const QuantTable& table = kernels(format_, std::min(isa, cpu_isa()));
  const Tensor xs = x.reshape({n, K_}).contiguous();
  const float* xp = xs.const_data_ptr<float>();
  const uint8_t* wp = packed_.const_data_ptr<uint8_t>();
  const float* bp = bias_.defined() ? bias_.const_data_ptr<float>() : nullptr;
  float* op = out.mutable_data_ptr<float>();
  const int64_t N = N_, K = K_, nb = K_ / kQuantBlock;
  const int64_t group_bytes = nb * group_block_bytes(format_);
  // NOTE: as in PackedLinear, a task should stream at least ~32 KiB of weight.
  const int64_t grain = std::max<int64_t>(1, (32 << 10) / group_bytes);
  // Later chunks of a group find its blocks in L1/L2; every chunk unpacks them again.
  // NOTE: unpacking makes these kernels compute-bound at about the rate memory delivers the
  // blocks, so without help the two take turns; a software prefetch 2 KiB down the stream
  // (into L1, per block) lets them overlap. Measured on an AVX-512 Xeon, SmolLM2-135M's 211
  // linears at n = 1, 1 thread: 17.4 ms without, 13.9 / 12.8 / 14.1 ms at 512 B / 2 KiB / 8 KiB.
  const int64_t prefetch = 2048;
  stream_groups<kMaxCols>(n, N, table.max_cols, grain, bp, op, [&](int64_t g, int64_t c0, int C, float* acc, bool first) {
    table.k[C - 1](wp + g * group_bytes, xp + c0 * K, K, nb, acc, first ? prefetch : 0);
  });
  return out;
}

}  // namespace cpu
}  // namespace sprinter
