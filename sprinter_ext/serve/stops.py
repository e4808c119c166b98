"""Stop strings on decoded text, without leaking a partial stop string into a stream."""

from __future__ import annotations

__all__ = ["StopMatcher"]


class StopMatcher:
    """Cuts a text stream at the first occurrence of any stop string.

    ``push(text)`` returns the part of the text that is safe to emit now: everything
    before a completed stop string (then :attr:`stopped` is True), or everything
    except the longest tail that could still grow into a stop string (held back until
    the next push tells). ``flush()`` returns what is held back once the stream ends
    without a stop. The emitted pieces always concatenate to the text up to (not
    including) the first stop string, which is what a non-streaming answer holds.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        buf = self._held + text
        if not self.stops:
            self._held = ""
            return buf
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return buf[:cut]
        keep = self._partial_tail(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        out, self._held = ("" if self.stopped else self._held), ""
        return out

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best
