// Runs the kernels of csrc/ops/cuda/ops_cuda.cu under the CPU emulation of emu.h
// (driven by tests/test_cuda_emulation.py). Build:
//   g++ -std=c++20 -O2 -pthread -DSPRINTER_CUDA_EMULATION -DSPRINTER_CUDA_THREADS=64
//       -I csrc -I <cuda>/include tests/cuda_emu/emu_main.cpp -o emu
// Usage: emu draft DIR | emu verify DIR. DIR holds meta.txt (whitespace-separated
// numbers, the order read below) and the inputs as raw little-endian arrays; the
// outputs are written beside them.
#include "emu.h"
// clang-format off: emu.h must come first (it defines __global__ etc.)
#include "ops/cuda/ops_cuda.cu"
// clang-format on

#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace {

using namespace sprinter::cuda;

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

template <class T>
void write_file(const std::string& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

template <class T>
const T* as(const std::vector<char>& v) {
  return reinterpret_cast<const T*>(v.data());
}

// Calls f.template operator()<T>() with T the element type of DType code `dt`.
template <class F>
void with_dtype(int dt, F&& f) {
  switch (dt) {
    case 0: f(float{}); break;
    case 1: f(__half{}); break;
    case 2: f(__nv_bfloat16{}); break;
    default: throw std::runtime_error("bad dtype code");
  }
}

int draft(const std::string& dir) {
  std::ifstream meta(dir + "/meta.txt");
  long long B, V, D;
  int dt;
  unsigned long long seed;
  unsigned stream;
  double temperature, top_p;
  long long top_k;
  Verifier mlp{};
  meta >> B >> V >> D >> dt >> seed >> stream >> temperature >> top_k >> top_p >> mlp.num_layers >>
      mlp.num_features;
  for (int f = 0; f < 3; ++f) meta >> mlp.features[f];
  std::vector<std::vector<char>> wb;
  for (int l = 0; l < mlp.num_layers; ++l) {
    meta >> mlp.out[l] >> mlp.in[l];
    wb.push_back(read_file(dir + "/w" + std::to_string(l) + ".bin"));
    wb.push_back(read_file(dir + "/b" + std::to_string(l) + ".bin"));
  }
  if (!meta) throw std::runtime_error("bad meta.txt");
  for (int l = 0; l < mlp.num_layers; ++l) {
    mlp.w[l] = as<float>(wb[2 * l]);
    mlp.b[l] = as<float>(wb[2 * l + 1]);
  }
  if (!verifier_ok(mlp, D)) throw std::runtime_error("verifier_ok rejected the layers");
  const auto logits = read_file(dir + "/logits.bin");
  const auto hidden = read_file(dir + "/hidden.bin");
  const auto position = read_file(dir + "/position.bin");
  std::vector<int64_t> token(B);
  std::vector<float> probs(B * V), q_token(B), score(B);
  std::vector<int8_t> status(B);
  const sprinter::SamplingSettings s{static_cast<float>(temperature), top_k, static_cast<float>(top_p)};
  const auto key = sprinter::philox::seed_key(seed);
  const uint32_t k0 = key.k0, k1 = key.k1;
  with_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    emu::launch(static_cast<unsigned>(B), kThreads, draft_sample_kernel<T>, as<T>(logits),
                as<float>(hidden), as<int64_t>(position), V, D, k0, k1, stream, s, mlp, token.data(),
                probs.data(), q_token.data(), score.data(), status.data());
  });
  write_file(dir + "/token.bin", token);
  write_file(dir + "/probs.bin", probs);
  write_file(dir + "/q_token.bin", q_token);
  write_file(dir + "/score.bin", score);
  write_file(dir + "/status.bin", status);
  return 0;
}

int verify(const std::string& dir) {
  std::ifstream meta(dir + "/meta.txt");
  long long B, n, V, top_k;
  int lt, qt, sd;
  unsigned long long seed;
  double temperature, top_p;
  meta >> B >> n >> V >> lt >> qt >> seed >> temperature >> top_k >> top_p >> sd;
  if (!meta) throw std::runtime_error("bad meta.txt");
  const auto logits = read_file(dir + "/logits.bin");
  const auto q = read_file(dir + "/q.bin");
  const auto x = read_file(dir + "/x.bin");
  const auto start = read_file(dir + "/start.bin");
  const long long n1 = n + 1;
  std::vector<float> p_work(B * n1 * V, -7.0f);  // garbage: the kernel must overwrite it
  std::vector<int32_t> flags(B * n1, 7);
  std::vector<int64_t> cand(B * n1, 7), tokens(B * n1, 7), num(B, 7);
  std::vector<int8_t> status(B, 7);
  const sprinter::SamplingSettings s{static_cast<float>(temperature), top_k, static_cast<float>(top_p)};
  const auto key = sprinter::philox::seed_key(seed);
  const uint32_t k0 = key.k0, k1 = key.k1;
  const int64_t* xp = n > 0 ? as<int64_t>(x) : nullptr;  // as the real launcher may see
  with_dtype(lt, [&](auto ltag) {
    with_dtype(qt, [&](auto qtag) {
      using T = decltype(ltag);
      using Q = decltype(qtag);
      const Q* qp = n > 0 ? as<Q>(q) : nullptr;
      emu::launch(static_cast<unsigned>(B * n1), kThreads, verify_position_kernel<T, Q>, as<T>(logits),
                  qp, xp, as<int64_t>(start), n, V, k0, k1, s, sd != 0, p_work.data(), flags.data(),
                  cand.data());
    });
  });
  emu::launch(static_cast<unsigned>((B + 31) / 32), 32u, verify_commit_kernel, flags.data(), cand.data(),
              xp, B, n, tokens.data(), num.data(), status.data());
  write_file(dir + "/tokens.bin", tokens);
  write_file(dir + "/num.bin", num);
  write_file(dir + "/status.bin", status);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s draft|verify DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::string cmd = argv[1];
    if (cmd == "draft") return draft(argv[2]);
    if (cmd == "verify") return verify(argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown command %s\n", argv[1]);
  return 2;
}
