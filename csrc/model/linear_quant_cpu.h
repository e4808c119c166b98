// QuantLinear: y[n, N] = x[n, K] @ dequant(W)[N, K]^T (+ bias) over GGUF weight blocks kept
// as loaded, with float32 activations: the CPU decode path's linear for `weights="gguf"`.
//
// * Formats (GGUF / llama.cpp ggml block layouts, 32 weights per block):
//     Q4_1: f16 d, f16 m, 16 bytes of nibbles; w[i] = d * q[i] + m, q[i] in 0..15, element i
//           in the low nibble of byte i, element i + 16 in its high nibble (20 bytes);
//     Q8_0: f16 d, 32 int8; w[i] = d * q[i] (34 bytes).
// * Exactness: d and m are f16, so d * q (at most 11 + 8 significant bits) is exact in
//   float32 and the kernels' fma(d, q, m) rounds once, like gguf-py's and transformers'
//   `d * q + m` in float32: the kernels see exactly the dequantised float32 model's weights
//   and differ from a float32 linear over them only in summation order. Activations are
//   never rounded (llama.cpp's Q4_1 path rounds them to 8 bits; this one does not).
// * Layout: rows in groups of 4 (N padded with zero rows), inside a group block by block:
//   the 4 rows' quants, then their scales (and minimums) as float32, so a group is one
//   sequential stream, as in PackedLinear (linear_cpu.h).
// * Kernels chosen at run time (cpu_isa(), capped by `isa` for the tests): AVX-512F, AVX2,
//   scalar. 4 weight rows x up to 6 (AVX-512) or 2 (AVX2) input rows per micro-kernel; each
//   block is unpacked once per chunk of input rows; parallel over groups (at::parallel_for).
// * Any n: n > 16 rows run in chunks of 16 through the same kernels (no float32 copy of the
//   weight is kept; dequantize() makes one on request).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "linear_cpu.h"

namespace pybind11 {
class module_;
}

namespace sprinter {
namespace cpu {

enum class QuantFormat : int { kQ4_1 = 0, kQ8_0 = 1 };

// "q4_1" / "q8_0" <-> QuantFormat; std::invalid_argument on an unknown name.
QuantFormat quant_format(const std::string& name);
std::string quant_format_name(QuantFormat f);
// Bytes of one 32-weight block as GGUF stores it (20 for Q4_1, 34 for Q8_0).
int64_t quant_block_bytes(QuantFormat f);

constexpr int64_t kQuantBlock = 32;

class QuantLinear {
 public:
  QuantLinear() = default;
  // blocks: uint8 [N, (K / 32) * block_bytes] on the CPU, each row the GGUF blocks of one
  // output row; bias optional float32 [N]. std::invalid_argument on anything else (the
  // f16 scales must be finite).
  QuantLinear(const at::Tensor& blocks, QuantFormat format, const at::Tensor& bias);

  // x [..., K] float32 -> [..., N] float32. `isa` caps the kernel (clamped to cpu_isa()).
  at::Tensor forward(const at::Tensor& x, Isa isa) const;
  at::Tensor forward(const at::Tensor& x) const { return forward(x, cpu_isa()); }
  // The float32 weight [N, K] these blocks stand for (gguf-py's dequantisation, bitwise).
  at::Tensor dequantize() const;

  bool defined() const { return packed_.defined(); }
  QuantFormat format() const { return format_; }
  int64_t in_features() const { return K_; }
  int64_t out_features() const { return N_; }
  // The bytes a forward reads from the weight (packed quants and scales + bias).
  int64_t weight_bytes() const;

 private:
  at::Tensor packed_;  // uint8 [G, K / 32, group_block_bytes] (G = ceil(N / 4))
  at::Tensor bias_;    // optional float32 [N]
  QuantFormat format_ = QuantFormat::kQ4_1;
  int64_t N_ = 0, K_ = 0;
};

// Registers sprinter_ext._C.QuantLinear (used by the tests, bench/ and models/gguf_weights.py).
void register_linear_quant_cpu(pybind11::module_& m);

}  // namespace cpu
}  // namespace sprinter
