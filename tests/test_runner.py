"""Runners: prefill/step/extend/truncate must equal full recomputation (GPT-2 and Llama)."""

from __future__ import annotations

import pytest
import torch

from sprinter_ext.errors import CacheOverflowError
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_model

ATOL = 2e-5


def full_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)[None]).logits[0].float()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_walk_equals_recomputation(family, seed):
    """Random prefill/step/extend/truncate sequences; every logits row equals a full forward."""
    model = tiny_model(family, vocab=111, layers=2, hidden=48, heads=4, seed=seed)
    runner = ModelRunner(model, max_len=96)
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, 111, (60,), generator=g).tolist()
    # the "true" continuation is seq; garbage tokens get written past it and rolled back
    n0 = int(torch.randint(1, 10, (1,), generator=g))
    logits, hidden = runner.prefill(seq[:n0])
    ref = full_logits(model, seq)
    torch.testing.assert_close(logits, ref[n0 - 1], atol=ATOL, rtol=0)
    assert hidden.shape == (48,)
    pos = n0
    while pos < 55:
        junk = torch.randint(0, 111, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        runner.extend(junk)  # speculative tokens that will be rejected
        runner.truncate(pos)
        if int(torch.randint(0, 2, (1,), generator=g)):
            lg, _ = runner.step(seq[pos])
            torch.testing.assert_close(lg, ref[pos], atol=ATOL, rtol=0)
            pos += 1
        else:
            n = min(int(torch.randint(2, 7, (1,), generator=g)), 60 - pos)
            lg, hd = runner.extend(seq[pos : pos + n])
            assert lg.shape == (n, 111) and hd.shape == (n, 48)
            torch.testing.assert_close(lg, ref[pos : pos + n], atol=ATOL, rtol=0)
            pos += n
        assert runner.length == pos


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hidden_is_what_the_head_sees(family):
    model = tiny_model(family, vocab=64, layers=1)
    runner = ModelRunner(model, max_len=32)
    logits, hidden = runner.extend([1, 2, 3])
    torch.testing.assert_close(model.get_output_embeddings()(hidden).float(), logits)
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]]), output_hidden_states=True)
    torch.testing.assert_close(out.logits[0], logits, atol=ATOL, rtol=0)


def test_prefill_resets_and_reuses_the_cache():
    model = tiny_model("llama", vocab=64)
    runner = ModelRunner(model, max_len=32)
    runner.prefill(list(range(20)))
    lg, _ = runner.prefill([5, 6, 7])
    torch.testing.assert_close(lg, full_logits(model, [5, 6, 7])[-1], atol=ATOL, rtol=0)
    assert runner.prefill([]) is None and runner.length == 0


def test_overflow_and_bad_truncate():
    runner = ModelRunner(tiny_model("gpt2", vocab=64), max_len=8)
    runner.prefill([1, 2, 3, 4, 5, 6])
    with pytest.raises(CacheOverflowError, match="static KV cache"):
        runner.extend([1, 2, 3])
    assert runner.length == 6  # nothing changed
    with pytest.raises(ValueError, match="truncate"):
        runner.truncate(7)
    with pytest.raises(TypeError):
        runner.truncate(2.0)
    with pytest.raises(ValueError, match="at least one token"):
        runner.extend([])
    with pytest.raises(ValueError, match="max_len"):
        ModelRunner(tiny_model("gpt2", vocab=64, max_pos=16), max_len=17)
