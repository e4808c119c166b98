// Python binding of QuantLinear (linear_quant_cpu.h), for models/gguf_weights.py, the tests
// and bench/:
//   sprinter_ext._C.QuantLinear(blocks uint8 [N, K / 32 * block_bytes], format "q4_1" | "q8_0",
//                               bias float32 [N] | None)
//       .forward(x float32 [..., K], isa: str | None) -> float32 [..., N]
//       .dequantize() -> float32 [N, K]
//       .format, .in_features, .out_features, .weight_bytes
// Bad arguments raise sprinter_ext.errors.InvalidArgumentError (a ValueError).
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "common/py_checks.h"
#include "linear_quant_cpu.h"

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

void register_linear_quant_cpu(py::module_& m) {
  py::class_<QuantLinear>(m, "QuantLinear",
                          "y = x @ dequant(W)^T + b over GGUF Q4_1 / Q8_0 blocks, float32 activations "
                          "(csrc/model/linear_quant_cpu.h).")
      .def(py::init([](const at::Tensor& blocks, const std::string& format, const std::optional<at::Tensor>& bias) {
             return named([&] { return QuantLinear(blocks, quant_format(format), bias ? *bias : at::Tensor()); });
           }),
           py::arg("blocks"), py::arg("format"), py::arg("bias") = py::none())
      .def(
          "forward",
          [](const QuantLinear& self, const at::Tensor& x, const std::optional<std::string>& isa) {
            return named([&] {
              const Isa cap = isa ? isa_from_name(*isa) : cpu_isa();
              py::gil_scoped_release no_gil;
              return self.forward(x, cap);
            });
          },
          py::arg("x"), py::arg("isa") = py::none())
      .def("dequantize", [](const QuantLinear& self) { return named([&] { return self.dequantize(); }); })
      .def_property_readonly("format", [](const QuantLinear& self) { return quant_format_name(self.format()); })
      .def_property_readonly("in_features", &QuantLinear::in_features)
      .def_property_readonly("out_features", &QuantLinear::out_features)
      .def_property_readonly("weight_bytes", &QuantLinear::weight_bytes);
}

}  // namespace cpu
}  // namespace sprinter
