// GraphModel (graph_model.h): one CUDA graph per forward length over a NativeModel.
//
// Capture follows the recipe of torch.cuda.graphs.graph(): warm up on a side stream
// (cuBLAS handles and workspaces, lazily created kernels), synchronise, capture on that
// side stream into the graph's private memory pool, synchronise. NOTE: every graph keeps
// its own pool: replays come in any order (1, 5, 1, 1, 5, ...), and a shared pool is
// only safe when graphs replay in capture order.
#include "graph_model.h"

#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace sprinter {
namespace engine {

struct GraphModel::Captured {
  at::cuda::CUDAGraph graph;
  at::Tensor inputs;          // [2, n] int64 on the device: token ids, cache positions
  at::Tensor logits, hidden;  // the captured forward's outputs [n, V] / [n, D], rewritten by replay()
};

GraphModel::GraphModel(std::shared_ptr<NativeModel> model, std::vector<int64_t> lengths)
    : model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("GraphModel: model is null");
  const c10::Device device = model_->device();
  if (!device.is_cuda()) {
    throw std::invalid_argument("GraphModel: CUDA graphs need a model on a CUDA device, got " + device.str());
  }
  if (lengths.empty()) throw std::invalid_argument("GraphModel: no lengths to capture");
  for (const int64_t n : lengths) {
    if (n < 1 || n > model_->max_len()) {
      throw std::invalid_argument("GraphModel: length " + std::to_string(n) + " is not in [1, max_len=" +
                                  std::to_string(model_->max_len()) + "]");
    }
  }

  std::lock_guard<std::mutex> lock(model_->mutex_);
  c10::InferenceMode inference;
  const c10::cuda::CUDAGuard device_guard(device);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(device.index());
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  caller.synchronize();  // the side stream starts after the work queued so far (weights, cache)
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);
    for (const int64_t n : lengths) {
      if (graphs_.count(n)) continue;
      auto cap = std::make_unique<Captured>();
      cap->inputs = at::zeros({2, n}, long_opts);
      cap->inputs[1].copy_(at::arange(n, long_opts));  // valid slots for the warm-up and the capture
      const at::Tensor ids = cap->inputs[0], pos = cap->inputs[1];
      for (int warm = 0; warm < 3; ++warm) model_->forward_at(ids, pos, /*last_only=*/false);
      side.synchronize();
      cap->graph.capture_begin();
      auto out = model_->forward_at(ids, pos, /*last_only=*/false);
      cap->graph.capture_end();
      cap->logits = out.first;
      cap->hidden = out.second;
      graphs_.emplace(n, std::move(cap));
    }
    side.synchronize();
  }
  model_->length_.store(0, std::memory_order_release);  // the warm-ups wrote slots [0, n)
}

GraphModel::~GraphModel() = default;

std::vector<int64_t> GraphModel::captured_lengths() const {
  std::vector<int64_t> out;
  for (const auto& kv : graphs_) out.push_back(kv.first);
  return out;
}

std::pair<at::Tensor, at::Tensor> GraphModel::feed(const std::vector<int64_t>& tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const auto it = graphs_.find(n);
  if (it == graphs_.end()) return model_->feed(tokens);  // eager (validates, moves the length)
  Captured& cap = *it->second;

  std::lock_guard<std::mutex> lock(model_->mutex_);
  const int64_t start = model_->length_.load(std::memory_order_acquire);
  model_->check_room(start, n);
  model_->check_tokens(tokens);
  c10::InferenceMode inference;
  const c10::cuda::CUDAGuard device_guard(model_->device());
  // NOTE: a pageable host tensor: copy_ returns once CUDA has staged it, so the next
  // call may rewrite a fresh one without racing the transfer.
  at::Tensor host = at::empty({2, n}, at::TensorOptions().dtype(at::kLong));
  int64_t* h = host.mutable_data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j) {
    h[j] = tokens[j];
    h[n + j] = start + j;
  }
  cap.inputs.copy_(host);
  cap.graph.replay();  // on the current stream, after the copy
  model_->length_.store(start + n, std::memory_order_release);
  // The static outputs are rewritten by the next replay: hand out copies.
  return {cap.logits.clone(), cap.hidden.clone()};
}

}  // namespace engine
}  // namespace sprinter
