"""NativeModel (csrc/model/native_model.cpp) against ModelRunner: bitwise-equal logits and hidden states.

These hold the op-for-op path (``native_runner(..., fast=False)``); the weight-streaming
fast path is held to tolerances in tests/test_linear_cpu.py.

Every call of a random prefill / step / extend / truncate walk is made on both runners
and compared with torch.equal (logits float32 and hidden in the model dtype), over odd
shapes, GQA, bias / tie / activation / attention variants, bf16, the
RestrictedVocabHead, and the real default pair.
"""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import CacheOverflowError, UnsupportedModelError
from sprinter_ext.models.native import cuda_graph_runner, native_runner, supports, unsupported_reason
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.smol_draft import RestrictedVocabHead
from sprinter_ext.models.tiny import _config, tiny_model


def assert_same(got, want, what: str) -> None:
    """torch.equal on (logits, hidden) pairs (or None), with the largest difference on failure."""
    if want is None:
        assert got is None, f"{what}: expected None"
        return
    for name, g, w in zip(("logits", "hidden"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what} {name}: {g.shape}/{g.dtype} != {w.shape}/{w.dtype}"
        if not torch.equal(g, w):
            finite = torch.isfinite(w)
            diff = (g.double() - w.double())[finite].abs().max().item() if finite.any() else float("nan")
            raise AssertionError(f"{what} {name}: not bitwise equal (max |diff| {diff:.3g})")


def custom_model(family: str, *, vocab=97, layers=2, hidden=48, heads=4, seed=0, dtype=torch.float32, **overrides):
    """A tiny random model with config overrides; norms get random weights too."""
    from transformers import AutoModelForCausalLM

    config = _config(family, vocab, layers, hidden, heads, 128)
    attn = overrides.pop("attn_implementation", "sdpa")
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            scale = 0.3 if p.dim() >= 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if "norm" in name or "ln_" in name else 0.0))
    return model.to(dtype).eval().requires_grad_(False)


def random_walk(model, *, seed: int, max_len: int = 40, calls: int = 30) -> None:
    """The same random prefill/step/extend/truncate calls on ModelRunner and NativeModel, compared."""
    ref, nat = ModelRunner(model, max_len=max_len), native_runner(model, max_len=max_len, fast=False)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)

    def rand(lo, hi):  # an int in [lo, hi]
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    def tokens(n):
        return torch.randint(0, vocab, (n,), generator=g).tolist()

    ids = tokens(rand(1, 8))
    assert_same(nat.prefill(ids), ref.prefill(ids), "prefill")
    for call in range(calls):
        op = rand(0, 9)
        room = max_len - ref.length
        if op == 0:
            ids = tokens(rand(0, 12))
            assert_same(nat.prefill(ids), ref.prefill(ids), f"call {call} prefill({len(ids)})")
        elif op <= 3 or room == 0:
            length = rand(0, ref.length)
            ref.truncate(length)
            nat.truncate(length)
        elif op <= 6:
            t = tokens(1)[0]
            assert_same(nat.step(t), ref.step(t), f"call {call} step at {ref.length}")
        else:
            ids = tokens(rand(1, min(room, 6)))
            assert_same(nat.extend(ids), ref.extend(ids), f"call {call} extend({len(ids)}) at {ref.length}")
        assert nat.length == ref.length


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "family,layers,hidden,heads",
    [
        ("gpt2", 1, 48, 3),
        ("gpt2", 3, 40, 5),
        ("llama", 1, 48, 4),  # GQA 4 -> 2
        ("llama", 2, 48, 3),  # GQA 3 -> 1
        ("llama", 3, 48, 6),  # GQA 6 -> 3, head_dim 8
    ],
)
def test_random_walk_is_bitwise_equal(family, layers, hidden, heads, seed):
    model = tiny_model(family, vocab=97, layers=layers, hidden=hidden, heads=heads, seed=seed)
    random_walk(model, seed=seed)


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("llama", dict(attention_bias=True, mlp_bias=True)),
        ("llama", dict(tie_word_embeddings=True)),
        ("llama", dict(hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-2, rope_theta=500.0)),
        ("llama", dict(attn_implementation="eager")),
        ("llama", dict(num_key_value_heads=4)),  # no GQA
        ("gpt2", dict(scale_attn_by_inverse_layer_idx=True)),
        ("gpt2", dict(scale_attn_weights=False, activation_function="gelu")),
        ("gpt2", dict(attn_implementation="eager", activation_function="relu")),
        ("gpt2", dict(n_inner=72, layer_norm_epsilon=1e-3)),
    ],
)
def test_config_variants_are_bitwise_equal(family, overrides):
    model = custom_model(family, seed=3, **overrides)
    assert supports(model), unsupported_reason(model)
    random_walk(model, seed=3, calls=15)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_bfloat16_is_bitwise_equal(family):
    model = tiny_model(family, vocab=97, layers=2, hidden=48, heads=4, seed=5, dtype=torch.bfloat16)
    random_walk(model, seed=5, calls=15)
    assert native_runner(model).dtype == torch.bfloat16


@pytest.mark.parametrize("bias", [False, True])
def test_restricted_vocab_head(bias):
    """The default draft's head: kept rows only, -inf elsewhere, optional bias."""
    model = tiny_model("llama", vocab=97, layers=2, hidden=48, heads=4, seed=7)
    kept = torch.tensor([0, 3, 4, 10, 41, 42, 77, 96])
    g = torch.Generator().manual_seed(7)
    model.lm_head = RestrictedVocabHead(
        model.get_output_embeddings().weight.detach()[kept].clone(), kept, 97,
        torch.randn(len(kept), generator=g) if bias else None,
    )
    assert supports(model)
    random_walk(model, seed=7, calls=15)
    logits, _ = native_runner(model).prefill([1, 2])
    assert torch.isinf(logits).sum() == 97 - len(kept) and torch.isfinite(logits[kept]).all()


