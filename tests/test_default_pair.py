"""The embedded default pair (real SmolLM2 weights, offline): loading and the method equalities."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.flops import matmul_params

PROMPT = "The quick brown fox jumps over the lazy dog. The dog"
N = 12


def test_default_pair_loads_with_its_draft_head(default_pair):
    """load_pair() is the target with its draft head and the head's verifier (the head beat the
    standalone draft for sd and ersd on the main benchmark, README "The default pair")."""
    from sprinter_ext.models.default_pair import default_head_path
    from sprinter_ext.verifier import check_draft

    p = default_pair
    # the head, with the ngram lookup beside it for sd / ersd (README "The default pair")
    assert p.draft_kind == "head+ngram" and p.lookup_draft.kind == "ngram" and not p.model_free
    assert p.tokenizer is not None and p.vocab_size == 49152
    assert p.draft.header["target"]["vocab_size"] == 49152
    assert p.draft.header == sprinter_ext.load_pair(draft="head").draft.header
    assert str(default_head_path()).endswith("smollm2_head.safetensors")
    assert p.verifier is not None and p.verifier.input_size == p.draft.verifier_input_size
    check_draft(p.verifier, p.draft, p.vocab_size)


def test_standalone_pair_loads(standalone_pair):
    p = standalone_pair
    assert p.draft_kind == "standalone" and p.tokenizer is not None and p.vocab_size == 49152
    assert p.draft.config.vocab_size == p.target.config.vocab_size
    assert p.draft.dtype == p.target.dtype == torch.float32
    assert matmul_params(p.draft) < matmul_params(p.target) / 4  # genuinely cheaper per token
    assert p.verifier is not None and p.verifier.meta["draft_id"] == p.draft.config.name_or_path
    g_ar = sprinter_ext.generate(p, PROMPT, chat=False, method="ar", max_new_tokens=N, temperature=0.0)
    g_sd = sprinter_ext.generate(p, PROMPT, chat=False, method="sd", max_new_tokens=N, temperature=0.0, k=4)
    assert g_sd.tokens == g_ar.tokens


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
    assert sprinter_ext.load_pair().draft_kind == "head+ngram"


def test_shipped_head_verifier_belongs_to_the_shipped_head(default_pair):
    """load_pair(draft="head") attaches the head's own SPRINTER verifier
    (models/data/smollm2_head_verifier.safetensors): it reads the head's verifier state, was
    trained at temperatures 0 and 1, and SPRINTER runs with it at both."""
    from sprinter_ext.models.default_pair import default_head_verifier_path
    from sprinter_ext.verifier import Verifier, check_draft

    assert default_head_verifier_path().is_file()
    hp = sprinter_ext.load_pair(draft="head")
    v = hp.verifier
    assert isinstance(v, Verifier) and v.input_size == hp.draft.verifier_input_size
    check_draft(v, hp.draft, hp.vocab_size)
    assert sorted(v.meta["temperatures"]) == [0.0, 1.0] and v.meta["command"].startswith("python -m sprinter_ext")
    assert v.meta["metrics"]["auc"] > 0.7  # held-out texts of its training records
    # the standalone draft keeps its own verifier: neither fits the other draft
    assert sprinter_ext.load_pair(draft="standalone").verifier.input_size != v.input_size
    msgs = [{"role": "user", "content": "What is a Python list?"}]
    for t in (0.0, 1.0):
        out = sprinter_ext.generate(hp, msgs, method="sprinter", max_new_tokens=N, temperature=t, seed=4)
        assert len(out.tokens) > 0 and out.stats["target_calls"] >= 1


def test_chat_prompt_set_for_bench_and_sweep(default_pair, make_tiny_pair):
    """bench/sprinter-sweep --prompt-set chat: held-out instruction prompts through the
    target's chat template (never the training split's), and named errors for the rest."""
    from sprinter_ext.cli.bench import run_bench
    from sprinter_ext.data import prompt_set, split_documents
    from sprinter_ext.drafts.head_data import build_prompts
    from sprinter_ext.errors import InvalidArgumentError

    tok = default_pair.tokenizer
    chat = prompt_set(default_pair, "chat", 3)
    assert len(chat) == 3 and all(tok.decode(p).startswith("<|im_start|>") for p in chat)
    assert tok.decode(chat[0]).rstrip().endswith("<|im_start|>assistant")
    train = {tuple(p.ids) for p in build_prompts(tok, split_documents()[0])}
    assert not any(tuple(p) in train for p in chat)
    assert prompt_set(default_pair, "raw", 2, 16) == sprinter_ext.data.heldout_prompts(default_pair, 2, 16)
    with pytest.raises(InvalidArgumentError, match="prompt set must be one of"):
        prompt_set(default_pair, "poetry", 2)
    with pytest.raises(InvalidArgumentError, match="needs a pair with a tokenizer"):
        prompt_set(make_tiny_pair(), "chat", 2)
    res = run_bench(default_pair, methods=("ar", "sd"), prompts=1, max_new_tokens=3, hf=False,
                    engines=("native",), prompt_set="chat", progress=False)
    assert res["config"]["prompt_set"] == "chat" and res["config"]["prompt_tokens"] == [len(chat[0])]
    assert {r["method"] for r in res["rows"]} == {"ar", "sd"}
