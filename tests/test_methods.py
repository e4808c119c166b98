"""Determinism and the equalities the randomness contract promises, on tiny GPT-2 and Llama pairs."""

from __future__ import annotations

import threading

import pytest

import sprinter_ext
from sprinter_ext.decoding import _native_available
from sprinter_ext.models.tiny import tiny_model

PROMPT = [3, 14, 15, 92, 65]
N = 24
SAMPLING = [dict(temperature=1.0), dict(temperature=0.8, top_k=20, top_p=0.9)]


def gen(pair, method, seed=0, **kw):
    kw.setdefault("eos_token_id", None)
    kw.setdefault("max_new_tokens", N)
    return sprinter_ext.generate(pair, PROMPT, method=method, seed=seed, **kw)


@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
@pytest.mark.parametrize("sampling", SAMPLING)
def test_same_seed_same_tokens(tiny, method, sampling):
    a = gen(tiny, method, seed=7, **sampling)
    dec = sprinter_ext.Decoder(tiny, method, eos_token_id=None, **sampling)
    b = dec.generate(PROMPT, max_new_tokens=N, seed=7)
    c = dec.generate(PROMPT, max_new_tokens=N, seed=7)  # reused, warm buffers
    assert a.tokens == b.tokens == c.tokens
    assert len(a.tokens) == N
    assert gen(tiny, method, seed=8, **sampling).tokens != a.tokens


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("seed", [0, 1])
def test_ersd_equals_ar_token_for_token(tiny, k, sampling, seed):
    ar = gen(tiny, "ar", seed=seed, **sampling).tokens
    assert gen(tiny, "ersd", seed=seed, k=k, **sampling).tokens == ar


def test_ersd_is_drafter_invariant(tiny):
    other = tiny_model("gpt2", vocab=128, seed=77, layers=1, scale=3.0)
    pair2 = sprinter_ext.load_pair(other, tiny.target)
    pair3 = sprinter_ext.load_pair(tiny.target, tiny.target)  # the perfect draft
    outs = [gen(p, "ersd", seed=4, k=3) for p in (tiny, pair2, pair3)]
    assert outs[0].tokens == outs[1].tokens == outs[2].tokens
    assert outs[2].stats["accepted_tokens"] == outs[2].stats["draft_tokens"] > 0


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_sd_equals_greedy_ar(tiny, k):
    ar = gen(tiny, "ar", temperature=0.0).tokens
    assert gen(tiny, "sd", k=k, temperature=0.0).tokens == ar
    assert gen(tiny, "ersd", k=k, temperature=0.0).tokens == ar


def test_stream_equals_generate_and_prefix_property(tiny):
    dec = sprinter_ext.Decoder(tiny, "sd", k=3, eos_token_id=None)
    full = dec.generate(PROMPT, max_new_tokens=N, seed=5).tokens
    assert list(dec.stream(PROMPT, max_new_tokens=N, seed=5)) == full
    assert dec.generate(PROMPT, max_new_tokens=9, seed=5).tokens == full[:9]
    assert dec.generate(PROMPT, max_new_tokens=0, seed=5).tokens == []


def test_eos_stops_and_is_included(tiny):
    ar = gen(tiny, "ar", seed=2).tokens
    eos = ar[6]
    first = ar.index(eos)
    for method in ("ar", "sd", "ersd"):
        kw = {"temperature": 0.0} if method == "sd" else {}
        ref = gen(tiny, "ar", seed=2, **kw).tokens
        eos_m = ref[6]
        out = gen(tiny, method, seed=2, eos_token_id=eos_m, **kw).tokens
        assert out == ref[: ref.index(eos_m) + 1]
    assert first <= 6


