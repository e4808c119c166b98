// The Python bindings of the randomness contract and the fused ops (registered into
// sprinter_ext._C by register_ops, called from csrc/bindings.cpp):
//   philox4x32(counter, key)                  -> 4-tuple of uint32
//   philox_uniform(seed, position, stream, n) -> float32 [n]     (int position)
//                                             -> float32 [B, n]  (int64 tensor [B])
//   philox_uniform_batched(seed, positions, stream, n) -> float32 [B, n]
// the fused ops' CPU twins (draft_sample_cpu, verify_tokens_cpu) and, in CUDA builds,
// their CUDA twins (draft_sample_cuda, verify_tokens_cuda; same arguments and results).
// Arguments are validated here; bad values raise ValueError, wrong types TypeError
// (pybind11 translates py::value_error / py::type_error); the sampling settings raise
// the named errors of sprinter_ext.errors (common/py_checks.h).
#include "ops/ops_py.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "common/philox.h"
#include "common/py_checks.h"
#include "ops/ops_cpu.h"

#ifdef SPRINTER_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ops/cuda/ops_cuda_torch.h"
#include "ops/cuda/philox_cuda.h"
#endif

namespace py = pybind11;

namespace {

constexpr uint64_t kMaxU32 = 0xFFFFFFFFull;
constexpr uint64_t kMaxU64 = 0xFFFFFFFFFFFFFFFFull;
constexpr uint64_t kMaxI64 = 0x7FFFFFFFFFFFFFFFull;
// index >> 2 is a uint32 counter word, so at most 4 * 2**32 indices.
constexpr uint64_t kMaxN = 4ull << 32;

std::string type_name(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// A Python int (or anything with __index__, but not bool) in [0, max_value].
uint64_t checked_uint(py::handle obj, const char* name, uint64_t max_value, const char* range) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()) || THPVariable_Check(obj.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(obj));
  }
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  if (value < py::int_(0) || value > py::int_(max_value)) {
    throw py::value_error(std::string(name) + " must be in " + range + ", got " +
                          py::repr(value).cast<std::string>());
  }
  const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
  if (PyErr_Occurred()) throw py::error_already_set();
  return static_cast<uint64_t>(v);
}

using sprinter::philox::Key;

Key seed_key(py::handle seed) { return sprinter::philox::seed_key(checked_uint(seed, "seed", kMaxU64, "[0, 2**64)")); }

uint32_t stream_arg(py::handle stream) {
  return static_cast<uint32_t>(checked_uint(stream, "stream", kMaxU32, "[0, 2**32)"));
}

int64_t n_arg(py::handle n) {
  return static_cast<int64_t>(checked_uint(n, "n", kMaxN, "[0, 2**34]"));
}

uint32_t u32_item(py::handle item, const char* what, size_t i) {
  const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
  return static_cast<uint32_t>(checked_uint(item, name.c_str(), kMaxU32, "[0, 2**32)"));
}

// A tuple/list of exactly `len` uint32 values.
void u32_sequence(py::handle obj, const char* what, size_t len, uint32_t* dst) {
  if (!(PyTuple_Check(obj.ptr()) || PyList_Check(obj.ptr()))) {
    throw py::type_error(std::string(what) + " must be a tuple of " + std::to_string(len) +
                         " ints, got " + type_name(obj));
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  if (seq.size() != len) {
    throw py::value_error(std::string(what) + " must have " + std::to_string(len) +
                          " elements, got " + std::to_string(seq.size()));
  }
  for (size_t i = 0; i < len; ++i) dst[i] = u32_item(seq[i], what, i);
}

py::tuple philox4x32(py::handle counter, py::handle key) {
  sprinter::philox::U32x4 c;
  uint32_t k[2];
  u32_sequence(counter, "counter", 4, c.v);
  u32_sequence(key, "key", 2, k);
  const sprinter::philox::U32x4 r = sprinter::philox::philox4x32_10(c, k[0], k[1]);
  return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
}

at::Tensor uniform_scalar(py::handle seed, py::handle position, py::handle stream, py::handle n) {
  const Key key = seed_key(seed);
  // Positions are taken modulo 2**32, as in the reference (int64 & 0xFFFFFFFF).
  const uint32_t pos = static_cast<uint32_t>(
      checked_uint(position, "position", kMaxI64, "[0, 2**63)") & kMaxU32);
  const uint32_t st = stream_arg(stream);
  const int64_t count = n_arg(n);
  at::Tensor out = at::empty({count}, at::TensorOptions().dtype(at::kFloat));
  float* o = out.data_ptr<float>();
  const int64_t blocks = (count + 3) / 4;
  py::gil_scoped_release no_gil;
  at::parallel_for(0, blocks, /*grain_size=*/4096, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const auto w = sprinter::philox::block_words(static_cast<uint32_t>(b), pos, st, key.k0, key.k1);
      for (int j = 0; j < 4 && 4 * b + j < count; ++j) {
        o[4 * b + j] = sprinter::philox::word_to_uniform(w.v[j]);
      }
    }
  });
  return out;
}

