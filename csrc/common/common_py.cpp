// Python bindings of csrc/common/: the randomness contract's Stream values and seed
// split (philox.h), the sampling settings struct and the non-finite message (sampling.h).
//
// sprinter_ext._rng.Stream, _rng.seed_key, sampling.SamplingSettings and
// sampling.NONFINITE_MESSAGE are the Python side (they must work without a build, so
// the torch reference runs from a bare source tree); tests/test_native_boundary.py
// checks each against these bindings, and the Triton kernels' plain-int constants too.
#include "common/common_py.h"

#include <string>

#include "common/philox.h"
#include "common/py_checks.h"
#include "common/sampling.h"

namespace py = pybind11;

namespace sprinter {

void register_common(py::module_& m) {
  py::enum_<philox::Stream>(m, "Stream", "What a random number is for (csrc/common/philox.h).")
      .value("DRAFT", philox::DRAFT)
      .value("TARGET", philox::TARGET)
      .value("COIN", philox::COIN)
      .value("RESIDUAL", philox::RESIDUAL);

  m.def(
      "seed_key",
      [](py::handle seed) {
        const philox::Key key = philox::seed_key(bind::checked_u64(seed, "seed"));
        return py::make_tuple(key.k0, key.k1);
      },
      py::arg("seed"), "The Philox key (k0, k1) of a seed in [0, 2**64): (seed & 0xFFFFFFFF, seed >> 32).");

  py::class_<SamplingSettings>(
      m, "SamplingSettings",
      "The sampling settings the kernels take (csrc/common/sampling.h); the mirror of "
      "sprinter_ext.sampling.SamplingSettings, checked by it (named errors). temperature and "
      "top_p are stored as float32, as every engine computes.")
      .def(py::init([](py::handle temperature, py::handle top_k, py::handle top_p) {
             return bind::checked_settings(temperature, top_k, top_p);
           }),
           py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0)
      .def_readonly("temperature", &SamplingSettings::temperature)
      .def_readonly("top_k", &SamplingSettings::top_k)
      .def_readonly("top_p", &SamplingSettings::top_p)
      .def_property_readonly_static("fields",
                                    [](py::object) { return py::make_tuple("temperature", "top_k", "top_p"); })
      .def("__repr__", [](const SamplingSettings& s) {
        return "SamplingSettings(temperature=" + std::to_string(s.temperature) +
               ", top_k=" + std::to_string(s.top_k) + ", top_p=" + std::to_string(s.top_p) + ")";
      });

  m.attr("NONFINITE_MESSAGE") = py::str(kNonFiniteMessage);
}

}  // namespace sprinter
