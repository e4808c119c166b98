// Registers the native loop's Python classes in sprinter_ext._C (engine_py.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace sprinter {
namespace engine {

// Registers Runner, PyRunner and Generation; returns the Runner base class, for
// other Runner implementations (NativeModel) to derive from.
pybind11::handle register_engine(pybind11::module_& m);

}  // namespace engine
}  // namespace sprinter
