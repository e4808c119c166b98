// What the pybind11 bindings of the C++ runners share (native_model_py.cpp: NativeModel,
// GraphModel; head_model_py.cpp: HeadModel): token-id arguments, running without the GIL,
// and ModelRunner's protocol (sprinter_ext/models/runner.py) bound over a C++ runner.
#pragma once

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/core/InferenceMode.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace sprinter {
namespace engine {
namespace runner_py {

namespace py = pybind11;

inline std::string type_name(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// ids for prefill/step/extend: an int, a sequence of ints, or an integer tensor (any shape).
inline std::vector<int64_t> token_list(py::handle obj, const char* what) {
  if (THPVariable_Check(obj.ptr())) {
    at::Tensor t = THPVariable_Unpack(obj.ptr());
    if (!at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) {
      throw py::type_error(std::string(what) + " must hold integer token ids, got a tensor of dtype " +
                           c10::toString(t.scalar_type()));
    }
    t = t.reshape(-1).to(at::kCPU, at::kLong).contiguous();
    const int64_t* p = t.const_data_ptr<int64_t>();
    return std::vector<int64_t>(p, p + t.numel());
  }
  auto as_int = [&](py::handle item) -> int64_t {
    if (PyBool_Check(item.ptr()) || !PyIndex_Check(item.ptr())) {
      throw py::type_error(std::string(what) + " must be token ids (ints), got " + type_name(item));
    }
    py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(item.ptr()));
    if (!value) throw py::error_already_set();
    const long long v = PyLong_AsLongLong(value.ptr());
    if (PyErr_Occurred()) throw py::error_already_set();
    return static_cast<int64_t>(v);
  };
  const bool sequence = PySequence_Check(obj.ptr()) && !PyUnicode_Check(obj.ptr()) && !PyBytes_Check(obj.ptr());
  if (!sequence) {
    if (PyIndex_Check(obj.ptr()) || PyBool_Check(obj.ptr())) return {as_int(obj)};
    throw py::type_error(std::string(what) + " must be an int, a sequence of ints or an integer tensor, got " +
                         type_name(obj));
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  std::vector<int64_t> ids;
  ids.reserve(seq.size());
  for (py::handle item : seq) ids.push_back(as_int(item));
  return ids;
}

// Runs fn() without the GIL, in inference mode (its tensors outlive the call).
// config[key] as T: ValueError "<owner> config is missing 'key'", TypeError for a wrong type.
template <typename T>
T config_item(const py::dict& config, const char* key, const char* owner) {
  if (!config.contains(key)) throw py::value_error(std::string(owner) + " config is missing '" + key + "'");
  try {
    return config[key].cast<T>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string(owner) + " config '" + key + "' has the wrong type: " + type_name(config[key]));
  }
}

// Takes tensors out of the dict by name; whatever is left at the end is an error.
class TensorTable {
 public:
  TensorTable(const py::dict& tensors, std::string owner) : owner_(std::move(owner)) {
    for (auto item : tensors) {
      const auto name = py::str(item.first).cast<std::string>();
      if (!THPVariable_Check(item.second.ptr())) {
        throw py::type_error(owner_ + " tensor '" + name + "' must be a torch.Tensor, got " +
                             type_name(item.second));
      }
      table_[name] = THPVariable_Unpack(item.second.ptr());
    }
  }
  at::Tensor take(const std::string& name, bool optional = false) {
    const auto it = table_.find(name);
    if (it == table_.end()) {
      if (optional) return at::Tensor();
      throw py::value_error(owner_ + " tensors are missing '" + name + "'");
    }
    at::Tensor t = it->second;
    table_.erase(it);
    return t;
  }
  void check_empty() const {
    if (table_.empty()) return;
    std::string names;
    for (const auto& kv : table_) names += (names.empty() ? "" : ", ") + kv.first;
    throw py::value_error(owner_ + " got tensors it does not use (unsupported model parts?): " + names);
  }

 private:
  std::string owner_;
  std::map<std::string, at::Tensor> table_;
};

template <typename Fn>
auto without_gil(Fn&& fn) {
  py::gil_scoped_release no_gil;
  c10::InferenceMode guard;
  return fn();
}

// prefill / step / extend / truncate / scrub and the properties every runner binding has
// (NativeModel, GraphModel, HeadModel); R needs prefill_last, feed, truncate, scrub,
// length, max_len, vocab_size, hidden_size, device, dtype.
template <typename R, typename Cls>
void def_runner_methods(Cls& cls) {
  cls.def(
         "prefill",
         [](R& self, py::handle ids) -> py::object {
           const auto v = token_list(ids, "ids");
           auto out = without_gil([&] {
             auto r = self.prefill_last(v);
             if (r.first.defined()) r = {r.first.select(0, 0), r.second.select(0, 0)};
             return r;
           });
           if (!out.first.defined()) return py::none();
           return py::make_tuple(out.first, out.second);
         },
         py::arg("ids"),
         "Reset the cache and run `ids`; returns (logits [V] float32, hidden [D]) of the last "
         "position, None if `ids` is empty.")
      .def(
          "step",
          [](R& self, py::handle token) {
            const auto v = token_list(token, "token");
            if (v.size() != 1) {
              throw py::value_error("step() takes one token, got " + std::to_string(v.size()));
            }
            auto out = without_gil([&] {
              auto r = self.feed(v);
              return std::make_pair(r.first.select(0, 0), r.second.select(0, 0));
            });
            return py::make_tuple(out.first, out.second);
          },
          py::arg("token"), "Feed one token; returns (logits [V] float32, hidden [D]) for the next position.")
      .def(
          "extend",
          [](R& self, py::handle tokens) {
            const auto v = token_list(tokens, "tokens");
            if (v.empty()) throw py::value_error("extend() needs at least one token");
            auto out = without_gil([&] { return self.feed(v); });
            return py::make_tuple(out.first, out.second);
          },
          py::arg("tokens"), "Feed n >= 1 tokens in one forward; returns (logits [n, V] float32, hidden [n, D]).")
      .def(
          "truncate",
          [](R& self, py::handle length) {
            if (PyBool_Check(length.ptr()) || !PyLong_Check(length.ptr())) {
              throw py::type_error("length must be an int, got " + type_name(length));
            }
            const long long v = PyLong_AsLongLong(length.ptr());
            if (PyErr_Occurred()) throw py::error_already_set();
            self.truncate(static_cast<int64_t>(v));
          },
          py::arg("length"), "Keep the first `length` cached tokens (rollback); later entries are masked.")
      .def("scrub", &R::scrub, py::call_guard<py::gil_scoped_release>(),
           "Zero every cache slot and set the length to 0 (after a failed generation).")
      .def_property_readonly("length", &R::length, "Tokens currently in the cache.")
      .def_property_readonly("max_len", &R::max_len)
      .def_property_readonly("vocab_size", &R::vocab_size)
      .def_property_readonly("hidden_size", &R::hidden_size)
      .def_property_readonly("device", &R::device)
      .def_property_readonly("dtype", &R::dtype);
}

}  // namespace runner_py
}  // namespace engine
}  // namespace sprinter
