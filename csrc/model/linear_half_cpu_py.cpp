// Python binding of HalfLinear (linear_half_cpu.h), for the tests and bench/:
//   sprinter_ext._C.HalfLinear(weight float16 | bfloat16 [N, K], bias float32 [N] | None)
//       .forward(x float32 [..., K], isa: str | None) -> float32 [..., N]
//       .dtype ("float16" | "bfloat16"), .in_features, .out_features, .weight_bytes
// Bad arguments raise sprinter_ext.errors.InvalidArgumentError (a ValueError).
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "common/py_checks.h"
#include "linear_half_cpu.h"

namespace py = pybind11;

namespace sprinter {
namespace cpu {
namespace {

template <typename F> auto named(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    bind::raise_named("InvalidArgumentError", e.what());
  }
}

}  // namespace

void register_linear_half_cpu(py::module_& m) {
  py::class_<HalfLinear>(m, "HalfLinear",
                         "y = x @ float32(W)^T + b over float16 / bfloat16 weights, float32 activations "
                         "(csrc/model/linear_half_cpu.h).")
      .def(py::init([](const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
             return named([&] { return HalfLinear(weight, bias ? *bias : at::Tensor()); });
           }),
           py::arg("weight"), py::arg("bias") = py::none())
      .def(
          "forward",
          [](const HalfLinear& self, const at::Tensor& x, const std::optional<std::string>& isa) {
            return named([&] {
              const Isa cap = isa ? isa_from_name(*isa) : cpu_isa();
              py::gil_scoped_release no_gil;
              return self.forward(x, cap);
            });
          },
          py::arg("x"), py::arg("isa") = py::none())
      .def_property_readonly("dtype",
                             [](const HalfLinear& self) { return self.dtype() == at::kHalf ? "float16" : "bfloat16"; })
      .def_property_readonly("in_features", &HalfLinear::in_features)
      .def_property_readonly("out_features", &HalfLinear::out_features)
      .def_property_readonly("weight_bytes", &HalfLinear::weight_bytes);
}

}  // namespace cpu
}  // namespace sprinter
