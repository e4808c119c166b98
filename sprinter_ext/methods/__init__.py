"""Decoding methods, one module each, plain PyTorch: the readable specification.

Each module defines ``NEEDS_DRAFT`` and ``round(session) -> list[int]``; see
:mod:`sprinter_ext.methods._session` for the state they share.
"""

from __future__ import annotations

from . import ar, ersd, sd

METHODS = {"ar": ar, "sd": sd, "ersd": ersd}

__all__ = ["METHODS"]
