// What the small-n CPU linears over 4-row weight groups share (linear_quant_cpu.cpp,
// linear_half_cpu.cpp): the input checks with the output allocation, and the driver that
// streams the groups in parallel and runs each group's micro-kernel over chunks of the
// input rows. Each linear keeps its own weight layout, kernels and prefetch distance.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sprinter {
namespace cpu {

constexpr int kGroupRows = 4;  // output rows per group (one weight stream)

// The output [..., N] of a forward over x [..., K] float32 on the CPU, and the row count n;
// std::invalid_argument "<cls>: ..." for any other x.
inline at::Tensor small_linear_out(const at::Tensor& x, int64_t K, int64_t N, const char* cls, int64_t* n) {
  auto bad = [cls](const std::string& msg) { throw std::invalid_argument(std::string(cls) + ": " + msg); };
  if (!x.defined() || x.dim() < 1 || x.size(-1) != K) bad("x must have K=" + std::to_string(K) + " columns");
  if (x.scalar_type() != at::kFloat) bad("x must be float32, got " + std::string(c10::toString(x.scalar_type())));
  if (!x.device().is_cpu()) bad("x must be on the CPU");
  *n = x.numel() / K;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return at::empty(shape, x.options());
}

// out[i * N + j] = acc + bias[j] for the n input rows i and N outputs j. Groups of
// kGroupRows outputs run in parallel, `grain` groups a task; inside a group the rows go in
// as few, equal chunks of at most `max_cols` as the register budget allows, and
// kernel(g, c0, C, acc, first) writes acc[c * kGroupRows + r] for rows c0 .. c0 + C - 1
// (`first`: the group's first chunk, the one that streams its weights from memory).
template <int kMaxCols, class Kernel>
void stream_groups(int64_t n, int64_t N, int max_cols, int64_t grain, const float* bias, float* out,
                   Kernel&& kernel) {
  const int64_t groups = (N + kGroupRows - 1) / kGroupRows;
  const int64_t passes = (n + max_cols - 1) / max_cols;
  const int64_t chunk = (n + passes - 1) / passes;
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    float acc[kGroupRows * kMaxCols];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t j0 = kGroupRows * g;
      const int R = static_cast<int>(std::min<int64_t>(kGroupRows, N - j0));  // rows past R are padding
      for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int C = static_cast<int>(std::min<int64_t>(chunk, n - c0));
        kernel(g, c0, C, acc, c0 == 0);
        for (int c = 0; c < C; ++c)
          for (int r = 0; r < R; ++r) out[(c0 + c) * N + j0 + r] = acc[c * kGroupRows + r] + (bias ? bias[j0 + r] : 0.0f);
      }
    }
  });
}

}  // namespace cpu
}  // namespace sprinter
