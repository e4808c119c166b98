// Python binding of HeadModel (head_model.h): sprinter_ext._C.HeadModel.
//
// It speaks ModelRunner's protocol (runner_py.h: prefill / step / extend / truncate /
// scrub, length, max_len, vocab_size, hidden_size = H + 2, device, dtype), so every engine
// can drive it; the native loop takes it as a C++ Runner (no GIL per draft step). Built by
// sprinter_ext.drafts.runner.native_head_runner from a DraftHead and the target's
// NativeModel (whose feature tap it reads).
//
// Constructor: HeadModel(target: NativeModel, config: dict, tensors: dict[str, Tensor]);
// config keys hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size,
// vocab_size, max_len, norm_eps, feature_layers, fast; tensors use the EAGLE-3 names of
// DraftHead (fc.weight, midlayer.*, norm.weight, lm_head.weight, d2t) plus embed (the
// target's input embedding) and rope.cos / rope.sin. Bad values raise ValueError, wrong
// types TypeError, before anything is allocated.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <set>
#include <type_traits>
#include <string>
#include <vector>

#include "head_model.h"
#include "runner_py.h"

namespace py = pybind11;

namespace sprinter {
namespace engine {
namespace {

using runner_py::config_item;

std::shared_ptr<HeadModel> make_head_model(std::shared_ptr<NativeModel> target, const py::dict& config,
                                           const py::dict& tensors) {
  std::set<std::string> read;
  auto get = [&](const char* key, auto* out) {
    read.insert(key);
    *out = config_item<std::remove_pointer_t<decltype(out)>>(config, key, "HeadModel");
  };
  HeadModelConfig c;
  get("hidden_size", &c.hidden_size);
  get("num_heads", &c.num_heads);
  get("num_kv_heads", &c.num_kv_heads);
  get("head_dim", &c.head_dim);
  get("intermediate_size", &c.intermediate_size);
  get("vocab_size", &c.vocab_size);
  get("max_len", &c.max_len);
  get("norm_eps", &c.norm_eps);
  get("feature_layers", &c.feature_layers);
  get("fast", &c.fast);
  for (auto kv : config) {
    const auto name = py::str(kv.first).cast<std::string>();
    if (!read.count(name)) throw py::value_error("HeadModel config has an unknown key '" + name + "'");
  }
  runner_py::TensorTable t(tensors, "HeadModel");
  auto take = [&](const char* name) { return t.take(name); };
  HeadModelWeights w;
  w.embed = take("embed");
  w.fc = take("fc.weight");
  w.q = take("midlayer.self_attn.q_proj.weight");
  w.k = take("midlayer.self_attn.k_proj.weight");
  w.v = take("midlayer.self_attn.v_proj.weight");
  w.o = take("midlayer.self_attn.o_proj.weight");
  w.gate = take("midlayer.mlp.gate_proj.weight");
  w.up = take("midlayer.mlp.up_proj.weight");
  w.down = take("midlayer.mlp.down_proj.weight");
  w.input_norm = take("midlayer.input_layernorm.weight");
  w.hidden_norm = take("midlayer.hidden_norm.weight");
  w.post_norm = take("midlayer.post_attention_layernorm.weight");
  w.norm = take("norm.weight");
  w.lm_head = take("lm_head.weight");
  w.d2t = take("d2t");
  w.cos = take("rope.cos");
  w.sin = take("rope.sin");
  t.check_empty();
  try {
    py::gil_scoped_release no_gil;
    return std::make_shared<HeadModel>(std::move(c), std::move(w), std::move(target));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

}  // namespace

void register_head_model(py::module_& m, py::handle runner_base) {
  const auto* info = py::detail::get_type_info(typeid(Runner));
  if (info == nullptr || runner_base.ptr() != reinterpret_cast<PyObject*>(info->type)) {
    throw std::runtime_error("register_head_model: runner_base must be the registered Runner class");
  }
  py::class_<HeadModel, Runner, std::shared_ptr<HeadModel>> head(
      m, "HeadModel",
      "A draft head's decode-time forward in ATen over a NativeModel target's feature tap; a "
      "drop-in for HeadRunner.\n\nBuild it with sprinter_ext.drafts.runner.native_head_runner(...).");
  head.def(py::init(&make_head_model), py::arg("target"), py::arg("config"), py::arg("tensors"));
  runner_py::def_runner_methods<HeadModel>(head);
  head.def_property_readonly("fast", &HeadModel::fast,
                             "True on the packed CPU path (PackedLinear), False with at::linear.")
      .def_property_readonly("target", &HeadModel::target)
      .def("__repr__", [](const HeadModel& self) {
        const auto& c = self.config();
        std::string layers;
        for (auto l : c.feature_layers) layers += (layers.empty() ? "" : ", ") + std::to_string(l);
        return "HeadModel(hidden=" + std::to_string(c.hidden_size) + ", feature_layers=[" + layers +
               "], vocab=" + std::to_string(c.vocab_size) + ", max_len=" + std::to_string(c.max_len) +
               ", fast=" + (c.fast ? "True" : "False") + ", length=" + std::to_string(self.length()) + ")";
      });
}

}  // namespace engine
}  // namespace sprinter