at::Tensor positions_arg(py::handle positions) {
  if (!THPVariable_Check(positions.ptr())) {
    throw py::type_error("positions must be an int64 torch.Tensor of shape [B], got " +
                         type_name(positions));
  }
  at::Tensor t = THPVariable_Unpack(positions.ptr());
  if (t.scalar_type() != at::kLong) {
    throw py::type_error(std::string("positions must be an int64 tensor, got dtype ") +
                         c10::toString(t.scalar_type()));
  }
  if (t.dim() != 1) {
    std::ostringstream msg;
    msg << "positions must be a 1-D tensor [B], got shape " << t.sizes();
    throw py::value_error(msg.str());
  }
  const bool cpu = t.device().is_cpu();
#ifdef SPRINTER_WITH_CUDA
  const bool ok = cpu || t.device().is_cuda();
  const char* allowed = "cpu or cuda";
#else
  const bool ok = cpu;
  const char* allowed = "cpu (this build of sprinter_ext._C has no CUDA)";
#endif
  if (!ok) {
    throw py::value_error("positions must be on " + std::string(allowed) + ", got device " +
                          t.device().str());
  }
  return t.contiguous();
}

at::Tensor uniform_batched(py::handle seed, py::handle positions, py::handle stream, py::handle n) {
  const Key key = seed_key(seed);
  const at::Tensor pos = positions_arg(positions);
  const uint32_t st = stream_arg(stream);
  const int64_t count = n_arg(n);
  const int64_t batch = pos.size(0);
  at::Tensor out = at::empty({batch, count}, pos.options().dtype(at::kFloat));
  if (batch == 0 || count == 0) return out;
  py::gil_scoped_release no_gil;
#ifdef SPRINTER_WITH_CUDA
  if (pos.device().is_cuda()) {
    const c10::cuda::CUDAGuard guard(pos.device());
    char msg[256] = {0};
    const int rc = sprinter::cuda::launch_philox_uniform(
        pos.data_ptr<int64_t>(), out.data_ptr<float>(), batch, count, key.k0, key.k1, st,
        static_cast<void*>(c10::cuda::getCurrentCUDAStream(pos.device().index()).stream()), msg,
        static_cast<int>(sizeof(msg)));
    if (rc != 0) {
      throw std::runtime_error(std::string("philox_uniform CUDA launch failed: ") + msg);
    }
    return out;
  }
#endif
  const int64_t* p = pos.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  const int64_t blocks = (count + 3) / 4;
  at::parallel_for(0, batch * blocks, /*grain_size=*/4096, [&](int64_t begin, int64_t end) {
    int64_t row = begin / blocks;
    int64_t b = begin % blocks;
    for (int64_t t = begin; t < end; ++t) {
      const uint32_t prow = static_cast<uint32_t>(static_cast<uint64_t>(p[row]) & kMaxU32);
      const auto w = sprinter::philox::block_words(static_cast<uint32_t>(b), prow, st, key.k0, key.k1);
      float* dst = o + row * count + 4 * b;
      for (int j = 0; j < 4 && 4 * b + j < count; ++j) dst[j] = sprinter::philox::word_to_uniform(w.v[j]);
      if (++b == blocks) {
        b = 0;
        ++row;
      }
    }
  });
  return out;
}

at::Tensor uniform(py::handle seed, py::handle position, py::handle stream, py::handle n) {
  if (THPVariable_Check(position.ptr())) return uniform_batched(seed, position, stream, n);
  return uniform_scalar(seed, position, stream, n);
}

// The fused ops' twins (CPU, CUDA) share one Python signature each. The scalars are
// checked here with the GIL held (seed, stream; the sampling settings by the one rule
// of sprinter_ext.sampling, py_checks.h), the tensors by the twins themselves
// (std::invalid_argument -> ValueError); the GIL is released while they run.
using sprinter::bind::checked_settings;
using Tensors = std::vector<at::Tensor>;

