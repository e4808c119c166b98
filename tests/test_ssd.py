"""ssd (speculative speculative decoding): bitwise KV snapshots, the speculation cache, sd
equality, losslessness, named errors and the worker thread's lifecycle."""

from __future__ import annotations

import gc
import math
import os
import threading

import pytest
import torch
from stats_helpers import ALPHA, SETTINGS, exact_joint, g_test_pvalue, sample_counts, small_pair

import sprinter_ext
from sprinter_ext.methods import _ssd_spec as spec
from sprinter_ext.methods._session import Session
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.ops import _verify_tokens as sd_rule  # SD's torch spec: the bug's site


# -- runner snapshot / restore ---------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_snapshot_restore_is_bitwise(family):
    """Restoring a slice after other continuations overwrote it gives the very logits the
    original continuation produced (what a speculation-cache hit relies on)."""
    runner = ModelRunner(tiny_model(family, vocab=64, seed=3), 48)
    runner.prefill([1, 2, 3, 4, 5])
    prefix = runner.snapshot(3, 5)
    a1, h1 = runner.extend([6, 7])
    a2, _ = runner.step(8)
    branch = runner.snapshot(5, 8)
    runner.truncate(3)
    runner.extend([9, 10, 11, 12, 13])  # another branch overwrites 3..7
    runner.truncate(3)
    runner.restore(3, prefix)
    assert runner.length == 5
    b1, g1 = runner.extend([6, 7])
    assert torch.equal(a1, b1) and torch.equal(h1, g1)
    runner.truncate(4)
    runner.step(1)  # overwrite 4 again
    runner.restore(3, prefix)
    runner.restore(5, branch)
    assert runner.length == 8
    c, _ = runner.step(2)
    runner.truncate(8)
    d, _ = runner.step(2)  # the same cache reached without restore
    assert torch.equal(c, d)
    assert torch.equal(runner.snapshot(5, 8)[0][0], branch[0][0])


def test_snapshot_restore_errors():
    runner = ModelRunner(tiny_model("llama", vocab=64), 16)
    with pytest.raises(RuntimeError, match="prefill"):
        runner.snapshot(0, 0)
    runner.prefill([1, 2, 3])
    with pytest.raises(ValueError, match="cannot snapshot"):
        runner.snapshot(2, 4)
    with pytest.raises(TypeError, match="start"):
        runner.snapshot(1.0, 2)
    snap = runner.snapshot(0, 3)
    with pytest.raises(ValueError, match="cannot restore"):
        runner.restore(4, snap)
    with pytest.raises(ValueError, match="snapshot of this runner"):
        runner.restore(0, snap + snap)
    runner.restore(1, snap)
    assert runner.length == 4


# -- helpers -----------------------------------------------------------------------------------
PROMPT = [3, 14, 15, 92, 65]
N = 20
SAMPLING = [dict(temperature=1.0), dict(temperature=0.0), dict(temperature=0.8, top_k=20, top_p=0.9)]


def gen(pair, method, seed=0, **kw):
    kw.setdefault("eos_token_id", None)
    kw.setdefault("max_new_tokens", N)
    return sprinter_ext.generate(pair, PROMPT, method=method, seed=seed, **kw)


def _workers() -> int:
    return sum(t.name == "sprinter-ssd-draft" for t in threading.enumerate())


# -- ssd(C=1) is sd; engines agree -------------------------------------------------------------
@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("k", [1, 3])
def test_ssd_without_saguaro_equals_sd(tiny, sampling, k):
    """C = 1: the speculation cache is pure speed, on both engines, hits or misses."""
    for seed in range(3):
        ref = gen(tiny, "sd", seed=seed, k=k, engine="reference", **sampling)
        for engine in ("reference", "fused"):
            out = gen(tiny, "ssd", seed=seed, k=k, engine=engine, budget=3, **sampling)
            assert out.tokens == ref.tokens, (engine, seed)
            for key in ("accepted_tokens", "rounds", "target_calls", "draft_tokens"):
                assert out.stats[key] == ref.stats[key], key


