"""Model-free drafts: proposals looked up in text already seen, no draft model.

* ``"ngram"`` (:class:`NgramProposer`): prompt + output lookup, longest match first (vLLM's
  ngram, transformers' ``prompt_lookup_num_tokens``, llama.cpp's lookup);
* ``"suffix"`` (:mod:`.suffix`): SuffixDecoding's suffix trees over this request and earlier ones.

A lookup draft is deterministic: its q is one-hot on each proposed token, so sd accepts a
token x with probability p(x) and on a rejection resamples from p with x removed; ersd
accepts x iff it is the target's race winner (drafter-invariant: equal to ar for the same
seed). A proposal may be shorter than k, or empty: that round is a plain target step.
sprinter refuses them by name (its verifier reads a draft model's hidden state).

The classes here are the specification the reference and fused engines run; the native loop
runs their C++ twins (csrc/drafts/, same proposals: tests/test_lookup_draft.py). A proposer
serves one generation at a time: ``begin(ids)`` with a prefix of the request's sequence,
``propose(seq, max_tokens)`` once per round with the committed sequence, ``end(seq)`` when
the request is over (the C++ interface: csrc/engine/proposer.h).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["LOOKUP_KINDS", "LookupDraft", "LookupLane", "NgramProposer", "lookup_draft"]

LOOKUP_KINDS = ("ngram", "suffix")
_NGRAM_N_MAX = 64


def _int_option(kind: str, name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{kind} draft: {name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"{kind} draft: {name} must be in [{lo}, {hi}], got {value}")
    return value


class NgramProposer:
    """The ``"ngram"`` draft (the rule; the C++ twin is ``_C.NgramProposer``, csrc/drafts/ngram.h).

    For n = max_n down to min_n: if the last n tokens of the sequence also ended at an earlier
    position j (the most recent one), propose what followed them, ``seq[j+1 : j+1+max_tokens]``
    (cut at the sequence's end); the first n that matches wins. Each n-gram is indexed once,
    when the position after it exists, so a round's work grows with the new tokens only.
    """

    def __init__(self, *, min_n: int = 1, max_n: int = 4):
        min_n = _int_option("ngram", "min_n", min_n, 1, _NGRAM_N_MAX)
        max_n = _int_option("ngram", "max_n", max_n, 1, _NGRAM_N_MAX)
        if max_n < min_n:
            raise InvalidArgumentError(
                f"ngram draft: the n range is reversed (min_n {min_n} > max_n {max_n}); pass min_n <= max_n")
        self.min_n, self.max_n = min_n, max_n
        self.begin([])

    def begin(self, prompt: Sequence[int]) -> None:
        self._seq: list[int] = list(prompt)
        self._next = 0  # n-grams ending at positions < _next are indexed
        self.indexed = 0
        self._last: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(self.min_n, self.max_n + 1)}

    def propose(self, seq: Sequence[int], max_tokens: int) -> tuple[list[int], list[float], int]:
        """(tokens, confidence per token, match length) to follow `seq`, at most `max_tokens`."""
        have = len(self._seq)
        if len(seq) < have or list(seq[:have]) != self._seq:
            raise InvalidArgumentError("ngram: propose() got a sequence that does not extend the request's; "
                                       "call begin() first")  # fmt: skip
        self._seq.extend(seq[have:])
        s, L = self._seq, len(self._seq)
        if L == 0 or max_tokens <= 0:
            return [], [], 0
        while self._next < L - 1:  # index every n-gram that ends before the last position
            e = self._next
            for n in range(self.min_n, min(self.max_n, e + 1) + 1):
                self._last[n][tuple(s[e + 1 - n : e + 1])] = e
                self.indexed += 1
            self._next += 1
        for n in range(min(self.max_n, L), self.min_n - 1, -1):
            j = self._last[n].get(tuple(s[L - n :]))
            if j is None:
                continue
            toks = s[j + 1 : min(L, j + 1 + max_tokens)]
            return toks, [n / self.max_n] * len(toks), n
        return [], [], 0

    def end(self, seq: Sequence[int]) -> None:
        pass


@dataclass(frozen=True)
class LookupDraft:
    """What a pair holds as its draft when the draft is a lookup (``pair.draft_kind`` is `kind`)."""

    kind: str
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}({opts})" if opts else self.kind

    def proposer(self, native: bool):
        """A fresh proposer: the C++ one for the native loop, the Python specification otherwise."""
        if self.kind == "ngram":
            if native:
                from .._native import _C

                return _C.NgramProposer(**self.options)
            return NgramProposer(**self.options)
        from . import suffix

        return suffix.make_proposer(native, **self.options)


def lookup_draft(kind: str, **options) -> LookupDraft:
    """A validated :class:`LookupDraft` (named errors for unknown kinds and bad options)."""
    if kind not in LOOKUP_KINDS:
        raise InvalidArgumentError(f"unknown lookup draft {kind!r}: one of {list(LOOKUP_KINDS)}")
    spec = LookupDraft(kind, dict(options))
    spec.proposer(native=False)  # NOTE: builds the Python proposer once, so bad options fail here
    return spec


class LookupLane:
    """The draft lane of a lookup draft (the counterpart of methods/_session.py Lane): no KV
    cache, no forward; ``propose`` gives the proposer's tokens, ``one_hot`` the q rows of the
    ones a round verifies (built after the cost model's cut, never for tokens it drops)."""

    def __init__(self, proposer, vocab_size: int, device="cpu"):
        self.proposer = proposer
        self.vocab_size = int(vocab_size)
        self.device = torch.device(device)
        self.tokens: list[int] = []
        self.reset_counters()

    def reset_counters(self) -> None:
        self.calls = self.fed = self.attended = 0

    def begin(self, prompt: Sequence[int]) -> None:
        self.proposer.begin(list(prompt))

    def sync(self, seq: Sequence[int]) -> None:
        pass

    def scrub(self) -> None:
        pass

    def end(self, seq: Sequence[int]) -> None:
        self.proposer.end(list(seq))

    def propose(self, seq: Sequence[int], k: int) -> tuple[list[int], int]:
        """Up to k tokens to follow `seq`, and the length of the match they came from."""
        toks, _, match = self.proposer.propose(list(seq), k)
        return list(toks)[:k], int(match)

    def one_hot(self, toks: Sequence[int]) -> torch.Tensor:
        """q of the tokens a round verifies: one-hot rows [n, V] (float32 on the lane's device)."""
        q = torch.zeros(len(toks), self.vocab_size, dtype=torch.float32, device=self.device)
        if toks:
            q[torch.arange(len(toks)), torch.tensor(list(toks))] = 1.0
        return q
