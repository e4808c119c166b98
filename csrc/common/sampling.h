// The sampling settings every fused op and the native loop take, and the message of a
// non-finite-logits failure: one definition for C++ and CUDA (plain C++17, no torch).
//
// The rule for what is accepted is sprinter_ext.sampling.SamplingSettings (Python); the
// bindings validate by constructing one (common/py_checks.h) and hand the kernels this
// struct. It is bound as sprinter_ext._C.SamplingSettings (common/common_py.cpp), and
// tests/test_native_boundary.py checks that its fields are the Python dataclass's.
#pragma once

#include <stdint.h>

namespace sprinter {

// temperature 0 is greedy; top_k <= 0 or >= V and top_p >= 1 disable the cuts.
// NOTE: float32, as every engine computes (1/t, logits / t in float32).
struct SamplingSettings {
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
};

// sprinter_ext.errors.NonFiniteLogitsError's message, whichever engine raises it
// (bound as _C.NONFINITE_MESSAGE; sprinter_ext.sampling.NONFINITE_MESSAGE is checked
// against it).
constexpr const char* kNonFiniteMessage =
    "the model produced NaN/inf logits; generation stopped without output. "
    "Check the weights, the dtype (fp16 overflow?) and the inputs";

}  // namespace sprinter
