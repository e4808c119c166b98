// The narrow model interface the native loop (csrc/engine/engine.cpp) drives.
//
// It is the C++ side of the Python runner protocol, sprinter_ext.runners.Runner
// (prefill / step / extend / truncate / length / scrub; `feed` here is step or extend
// there): one batch-1 causal LM with a static KV cache, rolled back by moving its
// length. The Python method names are bound as _C.RUNNER_PROTOCOL and
// _C.SNAPSHOT_PROTOCOL (engine_py.cpp); tests/test_native_boundary.py checks the
// Python protocols against them. Implementations:
//   PyRunner     (engine_py.cpp)              calls a Python runner, taking the GIL per call;
//   NativeModel  (model/native_model.cpp)     the forward of Llama / GPT-2 in ATen, no Python;
//   GraphModel   (model/cuda/graph_model.cpp) a NativeModel replaying CUDA graphs;
//   HeadModel    (model/head_model.cpp)       a draft head over a NativeModel's feature tap.
//
// Snapshot/restore is an optional capability (sprinter_ext.runners.SnapshotRunner):
// ssd keeps several speculated continuations of one prefix by copying KV entries out
// and back in. A runner says whether it has it with supports_snapshot(); the default
// snapshot()/restore() throw, naming the runner, so a caller that needs them refuses
// a runner without them before it runs (no native method needs them today).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sprinter {
namespace engine {

// KV entries [start, end) of every layer: (keys, values) per layer.
using KVSnapshot = std::vector<std::pair<at::Tensor, at::Tensor>>;

class Runner {
 public:
  virtual ~Runner() = default;
  // Reset the cache and run `ids` (may be empty; nothing is returned).
  virtual void prefill(const std::vector<int64_t>& ids) = 0;
  // Feed n >= 1 tokens after the cached ones in one forward:
  // (logits [n, V] float32, hidden [n, D] in the model's dtype).
  virtual std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) = 0;
  // feed() whose caller reads only the last position: (logits [1, V], hidden [1, D]). A runner
  // may skip the other rows' outputs (the draft head does: its LM head runs once, not n times).
  virtual std::pair<at::Tensor, at::Tensor> feed_last(const std::vector<int64_t>& tokens) {
    auto out = feed(tokens);
    const int64_t n = out.first.size(0);
    return {out.first.slice(0, n - 1), out.second.slice(0, n - 1)};
  }
  // Keep the first `length` cached tokens (0 <= length <= this->length()).
  virtual void truncate(int64_t length) = 0;
  virtual int64_t length() const = 0;
  // Zero every cache slot and set the length to 0. A forward that produced NaN/inf has
  // written NaN keys/values; masked attention multiplies masked slots by 0 and
  // 0 * NaN = NaN, so rolling back is not enough: the engines call scrub() whenever a
  // generation fails, and the next prefill starts from a clean cache. Buffer addresses
  // stay the same (captured CUDA graphs remain valid).
  virtual void scrub() = 0;

  // The optional capability: copy KV entries [start, end) out / back in at `start`.
  virtual bool supports_snapshot() const { return false; }
  virtual KVSnapshot snapshot(int64_t start, int64_t end) { throw no_snapshot(); }
  virtual void restore(int64_t start, const KVSnapshot& snap) { throw no_snapshot(); }
  // A short name for error messages (the class, or the wrapped Python class).
  virtual std::string name() const { return "Runner"; }

 protected:
  std::logic_error no_snapshot() const {
    return std::logic_error(name() + " does not support snapshot/restore (supports_snapshot is false)");
  }
};

}  // namespace engine
}  // namespace sprinter
