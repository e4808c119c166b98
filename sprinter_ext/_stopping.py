"""When a generation ends and why: EOS, stop token ids, stop strings on the decoded text,
``max_new_tokens`` and ``max_time``; the ``finish_reason`` of every result and stream.

finish_reason is one of

- ``"eos"``: the model emitted one of its EOS ids (``eos_token_id``);
- ``"stop"``: a stop token id (``stop_token_ids``) or a stop string (``stop``) ended it;
- ``"length"``: ``max_new_tokens`` were generated;
- ``"time"``: ``max_time`` seconds passed (checked after each round, as transformers'
  ``MaxTimeCriteria`` checks after each step).

A run cut short by a stop or ``max_time`` ends the engine's run early: its stats then lack
the engine's counts (``target_calls`` ...), as the server's runs always did.

``res.tokens`` keeps the token that ended the run (the EOS or stop token id, or the token
that completed a stop string): the count matches ``stats["new_tokens"]`` and the ids can be
fed back as a continuation. ``res.text`` never shows it: special tokens are skipped when
decoding, and the text is cut before the first stop string.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterable, Iterator

from .errors import ArgumentTypeError, InvalidArgumentError, TokenizerRequiredError

__all__ = ["FINISH_REASONS", "StopMatcher", "Stopping", "check_int", "eos_set"]

FINISH_REASONS = ("eos", "stop", "length", "time")
MAX_STOP = 16  # stop strings per request (OpenAI allows 4; a longer list is refused, not truncated)


def check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise InvalidArgumentError(f"{name} must be >= {low}, got {value}")
    return value


def token_ids(name: str, value, vocab: int) -> frozenset[int]:
    """`value` (None, an int or a list of ints) as a set of ids in [0, vocab) (named errors)."""
    if value is None:
        return frozenset()
    ids = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    out = []
    for i in ids:
        # NOTE: numpy and 0-d torch integers count as ints (operator.index), floats and bools do not
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)
        except TypeError:
            raise ArgumentTypeError(f"{name} must be an int, a list of ints or None, got {type(i).__name__} {i!r}") from None
        if not 0 <= i < vocab:
            raise InvalidArgumentError(f"{name} entries must be ints in [0, {vocab}), got {i!r}")
        out.append(i)
    return frozenset(out)


def eos_set(pair, eos_token_id, default) -> frozenset[int]:
    """The EOS ids of `pair`: `eos_token_id`, or the target's own when it is `default`."""
    import torch

    if eos_token_id is default:
        target = pair._view("target")  # no transformers build for a lazy default pair
        eos_token_id = getattr(target.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(target.config, "eos_token_id", None)
    if isinstance(eos_token_id, torch.Tensor) and eos_token_id.dim() == 1:
        eos_token_id = eos_token_id.tolist()
    return token_ids("eos_token_id", eos_token_id, pair.vocab_size)


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


def check_stop(stop, tokenizer) -> list[str]:
    """`stop` (None, a str or a list of non-empty strs) as a list (named errors)."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise ArgumentTypeError(f"stop must be a str or a list of strs, got {type(stop).__name__}")
    if not all(stops) or len(stops) > MAX_STOP:
        raise InvalidArgumentError(f"stop must hold 1 to {MAX_STOP} non-empty strings, got {list(stops)!r}")
    if tokenizer is None:
        raise TokenizerRequiredError("stop strings match decoded text, but this pair has no tokenizer; "
                                     "pass stop_token_ids instead")  # fmt: skip
    return list(stops)


def check_max_time(max_time) -> float | None:
    if max_time is None:
        return None
    if isinstance(max_time, bool) or not isinstance(max_time, (int, float)):
        raise ArgumentTypeError(f"max_time must be a number of seconds or None, got {type(max_time).__name__}")
    if not (max_time > 0 and math.isfinite(max_time)):
        raise InvalidArgumentError(f"max_time must be a finite number of seconds > 0, got {max_time!r}")
    return float(max_time)


class Stopping:
    """One run's stopping state over the engine's rounds (validated at construction).

    :meth:`run` yields ``(tokens, text)`` per round: the committed tokens up to the one that
    ends the run, and the text safe to show now (``""`` when no text is wanted); then
    :attr:`finish_reason` says why it ended.
    """

    def __init__(self, tokenizer, eos: frozenset[int], vocab: int, *, max_new_tokens: int, stop=None,
                 stop_token_ids=None, max_time=None, text: bool = False):  # fmt: skip
        self.stops = check_stop(stop, tokenizer)
        self.stop_ids = token_ids("stop_token_ids", stop_token_ids, vocab)
        self.max_time = check_max_time(max_time)
        self.eos, self.max_new_tokens = eos, max_new_tokens
        self.text = bool(text or self.stops)
        self.tokenizer = tokenizer
        self.finish_reason: str | None = None

    def run(self, rounds: Iterable[list[int]]) -> Iterator[tuple[list[int], str]]:
        from .prompts import IncrementalDetokenizer

        start, n = time.perf_counter(), 0
        detok = IncrementalDetokenizer(self.tokenizer) if self.text else None
        matcher = StopMatcher(self.stops)
        it = iter(rounds)
        try:
            for toks in it:
                kept, piece, reason = [], "", None
                for t in toks:
                    kept.append(t)
                    if t in self.eos:
                        reason = "eos"
                    elif t in self.stop_ids:
                        reason = "stop"
                    elif detok is not None:
                        piece += matcher.push(detok.push([t]))
                        reason = "stop" if matcher.stopped else None
                    if reason:
                        break
                n += len(kept)
                if reason is None and n >= self.max_new_tokens:
                    reason = "length"
                if reason is None and self.max_time is not None and time.perf_counter() - start >= self.max_time:
                    reason = "time"
                if reason is not None and detok is not None and not matcher.stopped:
                    piece += matcher.push(detok.flush()) + matcher.flush()
                yield kept, piece
                if reason is not None:
                    self.finish_reason = reason
                    if reason in ("eos", "length"):
                        for _ in it:  # the engine ends here on its own: let it write its stats
                            pass
                    return
            self.finish_reason = "length"
            if detok is not None and not matcher.stopped:
                tail = matcher.push(detok.flush()) + matcher.flush()
                if tail:
                    yield [], tail
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # ends the engine's run (a stop cut it short): frees the Decoder's caches
