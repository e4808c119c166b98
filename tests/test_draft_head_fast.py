"""HeadRunner's packed CPU path (fast=True: PackedLinear projections, rotary tables,
grouped-query attention without repeated keys) against its eager reference (fast=False),
on odd shapes and several seeds: prefill (over and under PackedLinear's 16-row limit),
multi-token extends, own-feature steps, rollback; plus its named errors."""

from __future__ import annotations

import pytest
import torch

from sprinter_ext.drafts.head import DraftHead, HeadConfig
from sprinter_ext.drafts.runner import FeatureTap, HeadRunner
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError

pytest.importorskip("sprinter_ext._C")


def _head(seed, *, hidden=40, heads=5, kv=1, head_dim=6, inter=53, vocab=37, draft_vocab=23, layers=(0, 2)):
    g = torch.Generator().manual_seed(seed)
    cfg = HeadConfig(hidden_size=hidden, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                     intermediate_size=inter, feature_layers=layers, draft_vocab_size=draft_vocab,
                     target_vocab_size=vocab, target_layers=3, rope_theta=500.0)
    head = DraftHead(cfg, torch.randperm(vocab, generator=g)[:draft_vocab])
    with torch.no_grad():
        for name, p in sorted(head.named_parameters()):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if "norm" in name
                    else torch.randn(p.shape, generator=g) * 0.3)
    emb = torch.randn(vocab, hidden, generator=g)
    return head.eval(), emb, g


def _runners(head, emb, g, max_len=64):
    c = head.config
    tap = FeatureTap(c.feature_layers, len(c.feature_layers) * c.hidden_size, max_len)
    tap.buf.copy_(torch.randn(tap.buf.shape, generator=g))
    return [HeadRunner(head, emb, tap, c.target_vocab_size, max_len, fast=f) for f in (False, True)], tap


def _same(a, b, what):
    (la, ha), (lb, hb) = a, b
    finite = torch.isfinite(la)
    assert torch.equal(finite, torch.isfinite(lb)), what
    torch.testing.assert_close(lb[finite], la[finite], rtol=2e-4, atol=2e-4, msg=what)
    torch.testing.assert_close(hb, ha, rtol=2e-4, atol=2e-4, msg=what)


@pytest.mark.parametrize("seed,shape", [(0, {}), (1, dict(heads=6, kv=3, head_dim=8)),
                                        (2, dict(hidden=33, heads=3, kv=3, head_dim=10, inter=17))])
@pytest.mark.parametrize("prompt_len", [5, 21])  # under / over PackedLinear's 16 rows
def test_fast_head_matches_the_eager_head(seed, shape, prompt_len):
    head, emb, g = _head(seed, **shape)
    (ref, fast), tap = _runners(head, emb, g)
    V = head.config.target_vocab_size
    ids = torch.randint(0, V, (prompt_len,), generator=g).tolist()
    tap.length = prompt_len - 2  # the target has run all but the last two inputs
    _same(ref.prefill(ids), fast.prefill(ids), "prefill")
    for i in range(3):  # own features, one token at a time
        t = int(torch.randint(0, V, (), generator=g))
        _same(ref.step(t), fast.step(t), f"step {i}")
    tap.length = prompt_len + 1  # a verification ran: recompute from the target's features
    more = torch.randint(0, V, (4,), generator=g).tolist()
    _same(ref.extend(more), fast.extend(more), "extend")
    for r in (ref, fast):
        r.truncate(prompt_len + 2)
        tap.truncate(prompt_len + 2)
    _same(ref.step(3), fast.step(3), "after rollback")
    assert ref.length == fast.length == prompt_len + 3


def test_fast_head_named_errors():
    head, emb, g = _head(0)
    c = head.config
    tap = FeatureTap(c.feature_layers, 2 * c.hidden_size, 16)
    with pytest.raises(ArgumentTypeError, match="fast must be a bool"):
        HeadRunner(head, emb, tap, c.target_vocab_size, 16, fast="yes")
    with pytest.raises(InvalidArgumentError, match="float32 or bfloat16 head on the CPU"):
        HeadRunner(head.double(), emb, tap, c.target_vocab_size, 16, fast=True)
    assert HeadRunner(head.float(), emb, tap, c.target_vocab_size, 16, fast=None).fast is True


def test_the_native_target_gets_the_fast_head_and_the_python_one_the_reference():
    import sprinter_ext
    from sprinter_ext.drafts.runner import head_runner_factory
    from sprinter_ext.models.tiny import tiny_model

    target = tiny_model("llama", vocab=48, layers=3, hidden=32, seed=5)
    cfg = HeadConfig.for_target(target.config, (0, 2), 20)
    pair = sprinter_ext.load_pair(DraftHead(cfg, torch.arange(0, 40, 2)).eval(), target)
    for runner, want in (("native", True), ("python", False)):
        make = head_runner_factory(pair, runner, built=True)
        make("target", 32)
        assert make("draft", 32).fast is want, runner
