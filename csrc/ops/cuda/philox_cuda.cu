// CUDA twin of the sprinter_ext randomness contract (see csrc/common/philox.h).
// Compiled only when torch was built with CUDA (CMake: SPRINTER_WITH_CUDA=ON).
// Plain CUDA C++17, no torch headers; by hand:
//   nvcc -std=c++17 -O3 -I csrc -c csrc/ops/cuda/philox_cuda.cu -o /tmp/philox_cuda.o
#include <cuda_runtime.h>

#include <stdio.h>

#include "common/philox.h"
#include "philox_cuda.h"

namespace sprinter {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// One thread per (row, Philox block): 4 consecutive uniforms of one row.
// grid = (ceil(blocks / kThreads), batch); blocks = ceil(n / 4) <= 2**32.
__global__ void philox_uniform_kernel(const int64_t* __restrict__ positions,  // [batch]
                                      float* __restrict__ out,                // [batch, n]
                                      int64_t n, int64_t blocks, uint32_t k0, uint32_t k1,
                                      uint32_t stream) {
  const int64_t row = blockIdx.y;
  const int64_t blk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (blk >= blocks) return;
  const uint32_t pos = static_cast<uint32_t>(static_cast<uint64_t>(positions[row]) & 0xFFFFFFFFull);
  const philox::U32x4 w =
      philox::block_words(static_cast<uint32_t>(blk), pos, stream, k0, k1);
  float* dst = out + row * n + 4 * blk;
  const int64_t left = n - 4 * blk;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j < left) dst[j] = philox::word_to_uniform(w.v[j]);
  }
}

}  // namespace

int launch_philox_uniform(const int64_t* positions, float* out, int64_t batch, int64_t n,
                          uint32_t k0, uint32_t k1, uint32_t stream, void* cuda_stream,
                          char* err_msg, int err_len) {
  if (batch == 0 || n == 0) return 0;
  const int64_t blocks = (n + 3) / 4;
  const int64_t grid_x = (blocks + kThreads - 1) / kThreads;
  // gridDim.y is limited to 65535 rows per launch: loop over row chunks.
  constexpr int64_t kMaxRows = 65535;
  for (int64_t r0 = 0; r0 < batch; r0 += kMaxRows) {
    const int64_t rows = (batch - r0 < kMaxRows) ? (batch - r0) : kMaxRows;
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(rows));
    philox_uniform_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(cuda_stream)>>>(
        positions + r0, out + r0 * n, n, blocks, k0, k1, stream);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      if (err_msg != nullptr && err_len > 0) {
        snprintf(err_msg, static_cast<size_t>(err_len), "%s", cudaGetErrorString(err));
      }
      return static_cast<int>(err);
    }
  }
  return 0;
}

}  // namespace cuda
}  // namespace sprinter
