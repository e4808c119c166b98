"""Triton building blocks shared by draft_sample.py and verify_tokens.py (private).

The processed distribution of one logits row (spec: sprinter_ext/sampling.py),
without sorting: x = logits / T, p = exp(x - m) / s, and

- top-k: the k-th largest p is found by a bisection over the float's bit pattern
  (non-negative floats order like their int32 bits), so it is exact: kbits = bits
  of the k-th value, kc = how many of the tokens equal to it are kept (the first
  kc by index, the spec's tie rule);
- top-p: over r = p / S_k (p itself without top-k), the smallest value v* with
  G(v*) = sum(r > v*) < top_p is found the same way; tokens above v* are kept, and
  of those equal to v* the first ones while G(v*) + rank * v* < top_p.

Ties at a cut are resolved by an exclusive prefix count (tl.cumsum) carried across
the blocks of the row, so the kept set is the spec's ranked prefix.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._rng import seed_key
from .rng import _to_uniform, philox4x32_10


@triton.jit
def _uniform(idx, pos, stream, k0, k1):
    # idx: int64 [BLOCK] vocabulary indices; pos, stream, k0, k1: uint32 scalars.
    # Returns u(seed, pos, stream, idx), float32 [BLOCK], bit-identical to _rng.uniform.
    c0 = (idx >> 2).to(tl.uint32)
    zero = c0 * 0
    c1 = zero + pos
    c2 = zero + stream
    c3 = zero
    key0 = zero + k0
    key1 = zero + k1
    c0, c1, c2, c3 = philox4x32_10(c0, c1, c2, c3, key0, key1)
    j = idx & 3
    word = tl.where(j == 0, c0, tl.where(j == 1, c1, tl.where(j == 2, c2, c3)))
    return _to_uniform(word)


@triton.jit
def _load_x(row_ptr, offs, V, temperature, GREEDY: tl.constexpr):
    # row_ptr: logits row [V] (any float dtype); offs: int64 [BLOCK] -> x float32 [BLOCK], -inf padding
    x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    if not GREEDY:
        x = x / temperature
    return x


@triton.jit
def _row_max(row_ptr, V, temperature, GREEDY: tl.constexpr, BLOCK: tl.constexpr):
    # row_ptr: logits row [V]. Returns (max x, first argmax, bad: NaN/+inf or no finite value).
    m = float("-inf")
    arg = 0
    bad = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        x = _load_x(row_ptr, offs, V, temperature, GREEDY)
        bad = bad | tl.max(((x != x) | (x == float("inf"))).to(tl.int32), axis=0)
        xm = tl.where(x != x, float("-inf"), x)
        bm = tl.max(xm, axis=0)
        barg = tl.argmax(xm, axis=0) + start
        better = bm > m
        arg = tl.where(better, barg, arg)
        m = tl.where(better, bm, m)
    bad = bad | (m == float("-inf")).to(tl.int32)
    return m, arg, bad


@triton.jit
def _p_block(row_ptr, offs, V, temperature, m, s):
    # p = softmax(x) on one block: float32 [BLOCK], 0 past V
    x = _load_x(row_ptr, offs, V, temperature, False)
    return tl.exp(x - m) / s


@triton.jit
def _keep_block(p, offs, V, kbits, kc, krun, sk, pbits, pg, prun, top_p,
                USE_K: tl.constexpr, USE_P: tl.constexpr):  # fmt: skip
    # p: float32 [BLOCK]. Returns (keep int1 [BLOCK], krun, prun): the running counts of
    # tokens tied with the top-k / top-p cut value in the blocks before this one.
    keep = offs < V
    bits = p.to(tl.int32, bitcast=True)
    if USE_K:
        eq = ((bits == kbits) & keep).to(tl.int32)
        rank = krun + tl.cumsum(eq, axis=0) - eq  # ties before this token
        keep = keep & ((bits > kbits) | ((eq != 0) & (rank < kc)))
        krun += tl.sum(eq, axis=0)
        r = tl.where(keep, p / sk, 0.0)
    else:
        r = p
    if USE_P:
        rbits = r.to(tl.int32, bitcast=True)
        eqp = ((rbits == pbits) & keep).to(tl.int32)
        rankp = prun + tl.cumsum(eqp, axis=0) - eqp
        vstar = pbits.to(tl.float32, bitcast=True)
        keep = keep & ((rbits > pbits) | ((eqp != 0) & (pg + rankp.to(tl.float32) * vstar < top_p)))
        prun += tl.sum(eqp, axis=0)
    return keep, krun, prun


@triton.jit
def _count_gt(row_ptr, V, temperature, m, s, t, BLOCK: tl.constexpr):
    # row_ptr: logits row [V] -> how many tokens have float bits of p > t (int32)
    cnt = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        bits = _p_block(row_ptr, offs, V, temperature, m, s).to(tl.int32, bitcast=True)
        cnt += tl.sum(((bits > t) & (offs < V)).to(tl.int32), axis=0)
    return cnt


@triton.jit
def _mass_gt(row_ptr, V, temperature, m, s, kbits, kc, sk, top_p, t,
             USE_K: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # row_ptr: logits row [V] -> G(t) = mass of r (p after top-k, renormalised) with bits > t
    g = 0.0
    krun = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        p = _p_block(row_ptr, offs, V, temperature, m, s)
        keep, krun, _ = _keep_block(p, offs, V, kbits, kc, krun, sk, 0, 0.0, 0, top_p, USE_K, False)
        r = p
        if USE_K:
            r = tl.where(keep, p / sk, 0.0)
        g += tl.sum(tl.where(r.to(tl.int32, bitcast=True) > t, r, 0.0), axis=0)
    return g


@triton.jit
def _row_cuts(row_ptr, V, temperature, m, s, top_k, top_p,
              USE_K: tl.constexpr, USE_P: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # row_ptr: logits row [V]. Returns (kbits, kc, sk, pbits, pg, S): the cut parameters
    # of _keep_block and S = the kept mass (q = p / S on kept tokens).
    kbits = 0
    kc = 0
    sk = 1.0
    if USE_K:
        lo = 0  # invariant: count(bits >= lo) >= k > count(bits >= hi)
        hi = 0x7F800000
        for _ in range(31):
            mid = lo + (hi - lo) // 2
            ok = _count_gt(row_ptr, V, temperature, m, s, mid - 1, BLOCK) >= top_k  # bits >= mid
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
        kbits = lo
        kc = top_k - _count_gt(row_ptr, V, temperature, m, s, kbits, BLOCK)
        sk = 0.0
        krun = 0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK).to(tl.int64)
            p = _p_block(row_ptr, offs, V, temperature, m, s)
            keep, krun, _ = _keep_block(p, offs, V, kbits, kc, krun, 1.0, 0, 0.0, 0, top_p, True, False)
            sk += tl.sum(tl.where(keep, p, 0.0), axis=0)
    pbits = 0
    pg = 0.0
    if USE_P:
        lo = -1  # invariant: G(lo) >= top_p > G(hi), G(t) = mass of r with bits > t
        hi = 0x7F800000
        for _ in range(32):
            mid = lo + (hi - lo) // 2
            ok = _mass_gt(row_ptr, V, temperature, m, s, kbits, kc, sk, top_p, mid, USE_K, BLOCK) < top_p
            hi = tl.where(ok, mid, hi)
            lo = tl.where(ok, lo, mid)
        pbits = hi
        pg = _mass_gt(row_ptr, V, temperature, m, s, kbits, kc, sk, top_p, pbits, USE_K, BLOCK)
    total = 0.0
    krun = 0
    prun = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        p = _p_block(row_ptr, offs, V, temperature, m, s)
        keep, krun, prun = _keep_block(p, offs, V, kbits, kc, krun, sk, pbits, pg, prun, top_p, USE_K, USE_P)
        total += tl.sum(tl.where(keep, p, 0.0), axis=0)
    return kbits, kc, sk, pbits, pg, total


@triton.jit
def _row_sum(row_ptr, V, temperature, m, BLOCK: tl.constexpr):
    # row_ptr: logits row [V] -> s = sum exp(x - m)
    s = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        x = _load_x(row_ptr, offs, V, temperature, False)
        s += tl.sum(tl.exp(x - m), axis=0)
    return s


BLOCK_OVERRIDE: int | None = None  # tests set a small power of two to exercise multi-tile rows


def block_size(V: int, interpret: bool) -> int:
    """Vocabulary tile. GPU: 1024 (a Philox tile holds ~10 live uint32 vectors; 8 values
    per thread at 4 warps keeps them in registers; not tuned on hardware yet). The
    interpreter: the whole row (<= 65536), since its cost is per operation, not per element."""
    if BLOCK_OVERRIDE is not None:
        return BLOCK_OVERRIDE
    if interpret:
        return max(16, min(65536, triton.next_power_of_2(V)))
    return max(16, min(1024, triton.next_power_of_2(V)))


def seed_words(seed: int) -> tuple[int, int]:
    return seed_key(seed)  # the one Python seed split (sprinter_ext._rng)