def test_stats_are_consistent(tiny):
    ar = gen(tiny, "ar")
    assert ar.stats["target_calls"] == ar.stats["new_tokens"] == N and ar.stats["draft_tokens"] == 0
    sd = gen(tiny, "sd", k=3)
    s = sd.stats
    assert s["method"] == "sd" and s["engine"] == "native" and s["new_tokens"] == N  # auto, built
    assert s["target_calls"] == s["rounds"] and s["draft_tokens"] == 3 * s["rounds"]
    assert 0 <= s["accepted_tokens"] <= s["draft_tokens"]
    assert s["accepted_tokens"] + s["rounds"] >= N  # each round commits accepted + 1 (last may be cut)
    same = gen(sprinter_ext.load_pair(tiny.target, tiny.target), "sd", k=3).stats
    assert same["accepted_tokens"] == same["draft_tokens"]  # p == q: every proposal passes
    assert same["target_calls"] == -(-N // 4)


def test_one_generation_at_a_time(tiny):
    dec = sprinter_ext.Decoder(tiny, "ar", eos_token_id=None)
    it = dec.stream(PROMPT, max_new_tokens=5, seed=0)
    next(it)  # holds the decoder
    with pytest.raises(sprinter_ext.DecoderBusyError, match="already generating"):
        dec.generate(PROMPT, max_new_tokens=2)
    rest = list(it)
    assert len(rest) == 4
    errors = []

    def worker(seed):
        try:
            sprinter_ext.Decoder(tiny, "sd", eos_token_id=None).generate(PROMPT, max_new_tokens=6, seed=seed)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors


@pytest.mark.parametrize("engine", ["fused", "native"])
@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
@pytest.mark.parametrize("sampling", SAMPLING + [dict(temperature=0.0)])
def test_engines_equal_reference(tiny, method, sampling, engine):
    """engine='fused' (sprinter_ext.ops) and 'native' (the C++ loop) give the reference
    engine's tokens and counts."""
    for seed in range(4):
        ref = gen(tiny, method, seed=seed, k=3, engine="reference", **sampling)
        other = gen(tiny, method, seed=seed, k=3, engine=engine, **sampling)
        assert other.tokens == ref.tokens
        assert other.stats["engine"] == engine and ref.stats["engine"] == "reference"
        assert sorted(other.stats) == sorted(ref.stats)
        for key in ("target_calls", "target_fed", "target_attended", "draft_calls", "draft_fed", "draft_tokens",
                    "accepted_tokens", "rounds", "new_tokens"):  # fmt: skip
            assert other.stats[key] == ref.stats[key], key
    assert sprinter_ext.Decoder(tiny, method).engine == "native"  # auto picks it when built


# -- the method registry and the engine choice ------------------------------------------


def test_registry_is_the_one_method_list():
    from sprinter_ext.cli import bench
    from sprinter_ext.decoding import NATIVE_METHODS, SNAPSHOT_METHODS
    from sprinter_ext.methods import METHODS, Method

    assert list(METHODS) == ["ar", "sd", "ersd", "sprinter", "ssd"]
    assert all(isinstance(m, Method) and m.name == name for name, m in METHODS.items())
    assert sprinter_ext.METHODS == tuple(sorted(METHODS)) and bench.ALL_METHODS == tuple(METHODS)
    assert NATIVE_METHODS == ("ar", "sd", "ersd", "sprinter") and SNAPSHOT_METHODS == ("ssd",)
    assert [m.name for m in METHODS.values() if not m.needs_draft] == ["ar"]
    assert [m.name for m in METHODS.values() if m.threaded] == ["ssd"]
    assert METHODS["sd"].lookahead_of({}, 3) == 3 and METHODS["sprinter"].lookahead_of({"max_run": 7}, 3) == 7


@pytest.mark.parametrize("kw, match", [(dict(engine="native"), "engine='native' is not available"),
                                       (dict(runner="native"), "runner='native' cannot run method 'ssd'")])  # fmt: skip
def test_unsupported_combination_is_refused_before_anything_runs(tiny, monkeypatch, kw, match):
    """ssd snapshots KV entries and has no C++ loop: its record says so, and generate/Decoder
    refuse engine='native' and runner='native' with a named error before any model is built."""
    from sprinter_ext.errors import InvalidArgumentError

    if not _native_available():
        pytest.skip("the compiled extension is not built")

    def no_model(role):
        raise AssertionError(f"a {role} model was built before the combination was refused")

    monkeypatch.setattr(tiny, "_model", no_model)
    with pytest.raises(InvalidArgumentError, match=match):
        sprinter_ext.generate(tiny, PROMPT, method="ssd", max_new_tokens=4, **kw)
    with pytest.raises(InvalidArgumentError, match=match):
        sprinter_ext.Decoder(tiny, "ssd", **kw)


def test_a_new_method_is_one_record(tiny, monkeypatch):
    """Adding one Method record makes a method usable by name on every engine its record
    allows, and refused on the others."""
    from sprinter_ext.errors import InvalidArgumentError
    from sprinter_ext.methods import METHODS, Method, ar

    monkeypatch.setitem(METHODS, "ar_copy", Method("ar_copy", ar.round, needs_draft=False, native=False))
    ref = gen(tiny, "ar", seed=3, engine="reference").tokens
    assert gen(tiny, "ar_copy", seed=3, engine="reference").tokens == ref
    out = gen(tiny, "ar_copy", seed=3)  # auto: no native loop for it, so fused when built
    assert out.tokens == ref and out.stats["engine"] != "native" and out.stats["method"] == "ar_copy"
    if _native_available():
        with pytest.raises(InvalidArgumentError, match="not 'ar_copy'"):
            sprinter_ext.Decoder(tiny, "ar_copy", engine="native")


@pytest.mark.parametrize("engine, threaded, uses_worker", [
    ("reference", None, False), ("fused", None, True), ("fused", False, False), ("reference", True, True)])  # fmt: skip
def test_ssd_threading_is_its_own_option(tiny, monkeypatch, engine, threaded, uses_worker):
    """threaded= picks where ssd's draft work runs; its default keeps engine='fused' threaded
    and 'reference' inline; tokens and counts are the same either way."""
    from sprinter_ext.methods import _ssd_worker

    calls = []
    real = _ssd_worker.worker_for
    monkeypatch.setattr(_ssd_worker, "worker_for", lambda lane: calls.append(1) or real(lane))
    base = gen(tiny, "sd", seed=2, k=2, engine="reference")
    kw = {} if threaded is None else {"threaded": threaded}
    out = gen(tiny, "ssd", seed=2, k=2, engine=engine, **kw)
    assert out.tokens == base.tokens and out.stats["accepted_tokens"] == base.stats["accepted_tokens"]
    assert out.stats["engine"] == engine
    assert bool(calls) == uses_worker


def test_ssd_threaded_must_be_a_bool(tiny):
    from sprinter_ext.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="threaded must be a bool"):
        sprinter_ext.Decoder(tiny, "ssd", threaded="yes")


