"""Losslessness, statistically: sd and ersd samples vs the target's exact distribution.

See stats_helpers.py: the first two tokens' joint law (vocab 8) against samples
over 2000 fixed seeds, G-test at ALPHA. A deliberately biased SD (resampling from
p instead of the residual after a rejection) must fail the same test: it has power.

NOTE: the G-tests that plant no bug run on the native engine (the C++ loop, ~5x faster
than the reference engine for 2000 seeds); the one that plants a bug runs on the
reference engine, whose Python spec is what the monkeypatch changes. The reference and
fused engines are held to the native one token for token, seed by seed, elsewhere
(test_native_engine.py, test_stats.py, test_sprinter.py), so equal laws follow.
"""

from __future__ import annotations

import pytest
import torch
from stats_helpers import ALPHA, PROMPT, SETTINGS, exact_joint, g_test_pvalue, sample_counts

from sprinter_ext.ops import _verify_tokens as sd_rule  # SD's torch spec: the bug's site
from sprinter_ext.sampling import probs


@pytest.fixture(scope="module")
def pair(stat_pair):
    return stat_pair


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_pair_is_a_hard_case(pair, name):
    """Draft and target must disagree a lot yet overlap, with spread distributions,
    or the biased implementation would be nearly unbiased and the test would prove little."""
    with torch.no_grad():
        p = probs(pair.target(torch.tensor([PROMPT])).logits[0, -1], SETTINGS[name]).double()
        q = probs(pair.draft(torch.tensor([PROMPT])).logits[0, -1], SETTINGS[name]).double()
    overlap = torch.minimum(p, q)
    biased = overlap + (1 - overlap.sum()) * p  # first-token law of "resample from p"
    assert 0.5 * float((p - q).abs().sum()) > 0.3  # frequent rejections
    assert 0.5 * float((biased - p).abs().sum()) > 0.15  # the bug moves the law a lot
    assert int((p > 0).sum()) >= 4  # top-k/top-p leave a real choice


@pytest.mark.parametrize(
    "method,k,name,engine",
    [("sd", 2, "t1", "native"), ("ersd", 3, "t1", "native"), ("sd", 3, "topk_topp", "native"),
     ("ersd", 2, "topk_topp", "native")],
)  # fmt: skip
def test_output_distribution_is_the_targets(pair, method, k, name, engine):
    """The native loop (see the module NOTE for the other engines)."""
    settings = SETTINGS[name]
    counts = sample_counts(pair, method, settings, k, engine=engine)
    p = g_test_pvalue(counts, exact_joint(pair.target, settings))
    assert p > ALPHA, f"{method} k={k} {name}: G-test p={p:.2e}"


def test_biased_sd_fails_the_same_test(pair, monkeypatch):
    monkeypatch.setattr(sd_rule, "residual", lambda p, q: p)  # the classic bug
    settings = SETTINGS["t1"]
    counts = sample_counts(pair, "sd", settings, 2, engine="reference")  # the patched spec
    p = g_test_pvalue(counts, exact_joint(pair.target, settings))
    assert p < ALPHA, f"the biased implementation passed (p={p:.2e}): the test has no power"
