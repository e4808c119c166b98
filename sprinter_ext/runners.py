"""The runner protocol: what every engine drives, in Python and in C++ alike.

A runner is one batch-1 causal LM with a static KV cache, rolled back by moving
its length. :class:`Runner` is the Python statement of ``csrc/engine/runner.h``,
method for method (there ``feed(tokens)`` is ``step`` for one token and
``extend`` for several here):

    runner.prefill(ids)       reset the cache, run the prompt
    runner.step(token)        one token -> (logits [V] float32, hidden [D])
    runner.extend(tokens)     n tokens -> (logits [n, V] float32, hidden [n, D]), one forward
    runner.truncate(length)   keep the first `length` cached tokens
    runner.length             tokens currently in the cache
    runner.scrub()            zero every cache slot, length 0 (after a failed generation)

:class:`SnapshotRunner` adds the optional capability ssd needs (it keeps several
speculated continuations of one prefix by copying KV entries out and back in):

    runner.snapshot(start, end)   copies of the KV entries [start, end), one (k, v) per layer
    runner.restore(start, snap)   write them back at `start`; the cache then holds start + n

Implementations: :class:`~sprinter_ext.models.runner.ModelRunner` (transformers, both
protocols), ``sprinter_ext._C.NativeModel`` / ``GraphModel`` (C++, :class:`Runner`
only) and ``sprinter_ext._C.PyRunner`` (the C++ wrapper of a Python runner; it
has the capability iff the runner it wraps does). :func:`supports_snapshot` says
whether a runner has it and :func:`require_snapshot` refuses one without it with a
named error, before anything runs. The method names are bound from C++ as
``_C.RUNNER_PROTOCOL`` / ``_C.SNAPSHOT_PROTOCOL``; tests/test_native_boundary.py
checks these protocols against them.

Python runners also carry ``max_len``, ``vocab_size``, ``device``, ``dtype`` and
``hidden_size``, which the Python engines read when they size caches and buffers;
the C++ loop does not need them, so they are not part of the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidArgumentError

__all__ = ["Runner", "SnapshotRunner", "RUNNER_PROTOCOL", "SNAPSHOT_PROTOCOL", "supports_snapshot", "require_snapshot"]

RUNNER_PROTOCOL = ("prefill", "step", "extend", "truncate", "length", "scrub")  # == _C.RUNNER_PROTOCOL
SNAPSHOT_PROTOCOL = ("snapshot", "restore")  # == _C.SNAPSHOT_PROTOCOL


@runtime_checkable
class Runner(Protocol):
    """The interface the engines drive (csrc/engine/runner.h ``Runner``)."""

    def prefill(self, ids: Sequence[int]) -> Any: ...

    def step(self, token: int) -> tuple[Any, Any]: ...

    def extend(self, tokens: Sequence[int]) -> tuple[Any, Any]: ...

    def truncate(self, length: int) -> None: ...

    @property
    def length(self) -> int: ...

    def scrub(self) -> None: ...


@runtime_checkable
class SnapshotRunner(Runner, Protocol):
    """A :class:`Runner` that can copy KV entries out and back in (``supports_snapshot()`` in C++)."""

    def snapshot(self, start: int, end: int) -> list[tuple[Any, Any]]: ...

    def restore(self, start: int, snap: list[tuple[Any, Any]]) -> None: ...


def supports_snapshot(runner: object) -> bool:
    """Whether `runner` has snapshot/restore (a C++ runner says so itself)."""
    declared = getattr(runner, "supports_snapshot", None)
    if isinstance(declared, bool):  # sprinter_ext._C.Runner subclasses
        return declared
    return isinstance(runner, SnapshotRunner)


def require_snapshot(runner: object, why: str) -> None:
    """Raise InvalidArgumentError naming `runner`'s class unless it supports snapshot/restore.

    why: who needs it, for the message (e.g. ``"method='ssd'"``).
    """
    if not supports_snapshot(runner):
        raise InvalidArgumentError(
            f"{why} needs a runner with snapshot/restore, and {type(runner).__name__} has none; "
            "use runner='python' (ModelRunner)"
        )
