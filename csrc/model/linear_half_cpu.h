// HalfLinear: y[n, N] = x[n, K] @ float32(W16)[N, K]^T (+ bias) over 16-bit weight storage
// (IEEE float16 or bfloat16) with float32 activations: the CPU decode path's linear for
// `weights="f16"` / `weights="bf16"` (models/weight_formats.py).
//
// * Weights: float16 or bfloat16 [N, K], CPU; bias optional float32 [N]. Packed once in
//   PackedLinear's float32 layout with 2-byte elements: rows in groups of 4, K zero-padded
//   to a multiple of kPad, blocks of 16 elements, the 4 rows of a block one after another,
//   so a group is one sequential stream (16 elements = one zmm of float32 once widened).
// * Arithmetic: each weight is widened to float32 exactly (F16C vcvtph2ps for float16, a
//   16-bit shift for bfloat16) and multiplied into float32 accumulators with FMA; x is
//   never rounded. Every kernel adds the products into each vector lane in the order the
//   float32 PackedLinear kernel of the same ISA does (AVX-512: 16 lanes, AVX2: 8 lanes,
//   scalar: one sum) and reduces the lanes with the same function, so a HalfLinear forward
//   is bitwise equal to PackedLinear's over float32(W16) on the same ISA.
// * Kernels chosen at run time (cpu_isa(), capped by `isa` for the tests): AVX-512F,
//   AVX2 + F16C, scalar. 4 weight rows x up to 6 (AVX-512) or 3 (AVX2) input rows per
//   micro-kernel; parallel over groups of output rows (at::parallel_for).
// * Any n: rows run in chunks of kMaxSmallRows through the same kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "linear_cpu.h"

namespace pybind11 {
class module_;
}

namespace sprinter {
namespace cpu {

class HalfLinear {
 public:
  HalfLinear() = default;
  // weight float16/bfloat16 [N, K] on the CPU (any strides), bias optional float32 [N];
  // std::invalid_argument on anything else.
  HalfLinear(const at::Tensor& weight, const at::Tensor& bias);

  // x [..., K] float32 -> [..., N] float32. `isa` caps the kernel (clamped to cpu_isa()).
  at::Tensor forward(const at::Tensor& x, Isa isa) const;
  at::Tensor forward(const at::Tensor& x) const { return forward(x, cpu_isa()); }

  bool defined() const { return packed_.defined(); }
  at::ScalarType dtype() const { return dtype_; }
  int64_t in_features() const { return K_; }
  int64_t out_features() const { return N_; }
  // The bytes a forward reads from the weight (packed 16-bit rows + bias).
  int64_t weight_bytes() const;

 private:
  at::Tensor packed_;  // [G, Kp / 16, 4, 16] of the weight's dtype (G = ceil(N / 4))
  at::Tensor bias_;    // optional float32 [N]
  at::ScalarType dtype_ = at::kHalf;
  int64_t N_ = 0, K_ = 0, Kp_ = 0;
};

// Registers sprinter_ext._C.HalfLinear (used by the tests and bench/).
void register_linear_half_cpu(pybind11::module_& m);

}  // namespace cpu
}  // namespace sprinter
