"""``ersd``: speculative sampling by exponential races (Kobus & Gunduz, arXiv 2504.15475).

Every sample is a race argmax_i w_i / E_i. The draft proposes x_i as the race over
q_i with the very noise E (TARGET stream, position-keyed) that the target's race
over p_i will use at that position. The target scores the proposals in one forward
and runs its own races t_i; x_i is accepted iff t_i == x_i. At the first mismatch
t_i is emitted; if all k match, the bonus t_{k+1}. Every committed token is the
target's own race winner, so the output equals `ar`'s for the same seed token for
token, whatever the draft (drafter-invariant), and is exactly the target's
distribution; a good draft only makes matches, hence speed, more likely.
"""

from __future__ import annotations

import torch

from .._rng import Stream
from ._session import Session


def verify(s: Session, drafts: list[int], p: torch.Tensor, offset: int = 0) -> list[int]:
    """ERSD's rule for `drafts` at positions L+offset+i given the target's p [k+1, V]."""
    k = len(drafts)
    winners = s.race(p, s.positions(offset + k + 1)[offset:], Stream.TARGET).tolist()  # [k+1]
    for i, (x, t) in enumerate(zip(drafts, winners)):
        if x != t:
            s.accepted_tokens += i
            return drafts[:i] + [t]
    s.accepted_tokens += k
    return drafts + [winners[k]]


def round(s: Session) -> list[int]:
    drafts, q, _ = s.propose(s.k, Stream.TARGET)  # the draft races with the target's noise
    return s.check(drafts, q, s.target_rows(drafts), mode="race")  # verify() above, or its fused twin
