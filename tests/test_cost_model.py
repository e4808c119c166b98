"""k="auto": the cost model's rule, its C++ twin, and exactness of sd / ersd under it."""

from __future__ import annotations

import random

import pytest
import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext.cost_model import CostModel, Profile, measure
from sprinter_ext.drafts.lookup import lookup_draft
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.models.tiny import tiny_pair
from sprinter_ext.sampling import SamplingSettings
from stats_helpers import ALPHA, V, decoder_counts, exact_joint, g_test_pvalue

_C = _native._C

# a target whose forwards over more tokens cost little more (verification pays), and one where
# they cost a lot (it never pays past one token)
CHEAP = Profile(tuple(10.0 + 0.5 * n for n in range(16)), 1.0)
STEEP = Profile(tuple(10.0 * (1 + n) for n in range(16)), 2.0)


def test_rule_by_hand():
    cm = CostModel(CHEAP, k_max=4)
    # prior 0.5 at every depth: E(k) = 2 - 0.5**k, time(k) = k + 10 + 0.5k
    rates = [1 / 10.0] + [(2 - 0.5**k) / (k * 1.0 + 10.0 + 0.5 * k) for k in range(1, 5)]
    assert cm.draft_length() == max(range(5), key=lambda k: (rates[k], -k))
    assert CostModel(STEEP, k_max=4).draft_length() == 0  # 1.5 / 22 < 1 / 10
    cm = CostModel(CHEAP, k_max=4)
    for _ in range(40):
        cm.observe(4, 4)  # every draft accepted: the longest length pays
    assert cm.draft_length() == 4 and cm.alpha(0, 1) > 0.9
    for _ in range(200):
        cm.observe(4, 0)  # nothing accepted: step aside
    assert cm.alpha(0, 1) < 0.06 and cm.draft_length() == 0
    assert cm.lookup_length(3, 2) > 0  # another bucket (match length 2) still has its prior


def test_steps_aside_then_probes():
    cm = CostModel(STEEP, k_max=4, probe_every=5)
    picks = [cm.draft_length() for _ in range(35)]
    # a probe after 5 idle rounds, then after 10, then 20: a draft that never pays costs ever less
    assert [i for i, k in enumerate(picks) if k] == [4, 14, 34]
    assert cm.interval[0] == 40
    cheap = CostModel(CHEAP, k_max=4, probe_every=5)
    cheap.interval[0] = 40
    assert cheap.draft_length() > 0 and cheap.interval[0] == 5  # choosing to draft resets the wait


