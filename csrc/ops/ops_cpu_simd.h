// Vectorised passes over one float32 row, the building blocks of csrc/ops/ops_cpu.cpp
// (definitions, and how they are vectorised: ops_cpu_simd.cpp). V is the row length.
#pragma once

#include <cstdint>

#include "common/philox.h"

namespace sprinter {
namespace cpu {
namespace simd {

using ::sprinter::philox::Key;  // the Philox key of a seed (philox::seed_key)

// u(seed, position, stream, index) of the randomness contract (csrc/common/philox.h).
float uniform_at(Key key, uint32_t position, uint32_t stream, int64_t index);

// The exponential race argmax_i w_i / -log u(seed, position, stream, i); ties -> lowest i.
int64_t race(const float* w, int64_t V, Key key, uint32_t position, uint32_t stream);

// Largest value (and its first index if want_arg); false on NaN/+inf or no finite value.
bool scan_max(const float* x, int64_t V, bool want_arg, float* max_out, int64_t* arg_out);

// p_i = exp(x_i - m) for x_i <= m (-inf -> 0); returns sum p.
float exp_shift(const float* x, int64_t V, float m, float* p);

// p_i /= s.
void scale_div(float* p, int64_t V, float s);

// Count and mass of the entries > t.
void count_mass_gt(const float* p, int64_t V, float t, int64_t* count, float* mass);

// Keeps p_i iff p_i > vc or (p_i == vc and i <= ic), then q = kept / sum(kept) in place.
// Returns the kept mass; *ent = sum q_i (x_i - m) (for the entropy), *qmax = max q.
float apply_cut(float* p, const float* x, int64_t V, float vc, int64_t ic, float m, float* ent,
                float* qmax);

// r_i = max(p_i - q_i, 0).
void residual(const float* p, const float* q, int64_t V, float* r);

// sum a_i b_i.
float dot(const float* a, const float* b, int64_t n);

}  // namespace simd
}  // namespace cpu
}  // namespace sprinter
