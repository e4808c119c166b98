"""The entry points' thread count: a documented default, overridable, restored; the library never sets it
(ssd takes the caller's threads and affinity only when asked to pin, and restores them)."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext._threads import DEFAULT_THREADS, ENV, available_cpus, default_threads, resolve_threads, use_threads
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError


def test_default_and_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert DEFAULT_THREADS is None and default_threads() == torch.get_num_threads()  # torch's own count
    with use_threads(3):
        assert default_threads() == 3  # whatever torch has now: the entry points leave it alone
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


def _process_state():
    """This thread's intra-op count and CPU affinity, and the count a thread started now gets
    (torch's process-wide default, which torch.set_num_threads in any thread overwrites)."""
    import os
    import threading

    fresh = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return torch.get_num_threads(), aff, fresh[0]


@pytest.mark.parametrize("pin", [False, True])
@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_ssd_leaves_threads_and_affinity_as_found(tiny, engine, pin):
    """ssd (threaded or not, pinned or not) leaves the caller's thread count, its CPU affinity
    and the default for new threads as it found them: after the call, between rounds, and after
    a generation that raises."""
    with use_threads(2):
        before = _process_state()
        kw = dict(k=2, engine=engine, threaded=True, pin=pin, eos_token_id=None)
        out = sprinter_ext.generate(tiny, [1, 2, 3], method="ssd", max_new_tokens=6, **kw)
        assert len(out.tokens) == 6 and _process_state() == before
        dec = sprinter_ext.Decoder(tiny, "ssd", **kw)
        during, extend = [], dec._target.runner.extend

        def probed(tokens):  # the target's verification forward, while the draft speculates
            during.append(_process_state())
            return extend(tokens)

        dec._target.runner.extend = probed
        for _ in dec.stream([1, 2, 3], max_new_tokens=6):
            assert _process_state() == before  # also between rounds
        assert _process_state() == before
        assert during and (pin or all(d == before for d in during))  # unpinned: not even taken in a round
        if pin and before[1] is not None and len(before[1]) >= 2:
            assert all(d[1] < before[1] for d in during)  # pinned: the caller's thread on its share

        def boom(tokens):
            raise RuntimeError("planted failure in the target's verification")

        dec._target.runner.extend = boom  # the verification forward of every round
        with pytest.raises(RuntimeError, match="planted failure"):
            dec.generate([1, 2, 3], max_new_tokens=6)
        assert _process_state() == before


def test_native_parallel_loops_use_the_threads_torch_is_given():
    """at::parallel_for compiled into _C (PackedLinear, the native model, the C++ head) runs
    on torch's OpenMP pool: a build without -fopenmp ran it on one thread whatever
    torch.set_num_threads said. Counts the distinct worker threads, so it cannot pass
    by timing luck."""
    _C = pytest.importorskip("sprinter_ext._C")
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's parallel backend is not OpenMP")
    assert _C.build_info()["openmp"] is True
    with use_threads(1):
        assert _C.parallel_workers(64) == 1
    with use_threads(2):
        assert _C.parallel_workers(64) == 2
    with pytest.raises(ValueError):
        _C.parallel_workers(0)