def _drive(cm, rng, rounds=300):
    out = []
    for _ in range(rounds):
        if rng.random() < 0.5:
            k = cm.draft_length()
            m = 0
        else:
            m = rng.randint(0, 6)
            k = cm.lookup_length(rng.randint(0, 9), m)
        acc = min(k, int(rng.expovariate(0.7)))
        cm.observe(k, acc, m)
        out.append((k, round(cm.alpha(0, 1), 12), round(cm.alpha(min(max(m, 0), 4), 1), 12)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("profile", [CHEAP, STEEP, Profile((8.0, 8.6, 9.3, 10.5, 12.0), 0.7)])
def test_cpp_twin_chooses_the_same_lengths(seed, profile):
    py = CostModel(profile, k_max=6, prior=0.4, weight=3.0, decay=0.9, probe_every=7)
    cc = py.native()
    assert cc.k_max == py.k_max
    assert _drive(py, random.Random(seed)) == _drive(cc, random.Random(seed))


@pytest.mark.parametrize(
    "kwargs",
    [dict(k_max=0), dict(weight=0.0), dict(prior=1.5), dict(decay=0.0), dict(decay=1.2), dict(probe_every=0)],
)
def test_bad_settings_are_named_errors(kwargs):
    with pytest.raises(InvalidArgumentError):
        CostModel(CHEAP, **kwargs)
    if "k_max" not in kwargs or kwargs["k_max"] != 0:
        with pytest.raises(InvalidArgumentError):
            _C.CostModel(list(CHEAP.target_ms), CHEAP.draft_ms, **kwargs)


def test_bad_profiles_and_k_values(tmp_path):
    with pytest.raises(InvalidArgumentError):
        Profile((10.0,), 1.0)
    with pytest.raises(InvalidArgumentError):
        Profile((10.0, -1.0), 1.0)
    with pytest.raises(ArgumentTypeError):
        Profile((10.0, "x"), 1.0)
    d, t = tiny_pair(vocab=V)
    pair = sprinter_ext.load_pair(d, t)
    assert sprinter_ext.Decoder(pair, "ssd", k="auto").k == 2  # ssd plans a fixed k: "auto" is K_FIXED
    assert sprinter_ext.Decoder(pair, "ssd", k="auto").cost is None
    with pytest.raises((InvalidArgumentError, ArgumentTypeError)):
        sprinter_ext.Decoder(pair, "sd", k="fast")
    with pytest.raises(ArgumentTypeError, match="cost_profile"):
        sprinter_ext.Decoder(pair, "sd", k="auto", cost_profile=[1.0, 2.0])


def test_measured_profile_is_monotone():
    d, t = tiny_pair(vocab=64)
    pair = sprinter_ext.load_pair(d, t)
    dec = sprinter_ext.Decoder(pair, "sd", k=2, engine="native")
    prof = measure(dec._target.runner, dec._draft.runner, vocab=64, context=16, reps=2, ns=6)
    assert len(prof.target_ms) == 6 and prof.draft_ms > 0
    assert all(a <= b for a, b in zip(prof.target_ms, prof.target_ms[1:]))


PROMPT = [1, 5, 2, 7, 3, 1, 5, 2, 4, 6, 0, 3, 2, 6, 4, 1, 7, 0, 5]


@pytest.fixture(scope="module", params=["standalone", "ngram", "standalone+ngram"])
def pair(request):
    d, t = tiny_pair(vocab=V, seed=3)
    if request.param == "ngram":
        return sprinter_ext.load_pair(lookup_draft("ngram", max_n=3), t)
    if request.param == "standalone+ngram":  # a hybrid: the lookup or the draft model each round
        p = sprinter_ext.load_pair(d, t, lookup=lookup_draft("ngram", max_n=3))
        assert p.draft_kind == "standalone+ngram" and not p.model_free
        return p
    return sprinter_ext.load_pair(d, t)


@pytest.mark.parametrize("profile", [CHEAP, Profile((10.0, 10.5, 16.0, 30.0, 60.0), 1.5)])
def test_auto_keeps_greedy_and_same_seed_ersd_equal_to_ar(pair, profile):
    kw = dict(max_new_tokens=40, eos_token_id=None)
    ar0 = sprinter_ext.generate(pair, PROMPT, method="ar", temperature=0, **kw).tokens
    runs = {}
    for engine in ("reference", "native"):
        dec = sprinter_ext.Decoder(pair, "sd", k="auto", cost_profile=profile, engine=engine, eos_token_id=None)
        r = [dec.generate(PROMPT, max_new_tokens=40) for _ in range(3)]  # the estimates carry over
        assert all(x.tokens == ar0 for x in r)
        runs[engine] = [(x.stats["target_calls"], x.stats["draft_tokens"], x.stats["accepted_tokens"]) for x in r]
    assert runs["reference"] == runs["native"]  # the same lengths chosen on both engines
    fixed = {e: sprinter_ext.generate(pair, PROMPT, method="sd", temperature=0, k=3, engine=e, **kw)
             for e in ("reference", "native")}  # fmt: skip
    assert fixed["reference"].tokens == fixed["native"].tokens == ar0
    assert fixed["reference"].stats["draft_tokens"] == fixed["native"].stats["draft_tokens"]
    for seed in range(3):
        ar1 = sprinter_ext.generate(pair, PROMPT, method="ar", temperature=1.0, seed=seed, **kw).tokens
        for engine in ("fused", "native"):
            er = sprinter_ext.generate(pair, PROMPT, method="ersd", temperature=1.0, seed=seed, k="auto",
                                       engine=engine, cost_profile=profile, **kw)  # fmt: skip
            assert er.tokens == ar1


def test_generate_takes_k_auto(pair):
    r = sprinter_ext.generate(pair, PROMPT, method="sd", k="auto", max_new_tokens=8, cost_profile=CHEAP)
    assert len(r.tokens) >= 1


def _counts(dec, seeds=2000):
    return decoder_counts(dec, PROMPT, seeds)


def test_sd_with_auto_is_exact_and_a_peeking_rule_is_caught(pair):
    target = pair._target
    want = exact_joint(target, SamplingSettings(1.0), PROMPT)
    prof = Profile((10.0, 10.4, 10.9, 11.5), 0.0 if pair.model_free else 0.5)
    dec = sprinter_ext.Decoder(pair, "sd", k="auto", cost_profile=prof, temperature=1.0, eos_token_id=None,
                               engine="native")  # fmt: skip
    p = g_test_pvalue(_counts(dec), want)
    assert p > ALPHA, f"sd with k='auto' ({pair.draft_kind}): G-test p={p:.2e}"
    # the twin: a length that depends on the coin at the round's position (unseen target
    # randomness): draft only when the coin is large, i.e. when a draft would be rejected
    bad = sprinter_ext.Decoder(pair, "sd", k="auto", cost_profile=prof, temperature=1.0, eos_token_id=None,
                               engine="reference")  # fmt: skip
    session_cls = bad._engine._session

    def peeking(ids, seed, settings, *args):
        s = session_cls(ids, seed, settings, *args)
        from sprinter_ext import _rng

        class Peeking:  # the cost model's interface, deciding from the round's own coin
            def _n(self, n):
                u = float(_rng.uniform(seed, s.position, _rng.Stream.COIN, 1)[0])
                return min(n, 1) if u > 0.25 else 0

            def draft_choice(self):
                return self._n(1), 1.0

            def draft_length(self):
                return self._n(1)

            def lookup_choice(self, proposed, match_length):
                return self._n(proposed), 1.0

            def observe(self, *args):
                pass

            def reset(self):
                pass

        s.cost = Peeking()
        return s

    bad._engine._session = peeking
    p_bad = g_test_pvalue(_counts(bad), want)
    assert p_bad < ALPHA, f"the test has no power against a peeking length rule (p={p_bad:.2e})"
