"""The Python engine's per-generation state (engines "reference" and "fused"), shared by every method.

A method is one function, ``round(session) -> list[int]``, that decides the next
token(s) from the committed sequence and returns them; the driver
(:func:`run`) commits them (cut at EOS and at max_new_tokens), rolls both KV
caches back to what is still valid, and repeats. Each model is a :class:`Lane`:
a runner plus the token ids its cache holds, so rollback is "keep the longest
prefix that agrees with the committed sequence" for every method alike. Sampling and
verification go through the fused ops (:mod:`sprinter_ext.ops`) on the session's
``backend``: their torch backend, the only statement of each rule, in the reference engine.

Logits processing (penalties, min_p: :func:`sprinter_ext.sampling.process_logits`) happens
here, before the fused ops, on every row either model produces, with the tokens before that
row's own position: a draft row after the tokens its lane holds (the committed ones plus the
round's drafts so far), a target row after the committed tokens plus the drafts before it
(:meth:`Session.process`). So q_i and p_i always see the same sequence, and sd, ersd, ssd and
sprinter(verify="all") keep the target's processed distribution exactly. The fused ops and
their kernels then apply only temperature, top-k and top-p, as for unprocessed rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _rng, ops
from ..models.runner import ModelRunner
from ..sampling import SamplingSettings, TokenLogprob, logprobs, probs, process_logits

__all__ = ["Lane", "LogprobLog", "Proposal", "Session", "run"]


class Lane:
    """One model's runner and the tokens its KV cache holds."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self.tokens: list[int] = []
        self.agreed = 0  # leading cached tokens known to equal the committed sequence
        self.reset_counters()

    def reset_counters(self) -> None:
        self.calls = 0  # forwards after the prompt's prefill
        self.fed = 0  # tokens run through the model in those forwards
        self.attended = 0  # sum over those tokens of the context each attends to

    def scrub(self) -> None:
        """Zero the runner's cache (after a failed generation; csrc/engine/runner.h)."""
        self.runner.scrub()

    def prefill(self, ids: Sequence[int]) -> None:
        self.runner.prefill(list(ids))
        self.tokens = list(ids)
        self.agreed = len(self.tokens)

    def feed(self, tokens: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `tokens` (>= 1) after the cached ones: (logits [n, V], hidden [n, D])."""
        start, n = len(self.tokens), len(tokens)
        self.calls += 1
        self.fed += n
        self.attended += n * start + n * (n + 1) // 2
        if len(tokens) == 1:
            logits, hidden = self.runner.step(tokens[0])
            out = logits[None], hidden[None]
        else:
            out = self.runner.extend(tokens)
        self.tokens.extend(tokens)
        return out

    def pending(self, seq: Sequence[int]) -> list[int]:
        """Committed tokens not yet in this cache (>= 1 after sync)."""
        return list(seq[len(self.tokens) :])

    def sync(self, seq: Sequence[int]) -> None:
        """Roll back to the longest prefix agreeing with `seq`, leaving >= 1 token pending."""
        limit = min(len(self.tokens), len(seq) - 1)
        n = min(self.agreed, limit)  # NOTE: only tokens added since the last sync need comparing
        while n < limit and self.tokens[n] == seq[n]:
            n += 1
        if n < len(self.tokens):
            self.runner.truncate(n)
            del self.tokens[n:]
        self.agreed = n


@dataclass
class Proposal:
    """What :meth:`Session.propose` drafted: tokens at positions start .. start+n-1 (n <= k)."""

    start: int
    tokens: list[int]  # [n]
    q: torch.Tensor  # [n, V] the distributions the tokens were raced from (what verification reads)
    rows: torch.Tensor  # [n, V] the draft's logits at those positions (processed: Session.process)
    flagged: bool  # the verifier scored the last token below the threshold
    match_length: int = 0  # a lookup draft's context match (the cost model's bucket)


@dataclass
class LogprobLog:
    """A generation's logprobs request: `top` alternatives per token; `entries` maps each decided
    position to its :class:`~sprinter_ext.sampling.TokenLogprob` (Session.record fills it)."""

    top: int = 0
    entries: dict = field(default_factory=dict)


@dataclass
class Session:
    """Everything one generation needs; methods read it and the driver updates it."""

    target: Lane
    draft: Lane | None
    settings: SamplingSettings
    seed: int
    k: int
    seq: list[int]
    options: dict = field(default_factory=dict)
    draft_tokens: int = 0
    accepted_tokens: int = 0
    rounds: int = 0
    counters: dict = field(default_factory=dict)  # method-specific stats, merged into res.stats
    # The fused ops' backend for sample() and check(): "torch" (the reference engine: the ops'
    # torch backends, the spec) or "auto" (the fused engine: C++ on CPU, CUDA/Triton on a GPU).
    backend: str = "torch"
    end: int = 0  # len(seq) at which run() stops (prompt + max_new_tokens; EOS may stop it sooner)
    state: dict = field(default_factory=dict)  # a method's per-generation scratch (ssd: its speculation cache)
    # k="auto": the Decoder's cost model (sprinter_ext/cost_model.py); k is then its k_max
    cost: Any = None
    # a hybrid draft's lookup part (drafts/lookup.py LookupLane) beside the draft model's lane
    lookup: Any = None
    prompt_len: int = 0  # len(seq) when the generation started (set by run): the output is seq[prompt_len:]
    logprobs: LogprobLog | None = None  # logprobs asked: record() fills it

    @property
    def position(self) -> int:
        """Absolute position of the next token to decide."""
        return len(self.seq)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return probs(logits, self.settings)

    def process(self, rows: torch.Tensor, context: Sequence[int]) -> torch.Tensor:
        """The processed rows [n, V] of raw logits `rows`, row j deciding the position after
        ``context[: len(context) - n + 1 + j]`` (:func:`sprinter_ext.sampling.process_logits`)."""
        return process_logits(rows, self.settings, context, self.prompt_len)

    def record(self, tokens: Sequence[int], rows: torch.Tensor, start: int) -> None:
        """logprobs on: the TokenLogprob of tokens[j] under the processed target row rows[j] at
        position start + j (rows [>= n, V]); a no-op otherwise."""
        if self.logprobs is None or not tokens:
            return
        lp = logprobs(rows[: len(tokens)], self.settings.kernel())  # rows are processed already
        n = min(self.logprobs.top, lp.shape[-1])
        top_v, top_i = torch.topk(lp, n, dim=-1) if n else (lp[:, :0], lp[:, :0].long())
        chosen = lp.gather(-1, torch.tensor(list(tokens), device=lp.device)[:, None])[:, 0]
        chosen, top_v, top_i = chosen.tolist(), top_v.tolist(), top_i.tolist()
        for j, t in enumerate(tokens):
            self.logprobs.entries[start + j] = TokenLogprob(int(t), chosen[j], list(zip(top_i[j], top_v[j])))

    def race(self, weights: torch.Tensor, position, stream: _rng.Stream) -> torch.Tensor:
        return _rng.race(weights, self.seed, position, stream)

    def draft_round(self, stream: _rng.Stream) -> Proposal:
        """This round's drafts for sd / ersd (the C++ twin: engine.cpp Generation::speculate).

        A lookup draft (the session's draft when the pair has no draft model, else
        ``lookup``) proposes up to k tokens, cut by the cost model (k="auto") to the length it
        expects most tokens per ms from. A draft model drafts k tokens, or the cost model's
        length (0: none, a plain target step). A hybrid (both) takes the lookup's proposal
        when it has one (fixed k) or when the cost model expects at least as many tokens per ms
        from it as from the model's choice (k="auto"), else the model's."""
        model_free = hasattr(self.draft, "proposer")
        lookup = self.draft if model_free else self.lookup
        model = None if model_free else self.draft
        cost, k = self.cost, self.k
        if lookup is not None:
            toks, match = lookup.propose(self.seq, k)
            n, rate = len(toks), 0.0
            if cost is not None:
                n, rate = cost.lookup_choice(n, match)
            use = True
            if model is not None:
                if cost is not None:
                    k, rate_model = cost.draft_choice()
                    use = n > 0 and rate >= rate_model
                else:
                    use = n > 0
            if use:
                self.draft_tokens += n
                q = lookup.one_hot(toks[:n])
                return Proposal(self.position, toks[:n], q, q, False, match)
        elif cost is not None:
            k = cost.draft_length()
        if k == 0:
            return Proposal(self.position, [], None, None, False)
        return self.propose(k, stream)

    def observe(self, d: Proposal, committed: list[int]) -> None:
        """Tell the cost model (k="auto") how many of the round's drafts were accepted."""
        if self.cost is not None:
            self.cost.observe(len(d.tokens), len(committed) - 1, d.match_length)

    def target_rows(self, drafts: Sequence[int]) -> torch.Tensor:
        """Target logits for positions L .. L+len(drafts) after feeding pending + drafts: [n+1, V]."""
        pending = self.target.pending(self.seq)
        logits, _ = self.target.feed(pending + list(drafts))
        return self.process(logits[len(pending) - 1 :], self.target.tokens)  # context: seq + drafts

    def sample(self, logits: torch.Tensor, hidden: torch.Tensor | None, position: int, stream: _rng.Stream,
               verifier=None) -> tuple[int, torch.Tensor, float | None]:  # fmt: skip
        """Race-sample position `position` from one logits row [V]: :func:`sprinter_ext.ops.draft_sample`
        on the session's backend (the reference engine: its torch spec).

        Returns (token, processed distribution q [V], verifier score or None). `logits` is a
        processed row (:meth:`process`): the op applies temperature, top-k and top-p.
        """
        h = hidden[None] if hidden is not None else logits.new_zeros(1, 1)
        pos = torch.tensor([position], device=logits.device)
        st = self.settings
        r = ops.draft_sample(logits[None], h, pos, seed=self.seed, temperature=st.temperature, top_k=st.top_k,
                             top_p=st.top_p, stream=stream, verifier=verifier, backend=self.backend)  # fmt: skip
        return int(r.token[0]), r.probs[0], float(r.score[0]) if verifier is not None else None

    def check(self, drafts: list[int], q: torch.Tensor, logits: torch.Tensor, *, offset: int = 0,
              mode: str = "sd") -> list[int]:  # fmt: skip
        """Verify `drafts` (at positions L+offset+i) given their q [n, V] and the target's logits
        [n+1, V]: :func:`sprinter_ext.ops.verify_tokens` on the session's backend with SD's rule
        (mode "sd", methods/sd.py) or ERSD's (mode "race", methods/ersd.py). Returns the
        committed tokens and counts the accepted ones."""
        dev = logits.device
        st = self.settings
        if q is None:  # no drafts (a plain target step)
            q = logits.new_zeros(0, logits.shape[-1], dtype=torch.float32)
        r = ops.verify_tokens(logits[None], q[None], torch.tensor([drafts], dtype=torch.int64, device=dev),
                              torch.tensor([self.position + offset], device=dev), seed=self.seed,
                              temperature=st.temperature, top_k=st.top_k, top_p=st.top_p, mode=mode,
                              backend=self.backend)  # fmt: skip
        n = int(r.num_accepted[0])
        self.accepted_tokens += n
        out = r.tokens[0, : n + 1].tolist()
        self.record(out, logits, self.position + offset)
        return out

    def propose(self, k: int, stream: _rng.Stream, verifier=None, threshold: float = 0.0, *,
                lane: Lane | None = None, pending: Sequence[int] | None = None,
                reweight: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
                between: Callable[[int], None] | None = None, count: bool = True) -> Proposal:  # fmt: skip
        """Draft up to k tokens one by one, each a race with `stream` noise at its position.

        Feeds `pending` (default: the committed tokens the draft lane lacks) after `lane`'s
        cache (default: the session's draft), then samples and feeds all but the last token.
        With a verifier, the run stops after the first token scored below `threshold`
        (flagged). Hooks (ssd's; sd, ersd and sprinter use none): ``reweight(i, q)`` may
        return another distribution for step i, the token is then its race at the same
        position and stream (Saguaro sampling); ``between(i)`` runs before the draft step that
        follows token i (ssd polls for an abort there). `count` adds the tokens to
        ``draft_tokens``.
        """
        if lane is None:
            if self.draft is None:
                raise RuntimeError("this method needs a draft model, but the session has none")
            lane = self.draft
        pending = lane.pending(self.seq) if pending is None else list(pending)
        start = len(lane.tokens) + len(pending)  # self.position when both default
        logits, hidden = lane.feed(pending)
        toks, qs, rows, flagged = [], [], [], False
        for i in range(k):
            row = self.process(logits[-1:], lane.tokens)[0]  # after the lane's tokens: seq + toks so far
            tok, q, score = self.sample(row, hidden[-1], start + i, stream, verifier)
            if reweight is not None:
                q2 = reweight(i, q)
                if q2 is not q:
                    tok, q = int(self.race(q2, start + i, stream)), q2
            toks.append(tok)
            qs.append(q)
            rows.append(row)
            if score is not None and score < threshold:
                flagged = True
                break
            if i + 1 < k:
                if between is not None:
                    between(i)
                logits, hidden = lane.feed([tok])
        if count:
            self.draft_tokens += len(toks)
        return Proposal(start, toks, torch.stack(qs), torch.stack(rows), flagged)


RoundFn = Callable[[Session], list[int]]


def run(
    session: Session,
    round_fn: RoundFn,
    max_new_tokens: int,
    eos: frozenset[int],
) -> Iterator[list[int]]:
    """Drive rounds until max_new_tokens or EOS; yields each round's committed tokens."""
    prompt = session.seq
    session.end = len(prompt) + max_new_tokens
    session.prompt_len = len(prompt)
    if session.cost is not None:
        session.cost.reset()  # k="auto": every generation starts from the prior (cost_model.py)
    session.target.prefill(prompt[:-1])
    lookup = session.draft if hasattr(session.draft, "proposer") else session.lookup
    if lookup is not session.draft and session.draft is not None:
        session.draft.prefill(prompt[:-1])
    if lookup is not None:
        lookup.begin(prompt)  # a lookup draft indexes the whole prompt
    try:
        yield from _rounds(session, round_fn, max_new_tokens, eos)
    finally:
        if lookup is not None:
            lookup.end(session.seq)  # a lookup draft with memory learns from the finished request


def _rounds(session: Session, round_fn: RoundFn, max_new_tokens: int, eos: frozenset[int]) -> Iterator[list[int]]:
    produced = 0
    while produced < max_new_tokens:
        accepted0, unchecked0 = session.accepted_tokens, session.counters.get("unchecked", 0)
        toks = round_fn(session)
        session.rounds += 1
        toks = toks[: max_new_tokens - produced]
        for i, t in enumerate(toks):
            if t in eos:
                toks = toks[: i + 1]
                break
        # NOTE: a round's accepted drafts are the head of its tokens; drafts cut off by
        # max_new_tokens or EOS were drafted but never reach the output, so they are not
        # counted as accepted (accepted_tokens <= min(draft_tokens, new_tokens)).
        session.accepted_tokens = accepted0 + min(session.accepted_tokens - accepted0, len(toks))
        if "unchecked" in session.counters:
            session.counters["unchecked"] = unchecked0 + min(session.counters["unchecked"] - unchecked0, len(toks))
        session.seq.extend(toks)
        produced += len(toks)
        session.target.sync(session.seq)
        if session.draft is not None:
            session.draft.sync(session.seq)
        yield toks
        if toks and toks[-1] in eos:
            return
