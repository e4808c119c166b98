// Python binding of NativeModel (native_model.h): sprinter_ext._C.NativeModel, and in
// CUDA builds of GraphModel (cuda/graph_model.h): sprinter_ext._C.GraphModel.
//
// The Python object speaks ModelRunner's protocol (sprinter_ext/models/runner.py):
//   prefill(ids) -> (logits [V], hidden [D]) | None    step(token) -> (logits [V], hidden [D])
//   extend(tokens) -> (logits [n, V], hidden [n, D])   truncate(length)
//   length, max_len, vocab_size, device, dtype, hidden_size
// ids/tokens: an int, a sequence of ints, or an integer tensor. Forwards run without the
// GIL. Errors: TypeError for wrong argument types, ValueError for bad values (bad
// truncate length, empty extend), IndexError for a token outside the embedding,
// sprinter_ext.errors.CacheOverflowError when the tokens do not fit the cache.
//
// Constructor: NativeModel(config: dict, tensors: dict[str, Tensor]), normally called by
// sprinter_ext.models.native.native_runner. `tensors` uses transformers' parameter names
// relative to the base model (LlamaModel / GPT2Model), plus lm_head.weight / .bias /
// .token_ids (RestrictedVocabHead) and rotary_emb.inv_freq (a buffer).
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <map>
#include <string>
#include <vector>

#include "common/py_checks.h"
#include "linear_quant_cpu.h"
#include "native_model.h"
#include "runner_py.h"

#ifdef SPRINTER_WITH_CUDA
#include "model/cuda/graph_model.h"
#endif

namespace py = pybind11;

