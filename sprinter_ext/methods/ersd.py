"""``ersd``: speculative sampling by exponential races (Kobus & Gunduz, arXiv 2504.15475).

Every sample is a race argmax_i w_i / E_i. The draft proposes x_i as the race over
q_i with the very noise E (TARGET stream, position-keyed) that the target's race
over p_i will use at that position. The target scores the proposals in one forward
and runs its own races t_i; x_i is accepted iff t_i == x_i. At the first mismatch
t_i is emitted; if all k match, the bonus t_{k+1}. Every committed token is the
target's own race winner, so the output equals `ar`'s for the same seed token for
token, whatever the draft (drafter-invariant), and is exactly the target's
distribution; a good draft only makes matches, hence speed, more likely.

The rule is stated once, in torch: the torch backend of
:func:`sprinter_ext.ops.verify_tokens` (``mode="race"``, sprinter_ext/ops/_verify_tokens.py),
which the reference engine runs; the fused engine runs the same op's other backends.
"""

from __future__ import annotations

import torch

from .._rng import Stream
from ._session import Session


def verify(s: Session, drafts: list[int], q: torch.Tensor, logits: torch.Tensor, offset: int = 0) -> list[int]:
    """ERSD's rule for `drafts` at positions L+offset+i given the target's logits [k+1, V]
    (q [k, V] only has its shape checked: the rule never reads it)."""
    return s.check(drafts, q, logits, offset=offset, mode="race")


def round(s: Session) -> list[int]:
    # k drafts, or the cost model's choice (k="auto"; none: a plain target step); the draft
    # races with the target's noise
    d = s.draft_round(Stream.TARGET)
    out = verify(s, d.tokens, d.q, s.target_rows(d.tokens))
    s.observe(d, out)
    return out
