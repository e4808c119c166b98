// Python binding of PackedLinear (linear_cpu.h), for the tests and bench/:
//   sprinter_ext._C.PackedLinear(weight [N, K], bias [N] | None)
//       .forward(x [..., K], isa: str | None) -> [..., N]
//       .in_features, .out_features, .weight_bytes
//   sprinter_ext._C.cpu_isa() -> "scalar" | "avx2" | "avx512" | "avx512_bf16"
// `isa` caps the kernel ("scalar" runs the fallback on any CPU); bad arguments raise
// sprinter_ext.errors.InvalidArgumentError (a ValueError).
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "linear_cpu.h"

namespace py = pybind11;

namespace sprinter {
namespace cpu {
namespace {

[[noreturn]] void raise_invalid(const std::string& msg) {
  py::object err = py::module_::import("sprinter_ext.errors").attr("InvalidArgumentError");
  PyErr_SetString(err.ptr(), msg.c_str());
  throw py::error_already_set();
}

Isa parse_isa(const std::optional<std::string>& name) {
  if (!name) return cpu_isa();
  try {
    return isa_from_name(*name);
  } catch (const std::invalid_argument& e) {
    raise_invalid(e.what());
  }
}

}  // namespace

void register_linear_cpu(py::module_& m) {
  m.def("cpu_isa", [] { return isa_name(cpu_isa()); },
        "The instruction set of the CPU linear kernels on this machine, detected at run time.");
  py::class_<PackedLinear>(m, "PackedLinear",
                           "y = x @ W^T + b, streaming W once for up to 16 rows of x (csrc/model/linear_cpu.h).")
      .def(py::init([](const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
             try {
               return PackedLinear(weight, bias ? *bias : at::Tensor());
             } catch (const std::invalid_argument& e) {
               raise_invalid(e.what());
             }
           }),
           py::arg("weight"), py::arg("bias") = py::none())
      .def(
          "forward",
          [](const PackedLinear& self, const at::Tensor& x, const std::optional<std::string>& isa) {
            const Isa cap = parse_isa(isa);
            try {
              py::gil_scoped_release no_gil;
              return self.forward(x, cap);
            } catch (const std::invalid_argument& e) {
              raise_invalid(e.what());
            }
          },
          py::arg("x"), py::arg("isa") = py::none())
      .def_property_readonly("in_features", &PackedLinear::in_features)
      .def_property_readonly("out_features", &PackedLinear::out_features)
      .def_property_readonly("weight_bytes", &PackedLinear::weight_bytes);
}

}  // namespace cpu
}  // namespace sprinter
