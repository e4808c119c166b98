"""``ssd``: speculative speculative decoding, Saguaro (Kumar, Dao, May, arXiv 2603.03251).

Standard SD (methods/sd.py) drafts, then verifies, then drafts again: drafting sits on the
critical path. SSD overlaps them. While the target verifies round t's k drafts, the draft
predicts the likely verification outcomes v = (accepted length a, bonus token b) and drafts
round t+1's proposal for each into a *speculation cache* keyed by (a, b). If the actual outcome
is in the cache (a *hit*) round t+1 starts at once; on a *miss* the draft proposes just in
time (the fallback, at batch 1, exactly as sd does).

- Candidate bonus tokens: after a rejection at position a < k the recovered token comes from
  the residual max(p - q', 0), which is 0 at the rejected draft d_a, so the candidates are the
  draft's best tokens at that position without d_a; when all k pass the bonus comes from
  p_{k+1}, so one more draft step (feeding d_k) ranks the candidates there.
- Fan-out: the budget B of speculations is spread over a = 0..k by the greedy optimum of a
  geometric acceptance law with a power-law miss rate, F_a + 1 ~ alpha^(a/(1+r))
  (:func:`._ssd_spec.plan`); alpha and r are given or estimated online from this generation's
  rounds.
- Saguaro sampling (saguaro_c = C < 1): at drafted position i the draft samples from q' = q with
  its top F_i + 1 tokens scaled by C, renormalised, and verification uses q' in the SD rule: still
  exactly the target's distribution (SD is lossless for any proposal distribution), while the
  residual's mass moves onto the cached candidates. C = 1 switches it off.

Tokens are a function of (seed, prompt, settings, options), never of timing: the cache only
changes speed. A speculated proposal is computed by the same runner calls from the same cache
contents as a just-in-time one (the branch's KV entries are snapshotted and restored bitwise,
see :class:`._ssd_spec.Branch`), so with C = 1 ssd gives exactly sd's tokens for the same seed
and k. Threading is its own option, ``threaded``: False runs the speculation inline before each
verification (the schedule simulated sequentially); True runs all draft work on a per-Decoder
worker thread (:mod:`._ssd_worker`) concurrently with the target, and by default
(stop_early=True) abandons the speculation as soon as verification is done and the branch in
progress is not the one needed. Its default (None) keeps what the engines did before the option
existed: threaded under engine="fused", inline under engine="reference"; ``engine`` itself only
picks the backend of sampling and verification. The caller's thread count and CPU affinity are
left as found unless ``pin=True`` asks to split the cores for the rounds (restored after each).

Stats (res.stats): ssd_lookups, ssd_hits, hit_rate, mean_accepted, target_waited_s (the target
waiting for the draft after verifying), jit_draft_s (drafting on the critical path: first round
and misses), spec_branches, spec_aborted, spec_draft_steps (draft forwards spent speculating).
"""

from __future__ import annotations

import math
import time

from . import _ssd_spec as spec
from . import _ssd_worker as work
from ._session import Session
from ..errors import ArgumentTypeError, InvalidArgumentError

DEFAULT_BUDGET = 4  # speculations per round: on CPU each costs ~k draft steps, all at batch 1


def _number(name: str, value, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number {what}, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r}")
    return float(value)


def options(pair, *, budget: int | None = None, saguaro_c: float = 1.0, fanout=None, accept_rate=None,
            r=None, stop_early: bool = True, threaded: bool | None = None, pin: bool = False) -> dict:  # fmt: skip
    """Validate ssd's options (named errors, before anything runs).

    budget : int >= 1, speculations per round (default DEFAULT_BUDGET = 4, or sum(fanout)).
    saguaro_c : float in [0, 1], Saguaro's down-scaling of the draft's top tokens; 1 = off
        (default: then ssd's tokens equal sd's).
    fanout : k+1 ints >= 0, speculations per accepted length a = 0..k (sum <= budget, >= 1);
        default None: the geometric plan from accept_rate and r.
    accept_rate : float in [0, 1] or None (default: estimated online, prior 0.5).
    r : float > 0 or None, the power-law exponent of the miss rate in the fan-out (default:
        estimated online, prior 1).
    stop_early : bool, threaded: abandon the speculation once verification is done
        (default True); False waits for the whole budget (tokens are the same either way).
    threaded : bool or None, draft work on its own worker thread, concurrent with the target's
        verification (True) or inline (False); None (default): True under engine="fused", False
        under "reference" (resolved by the Decoder, :meth:`sprinter_ext.methods.Method.resolve`).
        Tokens are the same either way.
    pin : bool, threaded on CPU (default False): for each round pin the caller's thread and the
        draft thread to their own cores, with one intra-op thread per core they get; the caller's
        thread count and affinity are restored after the round, also when it raises. False
        leaves both alone (the draft thread runs with one intra-op thread).
    """
    if fanout is not None:
        if isinstance(fanout, (str, bytes)) or not hasattr(fanout, "__iter__"):
            raise ArgumentTypeError(f"fanout must be a list of k+1 ints (one per accepted length), got {fanout!r}")
        fanout = list(fanout)
        if not all(isinstance(f, int) and not isinstance(f, bool) for f in fanout):
            raise ArgumentTypeError(f"fanout entries must be ints, got {fanout!r}")
        if any(f < 0 for f in fanout):
            raise InvalidArgumentError(f"fanout entries must be >= 0 (speculations per accepted length), got {fanout}")
        if sum(fanout) < 1:
            raise InvalidArgumentError("fanout must ask for at least one speculation (sum >= 1)")
        v = pair.vocab_size
        too_big = [f for a, f in enumerate(fanout) if f > v]
        if too_big:
            raise InvalidArgumentError(f"fanout entries must be <= the vocabulary size {v} (candidates per length), got {fanout}")
    if budget is None:
        budget = sum(fanout) if fanout is not None else DEFAULT_BUDGET
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ArgumentTypeError(f"budget must be an int (speculations per round), got {type(budget).__name__}")
    if budget < 1:
        raise InvalidArgumentError(f"budget must be >= 1 (speculations per round), got {budget}")
    if fanout is not None and sum(fanout) > budget:
        raise InvalidArgumentError(
            f"fanout {fanout} asks for {sum(fanout)} speculations, more than budget={budget}; "
            "raise the budget or lower the fan-out"
        )
    c = _number("saguaro_c", saguaro_c, 0.0, 1.0, "in [0, 1] (1 turns Saguaro sampling off)")
    if accept_rate is not None:
        accept_rate = _number("accept_rate", accept_rate, 0.0, 1.0, "in [0, 1], or None to estimate it online")
    if r is not None:
        r = _number("r", r, 0.0, math.inf, "a finite number > 0, or None to estimate it online")
        if r <= 0:
            raise InvalidArgumentError(f"r must be > 0 (the miss rate falls as (1 + F)^-r), got {r}")
    for name, flag in (("stop_early", stop_early), ("pin", pin)):
        if not isinstance(flag, bool):
            raise ArgumentTypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if threaded is not None and not isinstance(threaded, bool):
        raise ArgumentTypeError(
            f"threaded must be a bool or None (the engine's default), got {type(threaded).__name__}"
        )
    return dict(budget=budget, saguaro_c=c, fanout=fanout, accept_rate=accept_rate, r=r, stop_early=stop_early,
                threaded=threaded, pin=pin)  # fmt: skip


