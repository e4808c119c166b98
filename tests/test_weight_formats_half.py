"""load_pair(weights="f16" / "bf16"): the target's linear weights stored in 16 bits, float32 activations.

The 16-bit runner's logits against the float32 runner's (close, at half the bytes); exact
methods stay exact on it (greedy sd == ar, same-seed ersd == ar on the default pair, and
f16's greedy tokens equal fp32's on two chat prompts); a G-test with a planted-bug twin on a
tiny pair whose target's weights are float16 values (so the f16 model is the float32 model
the exact law is computed from); bad combinations get named errors.
"""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import InvalidArgumentError
from sprinter_ext.models.tiny import tiny_model
from stats_helpers import ALPHA, SETTINGS, V, exact_joint, g_test_pvalue, sample_counts

CHAT = [[{"role": "user", "content": "Name three uses of a paperclip."}],
        [{"role": "user", "content": "Explain what a hash map is in two sentences."}]]  # fmt: skip
# max |logit - fp32 logit| over a few steps of the default pair (measured 0.022 and 0.15)
LOGIT_ATOL = {"f16": 0.1, "bf16": 0.6}


@pytest.fixture(scope="module")
def half_pairs(default_pair):
    return {w: sprinter_ext.load_pair(weights=w) for w in ("fp32", "f16", "bf16")}


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_half_runner_logits_and_bytes(half_pairs, fmt):
    r32, rh = half_pairs["fp32"].native_runner("target", 256), half_pairs[fmt].native_runner("target", 256)
    assert half_pairs[fmt].weights == fmt
    assert rh.linear_weight_bytes <= 0.501 * r32.linear_weight_bytes
    ids = list(range(200, 237))
    for r in (r32, rh):
        r.prefill(ids)
    for tok in (11, 3000, 17):
        (a, _), (b, _) = r32.step(tok), rh.step(tok)
        assert 0 < (b - a).abs().max() < LOGIT_ATOL[fmt]  # > 0: the 16-bit weights are in use
    (a, _), (b, _) = r32.extend([5, 6, 7, 8, 9]), rh.extend([5, 6, 7, 8, 9])
    assert (b - a).abs().max() < LOGIT_ATOL[fmt]


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
@pytest.mark.parametrize("prompt", CHAT)
def test_exact_methods_on_half_weights(half_pairs, fmt, prompt):
    ph = half_pairs[fmt]
    kw = dict(max_new_tokens=24, seed=3)
    ar0 = sprinter_ext.generate(ph, prompt, method="ar", temperature=0, **kw).tokens
    if fmt == "f16":  # the format's promise: fp32's greedy tokens
        assert ar0 == sprinter_ext.generate(half_pairs["fp32"], prompt, method="ar", temperature=0, **kw).tokens
    assert sprinter_ext.generate(ph, prompt, method="sd", temperature=0, k=3, **kw).tokens == ar0
    ar1 = sprinter_ext.generate(ph, prompt, method="ar", temperature=1.0, **kw).tokens
    assert sprinter_ext.generate(ph, prompt, method="ersd", temperature=1.0, k=3, **kw).tokens == ar1


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_16_bit_valued_weights_give_the_float32_runners_bits(fmt, family):
    """Weights that are already 16-bit values: the 16-bit runner equals the float32 one bit for
    bit (the kernels add in the float32 kernel's order), GPT-2's transposed Conv1D included."""
    dtype = torch.float16 if fmt == "f16" else torch.bfloat16
    draft = tiny_model(family, vocab=97, layers=1, hidden=64, seed=2)
    target = tiny_model(family, vocab=97, layers=2, hidden=64, seed=3)
    with torch.no_grad():
        for p in target.parameters():
            if p.dim() == 2:
                p.copy_(p.to(dtype).float())
    r32 = sprinter_ext.load_pair(draft, target).native_runner("target", 64)
    rh = sprinter_ext.load_pair(draft, target, weights=fmt).native_runner("target", 64)
    assert rh.linear_weight_bytes < 0.6 * r32.linear_weight_bytes
    a, b = r32.prefill(list(range(1, 12)))[0], rh.prefill(list(range(1, 12)))[0]
    assert torch.equal(a, b)
    for toks in ([5], [7, 8, 9], [1, 2, 3, 4, 5, 6]):
        assert torch.equal(r32.extend(toks)[0], rh.extend(toks)[0]), toks


