"""Exact-distribution helpers for the statistical losslessness tests (vocab-8 models).

The exact joint law of the first two generated tokens is enumerable (64 cells);
samples over thousands of fixed seeds are compared with a G-test at ALPHA.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from scipy import stats

import sprinter_ext
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings, probs

V = 8
PROMPT = [1, 5, 2]
SEEDS = 2000
ALPHA = 1e-3

SETTINGS = {
    "t1": SamplingSettings(1.0),
    "topk_topp": SamplingSettings(0.9, top_k=5, top_p=0.8),
}


def small_pair():
    # NOTE: chosen (by the analytic check in test_lossless.test_pair_is_a_hard_case)
    # so that both distributions are spread and overlap partly: a too-peaked target
    # or a draft disjoint from it would make a biased implementation almost unbiased.
    target = tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)
    draft = tiny_model("llama", vocab=V, layers=1, hidden=32, seed=43, scale=1.0)
    return sprinter_ext.load_pair(draft, target)


def exact_joint(target, settings: SamplingSettings, prompt=PROMPT) -> torch.Tensor:
    """P(t1, t2 | prompt) under the target with `settings`: [V, V] float64."""
    with torch.no_grad():
        p1 = probs(target(torch.tensor([prompt])).logits[0, -1], settings).double()
        seqs = torch.tensor([list(prompt) + [t] for t in range(V)])
        p2 = probs(target(seqs).logits[:, -1], settings).double()
    return p1[:, None] * p2


def decoder_counts(dec, prompt=PROMPT, seeds=SEEDS) -> torch.Tensor:
    """Counts of (t1, t2) over `seeds` fixed seeds from a built Decoder: [V, V] float64."""
    counts = torch.zeros(V, V, dtype=torch.float64)
    for seed in range(seeds):
        t1, t2 = dec.generate(prompt, max_new_tokens=2, seed=seed).tokens
        counts[t1, t2] += 1
    return counts


def sample_counts(pair, method, settings, k=2, engine="auto", seeds=SEEDS, **options) -> torch.Tensor:
    # every field of the settings (min_p and the penalties too); options: runner= and method options
    given = {f.name: getattr(settings, f.name) for f in fields(settings)}
    dec = sprinter_ext.Decoder(pair, method, k=k, eos_token_id=None, engine=engine, **given, **options)
    counts = torch.zeros(V, V, dtype=torch.float64)
    for seed in range(seeds):
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
