"""The engines behind :class:`sprinter_ext.Decoder`: which loop runs the rounds.

Two engines, one protocol (:class:`Engine`): :class:`~._python.PythonEngine` drives the
methods' round functions over a Session (``methods/``; backend "reference" = plain PyTorch,
"fused" = sampling and verification in ``sprinter_ext.ops``), :class:`~._native.NativeEngine`
runs the whole loop in C++ (``_C.Generation``, csrc/engine/engine.cpp) with the GIL released.
:func:`pick_engine` is the one place that turns the user's ``engine=`` into an engine name;
what a method can run on comes from its registry record (:mod:`sprinter_ext.methods`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from ..errors import InvalidArgumentError
from ..methods import NATIVE_METHODS, Method
from ..sampling import SamplingSettings

__all__ = ["ENGINES", "Engine", "pick_engine", "make_engine", "one_shot_max_length"]

ENGINES = ("auto", "reference", "fused", "native")


class Engine(Protocol):
    """Runs one generation as rounds; each round's committed tokens are yielded as they come."""

    name: str  # "reference", "fused" or "native": the value of res.stats["engine"]

    def rounds(self, ids: Sequence[int], max_new_tokens: int, seed: int, settings: SamplingSettings,
               stats: dict) -> Iterator[list[int]]:  # fmt: skip
        """Yield the committed tokens of each round (cut at EOS and max_new_tokens); when the
        generation ends, fill `stats`."""
        ...


def _native_available() -> bool:
    """Is the compiled extension built (what pick_engine's `built` says)?"""
    try:
        from .. import _native  # noqa: F401
    except ImportError:
        return False
    return True


def _has_cuda_ops() -> bool:
    from ..ops import _has_cuda_ops as has

    return has()


def pick_engine(engine: str, method: Method, device: torch.device, *, built: bool, cuda_ops) -> str:
    """The engine for `engine` ("auto", "reference", "fused", "native"), or a named error.

    auto: the native loop where it runs (extension built, CPU or a CUDA build, a method the
    loop implements), else fused when the extension is built, else reference. `cuda_ops` is
    a callable (only asked for a CUDA pair): whether this build has the CUDA ops.
    """
    on_device = device.type == "cpu" or (device.type == "cuda" and built and cuda_ops())
    native_ok = built and method.native and on_device
    if engine == "auto":
        return "native" if native_ok else ("fused" if built else "reference")
    if engine == "native" and not native_ok:
        if not built:
            why = "the compiled extension sprinter_ext._C is not built (see the README's install command)"
        elif not method.native:
            why = f"it runs {list(NATIVE_METHODS)}, not {method.name!r}"
        else:
            why = f"this build has no CUDA ops for a pair on {device} (rebuild against a CUDA torch)"
        raise InvalidArgumentError(f"engine='native' is not available: {why}; use engine='fused' or 'auto'")
    if engine == "fused" and not built:
        raise InvalidArgumentError("engine='fused' needs the compiled extension sprinter_ext._C; build it or use 'reference'")
    return engine


def make_engine(name: str, method: Method, target, draft, *, k: int, options: dict, eos: frozenset[int],
                labels: dict, device: torch.device, cost=None, lookup=None) -> Engine:  # fmt: skip
    """The engine object for a picked engine `name`: `target` and `draft` (None without one)
    are the Decoder's Lanes on `device`; `labels` (method, engine, runner) end every run's stats."""
    if name == "native":
        from ._native import NativeEngine

        return NativeEngine(method, target, draft, k=k, options=options, eos=eos, labels=labels, device=device,
                            cost=cost, lookup=lookup)
    from ._python import PythonEngine

    return PythonEngine(method, target, draft, backend=name, k=k, options=options, eos=eos, labels=labels, cost=cost,
                        lookup=lookup)


def one_shot_max_length(pair, method: Method | None, ids: Sequence[int], max_new_tokens, k, options: dict):
    """The static cache size for one generate() call: the request rounded up to 64, within the
    model's limit; None (the Decoder's default) when the arguments are not valid yet (the
    Decoder then names the error)."""
    from ..models.runner import position_limit

    # NOTE: attention runs over every slot of a static cache, so 2048 slots for a 100-token
    # job cost ~20% per step on CPU. A Decoder keeps its (larger) cache across calls.
    if isinstance(k, str) and k == "auto":
        from .._decoder_args import K_AUTO_MAX

        k = K_AUTO_MAX
    if method is None or not isinstance(max_new_tokens, int) or not isinstance(k, int):
        return None
    lookahead = method.lookahead_of(options, k)
    if not isinstance(lookahead, int) or isinstance(lookahead, bool):
        return None
    need = len(ids) + max(0, max_new_tokens) + max(k, lookahead)
    max_length = max(64, -(-need // 64) * 64)
    limit = position_limit(pair._view("target"))
    return min(max_length, limit) if limit else max_length
