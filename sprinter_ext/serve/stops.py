"""Stop strings on decoded text (moved to :mod:`sprinter_ext._stopping`, which the Python
API shares; re-exported here)."""

from __future__ import annotations

from .._stopping import StopMatcher

__all__ = ["StopMatcher"]
