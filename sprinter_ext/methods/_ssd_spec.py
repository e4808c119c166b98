"""ssd's building blocks: the fan-out plan, Saguaro sampling, drafting one proposal, and the
speculation of the next round's proposals for the likely verification outcomes.

Everything here is engine-agnostic: the reference engine calls it inline, the fused engine on
the draft's worker thread (:mod:`._ssd_worker`). A proposal is a pure function of the draft
lane's cache contents, the pending tokens and the seed, computed by one code path
(:func:`draft`: Session.propose with Saguaro's hook), so a speculated proposal restored from
the cache is bitwise the one a just-in-time draft would compute (see :class:`Branch`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .._rng import Stream
from ._session import Lane, Session

# Priors of the online estimates (pseudo-counts), used until rounds have been observed.
PRIOR_ACCEPT, PRIOR_ACCEPT_WEIGHT = 0.5, 2.0
PRIOR_R, PRIOR_R_WEIGHT = 1.0, 2.0


class Aborted(Exception):
    """Raised inside a speculation when the verification outcome no longer needs it."""


# -- the fan-out plan --------------------------------------------------------------------------
def outcome_probs(k: int, accept_rate: float) -> list[float]:
    """P(accepted length = a), a = 0..k, for per-token acceptance rate alpha:
    (1 - alpha) alpha^a for a < k, alpha^k for a = k (all accepted)."""
    return [(1.0 - accept_rate) * accept_rate**a for a in range(k)] + [accept_rate**k]


def _gain(p_a: float, j: int, r: float) -> float:
    # miss(F) = (1 + F)^-r: adding the j-th candidate at a removes P(a) (j^-r - (j+1)^-r) misses
    return p_a * (j**-r - (j + 1) ** -r)


def plan(budget: int, k: int, accept_rate: float, r: float, vocab: int,
         fanout: list[int] | None = None) -> list[tuple[int, int]]:  # fmt: skip
    """Speculation slots (a, j) in the order to compute them: the j-th (1-based) most likely
    bonus token after a accepted drafts; the most valuable slot first.

    Without `fanout`, the slots are the `budget` largest marginal gains under the model
    P(a) = :func:`outcome_probs`, P(bonus not among F cached candidates at a) = (1 + F)^-r.
    The gains decrease in j, so this greedy choice is the exact discrete minimiser of the
    expected miss rate sum_a P(a) (1 + F_a)^-r subject to sum_a F_a = budget; its continuous
    form is 1 + F_a proportional to P(a)^(1/(1+r)), i.e. to alpha^(a/(1+r)): the paper's geometric
    fan-out, with the all-accepted length getting alpha^k (no (1 - alpha) factor). F_a is
    capped by the candidates there are (vocab - 1 after a rejection: never the rejected draft;
    vocab for the bonus). With `fanout` [k+1] given, its slots are ordered the same way.
    Ties go to the shorter accepted length, then the better-ranked candidate.
    """
    probs = outcome_probs(k, accept_rate)
    caps = [vocab - 1] * k + [vocab]
    if fanout is not None:
        slots = [(a, j) for a in range(k + 1) for j in range(1, fanout[a] + 1)]
        return sorted(slots, key=lambda s: (-_gain(probs[s[0]], s[1], r), s))
    heap = [(-_gain(probs[a], 1, r), a, 1) for a in range(k + 1) if caps[a] >= 1]
    heapq.heapify(heap)
    slots = []
    while heap and len(slots) < budget:
        _, a, j = heapq.heappop(heap)
        slots.append((a, j))
        if j < caps[a]:
            heapq.heappush(heap, (-_gain(probs[a], j + 1, r), a, j + 1))
    return slots


def fan_counts(slots: list[tuple[int, int]], k: int) -> list[int]:
    """F_a, a = 0..k: how many slots each accepted length got."""
    fan = [0] * (k + 1)
    for a, _ in slots:
        fan[a] += 1
    return fan


@dataclass(frozen=True)
class Estimate:
    """Online estimates of the acceptance rate and the power-law exponent r, from the
    rounds of this generation only (integer counts and ranks: the same on every engine)."""

    accepted: int = 0  # accepted drafts
    rejections: int = 0  # rounds that ended in a rejection
    ranks: int = 0  # observed recovered-token ranks
    log_ranks: float = 0.0  # sum of log(rank + 1/2)

    def accept_rate(self, given: float | None) -> float:
        if given is not None:
            return given
        # MLE of the geometric acceptance law, with PRIOR_ACCEPT_WEIGHT pseudo-observations
        w = PRIOR_ACCEPT_WEIGHT
        return (self.accepted + w * PRIOR_ACCEPT) / (self.accepted + self.rejections + w)

    def r(self, given: float | None) -> float:
        if given is not None:
            return given
        # Hill-type MLE of a power-law tail P(rank > F) = (1 + F)^-r (rank + 1/2: continuity)
        w = PRIOR_R_WEIGHT
        return (self.ranks + w) / (self.log_ranks + w / PRIOR_R)

    def after(self, a: int, k: int, rank: int | None) -> Estimate:
        """The estimate once a round with k drafts accepted a (rank: the recovered token's)."""
        rejected = a < k
        return Estimate(
            self.accepted + a,
            self.rejections + rejected,
            self.ranks + (rank is not None),
            self.log_ranks + (math.log(rank + 0.5) if rank is not None else 0.0),
        )


def round_plan(opts: dict, k: int, vocab: int, est: Estimate) -> list[tuple[int, int]]:
    """The slots of a round whose drafts are verified under estimate `est`."""
    return plan(opts["budget"], k, est.accept_rate(opts["accept_rate"]), est.r(opts["r"]), vocab, opts["fanout"])


def rank(row: torch.Tensor, token: int, rejected: int) -> int:
    """1-based rank of `token` by the draft's logits `row` [V], the rejected draft excluded."""
    v = row[token]
    return 1 + int((row > v).sum()) - int(row[rejected] > v)


def candidates(row: torch.Tensor, n: int, exclude: int | None) -> list[int]:
    """The n best tokens by the draft's logits `row` [V], without `exclude`."""
    if n <= 0:
        return []
    top = torch.topk(row, min(n + 1, row.shape[-1])).indices.tolist()
    return [t for t in top if t != exclude][:n]


# -- Saguaro sampling and drafting -------------------------------------------------------------
def saguaro(q: torch.Tensor, c: float, m: int) -> torch.Tensor:
    """Saguaro sampling: q with its m most likely tokens scaled by c, renormalised ([V]).

    Lowering q on the tokens the cache holds raises the residual max(p - q', 0) there, so a
    recovered token is more often a cached one. q itself when c == 1 or m == 0, and when the
    scaled set holds all of q's mass and c == 0 (nothing left to renormalise).
    """
    if c >= 1.0 or m <= 0:
        return q
    top = torch.topk(q, min(m, q.shape[-1])).indices
    w = q.clone()
    w[top] *= c
    total = w.sum()
    return q if float(total) <= 0.0 else w / total


def saguaro_sizes(fan: list[int], k: int) -> list[int]:
    """How many top tokens Saguaro scales at drafted position i: F_i + 1 (the cached
    candidates plus the slot the draft's own token usually takes), none where F_i = 0."""
    return [fan[i] + 1 if fan[i] > 0 else 0 for i in range(k)]


@dataclass
class Drafted:
    """One round's proposal: k drafts at positions start .. start+k-1."""

    start: int
    drafts: list[int]  # [k]
    q: torch.Tensor  # [k, V] the distributions the drafts were sampled from (q', verified against)
    rows: torch.Tensor  # [k, V] the draft's raw logits (ranking of bonus candidates)
    fan: list[int]  # [k+1] the fan-out of the round that verifies these drafts


def draft(s: Session, lane: Lane, pending: list[int], k: int, fan: list[int], c: float,
          abort: Callable[[], bool] | None = None) -> Drafted:  # fmt: skip
    """Session.propose(k, DRAFT) from `lane` after feeding `pending`, with ssd's hooks: at drafted
    position i the token is the DRAFT race over Saguaro's q' (:func:`saguaro`, where c < 1 and
    F_i > 0), and `abort` is polled between draft steps (raises :class:`Aborted`). The tokens are
    not counted as the session's drafted tokens (ssd counts a round's proposal itself).
    """
    sizes = saguaro_sizes(fan, k)

    def reweight(i: int, q: torch.Tensor) -> torch.Tensor:
        return saguaro(q, c, sizes[i]) if c < 1.0 and sizes[i] > 0 else q

    def between(i: int) -> None:
        if abort is not None and abort():
            raise Aborted

    p = s.propose(k, Stream.DRAFT, lane=lane, pending=pending, reweight=reweight, between=between, count=False)
    return Drafted(p.start, p.tokens, p.q, p.rows, list(fan))


# -- speculation -------------------------------------------------------------------------------
@dataclass
class Branch:
    """A speculated next proposal for outcome key = (accepted length a, bonus token b).

    Bitwise equality with a just-in-time draft: a JIT draft for this outcome would start from
    the cache [prefix, d_1..d_min(a,k-1)] that SD's lane sync leaves, feed `pending` ([b], or
    [d_k, b] when all k were accepted: d_k was never fed) and step; the branch ran exactly those
    calls from exactly that cache (the round's own entries restored first), and `snap` holds
    the KV entries it wrote, [base, base + len(pending) + k - 1).
    """

    key: tuple[int, int]
    drafted: Drafted
    base: int
    pending: list[int]
    snap: list = field(repr=False)


def adopt(lane: Lane, branch: Branch) -> Drafted:
    """Make the lane's cache what drafting `branch` just-in-time would have left (a hit)."""
    if len(lane.tokens) != branch.base:
        raise RuntimeError(f"ssd: the draft lane holds {len(lane.tokens)} tokens, the branch starts at {branch.base}")
    lane.runner.restore(branch.base, branch.snap)
    lane.tokens.extend(branch.pending + branch.drafted.drafts[:-1])
    return branch.drafted


@dataclass
class Speculation:
    """What one round's speculation produced (the cache) and spent."""

    cache: dict[tuple[int, int], Branch] = field(default_factory=dict)
    steps: int = 0  # draft forwards spent
    aborted: int = 0  # branches started and abandoned


def speculate(s: Session, lane: Lane, rnd: Drafted, slots: list[tuple[int, int]], est: Estimate,
              opts: dict, vocab: int, abort: Callable[[tuple[int, int]], bool]) -> Speculation:  # fmt: skip
    """Draft the next proposal for each slot's outcome of round `rnd` into a cache.

    The lane must hold [prefix, d_1..d_{k-1}] (as `draft` left it); it holds that again,
    bitwise, when this returns or raises. `abort(key)` is polled between draft steps: True
    abandons the branch for `key` and ends the speculation. Branches whose round would end
    the generation (s.end) are skipped.
    """
    k, L = len(rnd.drafts), rnd.start
    runner = lane.runner
    prefix = list(lane.tokens)
    if len(prefix) != L + k - 1 or runner.length != len(prefix):
        raise RuntimeError("ssd: the draft lane does not hold the round's drafts")
    out = Speculation()
    own = runner.snapshot(L, L + k - 1)  # d_1..d_{k-1}: the branches overwrite them
    fan = fan_counts(slots, k)
    cands = {a: candidates(rnd.rows[a], fan[a], rnd.drafts[a]) for a in range(k)}
    slots = [(a, j) for a, j in slots if L + a + 1 < s.end]  # a round after this one is needed
    try:
        if any(a == k for a, _ in slots) and not abort((k, -1)):
            logits, _ = lane.feed([rnd.drafts[-1]])  # d_k: the draft's view of the bonus position
            out.steps += 1
            cands[k] = candidates(logits[-1], fan[k], None)
        for a, j in slots:
            if j > len(cands.get(a, ())):
                continue  # fewer candidates than slots (tiny vocabulary, or aborted bonus step)
            b = cands[a][j - 1]
            key = (a, b)
            if abort(key):
                break
            base = L + min(a, k - 1)
            runner.restore(L, [(kk[:, :, : base - L], vv[:, :, : base - L]) for kk, vv in own])
            lane.tokens[:] = prefix[:base]  # NOTE: not `del [base:]`: a branch before this one wrote its own b at L
            pending = [b] if a < k else [rnd.drafts[-1], b]
            nxt = est.after(a, k, rank(rnd.rows[a], b, rnd.drafts[a]) if a < k else None)
            nfan = fan_counts(round_plan(opts, k, vocab, nxt), k)
            calls = lane.calls
            try:
                d = draft(s, lane, pending, k, nfan, opts["saguaro_c"], lambda: abort(key))
            except Aborted:
                out.aborted += 1
                out.steps += lane.calls - calls
                break
            out.steps += lane.calls - calls
            out.cache[key] = Branch(key, d, base, pending, runner.snapshot(base, runner.length))
    finally:
        runner.restore(L, own)
        lane.tokens[:] = prefix
    return out
