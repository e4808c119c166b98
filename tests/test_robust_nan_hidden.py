"""A NaN hidden state scores 0 and is never accepted, on every draft_sample backend (issue 14, case 4).

The Triton kernel's ReLU between verifier layers used to be ``tl.maximum(h, 0.0)``, which
drops NaN, so a NaN hidden state got a finite score (0.5625) and accept=True; SPRINTER's
flagged mode would then commit that token unchecked. Run under TRITON_INTERPRET=1 on CPU.
"""

from __future__ import annotations

import pytest
import torch
from ops_cases import BACKENDS, gen, make_verifier

from sprinter_ext import ops


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hidden_layers", [(), (8,), (16, 5)])
@pytest.mark.parametrize("seed", [0, 3])
def test_nan_hidden_scores_zero_and_is_not_accepted(backend, hidden_layers, seed):
    B, V, D = 3, 37, 11
    logits = torch.randn(B, V, generator=gen(seed))
    hidden = torch.randn(B, D, generator=gen(seed + 1))
    hidden[1, 4] = float("nan")  # row 1 only
    hidden[2, 0] = float("inf") if seed else float("-inf")
    pos = torch.tensor([5, 6, 7])
    v = make_verifier(D, hidden_layers, seed=seed)
    v.threshold = 1e-6  # an all-accepting threshold: a finite score would pass it
    out = ops.draft_sample(logits, hidden, pos, seed=seed, verifier=v, backend=backend)
    ref = ops.draft_sample(logits, hidden, pos, seed=seed, verifier=v, backend="torch")
    assert out.score[1].item() == 0.0 and not bool(out.accept[1])
    assert torch.equal(out.accept, ref.accept)
    torch.testing.assert_close(out.score, ref.score, atol=1e-5, rtol=1e-4)
    assert torch.equal(out.token, ref.token)