template <class Fn>
void def_draft_sample(py::module_& m, const char* name, Fn fn, const char* doc) {
  m.def(
      name,
      [fn](const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, py::handle seed,
           py::handle stream, py::handle temperature, py::handle top_k, py::handle top_p, const Tensors& weights,
           const Tensors& biases, const std::vector<int64_t>& features) {
        const uint64_t sd = checked_uint(seed, "seed", kMaxU64, "[0, 2**64)");
        const uint32_t st = stream_arg(stream);
        const auto s = checked_settings(temperature, top_k, top_p);
        py::gil_scoped_release no_gil;
        return fn(logits, hidden, position, sd, st, s, weights, biases, features);
      },
      py::arg("logits"), py::arg("hidden"), py::arg("position"), py::arg("seed"), py::arg("stream"),
      py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("weights"), py::arg("biases"),
      py::arg("features"), doc);
}

template <class Fn>
void def_verify_tokens(py::module_& m, const char* name, Fn fn, const char* doc) {
  m.def(
      name,
      [fn](const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
           const at::Tensor& start_position, py::handle seed, py::handle temperature, py::handle top_k,
           py::handle top_p, bool sd) {
        const uint64_t key = checked_uint(seed, "seed", kMaxU64, "[0, 2**64)");
        const auto s = checked_settings(temperature, top_k, top_p);
        py::gil_scoped_release no_gil;
        return fn(target_logits, draft_probs, draft_tokens, start_position, key, s, sd);
      },
      py::arg("target_logits"), py::arg("draft_probs"), py::arg("draft_tokens"), py::arg("start_position"),
      py::arg("seed"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("sd"), doc);
}

}  // namespace

namespace sprinter {

void register_ops(py::module_& m) {
  m.def("philox4x32", &philox4x32, py::arg("counter"), py::arg("key"),
        "Philox4x32-10 of a counter (4 uint32) under a key (2 uint32); returns 4 uint32.");

  m.def("philox_uniform", &uniform, py::arg("seed"), py::arg("position"), py::arg("stream"),
        py::arg("n"),
        "u(seed, position, stream, index) for index in [0, n).\n\n"
        "position: an int in [0, 2**63) -> float32 [n] on CPU; or an int64 tensor [B] -> "
        "float32 [B, n] on the tensor's device (CUDA builds run the CUDA kernel for CUDA "
        "tensors). Positions are taken modulo 2**32.");

  m.def("philox_uniform_batched", &uniform_batched, py::arg("seed"), py::arg("positions"),
        py::arg("stream"), py::arg("n"),
        "u(seed, positions[b], stream, index) -> float32 [B, n] on positions' device.");

  def_draft_sample(m, "draft_sample_cpu", &sprinter::cpu::draft_sample,
                   "CPU twin of sprinter_ext.ops.draft_sample (inputs checked there): returns (token [B] "
                   "int64, probs [B, V] f32, q_token [B] f32, score [B] f32, status [B] int8; 1 = "
                   "non-finite logits).");
  def_verify_tokens(m, "verify_tokens_cpu", &sprinter::cpu::verify_tokens,
                    "CPU twin of sprinter_ext.ops.verify_tokens (inputs checked there): returns (tokens "
                    "[B, n+1] int64 padded with -1, num_accepted [B] int64, status [B] int8; 1 = "
                    "non-finite logits).");
#ifdef SPRINTER_WITH_CUDA
  def_draft_sample(m, "draft_sample_cuda", &sprinter::cuda::draft_sample,
                   "CUDA twin of sprinter_ext.ops.draft_sample (inputs checked there), on the current "
                   "stream, without a host sync: returns (token [B] int64, probs [B, V] f32, q_token [B] "
                   "f32, score [B] f32, status [B] int8; 1 = non-finite logits, then token -1, q_token 0, "
                   "score 0).");
  def_verify_tokens(m, "verify_tokens_cuda", &sprinter::cuda::verify_tokens,
                    "CUDA twin of sprinter_ext.ops.verify_tokens (inputs checked there), on the current "
                    "stream, without a host sync: returns (tokens [B, n+1] int64 padded with -1, "
                    "num_accepted [B] int64, status [B] int8; 1 = non-finite logits, then num_accepted -1 "
                    "and a row of -1).");
#endif

  m.attr("MAX_N") = py::int_(kMaxN);
}

}  // namespace sprinter