@pytest.mark.parametrize("c", [0.5, 0.0])
@pytest.mark.parametrize("sampling", [SAMPLING[0], SAMPLING[2]])
def test_reference_equals_threaded_with_saguaro(tiny, c, sampling):
    for seed in range(3):
        ref = gen(tiny, "ssd", seed=seed, k=3, engine="reference", saguaro_c=c, **sampling)
        fused = gen(tiny, "ssd", seed=seed, k=3, engine="fused", saguaro_c=c, **sampling)
        assert fused.tokens == ref.tokens
        assert fused.stats["accepted_tokens"] == ref.stats["accepted_tokens"]
        assert fused.stats["engine"] == "fused" and ref.stats["engine"] == "reference"


def test_tokens_do_not_depend_on_budget_or_timing(tiny):
    """Budget, fan-out, stop_early and pinning change which branches are cached, not tokens."""
    base = gen(tiny, "ssd", seed=5, k=2, engine="reference", saguaro_c=0.5, fanout=[1, 1, 1]).tokens
    for kw in (dict(budget=9, fanout=[1, 1, 1]), dict(stop_early=False, fanout=[1, 1, 1]),
               dict(pin=False, fanout=[1, 1, 1])):  # fmt: skip
        assert gen(tiny, "ssd", seed=5, k=2, engine="fused", saguaro_c=0.5, **kw).tokens == base


def test_saguaro_changes_the_proposal_not_the_law():
    q = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q2 = spec.saguaro(q, 0.5, 2)
    assert torch.allclose(q2, torch.tensor([0.2, 0.15, 0.2, 0.1]) / 0.65)
    assert spec.saguaro(q, 1.0, 2) is q and spec.saguaro(q, 0.5, 0) is q
    assert torch.allclose(spec.saguaro(q, 0.0, 3), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    only_top = torch.tensor([0.7, 0.3, 0.0])  # C = 0 would scale all the mass away: q is kept
    assert torch.equal(spec.saguaro(only_top, 0.0, 2), only_top)
    assert spec.saguaro_sizes([2, 0, 1, 5], 3) == [3, 0, 2]


# -- the cache: keys, bitwise branches, hit rate -----------------------------------------------
def _first_round(pair, k, c=1.0, budget=6, **sampling):
    """Decoder and session after one ssd round, before the driver syncs the lanes."""
    dec = sprinter_ext.Decoder(pair, "ssd", k=k, engine="reference", eos_token_id=None, budget=budget,
                               saguaro_c=c, **sampling)  # fmt: skip
    s = Session(target=dec._target, draft=dec._draft, settings=dec.settings, seed=11, k=k, seq=list(PROMPT),
                options=dec._options, end=len(PROMPT) + 30)  # fmt: skip
    s.target.prefill(PROMPT[:-1])
    s.draft.prefill(PROMPT[:-1])
    committed = dec._module.round(s)
    return dec, s, committed


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_cached_branches_are_bitwise_just_in_time_drafts(tiny, c):
    """Every cached proposal, key = (accepted length a, bonus token b), equals the proposal drafted
    just in time after that outcome: same tokens, bitwise the same q' and logits rows and KV."""
    k = 3
    dec, s, committed = _first_round(tiny, k, c, temperature=1.0)
    st = s.state["ssd"]
    rnd, cache = st["drafted"], st["cache"]
    assert st["key"] == (len(committed) - 1, committed[-1])
    assert len(cache) >= 4, "too little was speculated to test"
    L, lane = len(PROMPT), s.draft
    prefix, own = list(lane.tokens), lane.runner.snapshot(L, L + k - 1)  # the round's drafts d_1..d_{k-1}
    assert prefix == PROMPT + rnd.drafts[:-1]
    for (a, b), br in sorted(cache.items()):
        lane.runner.restore(L, own)
        lane.tokens[:] = prefix
        assert br.key == (a, b) and 0 <= a <= k
        if a < k:
            assert b != rnd.drafts[a]  # the residual is 0 at the rejected draft
        seq2 = list(PROMPT) + rnd.drafts[:a] + [b]
        lane.sync(seq2)  # what SD's lane sync leaves after this outcome
        assert len(lane.tokens) == br.base and lane.pending(seq2) == br.pending
        jit = spec.draft(s, lane, lane.pending(seq2), k, br.drafted.fan, c)
        assert jit.drafts == br.drafted.drafts and jit.start == br.drafted.start == L + a + 1
        assert torch.equal(jit.q, br.drafted.q) and torch.equal(jit.rows, br.drafted.rows)
        kv = lane.runner.snapshot(br.base, lane.runner.length)
        assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(kv, br.snap))


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_perfect_draft_greedy_hits_every_round(tiny, engine):
    """draft == target at temperature 0: every round accepts all k and the bonus is the draft's
    argmax at position k, so with a budget covering it every lookup hits."""
    same = sprinter_ext.load_pair(tiny.target, tiny.target)
    out = gen(same, "ssd", k=3, temperature=0.0, engine=engine, budget=8, stop_early=False, max_new_tokens=32)
    st = out.stats
    assert st["ssd_lookups"] >= 6 and st["hit_rate"] == 1.0
    assert st["mean_accepted"] == 3.0 and st["jit_draft_s"] > 0  # the first round drafts just in time
    assert out.tokens == gen(same, "ar", temperature=0.0, max_new_tokens=32).tokens


