// CPU twins of the fused ops of sprinter_ext.ops (reference: their torch backends, sprinter_ext/ops/;
// CUDA twins: ops/cuda/ops_cuda_torch.h, same signatures).
//
// Inputs are validated in Python (sprinter_ext/ops/_common.py, _check_tensor); these
// functions re-check only what would make them read out of bounds. Both return
// a per-row status tensor (int8 [B], 0 = ok, 1 = non-finite logits) that the
// Python wrapper turns into NonFiniteLogitsError.
#pragma once

#include "ops/ops.h"

namespace sprinter {
namespace cpu {

// The DraftSample / VerifyTokens signatures of ops.h, on CPU tensors.
DraftSample draft_sample;
VerifyTokens verify_tokens;

}  // namespace cpu
}  // namespace sprinter
