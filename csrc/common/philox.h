// Philox4x32-10 and the sprinter_ext randomness contract, header-only.
//
// Usable from host C++ and from CUDA device code: every function is marked
// SPRINTER_HOST_DEVICE, which expands to `__host__ __device__` under nvcc.
// No CUDA or torch header is needed to include this file.
//
// The contract (Python reference: sprinter_ext/_rng.py; Triton twin:
// kernels/rng.py) -- all three must agree bit for bit. The Stream values and the
// seed-to-key split are defined here once for C++ and CUDA and bound as
// sprinter_ext._C.Stream / _C.seed_key (csrc/common/common_py.cpp); tests/test_rng.py
// checks the Python and Triton constants against the binding:
//
//   key     = (seed & 0xFFFFFFFF, seed >> 32)            seed in [0, 2**64)
//   counter = (index >> 2, position & 0xFFFFFFFF, stream, 0)
//   word    = philox4x32_10(counter, key)[index & 3]     uint32
//   u       = ((word >> 9) + 0.5f) * 2**-23              float32, exact
//
// 23 bits, not 24: (m + 0.5) must fit float32's 24-bit significand, so every
// step is exact and u lies in [2**-24, 1 - 2**-24] -- never 0 and never 1
// (u == 1 would give E = -log u = 0, an infinite race score).
#pragma once

#include <float.h>
#include <stdint.h>

#if !defined(__CUDA_ARCH__) && defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "sprinter_ext needs float32 arithmetic evaluated in float32 (FLT_EVAL_METHOD == 0, e.g. SSE2 on x86)"
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SPRINTER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SPRINTER_HOST_DEVICE inline
#endif

namespace sprinter {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u;  // multiplier applied to counter word 0
constexpr uint32_t kM1 = 0xCD9E8D57u;  // multiplier applied to counter word 2
constexpr uint32_t kW0 = 0x9E3779B9u;  // Weyl key increment, key word 0 (golden ratio)
constexpr uint32_t kW1 = 0xBB67AE85u;  // Weyl key increment, key word 1 (sqrt(3) - 1)
constexpr int kRounds = 10;
constexpr float kTwoPowMinus23 = 1.1920928955078125e-07f;  // 2**-23, exact

struct U32x4 {
  uint32_t v[4];
};

// What a random number is for (sprinter_ext._rng.Stream). Values are part of the contract.
enum Stream : uint32_t {
  DRAFT = 0,     // the draft model's race sample of a proposal
  TARGET = 1,    // the target's race sample (ar tokens, bonus tokens, ersd's shared race)
  COIN = 2,      // the speculative-sampling acceptance coin, one per position
  RESIDUAL = 3,  // the race over norm(max(p - q, 0)) after a rejection
};

// The Philox key of a seed in [0, 2**64): (seed & 0xFFFFFFFF, seed >> 32).
struct Key {
  uint32_t k0, k1;
};

SPRINTER_HOST_DEVICE Key seed_key(uint64_t seed) {
  return Key{static_cast<uint32_t>(seed & 0xFFFFFFFFull), static_cast<uint32_t>(seed >> 32)};
}

// (hi, lo) = the 64-bit product a * b split into two 32-bit halves.
SPRINTER_HOST_DEVICE void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
#endif
}

// One Philox round: (hi0, lo0) = M0 * c0, (hi1, lo1) = M1 * c2,
// c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0).
SPRINTER_HOST_DEVICE U32x4 philox_round(U32x4 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, lo0, hi1, lo1;
  mulhilo(kM0, c.v[0], &hi0, &lo0);
  mulhilo(kM1, c.v[2], &hi1, &lo1);
  U32x4 r;
  r.v[0] = hi1 ^ c.v[1] ^ k0;
  r.v[1] = lo1;
  r.v[2] = hi0 ^ c.v[3] ^ k1;
  r.v[3] = lo0;
  return r;
}

// Philox4x32-10: 10 rounds, key bumped by (W0, W1) between rounds.
SPRINTER_HOST_DEVICE U32x4 philox4x32_10(U32x4 counter, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < kRounds; ++r) {
    counter = philox_round(counter, k0, k1);
    k0 += kW0;  // uint32 wrap-around is the intended behaviour
    k1 += kW1;
  }
  return counter;
}

// A uint32 word -> u in (0, 1), float32, as the contract spells it.
SPRINTER_HOST_DEVICE float word_to_uniform(uint32_t word) {
  const float x = static_cast<float>(word >> 9);  // < 2**23: exact
#if defined(__CUDA_ARCH__)
  // Explicit round-to-nearest ops: no contraction or fast-math rewriting.
  return __fmul_rn(__fadd_rn(x, 0.5f), kTwoPowMinus23);
#else
  return (x + 0.5f) * kTwoPowMinus23;  // exact in float32 (FLT_EVAL_METHOD == 0 checked above)
#endif
}

// The four uniforms of Philox block `block` (indices 4*block .. 4*block+3).
SPRINTER_HOST_DEVICE U32x4 block_words(uint32_t block, uint32_t position, uint32_t stream,
                                       uint32_t k0, uint32_t k1) {
  U32x4 c;
  c.v[0] = block;
  c.v[1] = position;
  c.v[2] = stream;
  c.v[3] = 0u;
  return philox4x32_10(c, k0, k1);
}

// Fill out[0, n) with u(seed, position, stream, index) for index in [0, n).
// Requires n <= 4 * 2**32 (the block index must fit in uint32); callers check.
SPRINTER_HOST_DEVICE void fill_uniform(float* out, int64_t n, uint32_t k0, uint32_t k1,
                                       uint32_t position, uint32_t stream) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = 0; b < blocks; ++b) {
    const U32x4 w = block_words(static_cast<uint32_t>(b), position, stream, k0, k1);
    const int64_t base = 4 * b;
    for (int j = 0; j < 4 && base + j < n; ++j) out[base + j] = word_to_uniform(w.v[j]);
  }
}

}  // namespace philox
}  // namespace sprinter
