// GraphModel: a NativeModel whose fixed-length forwards replay CUDA graphs.
//
// Speculative decoding calls the target with the same few lengths over and over
// (n = k + 1 tokens to verify, n = 1 for a draft step); at batch 1 those forwards are
// bound by kernel-launch overhead, which one cudaGraphLaunch removes. GraphModel
// captures, once, one forward per length in `lengths` (NativeModel::forward_at, which
// reads the tokens and their cache slots from device buffers) into an
// at::cuda::CUDAGraph over static input buffers [2, n] (row 0 token ids, row 1 cache
// positions). feed(tokens) of a captured length copies the tokens and positions into
// that buffer, replays the graph and returns copies of its static outputs; any other
// length, and prefill, run the eager forward. Results match the eager forward's up to
// the kernels cuBLAS picks inside a graph (tests/test_native_model.py compares them
// with a 1e-5 tolerance; it needs a GPU, so it has not run where this was written).
//
// Compiled only with SPRINTER_WITH_CUDA (CMakeLists.txt). Thread-safety as NativeModel:
// calls are serialised by the wrapped model's mutex. Use the GraphModel, not the
// wrapped NativeModel, once it exists (both share one cache).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "model/native_model.h"

namespace sprinter {
namespace engine {

class GraphModel : public Runner {
 public:
  // `model` must live on a CUDA device; every n in `lengths` must lie in [1, max_len].
  // Capturing runs the forward of each length a few times, so it resets the cache
  // (length 0). Throws std::invalid_argument for bad arguments and c10::Error when
  // CUDA refuses the capture.
  GraphModel(std::shared_ptr<NativeModel> model, std::vector<int64_t> lengths);
  ~GraphModel() override;

  void prefill(const std::vector<int64_t>& ids) override { model_->prefill(ids); }
  std::pair<at::Tensor, at::Tensor> feed(const std::vector<int64_t>& tokens) override;
  void truncate(int64_t length) override { model_->truncate(length); }
  int64_t length() const override { return model_->length(); }
  void scrub() override { model_->scrub(); }  // the graphs read the same (zeroed) buffers
  std::string name() const override { return "GraphModel"; }  // no snapshot/restore

  std::pair<at::Tensor, at::Tensor> prefill_last(const std::vector<int64_t>& ids) {
    return model_->prefill_last(ids);
  }
  std::vector<int64_t> captured_lengths() const;
  const std::shared_ptr<NativeModel>& model() const { return model_; }
  const NativeModelConfig& config() const { return model_->config(); }
  int64_t max_len() const { return model_->max_len(); }
  int64_t vocab_size() const { return model_->vocab_size(); }
  int64_t hidden_size() const { return model_->hidden_size(); }
  int64_t num_layers() const { return model_->num_layers(); }
  c10::Device device() const { return model_->device(); }
  c10::ScalarType dtype() const { return model_->dtype(); }

 private:
  struct Captured;
  std::shared_ptr<NativeModel> model_;
  std::map<int64_t, std::unique_ptr<Captured>> graphs_;
};

}  // namespace engine
}  // namespace sprinter
