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

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ArgumentTypeError, InvalidArgumentError, UnknownOptionError
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
    drafts_by_round : it drafts through ``Session.draft_round`` (C++: Generation::speculate), so
        it takes a lookup draft's proposals (alone or beside a draft model) and ``k="auto"``'s
        per-round lengths; the other methods that need a draft need a draft model.
    """

    name: str
    round: Callable
    needs_draft: bool
    native: bool
    needs_snapshot: bool = False
    options: Callable | None = None
    lookahead: Callable | None = None
    threaded: bool = False
    drafts_by_round: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        """The keyword options this method takes (its ``options`` function's keyword-only arguments)."""
        if self.options is None:
            return ()
        params = inspect.signature(self.options).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def validate(self, pair, opts: dict) -> dict:
        """The validated options (named errors), {} for a method without options.

        A keyword no method takes is an :class:`UnknownOptionError` naming the valid ones
        (with a hint for another library's spelling, e.g. ``do_sample``); one that another
        method takes is an ArgumentTypeError naming which method takes it."""
        check_option_names(self, opts)
        if self.options is None:
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


# Another library's generation keywords and what to write here instead.
_HINTS = {
    "do_sample": "sampling is on when temperature > 0 (default 0: greedy); pass temperature=",
    "max_tokens": "pass max_new_tokens=",
    "max_length": "pass max_new_tokens= (max_length= on a Decoder sizes its KV cache)",
    "num_assistant_tokens": "pass k= (draft tokens per round)",
    "assistant_model": "give the draft to load_pair(draft, target)",
    "n": "one sequence per call (batch 1)",
    "num_return_sequences": "one sequence per call (batch 1)",
    "num_beams": "beam search is not offered: speculative decoding samples or decodes greedily",
}
GENERATION_ARGS = ("method", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                   "presence_penalty", "frequency_penalty", "seed", "k", "engine", "runner", "eos_token_id", "chat",
                   "streamer", "stop", "stop_token_ids", "max_time", "logprobs", "top_logprobs")  # fmt: skip


def check_option_names(method: "Method", opts: dict) -> None:
    """Refuse keywords `method` does not take, naming the mistake (see :meth:`Method.validate`)."""
    mine = set(method.option_names)
    for name in sorted(opts):
        if name in mine:
            continue
        owners = [m.name for m in _RECORDS if name in m.option_names]
        if owners:
            of = f"{name!r} is an option of {', '.join(owners)}"
            if not mine:
                raise ArgumentTypeError(f"method {method.name!r} takes no options ({of}); pass method={owners[0]!r}")
            raise ArgumentTypeError(f"method {method.name!r} does not take {name!r} ({of}); its options: {sorted(mine)}")
        hint = f": {_HINTS[name]}" if name in _HINTS else ""
        valid = sorted(set(GENERATION_ARGS) | {n for m in _RECORDS for n in m.option_names})
        raise UnknownOptionError(f"unknown option {name!r}{hint}. Valid keywords: {valid}")


_RECORDS = (
    Method("ar", ar.round, needs_draft=False, native=True),
    Method("sd", sd.round, needs_draft=True, native=True, drafts_by_round=True),
    Method("ersd", ersd.round, needs_draft=True, native=True, drafts_by_round=True),
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
