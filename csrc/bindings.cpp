// sprinter_ext._C: the compiled core of sprinter_ext (pybind11 + libtorch). This file
// only says what the module holds; each subsystem registers its own part:
//   common/common_py.cpp   Stream, seed_key, SamplingSettings, NONFINITE_MESSAGE
//   ops/ops_py.cpp         the Philox functions and the fused ops' CPU (and CUDA) twins
//   engine/engine_py.cpp   Runner, PyRunner, Proposer, GenerationConfig, Generation, native_methods()
//   drafts/drafts_py.cpp   the model-free drafts' proposers (NgramProposer)
//   drafts/suffix_py.cpp   SuffixProposer (the `suffix` draft, a Proposer), suffix_options()
//   model/                 NativeModel, GraphModel (CUDA builds), HeadModel, the small-n CPU linear
// plus build_info(), the facts of this build.
#include <torch/csrc/utils/pybind.h>
#include <torch/headeronly/version.h>

#include <string>

#include "common/common_py.h"
#include "drafts/drafts_py.h"
#include "drafts/suffix_py.h"
#include "engine/engine_py.h"
#include "model/head_model.h"
#include "model/linear_cpu.h"
#include "model/linear_half_cpu.h"
#include "model/linear_quant_cpu.h"
#include "model/native_model.h"
#include "ops/ops_py.h"

// Build facts handed in by CMakeLists.txt (fallbacks keep a hand build working).
#ifndef SPRINTER_COMPILER
#define SPRINTER_COMPILER "unknown"
#endif
#ifndef SPRINTER_CXX_STANDARD
#define SPRINTER_CXX_STANDARD 0
#endif
#ifndef SPRINTER_BUILD_TYPE
#define SPRINTER_BUILD_TYPE "unknown"
#endif

#include <ATen/Parallel.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

namespace py = pybind11;

namespace {

// Distinct threads that ran an at::parallel_for of `tasks` one-item chunks; each chunk spins
// ~50 us so that an idle worker cannot finish its share before the others have woken up.
int64_t parallel_workers(int64_t tasks) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50 * (e - b));
    while (std::chrono::steady_clock::now() < until) {
    }
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(ids.size());
}

py::dict build_info() {
  py::dict info;
  info["torch_version"] = std::string(TORCH_VERSION);
#ifdef SPRINTER_WITH_CUDA
  info["with_cuda"] = true;
#ifdef SPRINTER_CUDA_VERSION
  info["cuda_version"] = std::string(SPRINTER_CUDA_VERSION);
#else
  info["cuda_version"] = py::none();
#endif
#else
  info["with_cuda"] = false;
  info["cuda_version"] = py::none();
#endif
  info["compiler"] = std::string(SPRINTER_COMPILER);
  info["cxx_standard"] = static_cast<int>(SPRINTER_CXX_STANDARD);
  info["build_type"] = std::string(SPRINTER_BUILD_TYPE);
#ifdef SPRINTER_OPENMP
  info["openmp"] = true;  // at::parallel_for inside _C runs on torch's OpenMP pool
#else
  info["openmp"] = false;  // ... runs serially (see CMakeLists.txt, "OpenMP")
#endif
  info["pybind11_version"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." +
                             std::to_string(PYBIND11_VERSION_MINOR) + "." +
                             std::to_string(PYBIND11_VERSION_PATCH);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sprinter_ext compiled core: build facts, the randomness contract, the fused ops, the native loop";

  m.def("build_info", &build_info,
        "Facts about this build: torch_version (compiled against), with_cuda, cuda_version, "
        "compiler, cxx_standard, build_type, openmp, pybind11_version.");
  m.def(
      "parallel_workers",
      [](int64_t tasks) {
        if (tasks < 1) throw py::value_error("tasks must be >= 1");
        py::gil_scoped_release no_gil;
        return parallel_workers(tasks);
      },
      py::arg("tasks") = 64,
      "How many distinct threads ran the chunks of an at::parallel_for of `tasks` items (grain 1) "
      "compiled into _C: torch.get_num_threads() when the build's OpenMP works, 1 when it does not.");

  sprinter::register_common(m);
  sprinter::register_ops(m);
  // The model interface of engine/runner.h, the native loop over it and its native
  // implementation (model/native_model_py.cpp).
  py::handle runner_base = sprinter::engine::register_engine(m);
  sprinter::drafts::register_suffix(m);  // the `suffix` draft, a Proposer (drafts/suffix_py.cpp)
  sprinter::engine::register_native_model(m, runner_base);
  sprinter::engine::register_head_model(m, runner_base);  // a draft head over its tap
  sprinter::drafts::register_ngram(m);  // model-free drafts (their base _C.Proposer is the engine's)
  sprinter::cpu::register_linear_cpu(m);  // the small-n CPU linear of the native forward
  sprinter::cpu::register_linear_quant_cpu(m);  // ... over GGUF Q4_1 / Q8_0 blocks
  sprinter::cpu::register_linear_half_cpu(m);   // ... over float16 / bfloat16 weights, float32 x
}
