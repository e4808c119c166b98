"""The processed distribution: temperature, top-k, top-p, greedy, and non-finite logits."""

from __future__ import annotations

import math

import pytest
import torch

from sprinter_ext.errors import NonFiniteLogitsError
from sprinter_ext.sampling import SamplingSettings, probs


def brute(logits, t, k, p):
    """Per-token statement of the rule in sampling.py's docstring."""
    pr = torch.softmax(logits.double() / t, -1)
    order = sorted(range(len(pr)), key=lambda i: (-float(pr[i]), i))
    keep = set(order[:k]) if k else set(order)
    pr = torch.tensor([float(pr[i]) if i in keep else 0.0 for i in range(len(pr))], dtype=torch.float64)
    pr /= pr.sum()
    if p < 1:
        mass, kept = 0.0, set()
        for i in order:
            if i in keep and mass < p:
                kept.add(i)
            mass += float(pr[i])
        pr = torch.tensor([float(pr[i]) if i in kept else 0.0 for i in range(len(pr))], dtype=torch.float64)
        pr /= pr.sum()
    return pr


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t,k,p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 7, 0.6), (0.5, 1, 1.0)])
def test_probs_matches_brute_force(seed, t, k, p):
    logits = torch.randn(37, generator=torch.Generator().manual_seed(seed)) * 2
    got = probs(logits, SamplingSettings(t, k, p))
    want = brute(logits, t, k, p)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert math.isclose(float(got.sum()), 1.0, rel_tol=1e-5)


def test_greedy_is_one_hot_first_argmax():
    logits = torch.tensor([[0.0, 3.0, 3.0, -1.0], [1.0, -math.inf, 0.5, 0.0]])
    out = probs(logits, SamplingSettings(temperature=0.0))
    assert out.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_ties_at_top_k_boundary_keep_lowest_index():
    logits = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    out = probs(logits, SamplingSettings(top_k=2))
    assert (out > 0).tolist() == [False, True, True, False, False]


def test_minus_inf_is_a_masked_token():
    logits = torch.tensor([0.0, -math.inf, 1.0])
    assert float(probs(logits, SamplingSettings())[1]) == 0.0


@pytest.mark.parametrize("bad", [float("nan"), math.inf])
def test_non_finite_logits_raise(bad):
    logits = torch.tensor([0.0, bad, 1.0])
    with pytest.raises(NonFiniteLogitsError, match="NaN/inf"):
        probs(logits, SamplingSettings())
    with pytest.raises(NonFiniteLogitsError):
        probs(torch.full((4,), -math.inf), SamplingSettings())


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingSettings(**kw)
    with pytest.raises(TypeError):
        SamplingSettings(top_k=1.5)
