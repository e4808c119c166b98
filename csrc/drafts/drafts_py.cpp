// Python bindings of the model-free drafts (drafts_py.h).
#include "drafts_py.h"

#include <torch/csrc/utils/pybind.h>

#include <memory>
#include <stdexcept>

#include "common/py_checks.h"
#include "drafts/ngram.h"

namespace py = pybind11;

namespace sprinter {
namespace drafts {

void register_ngram(py::module_& m) {
  py::class_<NgramProposer, engine::Proposer, std::shared_ptr<NgramProposer>>(
      m, "NgramProposer",
      "The 'ngram' draft: prompt + output lookup, longest match first (csrc/drafts/ngram.h; Python twin "
      "sprinter_ext.drafts.lookup.NgramProposer).")
      .def(py::init([](py::handle min_n, py::handle max_n) {
             const int64_t lo = bind::checked_int(min_n, "min_n", 1, 64);
             const int64_t hi = bind::checked_int(max_n, "max_n", 1, 64);
             try {
               return std::make_shared<NgramProposer>(lo, hi);
             } catch (const std::invalid_argument& e) {
               bind::raise_named("InvalidArgumentError", e.what());
             }
           }),
           py::kw_only(), py::arg("min_n") = 1, py::arg("max_n") = 4)
      .def_property_readonly("min_n", &NgramProposer::min_n)
      .def_property_readonly("max_n", &NgramProposer::max_n)
      .def_property_readonly("indexed", &NgramProposer::indexed);
}

}  // namespace drafts
}  // namespace sprinter
