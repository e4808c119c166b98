"""The default pair's fast start (models/fast_pair.py, models/fast_tokenizer.py): same tensors,
same tokens, same tokenizer output as the transformers path, and no transformers import on the way
to the first token."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import ChecksumError
from sprinter_ext.models import default_pair as dp
from sprinter_ext.models import native
from sprinter_ext.models.fast_pair import TensorModel
from sprinter_ext.models.fast_tokenizer import FastTokenizer
from sprinter_ext.verifier.io import draft_identity

ROOT = Path(__file__).resolve().parents[1]


def fresh_lazy_pair(**kw):
    pair = sprinter_ext.load_pair(**kw)
    if pair._source is None:  # this call converted the GGUF (the first load); now it is cached
        pair = sprinter_ext.load_pair(**kw)
    assert pair._source is not None
    return pair


@pytest.fixture(scope="module")
def lazy_pair():
    """A fresh default target + standalone draft pair, whose stand-ins for both models the tests
    below check (its models are built by them, not shared with others)."""
    return fresh_lazy_pair(draft="standalone")


@pytest.fixture(scope="module")
def hf_tokenizer(lazy_pair):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(lazy_pair._source.directory), local_files_only=True)


@pytest.mark.parametrize("draft", ["standalone", "head"])
def test_cold_process_needs_no_transformers(lazy_pair, draft):
    """A new process loads the pair (standalone draft or the shipped head) and generates with
    the native engine without importing transformers; the repr does not build the models either."""
    code = (
        "import sys, sprinter_ext\n"
        f"pair = sprinter_ext.load_pair(draft={draft!r})\n"
        "r = sprinter_ext.generate(pair, 'The tide', method='sd', max_new_tokens=4, seed=0)\n"
        "text = repr(pair)\n"
        "print(r.stats['engine'], r.stats['runner'], 'transformers' in sys.modules, pair._source.built('target') is None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["native", "native", "False", "True"]


def test_lazy_head_pair_equals_the_built_one():
    """The shipped head over the lazy target's stand-in: the same tokens as over the built
    transformers target (native runner, bitwise: same tensors and path), the identity check
    passes on the stand-in, and only the python runner builds the model."""
    pair = sprinter_ext.load_pair(draft="head")
    assert pair._source is not None and pair.draft_kind == "head"
    prompt = [{"role": "user", "content": "Name three rivers."}]
    kw = dict(method="sd", k=2, max_new_tokens=12, seed=3)
    lazy = [sprinter_ext.generate(pair, prompt, temperature=t, **kw).tokens for t in (0.0, 1.0)]
    assert pair._source.built("target") is None
    greedy_ref = sprinter_ext.generate(pair, prompt, temperature=0.0, engine="reference", runner="python", **kw).tokens
    assert pair._source.built("target") is not None
    assert [sprinter_ext.generate(pair, prompt, temperature=t, **kw).tokens for t in (0.0, 1.0)] == lazy
    assert greedy_ref == lazy[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tensor_models_equal_the_transformers_models(lazy_pair, dtype):
    if dtype != torch.float32:
        lazy_pair = fresh_lazy_pair(draft="standalone", dtype=dtype, verifier=False)
    src = lazy_pair._source
    for role in ("target", "draft"):
        view = getattr(src, role)
        assert isinstance(view, TensorModel) and lazy_pair._view(role) is view
        model = lazy_pair._model(role)  # builds it
        assert lazy_pair._view(role) is model and type(model).__name__ == "LlamaForCausalLM"
        cfg, tensors = native._config_and_tensors(model, 96)
        assert view.native_config(96) == cfg
        mine = view.native_tensors()
        assert sorted(mine) == sorted(tensors)
        for k, t in tensors.items():
            assert mine[k].dtype == t.dtype and torch.equal(mine[k], t), f"{role} {k}"
        names = [(n, p) for n, p in model.named_parameters()]
        assert [n for n, _ in view.named_parameters()] == [n for n, _ in names]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(view.named_parameters(), names))
        assert draft_identity(view) == draft_identity(model)
        assert view.generation_config.eos_token_id == model.generation_config.eos_token_id
        assert view.config.max_position_embeddings == model.config.max_position_embeddings


@pytest.mark.parametrize("method", ["sd", "sprinter"])
def test_lazy_native_tokens_equal_transformers_runner(method):
    """Tokens from the stand-ins (before any transformers model exists) equal those of the
    same native runner over the built transformers models (bitwise: same tensors, same path)
    and, greedy, those of the Python runner (transformers' forward), for two seeds."""
    pair = fresh_lazy_pair()
    prompt = "def fib(n):\n    "
    cases = ((1, 1.0), (7, 0.0))

    def run(**kw):
        return [sprinter_ext.generate(pair, prompt, chat=False, method=method, max_new_tokens=10, seed=s,
                                      temperature=t, **kw).tokens for s, t in cases]

    lazy = run()
    assert pair._source.built("target") is None and pair._source.built("draft") is None
    slow = run(engine="reference", runner="python")
    assert pair._source.built("target") is not None
    assert run() == lazy  # now over the built models
    assert lazy[1] == slow[1]  # greedy: the fast path's tolerance does not flip an argmax here


def test_every_native_builder_takes_the_fast_path_on_the_cpu(lazy_pair):
    """The stand-ins' runners, like native.native_runner's, run the CPU fast path unless told
    not to (the C++ default without the key is op for op: the default pair's benchmark ran
    that, 1.2-2x slower per step, until the stand-ins passed it)."""
    view = lazy_pair._source.target
    assert view.native_runner(32).fast is True
    assert view.native_runner(32, fast=False).fast is False
    with pytest.raises(sprinter_ext.errors.ArgumentTypeError, match="fast must be a bool"):
        view.native_runner(32, fast=1)
    assert native.native_runner(lazy_pair._model("target"), 32).fast is True


def test_fast_tokenizer_matches_transformers(lazy_pair, hf_tokenizer):
    from pydoc_data.topics import topics

    fast, hf = lazy_pair.tokenizer, hf_tokenizer
    assert isinstance(fast, FastTokenizer)
    assert len(fast) == len(hf)
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(fast, name) == getattr(hf, name) and getattr(fast, name + "_id") == getattr(hf, name + "_id")
    texts = list(topics.values())[::40] + ["héllo wörld ✓ 日本語 🙂", " lead", "a<|im_end|>b", ""]
    for t in texts:
        for special in (True, False):
            assert fast(t, add_special_tokens=special).input_ids == hf(t, add_special_tokens=special).input_ids
            assert fast.encode(t, add_special_tokens=special) == hf.encode(t, add_special_tokens=special)
    rng = random.Random(5)
    for _ in range(100):
        ids = [rng.randrange(len(hf)) for _ in range(rng.randrange(0, 30))] + [rng.randrange(4)]
        for skip in (True, False):
            assert fast.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert fast.decode(torch.tensor([28, 905])) == hf.decode([28, 905])


def test_fast_chat_template_matches_transformers(lazy_pair, hf_tokenizer):
    fast, hf = lazy_pair.tokenizer, hf_tokenizer
    chats = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "é, 日本?"}],
    ]  # fmt: skip
    for chat in chats:
        for gen in (True, False):
            kw = dict(add_generation_prompt=gen)
            assert fast.apply_chat_template(chat, tokenize=False, **kw) == hf.apply_chat_template(chat, tokenize=False, **kw)
            assert fast.apply_chat_template(chat, **kw)["input_ids"] == hf.apply_chat_template(chat, **kw)["input_ids"]
            got = fast.apply_chat_template(chat, return_dict=False, **kw)
            assert got == hf.apply_chat_template(chat, return_dict=False, **kw)
    # anything else is answered by the transformers tokenizer itself
    assert fast.apply_chat_template(chats[0], tokenize=False, continue_final_message=True) == hf.apply_chat_template(
        chats[0], tokenize=False, continue_final_message=True
    )
    assert fast.convert_ids_to_tokens([1, 2]) == hf.convert_ids_to_tokens([1, 2])  # forwarded


