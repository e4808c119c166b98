"""Triton kernels of sprinter_ext.ops.verify_tokens (spec: its torch backend, sprinter_ext/ops/_verify_tokens.py).

NOTE: two launches. Whether position i matters depends on every position before it
(the first rejection ends the round), which would need a grid-wide barrier inside
one kernel. Instead `_position_kernel` runs one program per (row, position), all
n + 1 in parallel, each writing its acceptance flag and its candidate token (the
recovered token for a draft position, the bonus token for the last); then
`_commit_kernel` (one program per row) finds the first rejection and writes the
fixed-shape outputs. Both stay on the device: no host synchronisation.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._sampling import _keep_block, _p_block, _row_cuts, _row_max, _row_sum, _uniform
from ._sampling import block_size, seed_words
from ..errors import InvalidArgumentError

__all__ = ["verify_tokens_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_COIN = tl.constexpr(2)  # Stream values (sprinter_ext._rng.Stream)
_TARGET = tl.constexpr(1)
_RESIDUAL = tl.constexpr(3)
_MAX_N = 65536  # grid axis 1 (positions per row) on CUDA


@triton.jit(do_not_specialize=["k0", "k1", "temperature", "top_k", "top_p"])
def _position_kernel(
    logits_ptr,  # [B, n + 1, V] float32/float16/bfloat16, contiguous: target logits
    q_ptr,  # [B, n, V] float32/float16/bfloat16, contiguous: draft distributions
    x_ptr,  # [B, n] int64: draft tokens
    start_ptr,  # [B] int64: position of the first draft token
    acc_ptr,  # [B, n + 1] int32 out: 1 accepted, 0 rejected, -1 non-finite logits
    cand_ptr,  # [B, n + 1] int64 out: recovered (i < n) or bonus (i == n) token
    n,
    V,
    k0,
    k1,
    temperature,
    top_k,
    top_p,
    SD: tl.constexpr,  # True: speculative sampling; False: ERSD's race rule
    GREEDY: tl.constexpr,
    USE_K: tl.constexpr,
    USE_P: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1).to(tl.int64)
    n1 = n + 1
    lrow = logits_ptr + (row * n1 + i) * V
    qrow = q_ptr + (row * n + i) * V
    pos = ((tl.load(start_ptr + row) + i) & 0xFFFFFFFF).to(tl.uint32)
    u0 = k0.to(tl.uint32)
    u1 = k1.to(tl.uint32)
    is_draft = i < n
    x = tl.load(x_ptr + row * n + i, mask=is_draft, other=-1)
    x_ok = is_draft & (x >= 0) & (x < V)
    # sd: a draft position races over the residual max(p - q, 0), the last one over p
    if SD:
        stream = tl.where(is_draft, _RESIDUAL, _TARGET).to(tl.uint32)
    else:
        stream = tl.full([], _TARGET, tl.uint32)

    m, arg, bad = _row_max(lrow, V, temperature, GREEDY, BLOCK)
    s = 1.0
    kbits, kc, sk, pbits, pg, total = 0, 0, 1.0, 0, 0.0, 1.0
    if not GREEDY:
        s = _row_sum(lrow, V, temperature, m, BLOCK)
        kbits, kc, sk, pbits, pg, total = _row_cuts(lrow, V, temperature, m, s, top_k, top_p, USE_K, USE_P, BLOCK)
    best = -1.0
    cand = tl.full([], 0, tl.int64)  # loop-carried: typed as it is re-assigned
    px = 0.0
    krun = 0
    prun = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < V
        if GREEDY:
            p = tl.where(offs == arg, 1.0, 0.0)
        else:
            praw = _p_block(lrow, offs, V, temperature, m, s)
            keep, krun, prun = _keep_block(praw, offs, V, kbits, kc, krun, sk, pbits, pg, prun, top_p, USE_K, USE_P)
            p = tl.where(keep, praw / total, 0.0)
        px += tl.sum(tl.where(offs == x, p, 0.0), axis=0)
        w = p
        if SD:
            qmask = inside & ((offs * 0 + i) < n)  # (a scalar mask does not broadcast in the interpreter)
            q = tl.load(qrow + offs, mask=qmask, other=0.0).to(tl.float32)
            w = tl.where(is_draft, tl.maximum(p - q, 0.0), p)
        e = -tl.log(_uniform(offs, pos, stream, u0, u1))
        score = tl.where(inside, w / e, -1.0)
        bmax = tl.max(score, axis=0)
        better = bmax > best
        cand = tl.where(better, tl.argmax(score, axis=0).to(tl.int64) + start, cand)
        best = tl.where(better, bmax, best)

    if SD:
        qx = tl.load(qrow + tl.where(x_ok, x, 0), mask=x_ok, other=0.0).to(tl.float32)
        cidx = tl.arange(0, 16).to(tl.int64)
        coin = tl.sum(tl.where(cidx == 0, _uniform(cidx, pos, tl.full([], _COIN, tl.uint32), u0, u1), 0.0), axis=0)
        accepted = x_ok & (coin * qx < px)
    else:
        accepted = x_ok & (cand == x)
    flag = tl.where(bad != 0, -1, accepted.to(tl.int32))
    tl.store(acc_ptr + row * n1 + i, flag)
    tl.store(cand_ptr + row * n1 + i, cand)


@triton.jit
def _commit_kernel(
    acc_ptr,  # [B, n + 1] int32: per-position flags of _position_kernel
    cand_ptr,  # [B, n + 1] int64: per-position candidate tokens
    x_ptr,  # [B, n] int64: draft tokens
    tokens_ptr,  # [B, n + 1] int64 out: committed tokens, -1 padded
    num_ptr,  # [B] int64 out: accepted count (-1: non-finite logits in the row)
    n,
    BLOCK_N: tl.constexpr,  # power of two >= n + 1
):
    row = tl.program_id(0).to(tl.int64)
    n1 = n + 1
    idx = tl.arange(0, BLOCK_N).to(tl.int64)
    inside = idx < n1
    flag = tl.load(acc_ptr + row * n1 + idx, mask=inside, other=1)
    bad = tl.max(tl.where(inside & (flag < 0), 1, 0), axis=0)
    # first rejected draft position, or n when all n pass (the bonus position)
    num = tl.min(tl.where((idx < n) & (flag == 0), idx, n), axis=0)
    x = tl.load(x_ptr + row * n + idx, mask=idx < n, other=-1)
    cand = tl.load(cand_ptr + row * n1 + idx, mask=inside, other=-1)
    out = tl.where(idx < num, x, tl.where(idx == num, cand, -1))
    out = tl.where(bad != 0, -1, out)
    tl.store(tokens_ptr + row * n1 + idx, out, mask=inside)
    tl.store(num_ptr + row, tl.where(bad != 0, -1, num))


def verify_tokens_triton(target_logits, draft_probs, draft_tokens, start_position, seed, temperature, top_k,
                         top_p, mode):  # fmt: skip
    """Launcher (inputs checked by sprinter_ext.ops.verify_tokens).

    Returns (tokens [B, n + 1] int64, num_accepted [B] int64).
    """
    B, n1, V = target_logits.shape
    n = n1 - 1
    if n1 > _MAX_N:
        raise InvalidArgumentError(f"verify_tokens' triton kernel supports n + 1 <= {_MAX_N} positions, got {n1}")
    dev = target_logits.device
    tokens = torch.empty((B, n1), dtype=torch.int64, device=dev)
    num = torch.empty(B, dtype=torch.int64, device=dev)
    if B == 0:
        return tokens, num
    acc = torch.empty((B, n1), dtype=torch.int32, device=dev)
    cand = torch.empty((B, n1), dtype=torch.int64, device=dev)
    k0, k1 = seed_words(seed)
    greedy = temperature == 0
    # NOTE: q and x are never read when n == 0; pass valid (dummy) pointers anyway.
    q = draft_probs if n > 0 else torch.zeros(1, device=dev)
    x = draft_tokens if n > 0 else torch.zeros(1, dtype=torch.int64, device=dev)
    _position_kernel[(B, n1)](
        target_logits, q, x, start_position, acc, cand,
        n, V, k0, k1, float(temperature) if not greedy else 1.0, int(top_k), float(top_p),
        SD=mode == "sd", GREEDY=greedy, USE_K=(not greedy) and 0 < top_k < V,
        USE_P=(not greedy) and top_p < 1.0, BLOCK=block_size(V, _INTERPRET),
    )  # fmt: skip
    _commit_kernel[(B,)](acc, cand, x, tokens, num, n, BLOCK_N=max(2, triton.next_power_of_2(n1)))
    return tokens, num