def test_python_protocol():
    model = tiny_model("llama", vocab=97, hidden=48, heads=4)
    nat, ref = native_runner(model, max_len=32, fast=False), ModelRunner(model, max_len=32)
    assert isinstance(nat, sprinter_ext._native._C.Runner)
    assert (nat.max_len, nat.vocab_size, nat.hidden_size) == (32, 97, 48)
    assert (nat.device, nat.dtype) == (ref.device, ref.dtype)
    assert nat.prefill([]) is None and nat.length == 0
    # tensors and ints are accepted like lists
    assert_same(nat.prefill(torch.tensor([[5, 6, 7]])), ref.prefill([5, 6, 7]), "tensor prefill")
    assert_same(nat.step(torch.tensor(8)), ref.step(8), "tensor step")
    assert_same(nat.extend(9), ref.extend(9), "int extend")
    assert nat.length == 5
    assert native_runner(model).max_len == ModelRunner(model).max_len == 256  # min(2048, max_pos)


def test_bad_calls():
    nat = native_runner(tiny_model("gpt2", vocab=64), max_len=8)
    nat.prefill([1, 2, 3, 4, 5, 6])
    with pytest.raises(CacheOverflowError, match="static KV cache"):
        nat.extend([1, 2, 3])
    with pytest.raises(CacheOverflowError):
        nat.prefill(list(range(9)))
    assert nat.length == 0  # prefill resets before it runs, as ModelRunner's does
    nat.prefill([1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="truncate"):
        nat.truncate(7)
    with pytest.raises(ValueError, match="truncate"):
        nat.truncate(-1)
    with pytest.raises(TypeError, match="length must be an int"):
        nat.truncate(2.0)
    with pytest.raises(TypeError, match="length must be an int"):
        nat.truncate(True)
    with pytest.raises(ValueError, match="at least one token"):
        nat.extend([])
    with pytest.raises(ValueError, match="one token"):
        nat.step([1, 2])
    with pytest.raises(IndexError, match="out of range"):
        nat.step(64)
    with pytest.raises(TypeError, match="token ids"):
        nat.extend([1.5])
    with pytest.raises(TypeError, match="integer token ids"):
        nat.extend(torch.tensor([1.0]))
    assert nat.length == 6  # nothing changed


def test_unsupported_models_and_max_len():
    from transformers import GPT2ForSequenceClassification

    with pytest.raises(TypeError, match="transformers model"):
        native_runner("gpt2")
    seq = GPT2ForSequenceClassification(_config("gpt2", 64, 1, 32, 4, 64)).eval()
    with pytest.raises(UnsupportedModelError, match="ModelRunner instead"):
        native_runner(seq)
    scaled = custom_model("llama", rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})
    assert not supports(scaled) and "rope type 'linear'" in unsupported_reason(scaled)
    with pytest.raises(ValueError, match="rope type"):
        native_runner(scaled)
    model = tiny_model("llama", vocab=64, max_pos=64)
    assert "training mode" in unsupported_reason(model.train())
    model.eval()
    assert "sigmoid" in unsupported_reason(custom_model("llama", hidden_act="sigmoid"))
    for bad in (1, 65, 2.0, True):
        with pytest.raises(ValueError, match="max_len"):
            native_runner(model, max_len=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cuda_graph_runner_equals_native_runner(family):
    """Replayed graphs give the eager NativeModel's numbers (close: cuBLAS may pick other kernels in a graph)."""
    model = tiny_model(family, vocab=97, layers=2, hidden=48, heads=4, seed=11).cuda()
    eager, graphed = native_runner(model, max_len=64), cuda_graph_runner(model, lengths=(1, 3), max_len=64)
    assert graphed.captured_lengths == [1, 3] and graphed.length == 0
    torch.testing.assert_close(graphed.prefill([1, 2, 3, 4]), eager.prefill([1, 2, 3, 4]), atol=1e-5, rtol=1e-5)
    for tokens in ([5], [6, 7, 8], [9, 10], [11], [12, 13, 14]):
        torch.testing.assert_close(graphed.extend(tokens), eager.extend(tokens), atol=1e-5, rtol=1e-5)
        graphed.truncate(graphed.length - 1)
        eager.truncate(eager.length - 1)
        assert graphed.length == eager.length
    graphed.prefill(list(range(62)))
    with pytest.raises(CacheOverflowError):
        graphed.extend([1, 2, 3])  # a captured length
    assert graphed.length == 62


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_graph_runner_needs_cuda():
    model = tiny_model("llama", vocab=64)
    with pytest.raises((RuntimeError, ValueError), match="CUDA"):
        cuda_graph_runner(model)


def test_default_pair_is_bitwise_equal(standalone_pair):
    """The real SmolLM2 target (tied head, GQA 9 -> 3) and the standalone draft (RestrictedVocabHead)."""
    ids = standalone_pair.tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    for model in (standalone_pair.target, standalone_pair.draft):
        assert supports(model), unsupported_reason(model)
        ref, nat = ModelRunner(model, max_len=64), native_runner(model, max_len=64, fast=False)
        assert_same(nat.prefill(ids), ref.prefill(ids), "prefill")
        for t in (11, 22, 33):
            assert_same(nat.step(t), ref.step(t), "step")
        nat.truncate(len(ids) + 1)
        ref.truncate(len(ids) + 1)
        assert_same(nat.extend([5, 6, 7]), ref.extend([5, 6, 7]), "extend")
