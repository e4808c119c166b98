// The CUDA fused ops on torch tensors: the signatures of csrc/ops/ops.h and the results of the CPU
// twins of csrc/ops/ops_cpu.h (sprinter::cpu::draft_sample / verify_tokens), for CUDA
// tensors. Compiled only when SPRINTER_WITH_CUDA (CMakeLists.txt); kernels in
// csrc/ops/cuda/ops_cuda.cu.
//
// Unlike the CPU twins, these never wait for the GPU: the status tensor ([B] int8,
// 1 = non-finite logits) stays on the device, and such a row gets fixed "nothing
// sampled" values instead (draft: token -1, q_token 0, score 0, a zero q row;
// verify: num_accepted -1 and a row of -1), as the Triton backend returns. The
// caller decides whether to read status (a host sync) or to act on those values.
// Launches go to the current CUDA stream of the inputs' device, allocate only
// through torch's caching allocator, and can be captured in a CUDA graph.
#pragma once

#include "ops/ops.h"

namespace sprinter {
namespace cuda {

// The DraftSample / VerifyTokens signatures of ops.h, on tensors of one CUDA device.
// draft_sample: at most 8 verifier layers, each at most 1024 wide. verify_tokens: an
// out-of-range draft token counts as rejected.
DraftSample draft_sample;
VerifyTokens verify_tokens;

}  // namespace cuda
}  // namespace sprinter
