// Python bindings of the native loop (engine.h): the Runner base class, PyRunner
// (a Runner over any Python object with the runner protocol), GenerationConfig,
// Generation, and the names the Python side is checked against (native_methods(),
// RUNNER_PROTOCOL, SNAPSHOT_PROTOCOL).
//
// Generation.run() and .round() release the GIL for the whole call; a PyRunner
// takes it back only around its own Python calls, so threads that share the
// interpreter keep running while a generation is under way.
#include "engine_py.h"

#include <torch/csrc/utils/pybind.h>

#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"
#include "proposer.h"
#include "common/py_checks.h"

namespace py = pybind11;

namespace sprinter {
namespace engine {
namespace {

// The Python runner protocol (sprinter_ext.runners.Runner / SnapshotRunner), by name:
// what PyRunner calls (`length` is an attribute, the rest are methods).
constexpr const char* kRunnerProtocol[] = {"prefill", "step", "extend", "truncate", "length", "scrub"};
constexpr const char* kSnapshotProtocol[] = {"snapshot", "restore"};

template <size_t N>
py::tuple names(const char* const (&list)[N]) {
  py::tuple out(N);
  for (size_t i = 0; i < N; ++i) out[i] = py::str(list[i]);
  return out;
}

// A Runner over a Python object with the runner protocol (sprinter_ext/runners.py).
class PyRunner final : public Runner {
 public:
  explicit PyRunner(py::object obj) : obj_(std::move(obj)) {
    for (const char* name : kRunnerProtocol) {
      if (!py::hasattr(obj_, name)) {
        throw py::type_error(std::string("PyRunner needs an object with the ModelRunner protocol; ") +
                             Py_TYPE(obj_.ptr())->tp_name + " has no " + name);
      }
    }
    snapshot_ = true;
    for (const char* name : kSnapshotProtocol) snapshot_ = snapshot_ && py::hasattr(obj_, name);
    name_ = Py_TYPE(obj_.ptr())->tp_name;
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

  void scrub() override {
    py::gil_scoped_acquire gil;
    obj_.attr("scrub")();
  }

  int64_t length() const override {
    py::gil_scoped_acquire gil;
    return obj_.attr("length").cast<int64_t>();
  }

  bool supports_snapshot() const override { return snapshot_; }

  KVSnapshot snapshot(int64_t start, int64_t end) override {
    if (!snapshot_) throw no_snapshot();
    py::gil_scoped_acquire gil;
    KVSnapshot out;
    for (py::handle kv : obj_.attr("snapshot")(start, end)) {
      py::tuple pair = py::reinterpret_borrow<py::tuple>(kv);
      out.emplace_back(pair[0].cast<at::Tensor>().detach(), pair[1].cast<at::Tensor>().detach());
    }
    return out;
  }

  void restore(int64_t start, const KVSnapshot& snap) override {
    if (!snapshot_) throw no_snapshot();
    py::gil_scoped_acquire gil;
    py::list layers;
    for (const auto& [k, v] : snap) layers.append(py::make_tuple(k, v));
    obj_.attr("restore")(start, layers);
  }

  std::string name() const override { return name_; }

  py::object object() const { return obj_; }

 private:
  py::object obj_;
  bool snapshot_ = false;
  std::string name_;
};

// The verifier MLP the loop will run: float32 layers [out, in] chained to one output,
// biases [out], distinct feature codes in {0, 1, 2} (the draft's hidden size is checked
// by the first draft_sample, which knows it).
void check_verifier(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& b,
                    const std::vector<int64_t>& features) {
  using sprinter::bind::raise_named;
  if (w.size() != b.size()) raise_named("InvalidArgumentError", "verifier_weights and verifier_biases differ in length");
  for (size_t l = 0; l < w.size(); ++l) {
    const std::string p = "verifier layer " + std::to_string(l);
    if (!w[l].defined() || !b[l].defined() || w[l].dim() != 2 || b[l].dim() != 1 ||
        w[l].scalar_type() != at::kFloat || b[l].scalar_type() != at::kFloat || b[l].size(0) != w[l].size(0)) {
      raise_named("InvalidArgumentError", p + ": weight must be float32 [out, in] and bias float32 [out]");
    }
    if (b[l].device() != w[l].device() || w[l].device() != w[0].device()) {
      raise_named("InvalidArgumentError", p + ": every verifier tensor must be on one device");
    }
    if (l > 0 && w[l].size(1) != w[l - 1].size(0)) {
      raise_named("InvalidArgumentError", p + " takes " + std::to_string(w[l].size(1)) + " inputs, layer " +
                                              std::to_string(l - 1) + " gives " + std::to_string(w[l - 1].size(0)));
    }
  }
  if (!w.empty() && w.back().size(0) != 1) raise_named("InvalidArgumentError", "the verifier's last layer must have one output");
  bool seen[3] = {false, false, false};
  for (const int64_t f : features) {
    if (f < 0 || f > 2 || seen[f]) raise_named("InvalidArgumentError", "verifier_features must be distinct codes 0, 1 or 2");
    seen[f] = true;
  }
}

py::dict lane_stats(const Lane& lane, const char* prefix) {
  py::dict d;
  const std::string p(prefix);
  d[(p + "_calls").c_str()] = lane.calls;
  d[(p + "_fed").c_str()] = lane.fed;
  d[(p + "_attended").c_str()] = lane.attended;
  return d;
}

// A GenerationConfig from Python values, each checked with the named errors of
// sprinter_ext.errors (the same rules as sprinter_ext.decoding, checked again here so a
// caller of the private binding cannot hand the loop NaN settings or negative sizes).
GenerationConfig make_config(const std::string& method, py::handle k, const SamplingSettings& sampling,
                             std::vector<int64_t> eos, std::vector<at::Tensor> verifier_weights,
                             std::vector<at::Tensor> verifier_biases, std::vector<int64_t> verifier_features,
                             py::handle threshold, py::handle max_run, bool verify_all, std::vector<int64_t> prompt,
                             py::handle seed, py::handle max_new_tokens) {
  using namespace sprinter::bind;
  GenerationConfig c;
  try {
    c.method = parse_method(method);
  } catch (const std::invalid_argument& e) {
    raise_named("InvalidArgumentError", e.what());
  }
  constexpr int64_t kMaxI64 = std::numeric_limits<int64_t>::max();
  c.k = checked_int(k, "k", 1, kMaxI64);
  c.sampling = sampling;  // a bound SamplingSettings was checked when it was made
  for (const int64_t t : eos) {
    if (t < 0) raise_named("InvalidArgumentError", "eos ids must be >= 0, got " + std::to_string(t));
  }
  for (const int64_t t : prompt) {
    if (t < 0) raise_named("InvalidArgumentError", "prompt ids must be >= 0, got " + std::to_string(t));
  }
  check_verifier(verifier_weights, verifier_biases, verifier_features);
  c.eos = std::move(eos);
  c.verifier_weights = std::move(verifier_weights);
  c.verifier_biases = std::move(verifier_biases);
  c.verifier_features = std::move(verifier_features);
  c.threshold = checked_number(threshold, "threshold");
  c.max_run = checked_int(max_run, "max_run", 1, kMaxI64);
  c.verify_all = verify_all;
  c.prompt = std::move(prompt);
  c.seed = checked_u64(seed, "seed");
  c.max_new_tokens = checked_int(max_new_tokens, "max_new_tokens", 0, kMaxI64);
  return c;
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

  py::tuple methods(std::size(kMethodNames));
  for (size_t i = 0; i < std::size(kMethodNames); ++i) methods[i] = py::str(kMethodNames[i]);
  m.def("native_methods", [methods]() { return methods; },
        "The methods the native loop runs (csrc/engine/engine.h kMethodNames), in order.");
  m.attr("RUNNER_PROTOCOL") = names(kRunnerProtocol);
  m.attr("SNAPSHOT_PROTOCOL") = names(kSnapshotProtocol);

  auto runner = py::class_<Runner, std::shared_ptr<Runner>>(
      m, "Runner", "A batch-1 model runner the native loop can drive (csrc/engine/runner.h).");
  runner
      .def_property_readonly("supports_snapshot", &Runner::supports_snapshot,
                             "Whether snapshot/restore are available (the optional SnapshotRunner capability).")
      .def_property_readonly("runner_name", &Runner::name);

  py::class_<PyRunner, Runner, std::shared_ptr<PyRunner>> pyrunner(
      m, "PyRunner",
      "Wraps a Python runner (the sprinter_ext.runners.Runner protocol) for the native loop; "
      "each call takes the GIL.");
  pyrunner.def(py::init<py::object>(), py::arg("runner"))
      .def_property_readonly("runner", &PyRunner::object);
  // The protocol methods forward to the wrapped runner, so a PyRunner is a runner too.
  for (const char* name : kRunnerProtocol) {
    const std::string attr(name);
    if (attr == "length") {
      pyrunner.def_property_readonly("length", [](const PyRunner& r) { return r.object().attr("length"); });
    } else {
      pyrunner.def(name, [attr](const PyRunner& r, py::args args) { return r.object().attr(attr.c_str())(*args); });
    }
  }

  // Model-free drafts (proposer.h): the base class every C++ proposer's binding derives
  // from (py::class_<X, Proposer, std::shared_ptr<X>>), so the loop takes any of them.
  py::class_<Proposer, std::shared_ptr<Proposer>>(
      m, "Proposer", "A model-free draft the native loop asks for tokens (csrc/engine/proposer.h).")
      .def("begin", &Proposer::begin, py::arg("prompt"), "Start a request with its prompt ids.")
      .def(
          "propose",
          [](Proposer& p, const std::vector<int64_t>& seq, int64_t max_tokens) {
            if (max_tokens < 0) sprinter::bind::raise_named("InvalidArgumentError", "max_tokens must be >= 0");
            try {
              LookupDraft d = p.propose(seq, max_tokens);
              return py::make_tuple(d.tokens, d.confidence, d.match_length);
            } catch (const std::invalid_argument& e) {
              sprinter::bind::raise_named("InvalidArgumentError", e.what());
            }
          },
          py::arg("seq"), py::arg("max_tokens"),
          "(tokens, confidence, match_length): at most max_tokens ids to follow seq.")
      .def("end", &Proposer::end, py::arg("seq"), "The request finished with the committed sequence seq.")
      .def_property_readonly("proposer_name", &Proposer::name);

  py::class_<CostModel, std::shared_ptr<CostModel>>(
      m, "CostModel", "k='auto': the per-round draft-length rule (csrc/engine/cost_model.h; the specification is "
                      "sprinter_ext.cost_model.CostModel).")
      .def(py::init([](std::vector<double> target_ms, double draft_ms, int64_t k_max, double prior, double weight,
                       double decay, int64_t probe_every) {
             try {
               return std::make_shared<CostModel>(std::move(target_ms), draft_ms, k_max, prior, weight, decay,
                                                  probe_every);
             } catch (const std::invalid_argument& e) {
               sprinter::bind::raise_named("InvalidArgumentError", e.what());
             }
           }),
           py::arg("target_ms"), py::arg("draft_ms"), py::kw_only(), py::arg("k_max") = 8, py::arg("prior") = 0.5,
           py::arg("weight") = 4.0, py::arg("decay") = 0.97, py::arg("probe_every") = 16)
      .def_property_readonly("k_max", &CostModel::k_max)
      .def("alpha", &CostModel::alpha, py::arg("bucket"), py::arg("depth"))
      .def("draft_length", &CostModel::draft_length)
      .def("reset", &CostModel::reset)
      .def("draft_choice", &CostModel::draft_choice)
      .def("lookup_choice", &CostModel::lookup_choice, py::arg("proposed"), py::arg("match_length"))
      .def("lookup_length", &CostModel::lookup_length, py::arg("proposed"), py::arg("match_length"))
      .def("observe", &CostModel::observe, py::arg("verified"), py::arg("accepted"), py::arg("match_length") = 0);

  py::class_<GenerationConfig>(
      m, "GenerationConfig",
      "Everything a native Generation needs besides its runners (csrc/engine/engine.h); the mirror of "
      "sprinter_ext._generation.GenerationConfig. Every field is checked here with the named errors of "
      "sprinter_ext.errors (the same rules as sprinter_ext.decoding).")
      .def(py::init(&make_config), py::kw_only(), py::arg("method"), py::arg("k"), py::arg("sampling"),
           py::arg("eos"), py::arg("verifier_weights"), py::arg("verifier_biases"), py::arg("verifier_features"),
           py::arg("threshold"), py::arg("max_run"), py::arg("verify_all"), py::arg("prompt"), py::arg("seed"),
           py::arg("max_new_tokens"))
      .def_property_readonly("method", [](const GenerationConfig& c) { return std::string(method_name(c.method)); })
      .def_readonly("k", &GenerationConfig::k)
      .def_readonly("sampling", &GenerationConfig::sampling)
      .def_readonly("eos", &GenerationConfig::eos)
      .def_readonly("verifier_weights", &GenerationConfig::verifier_weights)
      .def_readonly("verifier_biases", &GenerationConfig::verifier_biases)
      .def_readonly("verifier_features", &GenerationConfig::verifier_features)
      .def_readonly("threshold", &GenerationConfig::threshold)
      .def_readonly("max_run", &GenerationConfig::max_run)
      .def_readonly("verify_all", &GenerationConfig::verify_all)
      .def_readonly("prompt", &GenerationConfig::prompt)
      .def_readonly("seed", &GenerationConfig::seed)
      .def_readonly("max_new_tokens", &GenerationConfig::max_new_tokens)
      .def_property_readonly_static("fields", [](py::object) {
        return py::make_tuple("method", "k", "sampling", "eos", "verifier_weights", "verifier_biases",
                              "verifier_features", "threshold", "max_run", "verify_all", "prompt", "seed",
                              "max_new_tokens");
      });

  py::class_<Generation>(m, "Generation",
                         "One generation of the native loop (csrc/engine/engine.h): Generation(target, draft, "
                         "config, proposer=None), draft None for ar, config a GenerationConfig; a model-free draft is "
                         "proposer= (a _C.Proposer) with draft None.")
      .def(py::init([](std::shared_ptr<Runner> target, std::shared_ptr<Runner> draft, const GenerationConfig& c,
                       std::shared_ptr<Proposer> proposer, std::shared_ptr<CostModel> cost) {
             try {
               return new Generation(std::move(target), std::move(draft), c, std::move(proposer), std::move(cost));
             } catch (const std::invalid_argument& e) {
               sprinter::bind::raise_named("InvalidArgumentError", e.what());
             }
           }),
           py::arg("target"), py::arg("draft"), py::arg("config"), py::kw_only(), py::arg("proposer") = nullptr,
           py::arg("cost") = nullptr)
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
