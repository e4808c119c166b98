"""load_pair(weights=): the native fast path over the GGUF file's own Q4_1 / Q8_0 blocks.

The blocks must stand for exactly the float32 weights transformers dequantises (so that
prefill, the reference engine and the fast path run one model): checked matrix by matrix on
the shipped GGUF; the quantised runner's logits against the float32 runner's; exact methods
stay exact on it (greedy sd == ar, same-seed ersd == ar on the default pair; a G-test with a
planted-bug twin on a tiny pair whose target runs quantised); bad values get named errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.models import weight_formats
from sprinter_ext.models.tiny import tiny_model
from stats_helpers import ALPHA, PROMPT, SETTINGS, V, exact_joint, g_test_pvalue, sample_counts

_C = _native._C
CHAT = [[{"role": "user", "content": "Name three uses of a paperclip."}],
        [{"role": "user", "content": "Explain what a hash map is in two sentences."}]]  # fmt: skip


@pytest.fixture(scope="module")
def gguf_pairs(default_pair):
    return sprinter_ext.load_pair(weights="fp32"), default_pair


def test_gguf_blocks_are_the_float32_models_weights(default_pair):
    from sprinter_ext.models.default_pair import find_gguf

    target = default_pair._view("target")
    params = dict(target.named_parameters())
    blocks = weight_formats.gguf_blocks(find_gguf(), target.config)
    assert len(blocks) == 1 + 7 * target.config.num_hidden_layers  # every matrix, q/k un-permuted
    for name, (fmt, b) in blocks.items():
        assert torch.equal(_C.QuantLinear(b, fmt).dequantize(), params[name].detach()), name


def test_gguf_runner_logits_and_bytes(gguf_pairs):
    p32, pq = gguf_pairs
    r32, rq = p32.native_runner("target", 256), pq.native_runner("target", 256)
    assert rq.linear_weight_bytes < 0.25 * r32.linear_weight_bytes
    ids = list(range(200, 237))
    for r in (r32, rq):
        r.prefill(ids)
    for tok in (11, 3000, 17):
        (a, _), (b, _) = r32.step(tok), rq.step(tok)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-5)
    (a, _), (b, _) = r32.extend([5, 6, 7, 8, 9]), rq.extend([5, 6, 7, 8, 9])
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("prompt", CHAT)
def test_exact_methods_on_gguf_weights(gguf_pairs, prompt):
    p32, pq = gguf_pairs
    kw = dict(max_new_tokens=24, seed=3)
    ar0 = sprinter_ext.generate(pq, prompt, method="ar", temperature=0, **kw).tokens
    assert ar0 == sprinter_ext.generate(p32, prompt, method="ar", temperature=0, **kw).tokens
    assert sprinter_ext.generate(pq, prompt, method="sd", temperature=0, k=3, **kw).tokens == ar0
    ar1 = sprinter_ext.generate(pq, prompt, method="ar", temperature=1.0, **kw).tokens
    assert sprinter_ext.generate(pq, prompt, method="ersd", temperature=1.0, k=3, **kw).tokens == ar1


def _quantised_tiny_pair(fmt: str, *, planted_bug: bool = False):
    """A vocab-8 pair whose target's matrices are `fmt` blocks (and its float32 weights their
    dequantisation), the target running those blocks on the native fast path. planted_bug:
    the blocks stand for other weights (Q4_1 nibble halves swapped, Q8_0 quants negated)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    kind = GGMLQuantizationType[fmt.upper()]
    target = tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)
    draft = tiny_model("llama", vocab=V, layers=1, hidden=32, seed=43, scale=1.0)
    blocks = {}
    with torch.no_grad():
        for name, p in target.named_parameters():
            if p.dim() == 2 and "embed" not in name and p.shape[1] % 32 == 0:
                q = quantize(p.numpy(), kind)
                p.copy_(torch.from_numpy(dequantize(q, kind)))
                b = torch.from_numpy(q.copy())
                if planted_bug:
                    b = b.view(b.shape[0], -1, 20 if fmt == "q4_1" else 34)
                    if fmt == "q4_1":
                        b[:, :, 4:] = (b[:, :, 4:] << 4) | (b[:, :, 4:] >> 4)
                    else:
                        b[:, :, 2:] = (-(b[:, :, 2:].view(torch.int8).int())).clamp(-128, 127).to(torch.int8).view(torch.uint8)
                    b = b.reshape(b.shape[0], -1)
                blocks[name] = (fmt, b)
    pair = sprinter_ext.load_pair(draft, target)
    pair.weights, pair._weight_sources["target"] = "gguf", blocks
    return pair


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_sd_is_exact_on_quantised_linears(fmt):
    pair = _quantised_tiny_pair(fmt)
    r32 = sprinter_ext.load_pair(pair._draft, pair._target).native_runner("target", 16)
    assert pair.native_runner("target", 16).linear_weight_bytes < 0.5 * r32.linear_weight_bytes
    settings = SETTINGS["t1"]
    want = exact_joint(pair.target, settings)  # transformers over the dequantised float32 weights
    p = g_test_pvalue(sample_counts(pair, "sd", settings, 2, engine="native"), want)
    assert p > ALPHA, f"sd on {fmt} linears: G-test p={p:.2e}"
    # the twin: blocks that stand for other weights than the float32 model's must fail
    bad = _quantised_tiny_pair(fmt, planted_bug=True)
    p_bad = g_test_pvalue(sample_counts(bad, "sd", settings, 2, engine="native"), want)
    assert p_bad < ALPHA, f"the test has no power on {fmt} linears (p={p_bad:.2e})"


def test_bad_weights_values_are_named_errors(default_pair):
    assert default_pair.weights == "gguf"  # "auto": the default pair runs its GGUF blocks
    with pytest.raises(InvalidArgumentError, match="unknown weights format 'q5': one of fp32, gguf, f16, bf16, auto"):
        sprinter_ext.load_pair(weights="q5")
    with pytest.raises(ArgumentTypeError, match="weights must be a str"):
        sprinter_ext.load_pair(weights=4)
    draft, target = tiny_model("llama", vocab=V, hidden=32), tiny_model("llama", vocab=V, hidden=32, seed=1)
    with pytest.raises(InvalidArgumentError, match="needs a target loaded from a .gguf file"):
        sprinter_ext.load_pair(draft, target, weights="gguf")
    assert sprinter_ext.load_pair(draft, target).weights == "fp32"  # auto: nothing to read
    with pytest.raises(InvalidArgumentError, match="float32 activations"):
        sprinter_ext.load_pair(weights="gguf", dtype="bfloat16")
    assert sprinter_ext.load_pair(dtype="bfloat16").weights == "fp32"
    assert weight_formats.parse_weights(None) == weight_formats.DEFAULT == "auto"
    assert weight_formats.parse_weights("GGUF") == "gguf"