namespace sprinter {
namespace engine {
namespace {

using runner_py::type_name;

// ----------------------------------------------------------- construction ----

template <typename T>
T config_item(const py::dict& config, const char* key) {
  return runner_py::config_item<T>(config, key, "NativeModel");
}

template <typename E>
E enum_item(const py::dict& config, const char* key, const std::map<std::string, E>& names) {
  const auto name = config_item<std::string>(config, key);
  const auto it = names.find(name);
  if (it == names.end()) {
    std::string known;
    for (const auto& kv : names) known += (known.empty() ? "" : ", ") + kv.first;
    throw py::value_error(std::string("NativeModel config '") + key + "' is '" + name + "'; supported: " + known);
  }
  return it->second;
}

NativeModelConfig parse_config(const py::dict& config) {
  NativeModelConfig c;
  c.family = enum_item<ModelFamily>(config, "family", {{"llama", ModelFamily::kLlama}, {"gpt2", ModelFamily::kGpt2}});
  c.vocab_size = config_item<int64_t>(config, "vocab_size");
  c.hidden_size = config_item<int64_t>(config, "hidden_size");
  c.num_heads = config_item<int64_t>(config, "num_heads");
  c.num_kv_heads = config_item<int64_t>(config, "num_kv_heads");
  c.head_dim = config_item<int64_t>(config, "head_dim");
  c.max_len = config_item<int64_t>(config, "max_len");
  c.norm_eps = config_item<double>(config, "norm_eps");
  c.activation = enum_item<Activation>(config, "activation",
                                       {{"silu", Activation::kSilu},
                                        {"gelu", Activation::kGelu},
                                        {"gelu_pytorch_tanh", Activation::kGeluTanh},
                                        {"gelu_new", Activation::kGeluNew},
                                        {"relu", Activation::kRelu}});
  c.attention = enum_item<AttentionImpl>(config, "attention",
                                         {{"sdpa", AttentionImpl::kSdpa}, {"eager", AttentionImpl::kEager}});
  c.attn_scaling = config_item<std::vector<double>>(config, "attn_scaling");
  if (config.contains("logit_softcap") && !config["logit_softcap"].is_none()) {
    c.logit_softcap = config_item<double>(config, "logit_softcap");
  }
  if (config.contains("fast")) c.fast = config_item<bool>(config, "fast");  // default: op for op
  return c;
}

NativeModelWeights parse_weights(const py::dict& tensors, const NativeModelConfig& c, int64_t n_layers) {
  runner_py::TensorTable t(tensors, "NativeModel");
  NativeModelWeights w;
  const bool llama = c.family == ModelFamily::kLlama;
  if (llama) {
    w.embed = t.take("embed_tokens.weight");
    w.inv_freq = t.take("rotary_emb.inv_freq");
    w.norm_w = t.take("norm.weight");
  } else {
    w.embed = t.take("wte.weight");
    w.pos_embed = t.take("wpe.weight");
    w.norm_w = t.take("ln_f.weight");
    w.norm_b = t.take("ln_f.bias");
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    LayerWeights L;
    if (llama) {
      const std::string p = "layers." + std::to_string(i) + ".";
      L.norm1_w = t.take(p + "input_layernorm.weight");
      L.norm2_w = t.take(p + "post_attention_layernorm.weight");
      std::pair<at::Tensor*, const char*> linears[] = {
          {&L.q_w, "self_attn.q_proj"}, {&L.k_w, "self_attn.k_proj"}, {&L.v_w, "self_attn.v_proj"},
          {&L.o_w, "self_attn.o_proj"}, {&L.gate_w, "mlp.gate_proj"},  {&L.up_w, "mlp.up_proj"},
          {&L.down_w, "mlp.down_proj"}};
      at::Tensor* biases[] = {&L.q_b, &L.k_b, &L.v_b, &L.o_b, &L.gate_b, &L.up_b, &L.down_b};
      for (size_t j = 0; j < 7; ++j) {
        *linears[j].first = t.take(p + linears[j].second + ".weight");
        *biases[j] = t.take(p + linears[j].second + ".bias", /*optional=*/true);
      }
    } else {
      const std::string p = "h." + std::to_string(i) + ".";
      L.norm1_w = t.take(p + "ln_1.weight");
      L.norm1_b = t.take(p + "ln_1.bias");
      L.norm2_w = t.take(p + "ln_2.weight");
      L.norm2_b = t.take(p + "ln_2.bias");
      L.c_attn_w = t.take(p + "attn.c_attn.weight");
      L.c_attn_b = t.take(p + "attn.c_attn.bias");
      L.attn_proj_w = t.take(p + "attn.c_proj.weight");
      L.attn_proj_b = t.take(p + "attn.c_proj.bias");
      L.c_fc_w = t.take(p + "mlp.c_fc.weight");
      L.c_fc_b = t.take(p + "mlp.c_fc.bias");
      L.mlp_proj_w = t.take(p + "mlp.c_proj.weight");
      L.mlp_proj_b = t.take(p + "mlp.c_proj.bias");
    }
    w.layers.push_back(std::move(L));
  }
  w.head_w = t.take("lm_head.weight");
  w.head_b = t.take("lm_head.bias", /*optional=*/true);
  w.head_ids = t.take("lm_head.token_ids", /*optional=*/true);
  t.check_empty();
  return w;
}

std::shared_ptr<NativeModel> make_native_model(const py::dict& config, const py::dict& tensors) {
  NativeModelConfig c = parse_config(config);
  const auto n_layers = config_item<int64_t>(config, "num_layers");
  if (n_layers < 1) throw py::value_error("NativeModel config 'num_layers' must be >= 1");
  NativeModelWeights w = parse_weights(tensors, c, n_layers);
  return std::make_shared<NativeModel>(std::move(c), std::move(w));
}

void translate_cache_overflow(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const CacheOverflowError& e) {
    PyObject* cls = PyExc_ValueError;  // CacheOverflowError's builtin base, if the import fails
    py::object holder;
    try {
      holder = py::module_::import("sprinter_ext.errors").attr("CacheOverflowError");
      cls = holder.ptr();
    } catch (const py::error_already_set&) {
    }
    PyErr_SetString(cls, e.what());
  }
}

// The runner protocol (runner_py.h) plus NativeModel's depth and repr, for NativeModel and GraphModel.
template <typename R, typename Cls>
void def_runner_protocol(Cls& cls, const char* name) {
  runner_py::def_runner_methods<R>(cls);
  cls.def_property_readonly("num_layers", &R::num_layers)
      .def("__repr__", [name](const R& self) {
        const auto& c = self.config();
        return std::string(name) + "(" + (c.family == ModelFamily::kLlama ? "llama" : "gpt2") +
               ", layers=" + std::to_string(self.num_layers()) + ", hidden=" + std::to_string(c.hidden_size) +
               ", vocab=" + std::to_string(c.vocab_size) + ", max_len=" + std::to_string(c.max_len) +
               ", length=" + std::to_string(self.length()) + ")";
      });
}

}  // namespace

void register_native_model(py::module_& m, py::handle runner_base) {
  const auto* info = py::detail::get_type_info(typeid(Runner));
  if (info == nullptr || runner_base.ptr() != reinterpret_cast<PyObject*>(info->type)) {
    throw std::runtime_error(
        "register_native_model: runner_base must be the py::class_<sprinter::engine::Runner, "
        "std::shared_ptr<sprinter::engine::Runner>> registered before it");
  }
  py::register_local_exception_translator(&translate_cache_overflow);

  py::class_<NativeModel, Runner, std::shared_ptr<NativeModel>> native(
      m, "NativeModel",
      "Llama / GPT-2 forward in ATen with a static KV cache; a drop-in for ModelRunner.\n\n"
      "Build it with sprinter_ext.models.native.native_runner(model).");
  native.def(py::init(&make_native_model), py::arg("config"), py::arg("tensors"));
  def_runner_protocol<NativeModel>(native, "NativeModel");
  native
      .def(
          "quantize_linear",
          [](NativeModel& self, const std::string& name, const at::Tensor& blocks, const std::string& format) {
            try {
              self.quantize_linear(name, blocks, cpu::quant_format(format));
            } catch (const std::invalid_argument& e) {
              bind::raise_named("InvalidArgumentError", e.what());
            }
          },
          py::arg("name"), py::arg("blocks"), py::arg("format"),
          "Run the fast path's small-n linear `name` ('head', 'layers.<i>.qkv' / o / gate_up / up / down) over "
          "GGUF Q4_1 / Q8_0 blocks [N, K / 32 * block_bytes] (uint8) from now on; prefill keeps the float32 "
          "weight, so the blocks must stand for it (models/weight_formats.py checks that).")
      .def(
          "store_linear16",
          [](NativeModel& self, const std::string& name, const at::Tensor& weight16) {
            try {
              self.store_linear16(name, weight16);
            } catch (const std::invalid_argument& e) {
              bind::raise_named("InvalidArgumentError", e.what());
            }
          },
          py::arg("name"), py::arg("weight16"),
          "Run the fast path's small-n linear `name` over `weight16` (float16 or bfloat16 [N, K]) with float32 "
          "activations from now on (csrc/model/linear_half_cpu.h); prefill keeps the float32 weight.")
      .def(
          "linear_weight",
          [](const NativeModel& self, const std::string& name) {
            try {
              return self.linear_weight(name);
            } catch (const std::invalid_argument& e) {
              bind::raise_named("InvalidArgumentError", e.what());
            }
          },
          py::arg("name"), "The float32 [N, K] weight the fast path's linear `name` was built from.")
      .def_property_readonly("linear_names", &NativeModel::linear_names,
                             "The fast path's linears ('layers.<i>.<part>', 'head'), in forward order.")
      .def_property_readonly("linear_weight_bytes", &NativeModel::linear_weight_bytes,
                             "Bytes a forward of <= 16 tokens reads from the linears' weights (0 off the fast path).")
      .def(
          "set_feature_layers",
          [](NativeModel& self, std::vector<int64_t> layers) {
            try {
              self.set_feature_layers(layers);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
          },
          py::arg("layers"),
          "Record, per position, the residual streams entering `layers` (a draft head's features) "
          "into .features; [] turns it off.")
      .def_property_readonly("features", &NativeModel::features,
                             "[max_len, len(feature_layers) * D]: rows [0, length) are valid (None when off).")
      .def_property_readonly("feature_layers", &NativeModel::feature_layers)
      .def_property_readonly(
          "fast", [](const NativeModel& self) { return self.config().fast; },
          "True on the CPU fast path (PackedLinear, tolerance), False when op for op (transformers' bits).");

#ifdef SPRINTER_WITH_CUDA
  py::class_<GraphModel, Runner, std::shared_ptr<GraphModel>> graph(
      m, "GraphModel",
      "A NativeModel (on a CUDA device) whose forwards of the captured lengths replay CUDA graphs.\n\n"
      "Build it with sprinter_ext.models.native.cuda_graph_runner(model, lengths).");
  graph.def(py::init([](std::shared_ptr<NativeModel> model, std::vector<int64_t> lengths) {
              py::gil_scoped_release no_gil;
              return std::make_shared<GraphModel>(std::move(model), std::move(lengths));
            }),
            py::arg("model"), py::arg("lengths"))
      .def_property_readonly("captured_lengths", &GraphModel::captured_lengths)
      .def_property_readonly("model", &GraphModel::model);
  def_runner_protocol<GraphModel>(graph, "GraphModel");
#endif
}

}  // namespace engine
}  // namespace sprinter
