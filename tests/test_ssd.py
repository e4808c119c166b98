"""ssd (speculative speculative decoding): bitwise KV snapshots, the speculation cache, sd
equality, losslessness, named errors and the worker thread's lifecycle."""

from __future__ import annotations

import pytest
import torch

from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_model


# -- runner snapshot / restore ---------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_snapshot_restore_is_bitwise(family):
    """Restoring a slice after other continuations overwrote it gives the very logits the
    original continuation produced (what a speculation-cache hit relies on)."""
    runner = ModelRunner(tiny_model(family, vocab=64, seed=3), 48)
    runner.prefill([1, 2, 3, 4, 5])
    prefix = runner.snapshot(3, 5)
    a1, h1 = runner.extend([6, 7])
    a2, _ = runner.step(8)
    branch = runner.snapshot(5, 8)
    runner.truncate(3)
    runner.extend([9, 10, 11, 12, 13])  # another branch overwrites 3..7
    runner.truncate(3)
    runner.restore(3, prefix)
    assert runner.length == 5
    b1, g1 = runner.extend([6, 7])
    assert torch.equal(a1, b1) and torch.equal(h1, g1)
    runner.truncate(4)
    runner.step(1)  # overwrite 4 again
    runner.restore(3, prefix)
    runner.restore(5, branch)
    assert runner.length == 8
    c, _ = runner.step(2)
    runner.truncate(8)
    d, _ = runner.step(2)  # the same cache reached without restore
    assert torch.equal(c, d)
    assert torch.equal(runner.snapshot(5, 8)[0][0], branch[0][0])


def test_snapshot_restore_errors():
    runner = ModelRunner(tiny_model("llama", vocab=64), 16)
    with pytest.raises(RuntimeError, match="prefill"):
        runner.snapshot(0, 0)
    runner.prefill([1, 2, 3])
    with pytest.raises(ValueError, match="cannot snapshot"):
        runner.snapshot(2, 4)
    with pytest.raises(TypeError, match="start"):
        runner.snapshot(1.0, 2)
    snap = runner.snapshot(0, 3)
    with pytest.raises(ValueError, match="cannot restore"):
        runner.restore(4, snap)
    with pytest.raises(ValueError, match="snapshot of this runner"):
        runner.restore(0, snap + snap)
    runner.restore(1, snap)
    assert runner.length == 4
