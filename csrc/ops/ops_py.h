// Registers the randomness contract's and the fused ops' Python functions in
// sprinter_ext._C (ops_py.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace sprinter {

// philox4x32, philox_uniform(_batched), draft_sample_cpu / verify_tokens_cpu (and the
// _cuda twins in CUDA builds), MAX_N.
void register_ops(pybind11::module_& m);

}  // namespace sprinter
