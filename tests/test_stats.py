"""Stats that add up, on every engine: accepted <= drafted, accepted <= new tokens, counts match.

``accepted_tokens`` counts drafted tokens that reach the output (accepted by the target's
test, or by SPRINTER's verifier unchecked); drafts cut off by max_new_tokens or EOS were
drafted (``draft_tokens`` counts the work) but are not accepted. A SPRINTER run once
reported accepted_tokens 39 with new_tokens 32: its last run of 20 drafts overshot the end.
"""

from __future__ import annotations

import pytest

import sprinter_ext
from sprinter_ext.verifier import train_verifier


@pytest.fixture(scope="module")
def pair(make_tiny_pair, token_texts):
    p = make_tiny_pair("llama", vocab=128, draft_scale=0.5)
    p.verifier = train_verifier(p, token_texts(128, 8, 24), epochs=1, progress=False)
    return p


def _check(res, method):
    s = res.stats
    assert s["new_tokens"] == len(res.tokens)
    assert 0 <= s["accepted_tokens"] <= s["draft_tokens"], s
    assert s["accepted_tokens"] <= s["new_tokens"], s
    if method in ("sd", "ersd", "ssd", "sprinter"):
        # every round commits its accepted drafts plus at most one token of the target's
        assert s["new_tokens"] - s["accepted_tokens"] <= s["rounds"], s
    if method == "sprinter":
        assert s["unchecked"] <= s["accepted_tokens"], s
    if method == "ar":
        assert s["draft_tokens"] == 0 and s["accepted_tokens"] == 0


CASES = [("ar", {}), ("sd", {}), ("ersd", {}), ("ssd", {}),
         ("sprinter", {"threshold": -1.0, "max_run": 20}),  # never flags: runs of 20 overshoot the end
         ("sprinter", {"max_run": 6})]  # fmt: skip


@pytest.mark.parametrize("method, opts", CASES)
@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_stats_add_up_when_the_last_round_overshoots(pair, method, opts, engine):
    if method == "ssd" and engine == "auto":
        engine = "fused"
    for temperature in (0.0, 1.0):
        dec = sprinter_ext.Decoder(pair, method, k=4, temperature=temperature, engine=engine, eos_token_id=None, **opts)
        for seed, n in [(0, 7), (1, 13), (2, 32)]:
            res = dec.generate([3, 5, 7, 11], max_new_tokens=n, seed=seed)
            assert len(res.tokens) == n
            _check(res, method)


def test_sprinter_overshoot_counts_only_committed_drafts(pair):
    """max_run 20 and no flags: one round drafts 20 and keeps 7; 7 accepted, not 19."""
    for engine in ("reference", "auto"):
        res = sprinter_ext.generate(pair, [3, 5, 7, 11], method="sprinter", threshold=-1.0, max_run=20,
                                    max_new_tokens=7, engine=engine, eos_token_id=None)  # fmt: skip
        s = res.stats
        assert s["rounds"] == 1 and s["draft_tokens"] == 20
        assert s["accepted_tokens"] == 7 and s["unchecked"] == 7, (engine, s)


def test_stats_equal_across_engines(pair):
    for method, opts in CASES:
        if method == "ssd":
            continue
        got = []
        for engine in ("reference", "fused", "native"):
            res = sprinter_ext.generate(pair, [3, 5, 7, 11], method=method, max_new_tokens=19, seed=4,
                                        engine=engine, eos_token_id=None, **opts)  # fmt: skip
            keys = ("new_tokens", "draft_tokens", "accepted_tokens", "rounds", "target_calls")
            got.append((res.tokens, {k: res.stats[k] for k in keys}))
        assert got[0] == got[1] == got[2], method


def test_eos_inside_accepted_drafts(pair):
    """An EOS among the accepted drafts ends the output there; the drafts after it are not accepted."""
    free = sprinter_ext.generate(pair, [3, 5, 7, 11], method="sd", temperature=0, max_new_tokens=24,
                                 eos_token_id=None)  # fmt: skip
    eos = free.tokens[5]
    for engine in ("reference", "auto"):
        res = sprinter_ext.generate(pair, [3, 5, 7, 11], method="sd", temperature=0, max_new_tokens=24,
                                    eos_token_id=eos, engine=engine)  # fmt: skip
        assert res.tokens[-1] == eos and len(res.tokens) <= 6
        _check(res, "sd")
