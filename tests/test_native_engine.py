"""engine='native': the C++ round loop (csrc/engine/engine.cpp) against the reference engine.

Token equality for every method lives in test_methods.py / test_sprinter.py (tiny
pairs); here: the default pair, reuse, threads, memory, errors and the bindings.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext._generation import native_generation
from sprinter_ext.decoding import NATIVE_METHODS
from sprinter_ext.errors import NonFiniteLogitsError
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_pair

PROMPT = [1, 5, 9, 2, 7]


def gen(pair, method, engine, **kw):
    kw.setdefault("eos_token_id", None)
    kw.setdefault("max_new_tokens", 24)
    return sprinter_ext.generate(pair, PROMPT, method=method, engine=engine, **kw)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_default_pair_native_equals_reference(default_pair, method):
    """The real SmolLM2 pair (tied head, restricted-vocab draft), sampled and greedy."""
    prompt = default_pair.tokenizer("def fib(n):", add_special_tokens=False).input_ids
    for seed, temperature in ((0, 1.0), (1, 0.0)):
        kw = dict(method=method, max_new_tokens=12, seed=seed, temperature=temperature, top_k=50, k=3)
        ref = sprinter_ext.generate(default_pair, prompt, engine="reference", **kw)
        nat = sprinter_ext.generate(default_pair, prompt, engine="native", **kw)
        assert nat.tokens == ref.tokens
        for key in ("target_calls", "draft_tokens", "accepted_tokens", "rounds"):
            assert nat.stats[key] == ref.stats[key], key


def test_decoder_reuse_and_stream(tiny):
    dec = sprinter_ext.Decoder(tiny, "sd", k=3, engine="native", eos_token_id=None)
    first = [dec.generate(PROMPT, max_new_tokens=20, seed=s).tokens for s in range(3)]
    again = [dec.generate(PROMPT, max_new_tokens=20, seed=s).tokens for s in range(3)]
    assert first == again
    assert list(dec.stream(PROMPT, max_new_tokens=20, seed=1)) == first[1]
    ref = sprinter_ext.Decoder(tiny, "sd", k=3, engine="reference", eos_token_id=None)
    assert ref.generate(PROMPT, max_new_tokens=20, seed=2).tokens == first[2]
    assert dec.generate(PROMPT, max_new_tokens=0).tokens == []


def test_one_generation_at_a_time_per_decoder(tiny):
    dec = sprinter_ext.Decoder(tiny, "ar", engine="native", eos_token_id=None)
    it = dec.stream(PROMPT, max_new_tokens=5, seed=0)
    next(it)
    with pytest.raises(sprinter_ext.DecoderBusyError, match="already generating"):
        dec.generate(PROMPT, max_new_tokens=2)
    assert len(list(it)) == 4
    dec.generate(PROMPT, max_new_tokens=2)  # free again


def test_threads_each_with_a_decoder():
    """Several threads, one Decoder each, at once: same tokens as one after another."""
    draft, target = tiny_pair("llama", vocab=97, draft_scale=0.5)
    pair = sprinter_ext.load_pair(draft, target)
    methods = ["ar", "sd", "ersd", "sd"]
    expected = [gen(pair, m, "reference", seed=i, k=2).tokens for i, m in enumerate(methods)]
    results, errors = [None] * len(methods), []

    def worker(i):
        try:
            dec = sprinter_ext.Decoder(pair, methods[i], k=2, engine="native", eos_token_id=None)
            results[i] = [dec.generate(PROMPT, max_new_tokens=24, seed=i).tokens for _ in range(5)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(methods))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for i, runs in enumerate(results):
        assert all(r == expected[i] for r in runs), methods[i]


def test_no_memory_growth_over_1000_generations():
    draft, target = tiny_pair("gpt2", vocab=61, hidden=16, heads=2, draft_scale=0.5)
    pair = sprinter_ext.load_pair(draft, target)
    dec = sprinter_ext.Decoder(pair, "sd", k=2, engine="native", eos_token_id=None, max_length=64)
    for s in range(200):  # warm the allocator and caches
        dec.generate(PROMPT, max_new_tokens=6, seed=s)
    gc.collect()
    before = _rss_bytes()
    for s in range(1000):
        dec.generate(PROMPT, max_new_tokens=6, seed=s)
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 2 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1000 generations"


def test_non_finite_logits_raise_the_named_error():
    draft, target = tiny_pair("llama", vocab=50)
    with torch.no_grad():
        target.get_output_embeddings().weight[3, 0] = float("nan")
    pair = sprinter_ext.load_pair(draft, target)
    for method in ("ar", "sd"):
        with pytest.raises(NonFiniteLogitsError, match="NaN/inf"):
            gen(pair, method, "native", max_new_tokens=4)


def test_errors_are_named(tiny, monkeypatch):
    C = _native._C
    with pytest.raises(TypeError, match="ModelRunner protocol"):
        C.PyRunner(object())
    runner = C.PyRunner(ModelRunner(tiny.target, 32))
    args = dict(target=runner, draft=None, k=1, temperature=1.0, top_k=0, top_p=1.0, eos=[], verifier_weights=[],
                verifier_biases=[], verifier_features=[], threshold=0.0, max_run=1, verify_all=False,
                prompt=[1], seed=0, max_new_tokens=2)  # fmt: skip
    with pytest.raises(ValueError, match="runs ar, sd, ersd and sprinter"):
        native_generation(method="beam", **args)
    with pytest.raises(ValueError, match="needs a draft runner"):
        native_generation(method="sd", **args)
    with pytest.raises(ValueError, match="prompt is empty"):
        native_generation(method="ar", **{**args, "prompt": []})
    # a Python error inside a runner call surfaces unchanged, through the GIL-free loop
    g = native_generation(method="ar", **{**args, "max_new_tokens": 40})
    with pytest.raises(sprinter_ext.errors.CacheOverflowError, match="static KV cache"):
        g.run()
    monkeypatch.setattr("sprinter_ext.decoding._native_available", lambda: False)
    with pytest.raises(ValueError, match="engine='native' is not available"):
        sprinter_ext.Decoder(tiny, "sd", engine="native")
    assert sprinter_ext.Decoder(tiny, "sd", engine="auto").engine == "reference"


def test_generation_object_rounds(tiny):
    """The bindings directly: round() by round() equals run(), stats add up."""
    C = _native._C
    t1, t2 = ModelRunner(tiny.target, 64), ModelRunner(tiny.target, 64)
    d1, d2 = ModelRunner(tiny.draft, 64), ModelRunner(tiny.draft, 64)
    common = dict(method="sd", k=3, temperature=1.0, top_k=0, top_p=1.0, eos=[], verifier_weights=[],
                  verifier_biases=[], verifier_features=[], threshold=0.0, max_run=1, verify_all=False,
                  prompt=PROMPT, seed=5, max_new_tokens=17)  # fmt: skip
    a = native_generation(C.PyRunner(t1), C.PyRunner(d1), **common)
    b = native_generation(C.PyRunner(t2), C.PyRunner(d2), **common)
    steps = []
    while not a.done:
        steps.append(a.round())
    assert a.round() == []
    assert [t for s in steps for t in s] == b.run()
    s = a.stats()
    assert s["new_tokens"] == 17 and s["rounds"] == len(steps) == s["target_calls"]
    assert t1.length == len(PROMPT) + 17 - 1  # the last committed token is pending, as in the reference


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_native_model_and_python_runners_agree(tiny, method):
    """The C++ loop over NativeModel (no Python per forward) and over PyRunner(ModelRunner)."""
    kw = {}
    if method == "sprinter":
        from sprinter_ext.verifier import Verifier

        kw = dict(verifier=Verifier(tiny.draft.config.get_text_config().hidden_size, hidden=(8,)), threshold=0.5)
    auto = sprinter_ext.Decoder(tiny, method, engine="native", eos_token_id=None, **kw)
    py = sprinter_ext.Decoder(tiny, method, engine="native", runner="python", eos_token_id=None, **kw)
    assert auto.runner == "native" and py.runner == "python"
    assert sprinter_ext.Decoder(tiny, method, engine="reference", **kw).runner == "python"
    for seed in range(3):
        a, b = auto.generate(PROMPT, max_new_tokens=20, seed=seed), py.generate(PROMPT, max_new_tokens=20, seed=seed)
        assert a.tokens == b.tokens and a.stats["runner"] == "native" and b.stats["runner"] == "python"
        assert a.stats["target_calls"] == b.stats["target_calls"]


def test_runner_option_errors(tiny):
    with pytest.raises(ValueError, match="unknown runner"):
        sprinter_ext.Decoder(tiny, "sd", runner="jax")
    draft, target = tiny_pair("llama", vocab=64)
    target.config.hidden_act = "sigmoid"  # an activation the C++ forward does not implement
    pair = sprinter_ext.load_pair(draft, target)
    with pytest.raises(ValueError, match="runner='native' cannot run this pair"):
        sprinter_ext.Decoder(pair, "sd", runner="native")
    assert sprinter_ext.Decoder(pair, "sd", engine="native").runner == "python"  # auto falls back


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the CUDA graphs and the CUDA ops)")
@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
def test_cuda_native_loop_with_graphs(method):
    """On a GPU: the native loop over CUDA-graph runners (captured once per Decoder) against
    the reference engine, greedy (robust to cuBLAS picking other kernels inside a graph),
    and same seed -> same tokens when sampling."""
    draft, target = tiny_pair("llama", vocab=97, draft_scale=0.5)
    pair = sprinter_ext.load_pair(draft.cuda(), target.cuda())
    dec = sprinter_ext.Decoder(pair, method, k=3, engine="native", temperature=0.0, eos_token_id=None)
    assert dec.engine == "native" and dec.runner == "native"
    ref = sprinter_ext.Decoder(pair, method, k=3, engine="reference", temperature=0.0, eos_token_id=None)
    for seed in range(3):
        assert dec.generate(PROMPT, max_new_tokens=24, seed=seed).tokens == \
            ref.generate(PROMPT, max_new_tokens=24, seed=seed).tokens  # fmt: skip
    hot = sprinter_ext.Decoder(pair, method, k=3, engine="native", eos_token_id=None)
    runs = [hot.generate(PROMPT, max_new_tokens=24, seed=7).tokens for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
