// Registers the shared definitions of csrc/common/ in sprinter_ext._C (common_py.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace sprinter {

// Stream, seed_key, SamplingSettings and NONFINITE_MESSAGE: the one C++ definition
// of each, for the Python side to be built from or checked against.
void register_common(pybind11::module_& m);

}  // namespace sprinter
