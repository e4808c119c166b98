"""The Python engine: the methods' round functions over a Session (``methods/``).

Backend "reference" runs sampling and verification in plain PyTorch (the specification);
"fused" runs them in ``sprinter_ext.ops`` (C++ on CPU, Triton on CUDA). Same tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from ..methods import Method
from ..methods._session import Lane, Session, run
from ..sampling import SamplingSettings

__all__ = ["PythonEngine"]


class PythonEngine:
    """Drives ``method.round`` with :func:`sprinter_ext.methods._session.run`; see :class:`Engine`."""

    def __init__(self, method: Method, target: Lane, draft: Lane | None, *, backend: str, k: int, options: dict,
                 eos: frozenset[int], labels: dict, cost=None, lookup=None):  # fmt: skip
        self.name = backend
        self.method, self.target, self.draft = method, target, draft
        self.k, self.options, self.eos, self.labels = k, options, eos, labels
        self.cost = cost  # k="auto" (sprinter_ext/cost_model.py), kept across generations
        self.lookup = lookup  # a hybrid draft's LookupLane (drafts/lookup.py)

    def _session(self, ids: Sequence[int], seed: int, settings: SamplingSettings, logprobs=None) -> Session:
        # NOTE: the one place the Python engine builds a Session: "reference" runs the fused ops'
        # torch backends (the spec), "fused" lets them pick C++ / CUDA / Triton by device.
        return Session(
            target=self.target, draft=self.draft, settings=settings, seed=seed, k=self.k,
            seq=list(ids), options=self.options, backend="auto" if self.name == "fused" else "torch",
            cost=self.cost, lookup=self.lookup, logprobs=logprobs,
        )  # fmt: skip

    def rounds(self, ids: Sequence[int], max_new_tokens: int, seed: int, settings: SamplingSettings,
               stats: dict, logprobs=None) -> Iterator[list[int]]:  # fmt: skip
        """`logprobs`: a methods._session.LogprobLog to fill (generate(logprobs=True)), or None."""
        target, draft = self.target, self.draft
        target.reset_counters()
        if draft is not None:
            draft.reset_counters()
        s = self._session(ids, seed, settings, logprobs)
        t0 = time.perf_counter()
        n = 0
        for toks in run(s, self.method.round, max_new_tokens, self.eos):
            n += len(toks)
            yield toks
        stats.update(
            new_tokens=n,
            target_calls=target.calls,
            draft_calls=draft.calls if draft is not None else 0,
            target_fed=target.fed,
            target_attended=target.attended,
            draft_fed=draft.fed if draft is not None else 0,
            draft_attended=draft.attended if draft is not None else 0,
            draft_tokens=s.draft_tokens,
            accepted_tokens=s.accepted_tokens,
            rounds=s.rounds,
            wall_s=time.perf_counter() - t0,
            **self.labels,
            **s.counters,
        )
