"""The ``suffix`` draft: SuffixDecoding (Oliaro et al., arXiv 2411.04975), the reference.

A model-free draft: it proposes what followed earlier occurrences of the sequence's most
recent tokens, in this request (prompt and output so far) and in earlier requests' outputs.
This file is the readable specification; ``sprinter_ext._C.SuffixProposer``
(csrc/drafts/suffix.{h,cpp}) is the native one the C++ loop calls, and the two give the
same proposals (tests/test_suffix_draft.py).

Terms:

- *suffix trie* of depth ``D`` (``max_depth``): a trie of every n-gram (``n <= D``) of its
  texts; a node's *count* is how many times its n-gram occurs. N-grams never cross from one
  text to another.
- *request trie*: over this request's prompt and committed output; it only grows, by the
  n-grams that end at each new token (a round indexes only its new tokens).
- *global trie*: over earlier requests' outputs (``end(seq)`` adds ``seq[len(prompt):]``),
  kept across requests by this object, at most ``max_global_tokens`` tokens in all: before
  an output is added, the oldest outputs are removed (FIFO) until it fits, their n-gram
  counts decremented (nodes at zero are deleted). An output longer than the whole budget
  keeps its last ``max_global_tokens`` tokens.
- *match*, per trie: the longest suffix of the sequence, ``L`` tokens with
  ``min_match <= L <= D - 1``, whose node has a continuation (a child). ``L = 0``: none.
- *chain*: from the match node, repeatedly take the most frequent child (ties: the smallest
  token id); its conditional probability is ``p = child count / sum of the children's
  counts``; a token's *confidence* is the product of the ``p``'s up to it (the estimate
  that the target accepts every proposed token up to this one; so it never increases
  along the chain). The chain stops before a token whose confidence is below
  ``min_confidence``, where there is no child, or at ``min(max_tokens, ceil(alpha * L))``
  tokens (longer matches propose more). Once the context (match plus proposed tokens)
  is ``D - 1`` tokens long it slides: the next step continues from the node of the last
  ``D - 1`` tokens, which exists because every suffix of an indexed n-gram is indexed.
- *score* of a chain: the sum of its confidences (its expected number of accepted tokens).
  The request trie's chain is proposed unless the global trie's scores strictly higher.
  ``match_length`` is the chosen chain's ``L``, 0 when it proposes nothing.

The options (names, defaults, rules) are checked by ``_C.suffix_options``, the one place
they are written; bad values raise :class:`~sprinter_ext.errors.InvalidArgumentError`,
wrong types :class:`~sprinter_ext.errors.ArgumentTypeError`, before any state exists.
The native proposer returns confidences as float32; this one as Python floats (the same
doubles before rounding).

>>> p = SuffixProposer()
>>> p.begin([5, 6, 7, 8, 5, 6])
>>> p.propose([5, 6, 7, 8, 5, 6], 4)
([7, 8], [1.0, 1.0], 2)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import InvalidArgumentError

__all__ = ["SuffixProposer", "make_proposer"]

_MAX_TOKEN = 2**31 - 1


@dataclass
class _Node:
    count: int = 0
    children: dict[int, "_Node"] = field(default_factory=dict)


class _SuffixTrie:
    """Every n-gram (n <= max_depth) of its texts, with occurrence counts."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.root = _Node()
        self.size = 1  # live nodes, the root included

    def find(self, tokens: Sequence[int]) -> _Node | None:
        node = self.root
        for t in tokens:
            node = node.children.get(t)
            if node is None:
                return None
        return node

    def _add(self, path: Sequence[int], delta: int) -> None:
        """Add delta to the count of every prefix of path (each an n-gram occurrence)."""
        node = self.root
        for t in path:
            child = node.children.get(t)
            if child is None:
                child = node.children[t] = _Node()
                self.size += 1
            child.count += delta
            if child.count == 0:  # a child never counts more than its parent: nothing below is left
                self.size -= _subtree_size(child)
                del node.children[t]
                return
            node = child

    def add_last(self, text: Sequence[int]) -> None:
        """Count the n-grams that end at text's last token (text grew by that token)."""
        n = len(text)
        for length in range(1, min(self.max_depth, n) + 1):
            node = self.find(text[n - length : n - 1])
            child = node.children.get(text[-1])  # `node` exists: its n-gram ended at the previous token
            if child is None:
                child = node.children[text[-1]] = _Node()
                self.size += 1
            child.count += 1

    def insert(self, text: Sequence[int]) -> None:
        for start in range(len(text)):
            self._add(text[start : start + self.max_depth], +1)

    def remove(self, text: Sequence[int]) -> None:
        for start in range(len(text)):
            self._add(text[start : start + self.max_depth], -1)


def _subtree_size(node: _Node) -> int:
    return 1 + sum(_subtree_size(c) for c in node.children.values())


def _check_tokens(seq: Sequence[int], start: int) -> None:
    for i in range(start, len(seq)):
        if not 0 <= seq[i] <= _MAX_TOKEN:
            raise InvalidArgumentError(f"token ids must be in [0, 2**31 - 1], got {seq[i]} at position {i}")