def test_stats(tiny):
    # stop_early=False: the worker finishes every speculation, so spec_draft_steps > 0 does not
    # depend on whether it got a core before the target's verification ended (with pin=False,
    # the default since the thread-hygiene change, it shares them)
    out = gen(tiny, "ssd", k=2, engine="fused", budget=3, stop_early=False)
    st = out.stats
    for key in ("ssd_lookups", "ssd_hits", "hit_rate", "mean_accepted", "target_waited_s", "jit_draft_s",
                "spec_branches", "spec_aborted", "spec_draft_steps", "target_calls"):  # fmt: skip
        assert key in st, key
    assert st["ssd_lookups"] == st["rounds"] - 1 and 0 <= st["ssd_hits"] <= st["ssd_lookups"]
    assert st["mean_accepted"] == pytest.approx(st["accepted_tokens"] / st["rounds"])
    assert st["draft_tokens"] == 2 * st["rounds"] and st["target_calls"] == st["rounds"]
    assert st["draft_calls"] >= st["spec_draft_steps"] > 0


# -- the fan-out plan --------------------------------------------------------------------------
def test_plan_is_the_greedy_geometric_optimum():
    k, r, alpha = 4, 1.0, 0.6
    slots = spec.plan(64, k, alpha, r, vocab=1000)
    fan = spec.fan_counts(slots, k)
    assert sum(fan) == 64 and len(set(slots)) == 64
    assert all(fan[a] >= fan[a + 1] for a in range(k - 1))  # decreasing in a before the last
    probs = spec.outcome_probs(k, alpha)
    assert sum(probs) == pytest.approx(1.0)
    w = [p ** (1 / (1 + r)) for p in probs]  # continuous optimum: 1 + F_a ~ P(a)^(1/(1+r))
    ideal = [(64 + k + 1) * x / sum(w) - 1 for x in w]
    assert all(abs(f - g) <= 1.0 for f, g in zip(fan, ideal)), (fan, ideal)
    # the exact discrete optimum of sum P(a) (1 + F_a)^-r: no single move improves it
    cost = lambda f: sum(p * (1 + x) ** -r for p, x in zip(probs, f))  # noqa: E731
    for i in range(k + 1):
        for j in range(k + 1):
            if i != j and fan[i] > 0:
                g = list(fan)
                g[i] -= 1
                g[j] += 1
                assert cost(g) >= cost(fan) - 1e-12
    # a given fan-out keeps its counts; slots ordered by gain, ties to the shorter length
    assert spec.plan(3, 2, 0.5, 1.0, vocab=8, fanout=[0, 2, 1]) == [(1, 1), (2, 1), (1, 2)]
    assert spec.fan_counts(spec.plan(100, 2, 0.5, 1.0, vocab=3), 2) == [2, 2, 3]  # capped by the vocab


