"""``ar``: autoregressive decoding of the target alone (the baseline every method must match)."""

from __future__ import annotations

from .._rng import Stream
from ._session import Session


def round(s: Session) -> list[int]:
    """One target forward; the next token is the race over p with TARGET noise at its position."""
    logits = s.target_rows([])  # [1, V], processed
    tok = s.sample(logits[0], None, s.position, Stream.TARGET)[0]
    s.record([tok], logits, s.position)  # logprobs, when asked
    return [tok]
