"""The native engine: the whole round loop in C++ (``_C.Generation``, csrc/engine/engine.cpp).

The loop calls the runners (a C++ NativeModel or draft-head HeadModel directly, a Python
ModelRunner or HeadRunner through ``_C.PyRunner``) and the fused ops, with the GIL released inside each round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from ..methods import Method
from ..methods._session import Lane
from ..sampling import SamplingSettings

__all__ = ["NativeEngine", "generation"]


def _wrap(runner):
    from .._native import _C

    return runner if isinstance(runner, _C.Runner) else _C.PyRunner(runner)


def generation(target, draft, method: str, k: int, settings: SamplingSettings, eos: frozenset[int], options: dict,
               device, ids: Sequence[int], seed: int, max_new_tokens: int, proposer=None, cost=None):  # fmt: skip
    """The ``_C.Generation`` for one run: the one call across the pybind11 boundary (keep it here)."""
    from .._generation import GenerationConfig
    from .._native import _C
    from ..ops import _feature_codes, _verifier_layers

    o, st = options, settings
    verifier = o.get("verifier")
    backend = "cuda" if device.type == "cuda" else "cpu"
    layers = _verifier_layers(verifier, device, backend) if verifier is not None else []
    config = GenerationConfig(
        method=method, k=k, sampling=st, eos=sorted(eos),
        verifier_weights=[w for w, _ in layers], verifier_biases=[b for _, b in layers],
        verifier_features=_feature_codes(verifier) if verifier is not None else [],
        threshold=float(o.get("threshold", 0.0)), max_run=o.get("max_run", 1),
        verify_all=o.get("verify") == "all", prompt=list(ids), seed=seed, max_new_tokens=max_new_tokens,
    )
    return _C.Generation(target, draft, config.to_native(), proposer=proposer, cost=cost)


class NativeEngine:
    """One ``_C.Generation`` per run, stepped round by round; see :class:`Engine`."""

    name = "native"

    def __init__(self, method: Method, target: Lane, draft: Lane | None, *, k: int, options: dict,
                 eos: frozenset[int], labels: dict, device, cost=None, lookup=None):  # fmt: skip
        self.method, self.k, self.options, self.eos, self.labels = method, k, options, eos, labels
        self.cost = cost.native() if cost is not None else None  # the C++ twin, kept across generations
        self.device = device
        # a lookup draft (drafts/lookup.py), alone or beside the draft model (a hybrid): a _C.Proposer
        model_free = hasattr(draft, "proposer")
        self.proposer = draft.proposer if model_free else getattr(lookup, "proposer", None)
        self.runners = _wrap(target.runner), (_wrap(draft.runner) if draft is not None and not model_free else None)

    def rounds(self, ids: Sequence[int], max_new_tokens: int, seed: int, settings: SamplingSettings,
               stats: dict) -> Iterator[list[int]]:  # fmt: skip
        g = generation(*self.runners, self.method.name, self.k, settings, self.eos, self.options, self.device,
                       ids, seed, max_new_tokens, proposer=self.proposer, cost=self.cost)  # fmt: skip
        t0 = time.perf_counter()
        seq = list(ids)
        try:
            while not g.done:
                toks = g.round()
                seq.extend(toks)
                if toks:
                    yield toks
        finally:
            if self.proposer is not None and not g.done:  # stopped early (a stop string, max_time)
                self.proposer.end(seq)
        out = g.stats()
        if self.method.name != "sprinter":
            del out["flagged_runs"], out["unchecked"]
        stats.update(out, wall_s=time.perf_counter() - t0, **self.labels)