def test_candidates_and_rank():
    row = torch.tensor([0.1, 3.0, 2.0, -1.0, 2.5])
    assert spec.candidates(row, 2, exclude=1) == [4, 2]
    assert spec.candidates(row, 3, exclude=None) == [1, 4, 2]
    assert spec.candidates(row, 0, exclude=None) == []
    assert spec.rank(row, 4, rejected=1) == 1 and spec.rank(row, 0, rejected=1) == 3
    e = spec.Estimate()
    assert e.accept_rate(None) == 0.5 and e.r(None) == 1.0 and e.accept_rate(0.9) == 0.9
    e2 = e.after(3, 3, None).after(0, 3, 1)
    assert (e2.accepted, e2.rejections, e2.ranks) == (3, 1, 1)
    assert e2.accept_rate(None) == pytest.approx(4 / 6) and e2.r(None) == pytest.approx(3 / (2 + math.log(1.5)))


# -- named errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(budget=0), ValueError, "budget must be >= 1"),
        (dict(budget=-3), ValueError, "budget must be >= 1"),
        (dict(budget=2.0), TypeError, "budget must be an int"),
        (dict(saguaro_c=-0.1), ValueError, "saguaro_c must be in"),
        (dict(saguaro_c=1.5), ValueError, "saguaro_c must be in"),
        (dict(saguaro_c=float("nan")), ValueError, "saguaro_c must be in"),
        (dict(saguaro_c="0.5"), TypeError, "saguaro_c must be a number"),
        (dict(fanout=[2, 2, 1], budget=4), ValueError, "more than budget=4"),
        (dict(fanout=[1, 1]), ValueError, "k \\+ 1 = 3 entries"),
        (dict(fanout=[1, -1, 1]), ValueError, ">= 0"),
        (dict(fanout=[0, 0, 0]), ValueError, "at least one"),
        (dict(fanout=[1, 0.5, 1]), TypeError, "ints"),
        (dict(fanout=3), TypeError, "list of k\\+1 ints"),
        (dict(fanout=[1000, 0, 0]), ValueError, "vocabulary"),
        (dict(accept_rate=1.2), ValueError, "accept_rate"),
        (dict(r=0.0), ValueError, "r must be > 0"),
        (dict(r=float("inf")), ValueError, "r must be"),
        (dict(stop_early=1), TypeError, "stop_early"),
        (dict(bogus=1), TypeError, "bogus"),
    ],
)  # fmt: skip
def test_named_errors_before_anything_runs(tiny, kw, err, match):
    before = _workers()
    with pytest.raises(err, match=match):
        sprinter_ext.Decoder(tiny, "ssd", k=2, **kw)
    with pytest.raises(err, match=match):
        gen(tiny, "ssd", k=2, **kw)
    assert _workers() == before


# -- the worker thread -------------------------------------------------------------------------
def test_no_leaked_threads_and_settings_restored(tiny):
    gc.collect()
    base, threads = threading.active_count(), torch.get_num_threads()
    aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    dec = sprinter_ext.Decoder(tiny, "ssd", k=2, engine="fused", eos_token_id=None)
    outs = [dec.generate(PROMPT, max_new_tokens=8, seed=i).tokens for i in range(6)]
    assert _workers() == 1  # one persistent thread per Decoder
    for i in range(6):
        gen(tiny, "ssd", seed=i, k=2, engine="fused", max_new_tokens=6)
    assert outs[0] == dec.generate(PROMPT, max_new_tokens=8, seed=0).tokens
    assert torch.get_num_threads() == threads
    if aff is not None:
        assert os.sched_getaffinity(0) == aff
    del dec
    gc.collect()
    assert threading.active_count() == base and _workers() == 0


