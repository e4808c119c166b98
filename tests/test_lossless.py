"""Losslessness, statistically: sd and ersd samples vs the target's exact distribution.

A tiny-vocab target (vocab 8) makes the exact joint distribution of the first two
generated tokens enumerable (64 cells). Samples over thousands of seeds are
compared with a G-test at a fixed significance (ALPHA); seeds are fixed, so the
outcome is deterministic. A deliberately biased SD (resampling from p instead of
the residual after a rejection) must fail the same test: the test has power.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import sprinter_ext
from sprinter_ext.methods import sd as sd_module
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings, probs

V = 8
PROMPT = [1, 5, 2]
SEEDS = 2000
ALPHA = 1e-3


@pytest.fixture(scope="module")
def small_pair():
    # NOTE: chosen (by the analytic check in test_pair_is_a_hard_case) so that both
    # distributions are spread and overlap partly: a too-peaked target or a draft
    # disjoint from it would make the biased implementation below almost unbiased.
    target = tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)
    draft = tiny_model("llama", vocab=V, layers=1, hidden=32, seed=43, scale=1.0)
    return sprinter_ext.load_pair(draft, target)


def exact_joint(target, settings: SamplingSettings) -> torch.Tensor:
    """P(t1, t2 | PROMPT) under the target with `settings`: [V, V] float64."""
    with torch.no_grad():
        p1 = probs(target(torch.tensor([PROMPT])).logits[0, -1], settings).double()
        seqs = torch.tensor([PROMPT + [t] for t in range(V)])
        p2 = probs(target(seqs).logits[:, -1], settings).double()
    return p1[:, None] * p2


def sample_counts(pair, method, settings, k) -> torch.Tensor:
    dec = sprinter_ext.Decoder(pair, method, k=k, eos_token_id=None, temperature=settings.temperature,
                               top_k=settings.top_k, top_p=settings.top_p)  # fmt: skip
    counts = torch.zeros(V, V, dtype=torch.float64)
    for seed in range(SEEDS):
        t1, t2 = dec.generate(PROMPT, max_new_tokens=2, seed=seed).tokens
        counts[t1, t2] += 1
    return counts


def g_test_pvalue(counts: torch.Tensor, expected_p: torch.Tensor) -> float:
    """G-test of counts against probabilities; cells expecting < 5 are pooled."""
    obs, exp = counts.flatten(), expected_p.flatten() * counts.sum()
    if bool(((exp == 0) & (obs > 0)).any()):
        return 0.0  # a sample the target can never produce
    small = exp < 5
    o = torch.cat([obs[~small], obs[small].sum()[None]])
    e = torch.cat([exp[~small], exp[small].sum()[None]])
    keep = e > 0
    o, e = o[keep], e[keep]
    if len(e) < 2:
        raise ValueError("the expected distribution has fewer than 2 bins: the test would prove nothing")
    g = 2.0 * float(torch.where(o > 0, o * torch.log(o / e), torch.zeros_like(o)).sum())
    return float(stats.chi2.sf(g, int(keep.sum()) - 1))


SETTINGS = {
    "t1": SamplingSettings(1.0),
    "topk_topp": SamplingSettings(0.9, top_k=5, top_p=0.8),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_pair_is_a_hard_case(small_pair, name):
    """Draft and target must disagree a lot yet overlap, with spread distributions,
    or the biased implementation would be nearly unbiased and the test would prove little."""
    with torch.no_grad():
        p = probs(small_pair.target(torch.tensor([PROMPT])).logits[0, -1], SETTINGS[name]).double()
        q = probs(small_pair.draft(torch.tensor([PROMPT])).logits[0, -1], SETTINGS[name]).double()
    overlap = torch.minimum(p, q)
    biased = overlap + (1 - overlap.sum()) * p  # first-token law of "resample from p"
    assert 0.5 * float((p - q).abs().sum()) > 0.3  # frequent rejections
    assert 0.5 * float((biased - p).abs().sum()) > 0.15  # the bug moves the law a lot
    assert int((p > 0).sum()) >= 4  # top-k/top-p leave a real choice


@pytest.mark.parametrize(
    "method,k,name", [("sd", 2, "t1"), ("ersd", 3, "t1"), ("sd", 3, "topk_topp"), ("ersd", 2, "topk_topp")]
)
def test_output_distribution_is_the_targets(small_pair, method, k, name):
    settings = SETTINGS[name]
    counts = sample_counts(small_pair, method, settings, k)
    p = g_test_pvalue(counts, exact_joint(small_pair.target, settings))
    assert p > ALPHA, f"{method} k={k} {name}: G-test p={p:.2e}"


def test_biased_sd_fails_the_same_test(small_pair, monkeypatch):
    monkeypatch.setattr(sd_module, "residual", lambda p, q: p)  # the classic bug
    settings = SETTINGS["t1"]
    counts = sample_counts(small_pair, "sd", settings, 2)
    p = g_test_pvalue(counts, exact_joint(small_pair.target, settings))
    assert p < ALPHA, f"the biased implementation passed (p={p:.2e}): the test has no power"
