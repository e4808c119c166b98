"""pytest-benchmark microbenchmarks for the pieces of one decoding round (reference engine).

    python -m pytest bench/test_round_pieces.py --benchmark-only \
        --benchmark-json bench/results/round_pieces.json

Shapes are the default pair's (vocab 49152, hidden 576) unless the test says otherwise.
"""

from __future__ import annotations

import pytest
import torch

from sprinter_ext import _rng
from sprinter_ext.methods import sd
from sprinter_ext.methods._session import Lane, Session
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings, probs

V = 49152
G = torch.Generator().manual_seed(0)
LOGITS = torch.randn(V, generator=G) * 3


@pytest.mark.parametrize("n", [1, 5])
def test_philox_uniform(benchmark, n):
    pos = torch.arange(n)
    benchmark(_rng.uniform, 0, pos, 1, V)


def test_race(benchmark):
    p = torch.softmax(LOGITS, -1)
    benchmark(_rng.race, p, 0, 17, 1)


@pytest.mark.parametrize("settings", [SamplingSettings(1.0), SamplingSettings(0.8, top_k=50, top_p=0.9),
                                      SamplingSettings(0.0)], ids=["t1", "topk_topp", "greedy"])  # fmt: skip
def test_probs(benchmark, settings):
    benchmark(probs, LOGITS, settings)


@pytest.mark.parametrize("k", [1, 4])
def test_sd_verify(benchmark, k):
    logits = torch.randn(k + 1, V, generator=G)  # the target's; verify() applies the settings
    q = torch.softmax(torch.randn(k, V, generator=G), -1)
    drafts = torch.multinomial(q, 1, generator=G)[:, 0].tolist()
    runner = ModelRunner(tiny_model("llama", vocab=V, hidden=32), max_len=64)
    s = Session(target=Lane(runner), draft=None, settings=SamplingSettings(), seed=0, k=k, seq=[1, 2, 3])
    benchmark(sd.verify, s, drafts, q, logits)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tiny_runner_step(benchmark, family):
    """Host overhead of one runner step on a model whose forward costs almost nothing."""
    runner = ModelRunner(tiny_model(family, vocab=1000, hidden=64), max_len=256)
    runner.prefill([1, 2, 3])

    def step():
        runner.step(5)
        runner.truncate(3)

    benchmark(step)
