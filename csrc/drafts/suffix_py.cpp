// Python binding of the `suffix` draft (suffix.h). The options' rule and defaults live in
// SuffixOptions (C++) only: _C.SuffixProposer(**options) and the Python reference
// (sprinter_ext/drafts/suffix.py, through suffix_options()) both check them here.
#include "drafts/suffix_py.h"

#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <stdexcept>

#include "common/py_checks.h"
#include "drafts/suffix.h"

namespace py = pybind11;

namespace sprinter {
namespace drafts {
namespace {

constexpr int64_t kLo = std::numeric_limits<int64_t>::min();
constexpr int64_t kHi = std::numeric_limits<int64_t>::max();

// Types checked here (ArgumentTypeError), values by SuffixOptions::validate (InvalidArgumentError).
SuffixOptions checked_options(py::handle max_depth, py::handle min_match, py::handle alpha, py::handle min_confidence,
                              py::handle max_global_tokens) {
  SuffixOptions o;
  o.max_depth = bind::checked_int(max_depth, "max_depth", kLo, kHi);
  o.min_match = bind::checked_int(min_match, "min_match", kLo, kHi);
  o.alpha = bind::checked_number(alpha, "alpha");
  o.min_confidence = bind::checked_number(min_confidence, "min_confidence");
  o.max_global_tokens = bind::checked_int(max_global_tokens, "max_global_tokens", kLo, kHi);
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    bind::raise_named("InvalidArgumentError", e.what());
  }
  return o;
}

py::dict options_dict(const SuffixOptions& o) {
  py::dict d;
  d["max_depth"] = o.max_depth;
  d["min_match"] = o.min_match;
  d["alpha"] = o.alpha;
  d["min_confidence"] = o.min_confidence;
  d["max_global_tokens"] = o.max_global_tokens;
  return d;
}

// Runs f, turning the proposer's std::invalid_argument into InvalidArgumentError.
template <typename F>
auto named(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    bind::raise_named("InvalidArgumentError", e.what());
  }
}

}  // namespace

void register_suffix(py::module_& m) {
  const SuffixOptions d;
  m.def(
      "suffix_options",
      [](py::object max_depth, py::object min_match, py::object alpha, py::object min_confidence,
         py::object max_global_tokens) {
        return options_dict(checked_options(max_depth, min_match, alpha, min_confidence, max_global_tokens));
      },
      py::kw_only(), py::arg("max_depth") = d.max_depth, py::arg("min_match") = d.min_match,
      py::arg("alpha") = d.alpha, py::arg("min_confidence") = d.min_confidence,
      py::arg("max_global_tokens") = d.max_global_tokens,
      "The suffix draft's options, checked (named errors) and completed with the defaults, as a dict.");

  py::class_<SuffixProposer, engine::Proposer, std::shared_ptr<SuffixProposer>>(
      m, "SuffixProposer",
      "The `suffix` draft (SuffixDecoding, arXiv 2411.04975): depth-bounded suffix tries over this request "
      "and over earlier requests' outputs (csrc/drafts/suffix.h; the Python reference is "
      "sprinter_ext.drafts.suffix.SuffixProposer, which proposes the same tokens).")
      .def(py::init([](py::object max_depth, py::object min_match, py::object alpha, py::object min_confidence,
                       py::object max_global_tokens) {
             return std::make_shared<SuffixProposer>(
                 checked_options(max_depth, min_match, alpha, min_confidence, max_global_tokens));
           }),
           py::kw_only(), py::arg("max_depth") = d.max_depth, py::arg("min_match") = d.min_match,
           py::arg("alpha") = d.alpha, py::arg("min_confidence") = d.min_confidence,
           py::arg("max_global_tokens") = d.max_global_tokens)
      .def(
          "begin", [](SuffixProposer& p, const std::vector<int64_t>& prompt) { named([&] { p.begin(prompt); }); },
          py::arg("prompt"), "Start a request with its prompt ids (drops an unfinished one).")
      .def(
          "propose",
          [](SuffixProposer& p, const std::vector<int64_t>& seq, int64_t max_tokens) {
            engine::LookupDraft out = named([&] { return p.propose(seq, max_tokens); });
            return py::make_tuple(out.tokens, out.confidence, out.match_length);
          },
          py::arg("seq"), py::arg("max_tokens"),
          "(tokens, confidence, match_length): at most max_tokens ids to follow seq (prompt + output so far); "
          "confidence[i] estimates that tokens[:i + 1] are all accepted.")
      .def(
          "end", [](SuffixProposer& p, const std::vector<int64_t>& seq) { named([&] { p.end(seq); }); },
          py::arg("seq"), "The request finished with seq; its output joins the global trie.")
      .def_property_readonly("options", [](const SuffixProposer& p) { return options_dict(p.options()); })
      .def("nodes", &SuffixProposer::nodes, "Live nodes in both tries (roots included).")
      .def("global_nodes", &SuffixProposer::global_nodes)
      .def("request_nodes", &SuffixProposer::request_nodes)
      .def("global_tokens", &SuffixProposer::global_tokens, "Tokens of earlier outputs in the global trie.")
      .def("global_requests", &SuffixProposer::global_requests, "Earlier outputs in the global trie.")
      .def("indexed_tokens", &SuffixProposer::indexed_tokens, "Tokens of this request indexed so far.")
      .def("work", &SuffixProposer::work, "Trie node visits since construction (a work counter for tests).")
      .def_property_readonly("active", &SuffixProposer::active);
}

}  // namespace drafts
}  // namespace sprinter
