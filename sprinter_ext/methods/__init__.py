"""Decoding methods, one module each, plain PyTorch: the readable specification.

Each module defines ``NEEDS_DRAFT`` and ``round(session) -> list[int]``, and, if
it takes options, ``options(pair, **opts) -> dict`` (validation, named errors)
and ``lookahead(opts, k) -> int`` (most tokens a round drafts; default k). See
:mod:`sprinter_ext.methods._session` for the state they share.
"""

from __future__ import annotations

from . import ar, ersd, sd, sprinter, ssd

METHODS = {"ar": ar, "sd": sd, "ersd": ersd, "sprinter": sprinter, "ssd": ssd}

__all__ = ["METHODS"]