def _half_tiny_pair(fmt: str, *, planted_bug: bool = False):
    """A vocab-8 pair whose target's float32 weights are `fmt` values (so storing them in 16
    bits changes nothing), the target's linears running 16-bit on the native fast path.
    planted_bug: the stored weights are other weights (each row's K columns reversed)."""
    dtype = torch.float16 if fmt == "f16" else torch.bfloat16
    target = tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)
    draft = tiny_model("llama", vocab=V, layers=1, hidden=32, seed=43, scale=1.0)
    with torch.no_grad():
        for p in target.parameters():
            if p.dim() == 2:
                p.copy_(p.to(dtype).float())
    pair = sprinter_ext.load_pair(draft, target, weights=fmt)
    if planted_bug:
        runner = sprinter_ext.load_pair(draft, target).native_runner("target", 16)
        pair._weight_sources["target"] = {n: runner.linear_weight(n).flip(1).to(dtype) for n in runner.linear_names}
    return pair


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_sd_is_exact_on_half_linears(fmt):
    pair = _half_tiny_pair(fmt)
    r32 = sprinter_ext.load_pair(pair._draft, pair._target).native_runner("target", 16)
    rh = pair.native_runner("target", 16)
    assert rh.linear_weight_bytes <= 0.51 * r32.linear_weight_bytes
    settings = SETTINGS["t1"]
    want = exact_joint(pair.target, settings)  # transformers over the float32 (16-bit valued) weights
    p = g_test_pvalue(sample_counts(pair, "sd", settings, 2, engine="native"), want)
    assert p > ALPHA, f"sd on {fmt} linears: G-test p={p:.2e}"
    # the twin: 16-bit weights that stand for other weights than the float32 model's must fail
    bad = _half_tiny_pair(fmt, planted_bug=True)
    p_bad = g_test_pvalue(sample_counts(bad, "sd", settings, 2, engine="native"), want)
    assert p_bad < ALPHA, f"the test has no power on {fmt} linears (p={p_bad:.2e})"


def test_half_formats_named_errors(default_pair):
    with pytest.raises(InvalidArgumentError, match="unknown weights format 'f8': one of fp32, gguf, f16, bf16, auto"):
        sprinter_ext.load_pair(weights="f8")
    with pytest.raises(InvalidArgumentError, match=r"weights='f16' stores a float32 target.*float32 activations"):
        sprinter_ext.load_pair(weights="f16", dtype="bfloat16")
    with pytest.raises(InvalidArgumentError, match="weights='bf16' stores a float32 target"):
        sprinter_ext.load_pair(weights="bf16", dtype=torch.float16)
    with pytest.raises(InvalidArgumentError, match="got torch.float32 on cuda: use device='cpu'"):
        sprinter_ext.load_pair(weights="f16", device="cuda")  # refused before anything loads
    # float16's range: a weight of 1e6 cannot be stored, bfloat16 can
    draft, target = tiny_model("llama", vocab=V, hidden=32), tiny_model("llama", vocab=V, hidden=32, seed=1)
    with torch.no_grad():
        target.model.layers[0].mlp.down_proj.weight[0, 0] = 1e6
    with pytest.raises(InvalidArgumentError, match=r"linear 'layers.0.down' has weights beyond torch.float16's range"):
        sprinter_ext.load_pair(draft, target, weights="f16").native_runner("target", 16)
    assert sprinter_ext.load_pair(draft, target, weights="bf16").native_runner("target", 16) is not None
    runner = sprinter_ext.load_pair(draft, target).native_runner("target", 16)
    assert runner.linear_names[-1] == "head" and runner.linear_names[0] == "layers.0.qkv"
    w = runner.linear_weight("layers.0.o")
    with pytest.raises(InvalidArgumentError, match=r"16-bit weight must be \[32, 32\]"):
        runner.store_linear16("layers.0.o", w[:, :16].half())
    with pytest.raises(InvalidArgumentError, match="float16 or bfloat16"):
        runner.store_linear16("layers.0.o", w.double())
    with pytest.raises(InvalidArgumentError, match="no linear 'layers.9.o'"):
        runner.store_linear16("layers.9.o", w.half())
