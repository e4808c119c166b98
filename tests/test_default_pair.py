"""The embedded default pair (real SmolLM2 weights, offline): loading and the method equalities."""

from __future__ import annotations

import torch

import sprinter_ext
from sprinter_ext.flops import matmul_params

PROMPT = "The quick brown fox jumps over the lazy dog. The dog"
N = 12


def test_default_pair_loads(default_pair):
    p = default_pair
    assert p.tokenizer is not None and p.vocab_size == 49152
    assert p.draft.config.vocab_size == p.target.config.vocab_size
    assert p.draft.dtype == p.target.dtype == torch.float32
    assert matmul_params(p.draft) < matmul_params(p.target) / 4  # genuinely cheaper per token
    assert p.verifier is not None and p.verifier.meta["draft_id"] == p.draft.config.name_or_path


def test_ersd_equals_ar_and_greedy_sd_equals_ar(default_pair):
    ar = sprinter_ext.generate(default_pair, PROMPT, chat=False, method="ar", max_new_tokens=N, seed=3, eos_token_id=None)
    er = sprinter_ext.generate(default_pair, PROMPT, chat=False, method="ersd", max_new_tokens=N, seed=3, k=3, eos_token_id=None)
    assert er.tokens == ar.tokens and len(ar.tokens) == N
    assert isinstance(ar.text, str) and ar.text
    g_ar = sprinter_ext.generate(default_pair, PROMPT, chat=False, method="ar", max_new_tokens=N, temperature=0.0)
    g_sd = sprinter_ext.generate(default_pair, PROMPT, chat=False, method="sd", max_new_tokens=N, temperature=0.0, k=4)
    assert g_sd.tokens == g_ar.tokens


def test_same_seed_same_tokens(default_pair):
    dec = sprinter_ext.Decoder(default_pair, "sd", k=3, top_p=0.9)
    a = dec.generate(PROMPT, chat=False, max_new_tokens=N, seed=11)
    b = dec.generate(PROMPT, chat=False, max_new_tokens=N, seed=11)
    assert a.tokens == b.tokens and a.text == b.text


def test_shipped_draft_head_loads_and_is_lossless(default_pair):
    """The default pair's draft head (models/data/smollm2_head.safetensors): it is tied to
    this target, load_pair(draft="head") uses it, and the exact methods stay exact with it."""
    from sprinter_ext.models.default_pair import default_head_path

    assert default_head_path().is_file()
    hp = sprinter_ext.load_pair(draft="head")
    assert hp.draft_kind == "head" and hp.tokenizer is not None
    assert hp.draft.header["target"]["vocab_size"] == 49152 and hp.draft.header["command"]
    msgs = [{"role": "user", "content": "What is a Python list?"}]
    ar = sprinter_ext.generate(hp, msgs, method="ar", max_new_tokens=N, seed=3, eos_token_id=None)
    er = sprinter_ext.generate(hp, msgs, method="ersd", max_new_tokens=N, seed=3, k=4, eos_token_id=None)
    assert er.tokens == ar.tokens
    g_ar = sprinter_ext.generate(hp, msgs, method="ar", max_new_tokens=N, temperature=0.0)
    g_sd = sprinter_ext.generate(hp, msgs, method="sd", max_new_tokens=N, temperature=0.0, k=5)
    assert g_sd.tokens == g_ar.tokens and g_sd.stats["accepted_tokens"] > 0
    assert sprinter_ext.load_pair(draft="standalone").draft_kind == "standalone"
