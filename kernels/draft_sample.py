"""Triton kernel of sprinter_ext.ops.draft_sample (spec: its torch backend, sprinter_ext/ops/_draft_sample.py).

One program per batch row, one launch: the processed draft distribution q (see
_sampling.py), the race sample, q(token), max q, entropy, and the verifier MLP on
[hidden, features]. The verifier's layers are packed into one float32 buffer
(cached per verifier) with an int64 table of offsets and sizes.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._sampling import _keep_block, _load_x, _p_block, _row_cuts, _row_max, _row_sum, _uniform
from ._sampling import block_size, seed_words
from ..errors import InvalidArgumentError

__all__ = ["draft_sample_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_MAX_WIDTH = 256  # widest verifier layer (output, or input of layers after the first)
_MAX_ROWS = 2**31 - 1


@triton.jit(do_not_specialize=["k0", "k1", "stream", "temperature", "top_k", "top_p"])
def _draft_sample_kernel(
    logits_ptr,  # [B, V] float32/float16/bfloat16, contiguous
    hidden_ptr,  # [B, D] float32/float16/bfloat16, contiguous
    pos_ptr,  # [B] int64 positions
    wpack_ptr,  # [total] float32: the verifier's weights and biases, packed
    meta_ptr,  # [NUM_LAYERS, 4] int64: (weight offset, bias offset, out, in) per layer
    token_ptr,  # [B] int64 out: the race winner (-1 for a non-finite row)
    probs_ptr,  # [B, V] float32 out: q
    qtok_ptr,  # [B] float32 out: q(token)
    score_ptr,  # [B] float32 out: verifier score (0 without verifier)
    V,
    D,
    k0,
    k1,
    stream,
    temperature,
    top_k,
    top_p,
    GREEDY: tl.constexpr,
    USE_K: tl.constexpr,
    USE_P: tl.constexpr,
    NUM_LAYERS: tl.constexpr,  # 0: no verifier
    F0: tl.constexpr,  # feature codes in order (0 q_token, 1 max_q, 2 entropy; -1 none)
    F1: tl.constexpr,
    F2: tl.constexpr,
    MAX_W: tl.constexpr,  # power of two >= every layer width after the input
    BLOCK: tl.constexpr,  # vocabulary tile
    BLOCK_D: tl.constexpr,  # hidden tile of the first layer
):
    row = tl.program_id(0).to(tl.int64)
    lrow = logits_ptr + row * V
    qrow = probs_ptr + row * V
    pos = (tl.load(pos_ptr + row) & 0xFFFFFFFF).to(tl.uint32)
    u0 = k0.to(tl.uint32)
    u1 = k1.to(tl.uint32)
    st = stream.to(tl.uint32)

    m, arg, bad = _row_max(lrow, V, temperature, GREEDY, BLOCK)
    if GREEDY:
        token = arg.to(tl.int64)
        q_token = 1.0
        max_q = 1.0
        entropy = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK).to(tl.int64)
            tl.store(qrow + offs, tl.where(offs == token, 1.0, 0.0), mask=offs < V)
    else:
        s = _row_sum(lrow, V, temperature, m, BLOCK)
        kbits, kc, sk, pbits, pg, total = _row_cuts(lrow, V, temperature, m, s, top_k, top_p, USE_K, USE_P, BLOCK)
        best = -1.0
        token = tl.full([], 0, tl.int64)  # loop-carried: typed as it is re-assigned
        q_token = 0.0
        max_q = 0.0
        ent = 0.0
        krun = 0
        prun = 0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK).to(tl.int64)
            p = _p_block(lrow, offs, V, temperature, m, s)
            keep, krun, prun = _keep_block(p, offs, V, kbits, kc, krun, sk, pbits, pg, prun, top_p, USE_K, USE_P)
            q = tl.where(keep, p / total, 0.0)
            tl.store(qrow + offs, q, mask=offs < V)
            e = -tl.log(_uniform(offs, pos, st, u0, u1))
            score = tl.where(offs < V, q / e, -1.0)
            bmax = tl.max(score, axis=0)
            barg = tl.argmax(score, axis=0)
            better = bmax > best
            token = tl.where(better, barg.to(tl.int64) + start, token)
            q_token = tl.where(better, tl.sum(tl.where(offs == barg + start, q, 0.0), axis=0), q_token)
            best = tl.where(better, bmax, best)
            max_q = tl.maximum(max_q, tl.max(q, axis=0))
            ent += tl.sum(tl.where(q > 0.0, q * tl.log(tl.where(q > 0.0, q, 1.0)), 0.0), axis=0)
        entropy = -ent
    token = tl.where(bad != 0, -1, token)
    q_token = tl.where(bad != 0, 0.0, q_token)
    tl.store(token_ptr + row, token)
    tl.store(qtok_ptr + row, q_token)

    if NUM_LAYERS > 0:
        # layer 0 on z = [hidden, features]: h[o] = W0[o, :D] . hidden + sum_f W0[o, D + f] feat_f + b0[o]
        w_off = tl.load(meta_ptr + 0)
        b_off = tl.load(meta_ptr + 1)
        n_out = tl.load(meta_ptr + 2)
        n_in = tl.load(meta_ptr + 3)
        o = tl.arange(0, MAX_W)
        omask = o < n_out
        h = tl.zeros([MAX_W], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            z = tl.load(hidden_ptr + row * D + d, mask=d < D, other=0.0).to(tl.float32)
            w = tl.load(wpack_ptr + w_off + o[:, None] * n_in + d[None, :],
                        mask=omask[:, None] & (d[None, :] < D), other=0.0)  # fmt: skip
            h += tl.sum(w * z[None, :], axis=1)
        for f in tl.static_range(3):
            code = F0 if f == 0 else (F1 if f == 1 else F2)
            if code >= 0:
                feat = q_token if code == 0 else (max_q if code == 1 else entropy)
                w = tl.load(wpack_ptr + w_off + o * n_in + D + f, mask=omask, other=0.0)
                h += w * feat
        h += tl.load(wpack_ptr + b_off + o, mask=omask, other=0.0)
        # NOTE: zero the padding lanes o >= n_out: with an inf in the hidden state their masked
        # weights give 0 * inf = NaN, which the next layer would spread to every real lane.
        h = tl.where(omask, h, 0.0)
        for layer in tl.static_range(1, NUM_LAYERS):
            # ReLU between layers. NOTE: tl.maximum(NaN, 0) is 0 (NaN dropped), which would turn a
            # NaN hidden state into a finite score; keep NaN so the guard below scores it 0.
            h = tl.where(h != h, h, tl.maximum(h, 0.0))
            w_off = tl.load(meta_ptr + 4 * layer + 0)
            b_off = tl.load(meta_ptr + 4 * layer + 1)
            n_out = tl.load(meta_ptr + 4 * layer + 2)
            n_in = tl.load(meta_ptr + 4 * layer + 3)
            i = tl.arange(0, MAX_W)
            w = tl.load(wpack_ptr + w_off + o[:, None] * n_in + i[None, :],
                        mask=(o[:, None] < n_out) & (i[None, :] < n_in), other=0.0)  # fmt: skip
            h = tl.sum(w * h[None, :], axis=1) + tl.load(wpack_ptr + b_off + o, mask=o < n_out, other=0.0)
            h = tl.where(o < n_out, h, 0.0)
        logit = tl.sum(tl.where(o == 0, h, 0.0), axis=0)
        score = 1.0 / (1.0 + tl.exp(-logit))
        score = tl.where(logit != logit, 0.0, score)  # NaN logit (non-finite hidden): flag the token
        score = tl.where(bad != 0, 0.0, score)
        tl.store(score_ptr + row, score)
    else:
        tl.store(score_ptr + row, 0.0)


def pack_layers(layers: list[tuple[torch.Tensor, torch.Tensor]], device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(wpack [total] f32, meta [L, 4] int64, MAX_W, L) for layers [(W [out, in], b [out]), ...].

    sprinter_ext.ops caches the result per verifier (and parameter version).
    """
    if not layers:
        return torch.zeros(1, device=device), torch.zeros((1, 4), dtype=torch.int64, device=device), 16, 0
    widths = [w.shape[0] for w, _ in layers] + [w.shape[1] for w, _ in layers[1:]]
    max_w = max(16, triton.next_power_of_2(max(widths)))
    if max_w > _MAX_WIDTH:
        raise InvalidArgumentError(
            f"the triton draft_sample kernel supports verifier layers up to {_MAX_WIDTH} wide, "
            f"got widths {widths}; use backend='cpu' or 'torch' for this verifier"
        )
    parts, meta, off = [], [], 0
    for w, b in layers:
        meta.append((off, off + w.numel(), w.shape[0], w.shape[1]))
        parts += [w.reshape(-1), b.reshape(-1)]
        off += w.numel() + b.numel()
    wpack = torch.cat(parts).to(device, torch.float32).contiguous()
    return wpack, torch.tensor(meta, dtype=torch.int64, device=device), max_w, len(layers)


