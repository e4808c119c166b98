// Python bindings of the native loop (engine.h): the Runner base class, PyRunner
// (a Runner over any Python object with the ModelRunner protocol) and Generation.
//
// Generation.run() and .round() release the GIL for the whole call; a PyRunner
// takes it back only around its own Python calls, so threads that share the
// interpreter keep running while a generation is under way.
#include "engine_py.h"

#include <torch/csrc/utils/pybind.h>

#include <string>
#include <utility>
#include <vector>

#include "engine.h"

namespace py = pybind11;

namespace sprinter {
namespace engine {
namespace {

// A Runner over a Python object with the ModelRunner protocol
// (sprinter_ext/models/runner.py: prefill / step / extend / truncate / length).
class PyRunner final : public Runner {
 public:
  explicit PyRunner(py::object obj) : obj_(std::move(obj)) {
    for (const char* name : {"prefill", "step", "extend", "truncate"}) {
      if (!py::hasattr(obj_, name)) {
        throw py::type_error(std::string("PyRunner needs an object with the ModelRunner protocol; ") +
                             Py_TYPE(obj_.ptr())->tp_name + " has no " + name + "()");
      }
    }
  }
  ~PyRunner() override {
    py::gil_scoped_acquire gil;  // the last reference may go away on a thread without the GIL
    obj_ = py::object();
  }

  void prefill(const std::vector<int64_t>& ids) override {
    py::gil_scoped_acquire gil;
    obj_.attr("prefill")(ids);
  }

  std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) override {
    py::gil_scoped_acquire gil;
    // NOTE: detach() gives C++-only handles, so no Python tensor object outlives the GIL scope.
    if (tokens.size() == 1) {
      py::tuple out = obj_.attr("step")(tokens[0]);
      return {out[0].cast<at::Tensor>().detach().unsqueeze(0), out[1].cast<at::Tensor>().detach().unsqueeze(0)};
    }
    py::tuple out = obj_.attr("extend")(tokens);
    return {out[0].cast<at::Tensor>().detach(), out[1].cast<at::Tensor>().detach()};
  }

  void truncate(int64_t length) override {
    py::gil_scoped_acquire gil;
    obj_.attr("truncate")(length);
  }

  int64_t length() const override {
    py::gil_scoped_acquire gil;
    return obj_.attr("length").cast<int64_t>();
  }

  py::object object() const { return obj_; }

 private:
  py::object obj_;
};

py::dict lane_stats(const Lane& lane, const char* prefix) {
  py::dict d;
  const std::string p(prefix);
  d[(p + "_calls").c_str()] = lane.calls;
  d[(p + "_fed").c_str()] = lane.fed;
  d[(p + "_attended").c_str()] = lane.attended;
  return d;
}

}  // namespace

py::handle register_engine(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const NonFiniteLogits& e) {
      py::object cls = py::module_::import("sprinter_ext.errors").attr("NonFiniteLogitsError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  auto runner = py::class_<Runner, std::shared_ptr<Runner>>(
      m, "Runner", "A batch-1 model runner the native loop can drive (csrc/runner.h).");

  py::class_<PyRunner, Runner, std::shared_ptr<PyRunner>>(
      m, "PyRunner",
      "Wraps a Python runner (sprinter_ext.models.runner.ModelRunner protocol) for the native loop; "
      "each call takes the GIL.")
      .def(py::init<py::object>(), py::arg("runner"))
      .def_property_readonly("runner", &PyRunner::object);

  py::class_<Generation>(
      m, "Generation",
      "One generation of the native loop (csrc/engine.h). Arguments are validated by "
      "sprinter_ext.decoding; this class trusts them.")
      .def(py::init([](std::shared_ptr<Runner> target, std::shared_ptr<Runner> draft, const std::string& method,
                       int64_t k, double temperature, int64_t top_k, double top_p, std::vector<int64_t> eos,
                       std::vector<at::Tensor> verifier_weights, std::vector<at::Tensor> verifier_biases,
                       std::vector<int64_t> verifier_features, double threshold, int64_t max_run, bool verify_all,
                       std::vector<int64_t> prompt, uint64_t seed, int64_t max_new_tokens) {
             Config c;
             try {
               c.method = parse_method(method);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
             c.k = k;
             c.temperature = temperature;
             c.top_k = top_k;
             c.top_p = top_p;
             c.eos = std::move(eos);
             c.verifier_weights = std::move(verifier_weights);
             c.verifier_biases = std::move(verifier_biases);
             c.verifier_features = std::move(verifier_features);
             c.threshold = threshold;
             c.max_run = max_run;
             c.verify_all = verify_all;
             try {
               return new Generation(std::move(target), std::move(draft), std::move(c), std::move(prompt), seed,
                                     max_new_tokens);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("target"), py::arg("draft"), py::arg("method"), py::arg("k"), py::arg("temperature"),
           py::arg("top_k"), py::arg("top_p"), py::arg("eos"), py::arg("verifier_weights"),
           py::arg("verifier_biases"), py::arg("verifier_features"), py::arg("threshold"), py::arg("max_run"),
           py::arg("verify_all"), py::arg("prompt"), py::arg("seed"), py::arg("max_new_tokens"))
      .def("round", &Generation::round, py::call_guard<py::gil_scoped_release>(),
           "Run one round; returns its committed tokens (empty once done).")
      .def("run", &Generation::run, py::call_guard<py::gil_scoped_release>(),
           "Run every remaining round; returns the new tokens.")
      .def_property_readonly("done", &Generation::done)
      .def("stats", [](const Generation& g) {
        const Stats& s = g.stats();
        py::dict d = lane_stats(g.target(), "target");
        py::dict dd = lane_stats(g.draft(), "draft");
        for (auto item : dd) d[item.first] = item.second;
        d["new_tokens"] = s.new_tokens;
        d["rounds"] = s.rounds;
        d["draft_tokens"] = s.draft_tokens;
        d["accepted_tokens"] = s.accepted_tokens;
        d["flagged_runs"] = s.flagged_runs;
        d["unchecked"] = s.unchecked;
        return d;
      });
  return runner;
}

}  // namespace engine
}  // namespace sprinter
