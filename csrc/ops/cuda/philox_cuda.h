// Host-side entry point of the CUDA Philox kernel (csrc/ops/cuda/philox_cuda.cu).
//
// Deliberately free of torch and CUDA headers: the binding (host C++, torch
// headers: ops/ops_py.cpp) calls it with raw pointers and an opaque stream handle, and the .cu
// file is plain CUDA C++17 that nvcc compiles without the torch headers.
#pragma once

#include <stdint.h>

namespace sprinter {
namespace cuda {

// out[b, i] = u(seed, positions[b] & 0xFFFFFFFF, stream, i) for b < batch,
// i < n; out is a contiguous float32 [batch, n] device buffer, positions a
// contiguous int64 [batch] device buffer. `cuda_stream` is a cudaStream_t.
// Returns 0 on success, otherwise the cudaError_t of the failed launch (and
// writes its message into err_msg, at most err_len bytes incl. the NUL).
int launch_philox_uniform(const int64_t* positions, float* out, int64_t batch, int64_t n,
                          uint32_t k0, uint32_t k1, uint32_t stream, void* cuda_stream,
                          char* err_msg, int err_len);

}  // namespace cuda
}  // namespace sprinter
