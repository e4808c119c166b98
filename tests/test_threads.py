"""The entry points' thread count: a documented default, overridable, restored; the library never sets it."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext._threads import DEFAULT_THREADS, ENV, available_cpus, default_threads, resolve_threads, use_threads
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError


def test_default_and_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert default_threads() == DEFAULT_THREADS == 1
    monkeypatch.setenv(ENV, "3")
    assert default_threads() == 3 and resolve_threads(None) == 3
    monkeypatch.setenv(ENV, "all")
    assert default_threads() == available_cpus()
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(InvalidArgumentError, match=ENV):
        default_threads()


def test_resolve_threads():
    assert resolve_threads(2) == 2 and resolve_threads("4") == 4
    assert resolve_threads(0) == resolve_threads("all") == available_cpus()
    with pytest.raises(InvalidArgumentError):
        resolve_threads(-1)
    with pytest.raises(ArgumentTypeError):
        resolve_threads(1.5)
    with pytest.raises(ArgumentTypeError):
        resolve_threads(True)


def test_use_threads_restores_even_on_error():
    before = torch.get_num_threads()
    other = 2 if before != 2 else 1
    with use_threads(other) as n:
        assert n == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with use_threads(other):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_generate_leaves_the_thread_count_alone(tiny, engine):
    before = torch.get_num_threads()
    for method in ("ar", "sd"):
        sprinter_ext.generate(tiny, [1, 2, 3], method=method, max_new_tokens=5, engine=engine)
        assert torch.get_num_threads() == before
