"""``sd``: speculative sampling (Leviathan et al., ICML 2023; Chen et al., arXiv 2302.01318).

Each round the draft proposes k tokens x_1..x_k, sampled from its processed
distributions q_i (races with DRAFT noise); the target scores all of them in one
forward, giving p_1..p_{k+1}. Token x_i is *accepted* iff u_i * q_i(x_i) < p_i(x_i),
u_i the COIN uniform at its position (i.e. with probability min(1, p/q)). At the
first rejection the *recovered* token is drawn from the residual
norm(max(p_i - q_i, 0)) (a race with RESIDUAL noise) and the round ends; if all k
pass, a *bonus* token is drawn from p_{k+1} (TARGET noise, as `ar` would). The
output distribution is exactly the target's.

The rule is stated once, in torch: the torch backend of
:func:`sprinter_ext.ops.verify_tokens` (``mode="sd"``, sprinter_ext/ops/_verify_tokens.py,
with the residual as its ``residual``), which the reference engine runs; the fused engine
runs the same op's C++/Triton/CUDA backends.
"""

from __future__ import annotations

import torch

from .._rng import Stream
from ._session import Session


def verify(s: Session, drafts: list[int], q: torch.Tensor, logits: torch.Tensor, offset: int = 0) -> list[int]:
    """SD acceptance of `drafts` ([k]) given q [k, V] and the target's logits [k+1, V]; returns
    the committed tokens (the accepted drafts, then the recovered or bonus token).

    The drafts sit at positions s.position + offset + i (offset > 0 when earlier
    tokens of the round were accepted without a check, as in SPRINTER).
    """
    return s.check(drafts, q, logits, offset=offset, mode="sd")


def round(s: Session) -> list[int]:
    d = s.draft_round(Stream.DRAFT)  # k drafts, or the cost model's (k="auto"; none: a plain target step)
    out = verify(s, d.tokens, d.q, s.target_rows(d.tokens))
    s.observe(d, out)
    return out