def lookahead(opts: dict, k: int) -> int:
    """KV positions a round may use past the committed tokens: k + 1 (the bonus-candidate step
    feeds d_k). Also checks what depends on k: a given fan-out needs k + 1 entries."""
    fanout = opts.get("fanout")
    if fanout is not None and hasattr(fanout, "__len__") and len(fanout) != k + 1:
        raise InvalidArgumentError(f"fanout needs k + 1 = {k + 1} entries (accepted lengths 0..k), got {len(fanout)}")
    return k + 1


def _add(s: Session, name: str, value) -> None:
    s.counters[name] = s.counters.get(name, 0) + value


def round(s: Session) -> list[int]:
    o, k, lane = s.options, s.k, s.draft
    vocab = lane.runner.vocab_size
    st = s.state.get("ssd")
    if st is None:  # a new generation: nothing speculated yet, priors only
        st = s.state["ssd"] = {"est": spec.Estimate(), "key": None, "cache": {}}
        for name in ("ssd_lookups", "ssd_hits", "spec_branches", "spec_aborted", "spec_draft_steps"):
            s.counters[name] = 0
        s.counters.update(target_waited_s=0.0, jit_draft_s=0.0)
    ex = work.worker_for(lane) if o.get("threaded") else work.Inline()
    slots = spec.round_plan(o, k, vocab, st["est"])
    fan = spec.fan_counts(slots, k)
    with ex.scope(o["pin"]):
        branch = st["cache"].get(st["key"]) if st["key"] is not None else None
        _add(s, "ssd_lookups", st["key"] is not None)
        if branch is not None:  # hit: the proposal is ready, restore its KV entries
            _add(s, "ssd_hits", 1)
            rnd = spec.adopt(lane, branch)
            if rnd.fan != fan:
                raise RuntimeError("ssd: a cached proposal was drafted under another fan-out (estimator drift)")
        else:  # miss (or the first round): draft just in time, exactly as sd would
            t0 = time.perf_counter()
            pending = lane.pending(s.seq)
            rnd = ex.call(lambda job: spec.draft(s, lane, pending, k, fan, o["saguaro_c"]))
            s.counters["jit_draft_s"] += time.perf_counter() - t0
        st["cache"] = {}
        s.draft_tokens += k
        est = st["est"]
        job = ex.submit(lambda job: spec.speculate(s, lane, rnd, slots, est, o, vocab, job.abandon))
        try:
            out = s.check(rnd.drafts, rnd.q, s.target_rows(rnd.drafts))
        except BaseException:
            work.abandon(job)  # never leave the worker on the lane
            raise
        a, b = len(out) - 1, out[-1]
        res, waited = work.finish(job, (a, b), o["stop_early"] and ex.threaded)
    s.counters["target_waited_s"] += waited
    _add(s, "spec_branches", len(res.cache))
    _add(s, "spec_aborted", res.aborted)
    _add(s, "spec_draft_steps", res.steps)
    st["est"] = est.after(a, k, spec.rank(rnd.rows[a], b, rnd.drafts[a]) if a < k else None)
    st["key"], st["cache"], st["drafted"] = (a, b), res.cache, rnd
    c = s.counters
    c["hit_rate"] = c["ssd_hits"] / c["ssd_lookups"] if c["ssd_lookups"] else 0.0
    c["mean_accepted"] = (s.accepted_tokens) / (s.rounds + 1)
    return out
