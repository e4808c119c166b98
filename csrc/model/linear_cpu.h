// PackedLinear: y[n, N] = x[n, K] @ W[N, K]^T (+ bias) for the CPU decode path of the
// native model, built so that a forward of n <= kMaxSmallRows rows streams every weight
// row from memory exactly once, whatever n (the decode step, the draft step, the
// verification of k+1 tokens). ATen's eager linear does not at small n: it re-reads or
// repacks the weight, so 5 rows cost 1.4-2x one row.
//
// * Weights: float32 or bfloat16, [N, K], CPU. The constructor packs them once (a copy:
//   K zero-padded to Kp, a multiple of kPad; rows in groups of 4 interleaved block by
//   block so that each group is one sequential stream, layout in linear_cpu.cpp). The
//   original is kept for n > kMaxSmallRows (it is the model's own tensor, no copy).
// * Kernels, chosen at run time from the CPU's features (cpu_isa()):
//     AVX-512 float32 FMA; AVX-512-BF16 vdpbf16ps for bf16 weights (x rounded to bf16,
//     as ATen's bf16 linear sees it); AVX2 (bf16 weights widened to float32 in
//     registers); a scalar fallback. All accumulate in float32.
// * Register blocking: 4 weight rows x up to 6 (AVX-512) or 3 (AVX2) input rows per
//   micro-kernel; the 4 weight rows (4 * Kp elements) stay in L1 while every chunk of input
//   rows passes over them. The AVX2 kernels prefetch the stream ahead into L2 (n >= 2).
// * Parallel over groups of output rows with ATen's thread pool (at::parallel_for).
// * n > kMaxSmallRows (prefill) goes to at::linear with the original weight.
//
// Not bitwise equal to at::linear (different accumulation order): callers that need
// transformers' exact bits use at::linear (NativeModel's op-for-op path).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace pybind11 {
class module_;
}

namespace sprinter {
namespace cpu {

// Instruction sets of the kernels, weakest first; a kernel runs only if cpu_isa() >= it.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// The best instruction set this CPU (and this build) supports, detected once at run time.
Isa cpu_isa();
std::string isa_name(Isa isa);
// "scalar" / "avx2" / "avx512" / "avx512_bf16" -> Isa; std::invalid_argument naming them otherwise.
Isa isa_from_name(const std::string& name);

class QuantLinear;                     // linear_quant_cpu.h
class HalfLinear;                      // linear_half_cpu.h
enum class QuantFormat : int;          // linear_quant_cpu.h

constexpr int64_t kMaxSmallRows = 16;  // n above this: at::linear
constexpr int64_t kPad = 32;           // K padding of the packed weight (one bf16 zmm)

class PackedLinear {
 public:
  PackedLinear() = default;
  // weight [N, K] float32/bfloat16 on the CPU (any strides: a transposed GPT-2 Conv1D
  // weight is copied once here); bias optional [N], same dtype. std::invalid_argument
  // on anything else.
  PackedLinear(const at::Tensor& weight, const at::Tensor& bias);

  // x [..., K] of the weight's dtype -> [..., N]. `isa` caps the kernel (tests run every
  // path on one machine); it is clamped to cpu_isa(). The bf16 kernel of an fp32 weight
  // is the AVX-512 one.
  at::Tensor forward(const at::Tensor& x, Isa isa) const;
  at::Tensor forward(const at::Tensor& x) const { return forward(x, cpu_isa()); }

  // This linear with its small-n forward over GGUF weight blocks (QuantLinear, float32
  // only) instead of its packed copy, which is released; n > kMaxSmallRows keeps
  // at::linear over the original weight, so the blocks must stand for that weight (the
  // caller's contract: models/weight_formats.py checks it). std::invalid_argument when
  // the blocks' shape is not [N, K] of this linear or the weight is not float32.
  PackedLinear with_blocks(const at::Tensor& blocks, QuantFormat format) const;
  bool quantized() const { return quant_ != nullptr; }

  // This linear with its small-n forward over `weight16` (float16 or bfloat16 [N, K]: the
  // 16-bit storage of this float32 linear's weight, float32 activations; HalfLinear)
  // instead of its packed copy, which is released; n > kMaxSmallRows keeps at::linear over
  // the original float32 weight (models/weight_formats.py says what that means for a
  // format). std::invalid_argument when the shape is not [N, K], the dtype not 16-bit, or
  // this linear's weight not float32.
  PackedLinear with_weight16(const at::Tensor& weight16) const;
  bool half() const { return half_ != nullptr; }
  // The float32 [N, K] weight this linear was built from (the model's own tensor).
  const at::Tensor& weight() const { return weight_; }

  bool defined() const { return packed_.defined() || quant_ != nullptr || half_ != nullptr; }
  int64_t in_features() const { return K_; }
  int64_t out_features() const { return N_; }
  // The bytes a small-n forward reads from the weight (packed rows + bias).
  int64_t weight_bytes() const;

 private:
  at::Tensor weight_;  // the original [N, K] (for n > kMaxSmallRows)
  at::Tensor bias_;    // optional [N] float32 (the kernels add it in float32)
  at::Tensor bias_orig_;  // optional [N], the weight's dtype (for n > kMaxSmallRows)
  at::Tensor packed_;  // [G, Kp / B, 4, B] contiguous (G = ceil(N / 4), B = one zmm of the dtype)
  std::shared_ptr<const QuantLinear> quant_;  // with_blocks(): the small-n forward
  std::shared_ptr<const HalfLinear> half_;    // with_weight16(): the small-n forward
  int64_t N_ = 0, K_ = 0, Kp_ = 0;
};

// Registers sprinter_ext._C.PackedLinear and _C.cpu_isa() (used by the tests and bench/).
void register_linear_cpu(pybind11::module_& m);

}  // namespace cpu
}  // namespace sprinter
