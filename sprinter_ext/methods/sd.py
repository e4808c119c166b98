"""``sd``: speculative sampling (Leviathan et al., ICML 2023; Chen et al., arXiv 2302.01318).

Each round the draft proposes k tokens x_1..x_k, sampled from its processed
distributions q_i (races with DRAFT noise); the target scores all of them in one
forward, giving p_1..p_{k+1}. Token x_i is *accepted* iff u_i * q_i(x_i) < p_i(x_i),
u_i the COIN uniform at its position (i.e. with probability min(1, p/q)). At the
first rejection the *recovered* token is drawn from the residual
norm(max(p_i - q_i, 0)) (a race with RESIDUAL noise) and the round ends; if all k
pass, a *bonus* token is drawn from p_{k+1} (TARGET noise, as `ar` would). The
output distribution is exactly the target's.
"""

from __future__ import annotations

import torch

from .. import _rng
from .._rng import Stream
from ._session import Session


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Unnormalised residual max(p - q, 0) (the race does not need the normalisation)."""
    return torch.clamp(p - q, min=0.0)


def verify(s: Session, drafts: list[int], q: torch.Tensor, p: torch.Tensor, offset: int = 0) -> list[int]:
    """SD acceptance of `drafts` ([k]) given q [k, V] and p [k+1, V]; returns committed tokens.

    The drafts sit at positions s.position + offset + i (offset > 0 when earlier
    tokens of the round were accepted without a check, as in SPRINTER).
    """
    k = len(drafts)
    start = s.position + offset
    x = torch.tensor(drafts, device=p.device)
    coins = _rng.uniform(s.seed, s.positions(offset + k)[offset:], Stream.COIN, 1)[:, 0]  # [k]
    px = p[:k].gather(-1, x[:, None])[:, 0]
    qx = q.gather(-1, x[:, None])[:, 0]
    accepted = (coins * qx < px).tolist()
    for i, ok in enumerate(accepted):
        if not ok:
            s.accepted_tokens += i
            tok = int(s.race(residual(p[i], q[i]), start + i, Stream.RESIDUAL))
            return drafts[:i] + [tok]
    s.accepted_tokens += k
    return drafts + [int(s.race(p[k], start + k, Stream.TARGET))]


def round(s: Session) -> list[int]:
    drafts, q, _ = s.propose(s.k, Stream.DRAFT)
    return s.check(drafts, q, s.target_rows(drafts))  # verify() above, or its fused twin