def draft_sample_triton(logits, hidden, position, seed, stream, temperature, top_k, top_p, packed, codes):
    """Launcher (inputs checked by sprinter_ext.ops.draft_sample): one program per row.

    Returns (token [B] int64, probs [B, V] f32, q_token [B] f32, score [B] f32).
    """
    B, V = logits.shape
    D = hidden.shape[1]
    if B > _MAX_ROWS:
        raise InvalidArgumentError(f"draft_sample supports at most {_MAX_ROWS} rows, got {B}")
    dev = logits.device
    token = torch.empty(B, dtype=torch.int64, device=dev)
    probs = torch.empty((B, V), dtype=torch.float32, device=dev)
    q_token = torch.empty(B, dtype=torch.float32, device=dev)
    score = torch.empty(B, dtype=torch.float32, device=dev)
    if B == 0:
        return token, probs, q_token, score
    wpack, meta, max_w, num_layers = packed
    feats = list(codes) + [-1] * (3 - len(codes))
    k0, k1 = seed_words(seed)
    greedy = temperature == 0
    _draft_sample_kernel[(B,)](
        logits, hidden, position, wpack, meta, token, probs, q_token, score,
        V, D, k0, k1, int(stream), float(temperature) if not greedy else 1.0, int(top_k), float(top_p),
        GREEDY=greedy, USE_K=(not greedy) and 0 < top_k < V, USE_P=(not greedy) and top_p < 1.0,
        NUM_LAYERS=num_layers, F0=feats[0], F1=feats[1], F2=feats[2], MAX_W=max_w,
        BLOCK=block_size(V, _INTERPRET), BLOCK_D=min(128, max(16, triton.next_power_of_2(D))),
    )  # fmt: skip
    return token, probs, q_token, score
