"""``sprinter``: a learned verifier stands in for the target (Zhong et al., arXiv 2502.04557).

Each round the draft proposes tokens one by one (races with DRAFT noise); after
each, the verifier scores the draft's hidden state (+ q features). Drafting stops
at the first token scored below the threshold (*flagged*) or after ``max_run``
tokens. The target then runs once over everything pending (its KV cache catches
up over the unchecked tokens in the same forward) and:

- ``verify="flagged"`` (the paper): only the LAST drafted token is checked, with
  the SD rule at its position (accept with min(1, p/q), else resample from the
  residual; accepted -> bonus token). The tokens before it are committed
  unchecked: approximate, cheaper; the threshold trades speed for fidelity.
- ``verify="all"``: every drafted token is checked with the SD rule (methods/sd.py):
  lossless; the verifier only chooses the speculation length.

Threshold > 1 flags every token (each round is SD with k = 1: lossless); a
threshold <= 0 never flags, so the target runs exactly once per ``max_run``
drafted tokens.
"""

from __future__ import annotations

import math

from .._rng import Stream
from ..errors import ArgumentTypeError, InvalidArgumentError
from . import sd
from ._session import Session

VERIFY_MODES = ("flagged", "all")
DEFAULT_MAX_RUN = 20


def options(pair, *, verifier=None, threshold=None, max_run: int = DEFAULT_MAX_RUN, verify: str = "flagged") -> dict:
    """Validate SPRINTER's options (named errors, before anything runs)."""
    from ..verifier import Verifier, check_draft

    verifier = verifier if verifier is not None else getattr(pair, "verifier", None)
    if verifier is None:
        raise InvalidArgumentError(
            "method='sprinter' needs a verifier: pass verifier=sprinter_ext.Verifier.load(path) or train one "
            "with sprinter_ext.train_verifier(pair, texts) (the default pair ships one)"
        )
    if not isinstance(verifier, Verifier):
        raise ArgumentTypeError(f"verifier must be a sprinter_ext.Verifier, got {type(verifier).__name__}")
    check_draft(verifier, pair._view("draft"), pair.vocab_size)  # no build of a lazy draft
    if threshold is None:
        threshold = verifier.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise InvalidArgumentError(f"threshold must be a number (not NaN), got {threshold!r}")
    if isinstance(max_run, bool) or not isinstance(max_run, int) or max_run < 1:
        raise InvalidArgumentError(f"max_run must be an int >= 1, got {max_run!r}")
    if verify not in VERIFY_MODES:
        raise InvalidArgumentError(f"unknown verify mode {verify!r}; choose from {VERIFY_MODES}")
    verifier = verifier.to(pair.device)
    return dict(verifier=verifier, threshold=float(threshold), max_run=max_run, verify=verify)


def lookahead(opts: dict, k: int) -> int:
    """Most tokens one round may draft (sizes the KV cache); `opts` as given or validated."""
    return opts.get("max_run", DEFAULT_MAX_RUN)


def round(s: Session) -> list[int]:
    o = s.options
    d = s.propose(o["max_run"], Stream.DRAFT, o["verifier"], o["threshold"])
    drafts, q, n = d.tokens, d.q, len(d.tokens)
    s.counters["flagged_runs"] = s.counters.get("flagged_runs", 0) + d.flagged
    s.counters.setdefault("unchecked", 0)
    logits = s.target_rows(drafts)  # [n+1, V]: positions L .. L+n
    if o["verify"] == "all":
        return sd.verify(s, drafts, q, logits)
    # flagged: drafts[:n-1] go through unchecked; the last one meets the SD rule
    s.accepted_tokens += n - 1
    s.counters["unchecked"] += n - 1
    s.record(drafts[: n - 1], logits, s.position)  # logprobs: the target's rows exist for them too
    return drafts[: n - 1] + sd.verify(s, drafts[n - 1 :], q[n - 1 :], logits[n - 1 :], offset=n - 1)
