// Argument checks shared by the pybind11 bindings (common/common_py.cpp, ops/ops_py.cpp,
// engine/engine_py.cpp).
//
// The rule for the sampling settings lives in one place, sprinter_ext/sampling.py
// (SamplingSettings: temperature 0 or in [TEMPERATURE_MIN, TEMPERATURE_MAX], top_k in
// [0, 2**63), top_p in (0, 1]); the bindings validate by constructing one, so a caller
// of the private _C functions gets the same named errors (InvalidArgumentError /
// ArgumentTypeError of sprinter_ext.errors) as a caller of the public API, and no
// constant is written twice. Other scalars raise the same two classes from here.
// Call these with the GIL held, before releasing it.
#pragma once

#include <pybind11/pybind11.h>

#include <Python.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "common/sampling.h"

namespace sprinter {
namespace bind {

namespace py = pybind11;

// Raise sprinter_ext.errors.<cls>(msg) as a Python exception from C++.
[[noreturn]] inline void raise_named(const char* cls, const std::string& msg) {
  py::object type = py::module_::import("sprinter_ext.errors").attr(cls);
  PyErr_SetString(type.ptr(), msg.c_str());
  throw py::error_already_set();
}

inline std::string type_name_of(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// A Python int (not bool; numpy ints accepted through __index__) in [lo, hi].
inline int64_t checked_int(py::handle obj, const char* name, int64_t lo, int64_t hi) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()) || PyFloat_Check(obj.ptr())) {
    raise_named("ArgumentTypeError", std::string(name) + " must be an int, got " + type_name_of(obj));
  }
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  if (value < py::int_(lo) || value > py::int_(hi)) {
    raise_named("InvalidArgumentError", std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                                            std::to_string(hi) + "], got " + py::repr(value).cast<std::string>());
  }
  return static_cast<int64_t>(PyLong_AsLongLong(value.ptr()));
}

// A Python int (not bool) in [0, 2**64).
inline uint64_t checked_u64(py::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()) || PyFloat_Check(obj.ptr())) {
    raise_named("ArgumentTypeError", std::string(name) + " must be an int, got " + type_name_of(obj));
  }
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  if (value < py::int_(0) || value > py::int_(std::numeric_limits<uint64_t>::max())) {
    raise_named("InvalidArgumentError", std::string(name) + " must be in [0, 2**64), got " +
                                            py::repr(value).cast<std::string>());
  }
  return static_cast<uint64_t>(PyLong_AsUnsignedLongLong(value.ptr()));
}

// A real number (int or float, not bool), not NaN.
inline double checked_number(py::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !(PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr()))) {
    raise_named("ArgumentTypeError", std::string(name) + " must be a number, got " + type_name_of(obj));
  }
  const double v = py::cast<double>(obj);
  if (std::isnan(v)) raise_named("InvalidArgumentError", std::string(name) + " must not be NaN");
  return v;
}

// sprinter_ext.sampling.SamplingSettings(temperature, top_k, top_p), read back as the
// kernels' struct (float32 temperature and top_p, as every engine computes).
inline SamplingSettings checked_settings(py::handle temperature, py::handle top_k, py::handle top_p) {
  py::object s = py::module_::import("sprinter_ext.sampling").attr("SamplingSettings")(temperature, top_k, top_p);
  return SamplingSettings{static_cast<float>(py::cast<double>(s.attr("temperature"))),
                          py::cast<int64_t>(s.attr("top_k")),
                          static_cast<float>(py::cast<double>(s.attr("top_p")))};
}

}  // namespace bind
}  // namespace sprinter
