// Torch-facing wrapper of the CUDA fused ops (declared in ops_cuda_torch.h): checks
// the tensors (named errors, std::invalid_argument -> ValueError in Python),
// allocates the outputs and workspaces, and calls the raw launchers of ops_cuda.h
// on the current CUDA stream. Host C++ (torch's C10 CUDA headers); no CUDA code.
#include "ops_cuda_torch.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

#include "ops_cuda.h"

namespace sprinter {
namespace cuda {
namespace {

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

// The launchers' dtype code of a float tensor, or a named error.
DType float_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      throw std::invalid_argument(std::string(name) + " must be float32, float16 or bfloat16");
  }
}

void require_on(const at::Tensor& t, const at::Device& dev, const char* name) {
  require(t.device() == dev, std::string(name) + " must be on the logits' device " + dev.str() +
                                 ", got " + t.device().str());
}

void check_launch(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
  }
}

// The verifier's layers as the launcher's struct (pointers stay owned by the tensors).
Verifier verifier_layers(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
                         const std::vector<int64_t>& features, int64_t D, const at::Device& dev) {
  require(weights.size() == biases.size(), "weights and biases must have the same length");
  require(weights.size() <= static_cast<size_t>(kMaxVerifierLayers),
          "the CUDA draft_sample supports verifiers of at most " +
              std::to_string(kMaxVerifierLayers) + " layers, got " +
              std::to_string(weights.size()));
  require(features.size() <= 3, "at most 3 verifier features");
  Verifier v{};
  v.num_layers = static_cast<int>(weights.size());
  v.num_features = static_cast<int>(features.size());
  for (size_t f = 0; f < features.size(); ++f) {
    require(features[f] >= 0 && features[f] <= 2, "feature codes must be 0, 1 or 2");
    v.features[f] = static_cast<int>(features[f]);
  }
  int64_t expect_in = D + static_cast<int64_t>(features.size());
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    const std::string layer = "verifier layer " + std::to_string(l);
    require(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 2 &&
                w.size(1) == expect_in,
            layer + " weight must be float32 [out, " + std::to_string(expect_in) + "], contiguous");
    require(b.scalar_type() == at::kFloat && b.is_contiguous() && b.dim() == 1 &&
                b.size(0) == w.size(0),
            layer + " bias must be float32 [out]");
    require_on(w, dev, (layer + " weight").c_str());
    require_on(b, dev, (layer + " bias").c_str());
    require(w.size(0) >= 1 && w.size(0) <= kMaxVerifierWidth,
            layer + " has " + std::to_string(w.size(0)) + " outputs; the CUDA draft_sample supports " +
                "at most " + std::to_string(kMaxVerifierWidth) + " (use backend='cpu' or 'torch')");
    v.w[l] = w.data_ptr<float>();
    v.b[l] = b.data_ptr<float>();
    v.in[l] = w.size(1);
    v.out[l] = w.size(0);
    expect_in = w.size(0);
  }
  require(weights.empty() || expect_in == 1, "the verifier's last layer must have one output");
  return v;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draft_sample(
    const at::Tensor& logits, const at::Tensor& hidden, const at::Tensor& position, uint64_t seed,
    uint32_t stream, const SamplingSettings& sampling, const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
    const std::vector<int64_t>& features) {
  require(logits.dim() == 2 && logits.is_contiguous() && logits.is_cuda(),
          "logits must be a contiguous CUDA tensor [B, V]");
  const DType dtype = float_dtype(logits, "logits");
  const at::Device dev = logits.device();
  const int64_t B = logits.size(0), V = logits.size(1);
  require(V >= 1, "logits must have at least one column (V >= 1)");
  require(hidden.dim() == 2 && hidden.is_contiguous() && hidden.size(0) == B &&
              hidden.scalar_type() == at::kFloat,
          "hidden must be a contiguous float32 [B, D] tensor");
  require_on(hidden, dev, "hidden");
  require(position.dim() == 1 && position.size(0) == B && position.scalar_type() == at::kLong &&
              position.is_contiguous(),
          "position must be a contiguous int64 tensor [B]");
  require_on(position, dev, "position");
  const Verifier v = verifier_layers(weights, biases, features, hidden.size(1), dev);

  const c10::cuda::CUDAGuard guard(dev);
  const auto opts = logits.options();
  at::Tensor token = at::empty({B}, opts.dtype(at::kLong));
  at::Tensor probs = at::empty({B, V}, opts.dtype(at::kFloat));
  at::Tensor q_token = at::empty({B}, opts.dtype(at::kFloat));
  at::Tensor score = at::empty({B}, opts.dtype(at::kFloat));
  at::Tensor status = at::empty({B}, opts.dtype(at::kChar));
  const cudaStream_t cs = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
  check_launch(draft_sample_cuda(logits.data_ptr(), dtype, hidden.data_ptr<float>(),
                                 position.data_ptr<int64_t>(), B, V, hidden.size(1), seed, stream,
                                 sampling, v, token.data_ptr<int64_t>(),
                                 probs.data_ptr<float>(), q_token.data_ptr<float>(),
                                 score.data_ptr<float>(), status.data_ptr<int8_t>(), cs),
               "draft_sample_cuda");
  return {token, probs, q_token, score, status};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tokens(
    const at::Tensor& target_logits, const at::Tensor& draft_probs, const at::Tensor& draft_tokens,
    const at::Tensor& start_position, uint64_t seed, const SamplingSettings& sampling, bool sd) {
  require(target_logits.dim() == 3 && target_logits.is_contiguous() && target_logits.is_cuda(),
          "target_logits must be a contiguous CUDA tensor [B, n + 1, V]");
  const DType ltype = float_dtype(target_logits, "target_logits");
  const at::Device dev = target_logits.device();
  const int64_t B = target_logits.size(0), n1 = target_logits.size(1), V = target_logits.size(2);
  require(n1 >= 1 && V >= 1, "target_logits [B, n + 1, V] needs n + 1 >= 1 and V >= 1");
  const int64_t n = n1 - 1;
  require(draft_probs.dim() == 3 && draft_probs.is_contiguous() && draft_probs.size(0) == B &&
              draft_probs.size(1) == n && draft_probs.size(2) == V,
          "draft_probs must be a contiguous [B, n, V] tensor");
  const DType qtype = float_dtype(draft_probs, "draft_probs");
  require_on(draft_probs, dev, "draft_probs");
  require(draft_tokens.dim() == 2 && draft_tokens.is_contiguous() && draft_tokens.size(0) == B &&
              draft_tokens.size(1) == n && draft_tokens.scalar_type() == at::kLong,
          "draft_tokens must be a contiguous int64 [B, n] tensor");
  require_on(draft_tokens, dev, "draft_tokens");
  require(start_position.dim() == 1 && start_position.size(0) == B &&
              start_position.scalar_type() == at::kLong && start_position.is_contiguous(),
          "start_position must be a contiguous int64 [B] tensor");
  require_on(start_position, dev, "start_position");

  const c10::cuda::CUDAGuard guard(dev);
  const auto opts = target_logits.options();
  at::Tensor tokens = at::empty({B, n1}, opts.dtype(at::kLong));
  at::Tensor num = at::empty({B}, opts.dtype(at::kLong));
  at::Tensor status = at::empty({B}, opts.dtype(at::kChar));
  at::Tensor p_work = at::empty({B, n1, V}, opts.dtype(at::kFloat));
  at::Tensor flag_work = at::empty({B, n1}, opts.dtype(at::kInt));
  at::Tensor cand_work = at::empty({B, n1}, opts.dtype(at::kLong));
  const cudaStream_t cs = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
  check_launch(
      verify_tokens_cuda(target_logits.data_ptr(), ltype, draft_probs.data_ptr(), qtype,
                         draft_tokens.data_ptr<int64_t>(), start_position.data_ptr<int64_t>(), B, n,
                         V, seed, sampling, sd,
                         p_work.data_ptr<float>(), flag_work.data_ptr<int32_t>(),
                         cand_work.data_ptr<int64_t>(), tokens.data_ptr<int64_t>(),
                         num.data_ptr<int64_t>(), status.data_ptr<int8_t>(), cs),
      "verify_tokens_cuda");
  return {tokens, num, status};
}

}  // namespace cuda
}  // namespace sprinter
