"""Decoding methods, one module each, plain PyTorch: the readable specification.

Each module defines ``round(session) -> list[int]`` and, if it takes options,
``options(pair, **opts) -> dict`` (validation, named errors) and
``lookahead(opts, k) -> int`` (most tokens a round drafts; default k). See
:mod:`sprinter_ext.methods._session` for the state they share.

What the rest of the library needs to know about a method is its record here, one
:class:`Method` per method in :data:`METHODS`: whether it needs a draft, whether it
snapshots KV entries (only the python runner can), whether the C++ loop
(csrc/engine/engine.cpp) implements it. A new method is one module plus one record in
``_RECORDS``; the engines, the CLIs and the benchmarks read the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ArgumentTypeError, InvalidArgumentError
from . import ar, ersd, sd, sprinter, ssd


@dataclass(frozen=True)
class Method:
    """One decoding method as the engines see it.

    name : the ``method=`` string.
    round : ``round(session) -> list[int]``, the reference engine's round.
    needs_draft : the method runs a draft model.
    needs_snapshot : it snapshots and restores KV entries (``runner.snapshot``), which only
        the python runner (ModelRunner) implements.
    native : csrc/engine/engine.cpp implements it (engine="native" can run it).
    options : ``options(pair, **opts) -> dict``, or None when it takes no options.
    lookahead : ``lookahead(opts, k) -> int``, KV room a round may use past the committed
        tokens; None: k.
    threaded : it takes the option ``threaded`` (draft work on its own thread); its default
        None means "the engine's default" (:meth:`resolve`): True under engine="fused".
    """

    name: str
    round: Callable
    needs_draft: bool
    native: bool
    needs_snapshot: bool = False
    options: Callable | None = None
    lookahead: Callable | None = None
    threaded: bool = False

    def validate(self, pair, opts: dict) -> dict:
        """The validated options (named errors), {} for a method without options."""
        if self.options is None:
            if opts:
                raise ArgumentTypeError(f"method {self.name!r} takes no options {sorted(opts)}")
            return {}
        return self.options(pair, **opts)

    def lookahead_of(self, opts: dict, k: int) -> int:
        """KV positions one round may use past the committed tokens (k unless the method says)."""
        return self.lookahead(opts, k) if self.lookahead is not None else k

    def resolve(self, opts: dict, engine: str, *, head: bool = False) -> dict:
        """`opts` with the engine- and draft-dependent defaults filled in (ssd: threaded =
        engine == "fused", never for a draft head: it reads the features verification writes)."""
        if self.threaded and opts.get("threaded") is None:
            return {**opts, "threaded": engine == "fused" and not head}
        return opts


_RECORDS = (
    Method("ar", ar.round, needs_draft=False, native=True),
    Method("sd", sd.round, needs_draft=True, native=True),
    Method("ersd", ersd.round, needs_draft=True, native=True),
    Method("sprinter", sprinter.round, needs_draft=True, native=True, options=sprinter.options,
           lookahead=sprinter.lookahead),  # fmt: skip
    Method("ssd", ssd.round, needs_draft=True, native=False, needs_snapshot=True, options=ssd.options,
           lookahead=ssd.lookahead, threaded=True),  # fmt: skip
)

METHODS: dict[str, Method] = {m.name: m for m in _RECORDS}
NATIVE_METHODS = tuple(m.name for m in _RECORDS if m.native)  # == _C.native_methods() (csrc/engine/engine.h)
SNAPSHOT_METHODS = tuple(m.name for m in _RECORDS if m.needs_snapshot)  # python runner only


def get(method) -> Method:
    """The record of `method` (a name), or InvalidArgumentError naming the choices."""
    if not isinstance(method, str) or method not in METHODS:
        raise InvalidArgumentError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return METHODS[method]


__all__ = ["METHODS", "Method", "NATIVE_METHODS", "SNAPSHOT_METHODS", "get"]
