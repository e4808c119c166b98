// The narrow model interface the native loop (csrc/engine/engine.cpp) drives.
//
// It mirrors the Python runner protocol of sprinter_ext/models/runner.py
// (prefill / step / extend / truncate / length): one batch-1 causal LM with a
// static KV cache, rolled back by moving its length. Two implementations:
//   PyRunner     (engine.cpp)        calls a Python ModelRunner, taking the GIL per call;
//   NativeModel  (native_model.cpp)  the forward of Llama / GPT-2 in ATen, no Python at all.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace sprinter {
namespace engine {

class Runner {
 public:
  virtual ~Runner() = default;
  // Reset the cache and run `ids` (may be empty; nothing is returned).
  virtual void prefill(const std::vector<int64_t>& ids) = 0;
  // Feed n >= 1 tokens after the cached ones in one forward:
  // (logits [n, V] float32, hidden [n, D] in the model's dtype).
  virtual std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) = 0;
  // Keep the first `length` cached tokens (0 <= length <= this->length()).
  virtual void truncate(int64_t length) = 0;
  virtual int64_t length() const = 0;
  // Zero every cache slot and set the length to 0. A forward that produced NaN/inf has
  // written NaN keys/values; masked attention multiplies masked slots by 0 and
  // 0 * NaN = NaN, so rolling back is not enough: the engines call scrub() whenever a
  // generation fails, and the next prefill starts from a clean cache. Buffer addresses
  // stay the same (captured CUDA graphs remain valid).
  virtual void scrub() = 0;
};

}  // namespace engine
}  // namespace sprinter
