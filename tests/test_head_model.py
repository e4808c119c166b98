"""The C++ draft head (``_C.HeadModel``, csrc/model/head_model.h) against its Python spec:
bitwise equal to ``HeadRunner(fast=True)`` over the same NativeModel feature tap on the CPU
(odd shapes, GQA and not, prompts over and under PackedLinear's 16 rows, own-feature steps,
recompute after a verification, rollback, scrub; 3 seeds), ``fast=False`` within tolerance
of the eager head, the native loop driving it as a C++ runner, and its named errors."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.drafts.head import DraftHead, HeadConfig
from sprinter_ext.drafts.runner import HeadRunner, NativeTap, head_runner_factory, native_head_runner
from sprinter_ext.errors import ArgumentTypeError, CacheOverflowError, InvalidArgumentError
from sprinter_ext.models import native
from sprinter_ext.models.tiny import tiny_model

_C = pytest.importorskip("sprinter_ext._C")

SHAPES = [  # (target kwargs: kv heads = heads // 2, head feature layers, draft vocab)
    (dict(vocab=48, layers=3, hidden=32), (0, 2), 20),
    (dict(vocab=53, layers=4, hidden=36, heads=6), (1, 2, 3), 29),
    (dict(vocab=41, layers=2, hidden=24, heads=3), (1,), 41),
]


def _setup(seed, shape, max_len=64, dtype=torch.float32):
    kw, layers, dv = shape
    target = tiny_model("llama", seed=seed, **kw).to(dtype)
    V = target.config.vocab_size
    g = torch.Generator().manual_seed(100 + seed)
    head = DraftHead(HeadConfig.for_target(target.config, layers, dv), torch.randperm(V, generator=g)[:dv])
    with torch.no_grad():
        for _, p in sorted(head.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    head = head.to(dtype).eval()
    t = native.native_runner(target, max_len)
    t.set_feature_layers(list(layers))
    return target, head, t, target.get_input_embeddings().weight.detach(), g


def _equal(a, b, what):
    assert torch.equal(a[0], b[0]), f"{what}: logits differ"
    assert torch.equal(a[1], b[1]), f"{what}: hidden differs"


def _close(a, b, what):
    finite = torch.isfinite(a[0])
    assert torch.equal(finite, torch.isfinite(b[0])), what
    torch.testing.assert_close(b[0][finite], a[0][finite], rtol=2e-4, atol=2e-4, msg=what)
    torch.testing.assert_close(b[1], a[1], rtol=2e-4, atol=2e-4, msg=what)


def _walk(ref, cpp, t, g, V, prompt_len, check):
    """One decode history through both heads, the target moving as a real loop moves it."""
    ids = torch.randint(0, V, (prompt_len,), generator=g).tolist()
    t.prefill(ids[:-2])  # the target has run all but the last two inputs
    check(ref.prefill(ids), cpp.prefill(ids), "prefill")
    for i in range(3):  # own features, one token at a time
        tok = int(torch.randint(0, V, (), generator=g))
        check(ref.step(tok), cpp.step(tok), f"step {i}")
    more = torch.randint(0, V, (4,), generator=g).tolist()
    t.extend(ids[-2:] + more[:3])  # a verification ran: recompute from the target's features
    check(ref.extend(more), cpp.extend(more), "extend")
    for r in (ref, cpp, t):
        r.truncate(prompt_len + 2)  # rollback
    check(ref.step(3), cpp.step(3), "after rollback")
    assert ref.length == cpp.length == prompt_len + 3
    cpp.scrub()
    assert cpp.length == 0
    check(ref.prefill(ids[:1]), cpp.prefill(ids[:1]), "one-token prompt after scrub")
    assert cpp.prefill([]) is None and cpp.length == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
@pytest.mark.parametrize("prompt_len", [5, 21])  # under / over PackedLinear's 16 rows
def test_cpp_head_is_bitwise_the_python_packed_head(seed, shape, prompt_len):
    target, head, t, emb, g = _setup(seed, SHAPES[shape])
    V = target.config.vocab_size
    ref = HeadRunner(head, emb, NativeTap(t), V, t.max_len, fast=True)
    cpp = native_head_runner(head, emb, t, V, t.max_len)
    assert isinstance(cpp, _C.HeadModel) and isinstance(cpp, _C.Runner) and cpp.fast
    assert cpp.hidden_size == ref.hidden_size and cpp.vocab_size == V and cpp.max_len == t.max_len
    _walk(ref, cpp, t, g, V, prompt_len, _equal)


@pytest.mark.parametrize("seed", [0, 1])
def test_cpp_head_bf16_is_bitwise_the_python_packed_head(seed):
    target, head, t, emb, g = _setup(seed, SHAPES[1], dtype=torch.bfloat16)
    V = target.config.vocab_size
    ref = HeadRunner(head, emb, NativeTap(t), V, t.max_len, fast=True)
    cpp = native_head_runner(head, emb, t, V, t.max_len)
    assert cpp.dtype == torch.bfloat16
    _walk(ref, cpp, t, g, V, 21, _equal)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpp_head_without_packing_matches_the_eager_head(seed):
    target, head, t, emb, g = _setup(seed, SHAPES[seed])
    V = target.config.vocab_size
    ref = HeadRunner(head, emb, NativeTap(t), V, t.max_len, fast=False)
    cpp = native_head_runner(head, emb, t, V, t.max_len, fast=False)
    assert not cpp.fast
    _walk(ref, cpp, t, g, V, 19, _close)


@pytest.mark.parametrize("method", ["sd", "ersd", "sprinter"])
def test_the_native_loop_drives_the_cpp_head(method):
    target = tiny_model("llama", vocab=48, layers=3, hidden=32, seed=5)
    head = DraftHead(HeadConfig.for_target(target.config, (0, 2), 20), torch.arange(0, 40, 2)).eval()
    pair = sprinter_ext.load_pair(head, target)
    make = head_runner_factory(pair, "native", built=True)
    make("target", 32)
    assert isinstance(make("draft", 32), _C.HeadModel)
    opts = {}
    if method == "sprinter":  # an untrained verifier that accepts some drafts and flags others
        from sprinter_ext.verifier import Verifier

        opts = {"verifier": Verifier(head.verifier_input_size, hidden=()).requires_grad_(False), "threshold": 0.5}
    out = {}
    for engine in ("native", "reference"):
        dec = sprinter_ext.Decoder(pair, method, engine=engine, k=3, temperature=1.0, **opts)
        if engine == "native":
            assert isinstance(dec._draft.runner, _C.HeadModel)  # not a PyRunner around Python
        r = dec.generate([1, 2, 3, 4], max_new_tokens=24, seed=7)
        out[engine] = (r.tokens, r.stats["target_calls"])
    assert out["native"] == out["reference"]


def test_cpp_head_named_errors():
    target, head, t, emb, g = _setup(0, SHAPES[0], max_len=16)
    V = target.config.vocab_size
    with pytest.raises(ArgumentTypeError, match="must be a _C.NativeModel"):
        native_head_runner(head, emb, HeadRunner(head, emb, NativeTap(t), V, 16), V, 16)
    other = native.native_runner(target, 16)
    other.set_feature_layers([1])
    with pytest.raises(InvalidArgumentError, match=r"records layers \(1,\) but the head reads \(0, 2\)"):
        native_head_runner(head, emb, other, V, 16)
    with pytest.raises(InvalidArgumentError, match="float32 or bfloat16 head on the CPU"):
        native_head_runner(head.double(), emb, t, V, 16, fast=True)
    with pytest.raises(ArgumentTypeError, match="fast must be a bool"):
        native_head_runner(head, emb, t, V, 16, fast="yes")
    with pytest.raises(ValueError, match="max_len 32 exceeds the target's 16"):
        native_head_runner(head, emb, t, V, 32)
    with pytest.raises(ValueError, match="vocab_size 49 differs"):
        native_head_runner(head, emb, t, V + 1, 16)
    # the raw constructor: its own checks, before anything is allocated
    good = native_head_runner(head, emb, t, V, 16)
    c = head.config
    config = dict(hidden_size=c.hidden_size, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                  head_dim=c.head_dim, intermediate_size=c.intermediate_size, vocab_size=V, max_len=16,
                  norm_eps=1e-5, feature_layers=[0, 2], fast=True)
    from sprinter_ext.drafts.head import rope_tables

    cos, sin = rope_tables(torch.arange(16), c.head_dim, c.rope_theta, torch.float32)
    tensors = {**{k: v.detach() for k, v in head.state_dict().items()}, "embed": emb, "rope.cos": cos, "rope.sin": sin}
    with pytest.raises(ValueError, match="d2t maps outside the target's vocabulary of 48"):
        _C.HeadModel(t, config, {**tensors, "d2t": torch.arange(20) + 40})
    with pytest.raises(ValueError, match="missing 'lm_head.weight'"):
        _C.HeadModel(t, config, {k: v for k, v in tensors.items() if k != "lm_head.weight"})
    with pytest.raises(ValueError, match="does not use .*: extra"):
        _C.HeadModel(t, config, {**tensors, "extra": cos})
    with pytest.raises(ValueError, match="fc has shape"):
        _C.HeadModel(t, config, {**tensors, "fc.weight": tensors["fc.weight"][:, :-1]})
    with pytest.raises(ValueError, match="unknown key 'theta'"):
        _C.HeadModel(t, {**config, "theta": 1.0}, tensors)
    with pytest.raises(TypeError, match="'max_len' has the wrong type"):
        _C.HeadModel(t, {**config, "max_len": "16"}, tensors)
    # runtime errors leave the head as it was
    good.prefill([1, 2, 3])
    with pytest.raises(IndexError, match="token id 99 is out of range"):
        good.extend([4, 99])
    with pytest.raises(CacheOverflowError, match="do not fit the head's cache of 16"):
        good.extend(list(range(14)))
    with pytest.raises(ValueError, match="cannot truncate to 4: the head holds 3 tokens"):
        good.truncate(4)
    with pytest.raises(ValueError, match="needs at least one token"):
        good.extend([])
    with pytest.raises(TypeError, match="length must be an int"):
        good.truncate(1.0)
    assert good.length == 3
    assert "HeadModel(hidden=32, feature_layers=[0, 2]" in repr(good)