class SuffixProposer:
    """The suffix draft, reference implementation (see the module docstring for the rules).

    Parameters (keyword-only; defaults and rules from ``_C.suffix_options``)
    ----------
    max_depth : int
        Longest n-gram indexed; contexts of up to ``max_depth - 1`` tokens (default 32).
    min_match : int
        Shortest context match that may propose, in ``[1, max_depth - 1]`` (default 1).
    alpha : float
        A match of ``L`` tokens proposes at most ``ceil(alpha * L)`` tokens (default 1.0).
    min_confidence : float
        In ``[0, 1]``: stop before the first token whose confidence is below it (default 0.1).
    max_global_tokens : int
        The global trie's budget, in tokens of earlier outputs, ``>= 1`` (default 65536).
    """

    def __init__(self, **options: object) -> None:
        from .._native import _C

        self.options: dict = _C.suffix_options(**options)
        depth = self.options["max_depth"]
        self._global = _SuffixTrie(depth)
        self._request = _SuffixTrie(depth)
        self._history: deque[list[int]] = deque()  # outputs in the global trie, oldest first
        self._global_tokens = 0
        self._seq: list[int] = []
        self._prompt_length = 0
        self.active = False

    # -- the Proposer interface -----------------------------------------------------------

    def begin(self, prompt: Sequence[int]) -> None:
        """Start a request (an unfinished one is dropped without being learned from)."""
        self._reset_request()
        self._index(list(prompt))
        self._prompt_length = len(prompt)
        self.active = True

    def propose(self, seq: Sequence[int], max_tokens: int) -> tuple[list[int], list[float], int]:
        """(tokens, confidence, match_length): at most max_tokens ids to follow seq."""
        if not self.active:
            raise RuntimeError("SuffixProposer.propose before begin(prompt)")
        if max_tokens < 0:
            raise InvalidArgumentError(f"max_tokens must be >= 0, got {max_tokens}")
        n = len(self._seq)
        if len(seq) < n or (n and seq[n - 1] != self._seq[-1]):
            raise InvalidArgumentError(
                "seq must extend the sequence proposed from before (prompt + committed output; it only "
                f"grows within a request): {n} tokens were indexed, seq has {len(seq)}"
            )
        self._index(list(seq))
        if max_tokens == 0:
            return [], [], 0
        local = self._chain(self._request, max_tokens)
        remote = self._chain(self._global, max_tokens)
        tokens, confidence, match, _ = remote if remote[3] > local[3] else local
        return tokens, confidence, match

    def end(self, seq: Sequence[int]) -> None:
        """The request finished with seq: its output joins the global trie (FIFO budget)."""
        if not self.active:
            raise RuntimeError("SuffixProposer.end before begin(prompt)")
        if len(seq) < self._prompt_length:
            raise InvalidArgumentError(
                f"end(seq): seq has {len(seq)} tokens, fewer than the prompt's {self._prompt_length}"
            )
        _check_tokens(seq, self._prompt_length)
        budget = self.options["max_global_tokens"]
        output = list(seq[self._prompt_length :])[-budget:]
        self._reset_request()
        if not output:
            return
        while self._history and self._global_tokens + len(output) > budget:
            oldest = self._history.popleft()
            self._global.remove(oldest)
            self._global_tokens -= len(oldest)
        self._global.insert(output)
        self._global_tokens += len(output)
        self._history.append(output)

    # -- memory ---------------------------------------------------------------------------

    def nodes(self) -> int:
        return self._global.size + self._request.size

    def global_nodes(self) -> int:
        return self._global.size

    def request_nodes(self) -> int:
        return self._request.size

    def global_tokens(self) -> int:
        return self._global_tokens

    def global_requests(self) -> int:
        return len(self._history)

    def indexed_tokens(self) -> int:
        return len(self._seq)

    # -- internals ------------------------------------------------------------------------

    def _reset_request(self) -> None:
        self.active = False
        self._request = _SuffixTrie(self.options["max_depth"])
        self._seq = []
        self._prompt_length = 0

    def _index(self, seq: list[int]) -> None:
        """Index the tokens of seq past those indexed already (checked first, all of them)."""
        _check_tokens(seq, len(self._seq))
        for t in seq[len(self._seq) :]:
            self._seq.append(t)
            self._request.add_last(self._seq)

    def _match(self, trie: _SuffixTrie) -> tuple[int, _Node | None]:
        depth, seq = self.options["max_depth"], self._seq
        for length in range(min(depth - 1, len(seq)), self.options["min_match"] - 1, -1):
            node = trie.find(seq[len(seq) - length :])
            if node is not None and node.children:
                return length, node
        return 0, None

    def _chain(self, trie: _SuffixTrie, max_tokens: int) -> tuple[list[int], list[float], int, float]:
        """(tokens, confidence, match_length, score) of this trie's chain."""
        match, node = self._match(trie)
        if node is None:
            return [], [], 0, 0.0
        window = self.options["max_depth"] - 1
        limit = min(max_tokens, math.ceil(self.options["alpha"] * match))
        context = self._seq[-window:]
        tokens: list[int] = []
        confidence: list[float] = []
        score, running = 0.0, 1.0
        while len(tokens) < limit and node.children:
            total = sum(c.count for c in node.children.values())
            token = min(node.children, key=lambda t: (-node.children[t].count, t))  # most frequent, then smallest id
            running *= node.children[token].count / total
            if running < self.options["min_confidence"]:
                break
            tokens.append(token)
            confidence.append(running)
            score += running
            context.append(token)
            node = trie.find(context[-min(window, match + len(tokens)) :])
        return tokens, confidence, (match if tokens else 0), score


def make_proposer(native: bool, **options):
    """A fresh ``"suffix"`` proposer: the C++ ``_C.SuffixProposer`` for the native loop, this
    module's specification otherwise (same options, same proposals)."""
    if native:
        from .._native import _C

        return _C.SuffixProposer(**options)
    return SuffixProposer(**options)