def test_exceptions_surface_and_leave_no_thread(tiny, monkeypatch):
    gc.collect()
    base = threading.active_count()
    dec = sprinter_ext.Decoder(tiny, "ssd", k=2, engine="fused", eos_token_id=None, stop_early=False)
    good = dec.generate(PROMPT, max_new_tokens=10, seed=3).tokens

    real = spec.speculate
    calls = {"n": 0}

    def boom(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom in the draft thread")
        return real(*a, **kw)

    monkeypatch.setattr(spec, "speculate", boom)
    with pytest.raises(RuntimeError, match="boom in the draft thread"):
        dec.generate(PROMPT, max_new_tokens=10, seed=3)
    monkeypatch.setattr(spec, "speculate", real)

    def bad_target(self, drafts):
        raise FloatingPointError("target failed while the draft speculated")

    monkeypatch.setattr(Session, "target_rows", bad_target)
    with pytest.raises(FloatingPointError, match="while the draft speculated"):
        dec.generate(PROMPT, max_new_tokens=10, seed=3)
    monkeypatch.undo()
    assert dec.generate(PROMPT, max_new_tokens=10, seed=3).tokens == good  # the Decoder still works
    del dec
    gc.collect()
    assert threading.active_count() == base


# -- losslessness ------------------------------------------------------------------------------
# NOTE: 1200 seeds, not stats_helpers.SEEDS (2000), keeps each G-test under 20 s on one thread
# (an ssd generation also drafts the speculated branch). The power tests below use the same
# count: both planted bugs still give p < 1e-30 with it.
SSD_SEEDS = 1200


@pytest.fixture(scope="module")
def small():
    return small_pair()


@pytest.mark.parametrize("c,name", [(1.0, "t1"), (0.5, "t1"), (0.5, "topk_topp"), (0.0, "t1")])
def test_output_distribution_is_the_targets(small, c, name):
    settings = SETTINGS[name]
    counts = sample_counts(small, "ssd", settings, 2, engine="reference", seeds=SSD_SEEDS, saguaro_c=c, budget=2)
    p = g_test_pvalue(counts, exact_joint(small.target, settings))
    assert p > ALPHA, f"ssd C={c} {name}: G-test p={p:.2e}"


def test_the_test_has_power_against_saguaro_bugs(small, monkeypatch):
    """Sampling from q' but verifying with q (the classic Saguaro mistake) must fail the test."""
    real = spec.draft

    def wrong(s, lane, pending, k, fan, c, abort=None):
        d = real(s, lane, pending, k, fan, c, abort)
        d.q = torch.stack([s.probs(row) for row in d.rows])  # verify against the unmodified q
        return d

    monkeypatch.setattr(spec, "draft", wrong)
    settings = SETTINGS["t1"]
    counts = sample_counts(small, "ssd", settings, 2, engine="reference", seeds=SSD_SEEDS, saguaro_c=0.0, budget=2)
    p = g_test_pvalue(counts, exact_joint(small.target, settings))
    assert p < ALPHA, f"the biased ssd passed (p={p:.2e}): the test has no power"


def test_the_test_has_power_against_the_residual_bug(small, monkeypatch):
    monkeypatch.setattr(sd_rule, "residual", lambda p, q: p)
    settings = SETTINGS["t1"]
    counts = sample_counts(small, "ssd", settings, 2, engine="reference", seeds=SSD_SEEDS, budget=2)
    assert g_test_pvalue(counts, exact_joint(small.target, settings)) < ALPHA
