"""``k="auto"``: a cost model that picks, each round, how many drafted tokens to verify.

Two parts:

* :class:`Profile`: what one target forward over n tokens costs (n = 1 .. N) and what one
  draft step costs, timed once per machine, model, weights, dtype and thread count at the
  first ``k="auto"`` Decoder (:func:`profile_for`) and cached as JSON under
  ``$SPRINTER_EXT_CACHE/profiles``;
* :class:`CostModel`: the per-round rule (this class is its specification; the native loop
  runs the C++ twin ``_C.CostModel``, csrc/engine/cost_model.h, with the same arithmetic, so
  both engines choose the same lengths and keep giving the same tokens).

The rule. For a draft model (head or standalone), with alpha_d the estimated probability
that the draft's token at depth d is accepted once the ones before it were, drafting and
verifying k tokens is expected to commit E(k) = 1 + sum_{i<=k} prod_{d<=i} alpha_d tokens
in k * draft_ms + target_ms[k+1]; the round verifies the k in 0 .. k_max that maximises
E(k) / time(k) (ties: the smaller k). k = 0 is a plain target step, the draft not run:
speculation steps aside when it does not pay. For a lookup draft (no draft cost), the
proposal's n tokens are cut to the n' in 0 .. n that maximises E(n') / target_ms[n'+1],
with the estimates of its match-length bucket. A hybrid draft (a model plus a lookup,
``load_pair("head", lookup="suffix")``) takes, each round, whichever of the two choices
expects more tokens per ms (the lookup on a tie), so the rule that picks the source is the
same measured rule.

The estimates are the generation's running acceptance counts per (bucket, depth), with a prior
(``prior`` with the weight of ``weight`` observations) and an exponential forgetting
(``decay`` per observation of the bucket), so they follow the request at hand; each
generation starts from the prior (:meth:`CostModel.reset`), so the same seed and prompt give
the same lengths, hence the same tokens, on every engine and every call. When the rule
keeps choosing 0, the ``probe_every``-th such round verifies one token anyway, so an
estimate that was too low can recover; each probe that changes nothing doubles the wait for
the next (16, 32, 64, ... rounds), so a draft that never pays costs ever less.

Exactness: the chosen length depends only on the draft's proposal and on rounds already
verified (their noise is at committed positions), never on the target's output still to come,
so sd stays exact and ersd equal to ar (tests/test_cost_model.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["AUTO", "CostModel", "Profile", "profile_for", "BUCKETS"]

AUTO = "auto"
BUCKETS = 5  # 0: a draft model; 1 .. 4: a lookup proposal's match length (4 = 4 or more)
PROFILE_NS = 16  # target forwards timed over n = 1 .. PROFILE_NS tokens


@dataclass(frozen=True)
class Profile:
    """target_ms[n-1]: one target forward over n tokens; draft_ms: one draft step (0: lookup)."""

    target_ms: tuple[float, ...]
    draft_ms: float
    key: str = ""

    def __post_init__(self):
        t = self.target_ms
        if not isinstance(t, (tuple, list)) or len(t) < 2:
            raise InvalidArgumentError("a cost profile needs target_ms for at least n = 1 and 2 tokens")
        for v in (*t, self.draft_ms):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ArgumentTypeError(f"cost profile times must be numbers, got {type(v).__name__}")
        if not all(v > 0 for v in t) or not self.draft_ms >= 0:
            raise InvalidArgumentError("cost profile times must be > 0 (draft_ms >= 0)")
        object.__setattr__(self, "target_ms", tuple(float(v) for v in t))
        object.__setattr__(self, "draft_ms", float(self.draft_ms))


def _bucket(match_length: int) -> int:
    return 0 if match_length <= 0 else min(match_length, BUCKETS - 1)


class CostModel:
    """The per-round draft-length rule (see the module docstring); one per Decoder."""

    def __init__(self, profile: Profile, *, k_max: int = 8, prior: float = 0.5, weight: float = 4.0,
                 decay: float = 0.97, probe_every: int = 16):  # fmt: skip
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
            raise InvalidArgumentError(f"k_max must be an int >= 1, got {k_max!r}")
        if not (weight > 0 and 0 <= prior <= 1 and 0 < decay <= 1) or isinstance(probe_every, bool) or \
                not isinstance(probe_every, int) or probe_every < 1:  # fmt: skip
            raise InvalidArgumentError("cost model: need weight > 0, prior in [0, 1], decay in (0, 1], probe_every >= 1")
        self.k_max = min(k_max, len(profile.target_ms) - 1)
        self.profile = profile
        self.prior, self.weight, self.decay, self.probe_every = float(prior), float(weight), float(decay), probe_every
        self.reset()

    def reset(self) -> None:
        """Forget the estimates: every generation starts from the prior (the engines call it), so a
        run's lengths, hence sd's sampled tokens, are a function of its seed, prompt and profile."""
        self.tried = [[0.0] * (self.k_max + 1) for _ in range(BUCKETS)]
        self.accepted = [[0.0] * (self.k_max + 1) for _ in range(BUCKETS)]
        self.idle = [0] * BUCKETS  # consecutive rounds that chose 0, per bucket
        self.interval = [self.probe_every] * BUCKETS  # rounds of 0 before the next probe (doubles per probe)

    def alpha(self, bucket: int, depth: int) -> float:
        w = self.weight
        return (self.accepted[bucket][depth] + self.prior * w) / (self.tried[bucket][depth] + w)

    def _best(self, bucket: int, n_max: int, draft_ms: float) -> tuple[int, float]:
        t = self.profile.target_ms
        best, best_rate = 0, 1.0 / t[0]
        rates = [best_rate]
        expect, run = 1.0, 1.0
        for k in range(1, n_max + 1):
            run *= self.alpha(bucket, k)
            expect += run
            rate = expect / (k * draft_ms + t[k])
            rates.append(rate)
            if rate > best_rate:
                best, best_rate = k, rate
        if best == 0 and n_max > 0:
            self.idle[bucket] += 1
            if self.idle[bucket] >= self.interval[bucket]:
                self.idle[bucket] = 0
                self.interval[bucket] *= 2  # NOTE: a probe that changes nothing waits twice as long next time
                return 1, rates[1]
        else:
            self.idle[bucket] = 0
            self.interval[bucket] = self.probe_every
        return best, best_rate

    def draft_choice(self) -> tuple[int, float]:
        """(length, expected tokens per ms) for a draft model this round (length 0: no draft)."""
        return self._best(0, self.k_max, self.profile.draft_ms)

    def lookup_choice(self, proposed: int, match_length: int) -> tuple[int, float]:
        """(how many of a lookup proposal's `proposed` tokens to verify, expected tokens per ms)."""
        return self._best(_bucket(match_length), min(proposed, self.k_max), 0.0)

    def draft_length(self) -> int:
        """How many tokens a draft model drafts and the target verifies this round (0: none)."""
        return self.draft_choice()[0]

    def lookup_length(self, proposed: int, match_length: int) -> int:
        """How many of a lookup proposal's `proposed` tokens to verify (0: a plain target step)."""
        return self.lookup_choice(proposed, match_length)[0]

    def observe(self, verified: int, accepted: int, match_length: int = 0) -> None:
        """A round verified `verified` drafted tokens and accepted the first `accepted`."""
        if verified <= 0:
            return
        b = _bucket(match_length)
        tried, acc = self.tried[b], self.accepted[b]
        for d in range(1, self.k_max + 1):
            tried[d] *= self.decay
            acc[d] *= self.decay
        for d in range(1, min(verified, accepted + 1) + 1):
            tried[d] += 1.0
            if d <= accepted:
                acc[d] += 1.0

    def native(self):
        """The C++ twin (``_C.CostModel``) with this one's settings, for the native loop."""
        from ._native import _C

        return _C.CostModel(list(self.profile.target_ms), self.profile.draft_ms, k_max=self.k_max, prior=self.prior,
                            weight=self.weight, decay=self.decay, probe_every=self.probe_every)  # fmt: skip


# -- profiles --------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("SPRINTER_EXT_CACHE", Path.home() / ".cache" / "sprinter_ext")) / "profiles"


def profile_key(pair) -> str:
    import platform

    import torch

    try:
        from ._native import _C

        isa = _C.cpu_isa()
    except ImportError:
        isa = "none"
    parts = [platform.machine(), isa, str(os.cpu_count()), f"t{torch.get_num_threads()}", pair.name,
             str(pair.dtype), str(pair.device), pair.weights, pair.draft_kind]  # fmt: skip
    return "-".join(p.replace("/", "_").replace(" ", "") for p in parts)


def _ms(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def measure(target_runner, draft_runner, *, vocab: int, context: int = 64, reps: int = 5,
            ns: int = PROFILE_NS, temperature: float = 0.0) -> Profile:  # fmt: skip
    """Time a round's parts: the target over n = 1 .. ns tokens after a `context`-token prefill
    followed by the fused verification of its n - 1 drafts, and one draft step followed by
    the fused draft sampling (the ops the loop runs, at `temperature`).

    The lengths are timed in interleaved passes and each keeps its fastest time, so a burst of
    load on the machine inflates one sample, not one length; a forward over more tokens never
    costs less, so each time is then lowered to the fastest of the longer ones (a spike
    cannot make every longer length look slow)."""
    import torch

    from . import ops

    room = getattr(target_runner, "max_len", context + ns + 2)
    if room < context + ns + 2:  # a small static cache: a shorter context, then fewer lengths
        context = max(1, min(context, room // 2))
        ns = max(2, min(ns, room - context - 2))
    ids = [(7 * i + 3) % min(vocab, 1000) for i in range(context + ns + 2)]
    target_runner.prefill(ids[:context])
    sampling = dict(temperature=temperature, top_k=0, top_p=1.0)

    def fwd(n):
        toks = ids[context : context + n]
        t0 = time.perf_counter()
        if n > 1:
            logits, _ = target_runner.extend(toks)
            drafts = torch.tensor([toks[1:]])
            q = torch.zeros(1, n - 1, logits.shape[-1])
            q[0, torch.arange(n - 1), drafts[0]] = 1.0  # one-hot, as a lookup draft's
            ops.verify_tokens(logits[None], q, drafts, torch.tensor([context]), seed=0, mode="sd", backend="auto",
                              **sampling)  # fmt: skip
        else:
            target_runner.step(toks[0])
        dt = (time.perf_counter() - t0) * 1e3
        target_runner.truncate(context)
        return dt

    for n in range(1, ns + 1):
        fwd(n)  # warm every shape once
    times = [float("inf")] * ns
    for _ in range(reps):
        for n in range(1, ns + 1):
            times[n - 1] = min(times[n - 1], fwd(n))
    for i in range(ns - 2, -1, -1):
        times[i] = min(times[i], times[i + 1])
    draft_ms = 0.0
    if draft_runner is not None:
        draft_runner.prefill(ids[:context])
        target_runner.extend(ids[context : context + 2])  # a head drafts from the target's features

        def step():
            logits, hidden = draft_runner.step(ids[context])
            ops.draft_sample(logits[None], hidden[None].float(), torch.tensor([context]), seed=0, stream=1,
                             backend="auto", **sampling)  # fmt: skip
            draft_runner.truncate(context)

        step()
        draft_ms = _ms(step, reps)
    target_runner.truncate(0)
    if draft_runner is not None:
        draft_runner.truncate(0)
    return Profile(tuple(times), draft_ms)


def profile_for(pair, target_runner, draft_runner, temperature: float = 0.0) -> Profile:
    """The cached profile of this machine / pair / thread count / greedy or sampled, measured on
    a miss with the runners given. One profile per pair whatever the engine or runner, so every
    engine picks the same lengths (and, for sd, the same tokens) for a seed."""
    key = profile_key(pair) + ("-greedy" if temperature == 0 else "-sampled")
    path = _cache_dir() / f"{key}.json"
    if path.is_file():
        try:
            d = json.loads(path.read_text())
            return Profile(tuple(d["target_ms"]), d["draft_ms"], key)
        except (OSError, ValueError, KeyError, TypeError, InvalidArgumentError, ArgumentTypeError):
            pass  # a damaged cache entry is measured again
    prof = measure(target_runner, draft_runner, vocab=pair.vocab_size, temperature=temperature)
    prof = Profile(prof.target_ms, prof.draft_ms, key)
    if len(prof.target_ms) < PROFILE_NS:
        return prof  # measured inside a small cache: good for this Decoder, not kept for others
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(prof)))
        tmp.replace(path)
    except OSError:
        pass
    return prof