def test_repr_is_short_and_lazy():
    pair = fresh_lazy_pair(draft="standalone")
    text = repr(pair)
    assert "\n" not in text and len(text) < 400, text
    for part in ("SmolLM2-135M-Instruct", "smollm2-draft", "cpu", "float32", "49152", "verifier 576", "30 layers"):
        assert part in text, (part, text)
    assert pair._source.built("target") is None and pair._source.built("draft") is None
    pair = fresh_lazy_pair()  # the default: the draft head
    text = repr(pair)
    assert "\n" not in text and len(text) < 400, text
    for part in ("SmolLM2-135M-Instruct", "DraftHead", "draft head", "float32", "49152", "verifier 578"):
        assert part in text, (part, text)
    assert pair.draft_kind == "head+ngram" and pair._source.built("target") is None


def test_repr_of_tiny_pair(tiny):
    text = repr(tiny)
    assert text.startswith("ModelPair(") and "\n" not in text and "vocab 128" in text and "verifier none" in text


def test_cache_stamp_checks_size_and_mtime(tmp_path):
    for name in dp._STAMPED:
        (tmp_path / name).write_text("x" * 10)
    assert not dp.check_cache_stamp(tmp_path)  # no stamp: not converted yet
    (tmp_path / "sprinter_ext.json").write_text(json.dumps({"format": 1}))
    assert dp.check_cache_stamp(tmp_path)  # an old stamp gets the file stamps ...
    assert "files" in json.loads((tmp_path / "sprinter_ext.json").read_text())
    assert dp.check_cache_stamp(tmp_path)
    (tmp_path / "model.safetensors").write_text("y" * 11)  # ... and a changed file is caught
    with pytest.raises(ChecksumError, match="model.safetensors"):
        dp.check_cache_stamp(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ChecksumError, match="incomplete"):
        dp.check_cache_stamp(tmp_path)


def test_import_is_lazy():
    """`import sprinter_ext` (and its version, errors) costs no torch import; the API loads on use."""
    code = (
        "import sys, sprinter_ext\n"
        "before = 'torch' in sys.modules\n"
        "v, e = sprinter_ext.__version__, sprinter_ext.SprinterError\n"
        "from sprinter_ext import load_pair, Decoder, METHODS\n"
        "print(before, 'torch' in sys.modules, 'sd' in METHODS, callable(load_pair))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sprinter_ext.nonsense  # noqa: B018
