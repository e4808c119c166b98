"""The draft head's training forward (unrolled, training-time test) equals its inference
forward (KV cache, own features after the first draft) position by position."""

import pytest
import torch

from sprinter_ext.drafts.head import DraftHead, HeadCache, HeadConfig
from sprinter_ext.errors import InvalidArgumentError


def _cfg(**kw):
    base = dict(hidden_size=24, num_heads=4, num_kv_heads=2, head_dim=6, intermediate_size=40,
                feature_layers=(1, 3), draft_vocab_size=17, target_vocab_size=31, target_layers=4,
                rope_theta=1000.0)
    base.update(kw)
    return HeadConfig(**base)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unrolled_equals_cached_steps(seed):
    g = torch.Generator().manual_seed(seed)
    cfg = _cfg()
    head = DraftHead(cfg, torch.randperm(31, generator=g)[:17])
    for p in head.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.3
    T, steps = 11, 4
    fused = torch.randn(1, T, 24, generator=g)
    emb = torch.randn(1, T, 24, generator=g)
    outs = head.unrolled(fused, emb, steps)
    for j in range(steps):
        for p in range(j, T):
            r = p - j  # the round's last target-feature position
            cache = HeadCache(cfg)
            gg = head.step(fused[0, : r + 1], emb[0, : r + 1], torch.arange(r + 1), cache)[-1:]
            for i in range(1, j + 1):  # own features: the previous output, the token at that step
                gg = head.step(gg, emb[0, r + i: r + i + 1], torch.tensor([r + i]), cache)
            torch.testing.assert_close(outs[j][0, p], gg[0], rtol=1e-4, atol=1e-4)


def test_named_errors():
    with pytest.raises(InvalidArgumentError, match="beyond the target's depth"):
        _cfg(feature_layers=(1, 4))
    with pytest.raises(InvalidArgumentError, match="must be even"):
        _cfg(head_dim=5)
    with pytest.raises(InvalidArgumentError, match="multiple of num_kv_heads"):
        _cfg(num_kv_heads=3)
    cfg = _cfg()
    with pytest.raises(InvalidArgumentError, match="outside the target's vocabulary"):
        DraftHead(cfg, torch.arange(17) + 20)
    with pytest.raises(InvalidArgumentError, match="same target id"):
        DraftHead(cfg, torch.zeros(17, dtype=torch.long))


def test_construction_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    a = DraftHead(_cfg(), seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = DraftHead(_cfg(), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