def test_configure_changes_settings_of_a_warm_decoder(tiny):
    from sprinter_ext.errors import InvalidArgumentError

    dec = sprinter_ext.Decoder(tiny, "sd", k=3, temperature=1.0, eos_token_id=None)
    assert dec.lookahead == 3
    first = dec.generate(PROMPT, max_new_tokens=N, seed=1).tokens
    assert dec.configure(temperature=0.8, top_k=20) == sprinter_ext.sampling.SamplingSettings(0.8, 20, 1.0)
    assert dec.generate(PROMPT, max_new_tokens=N, seed=1).tokens == gen(tiny, "sd", seed=1, k=3, temperature=0.8,
                                                                         top_k=20).tokens  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="top_p"):
        dec.configure(top_p=2.0)
    assert dec.settings.top_p == 1.0 and dec.settings.top_k == 20  # a refused change changes nothing
    dec.configure(temperature=1.0, top_k=0)
    assert dec.generate(PROMPT, max_new_tokens=N, seed=1).tokens == first
    it = dec.stream(PROMPT, max_new_tokens=5, seed=0)
    next(it)
    with pytest.raises(sprinter_ext.DecoderBusyError):
        dec.configure(temperature=0.0)
    list(it)
    assert sprinter_ext.Decoder(tiny, "ssd", k=2).lookahead == 3  # k + 1: the bonus-candidate step
