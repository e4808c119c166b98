"""SPRINTER decoding: the properties the issue requires, plus its named errors."""

from __future__ import annotations

import math

import pytest
from stats_helpers import ALPHA, SETTINGS, V, exact_joint, g_test_pvalue, sample_counts

import sprinter_ext
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.verifier import Verifier, VerifierMismatchError, train_verifier

PROMPT = [3, 1, 4, 1, 5]


@pytest.fixture(scope="module")
def verified_stat_pair(stat_pair, token_texts):
    """The vocab-8 pair with a verifier attached (a new ModelPair: the shared one stays bare)."""
    pair = sprinter_ext.load_pair(stat_pair.draft, stat_pair.target)
    pair.verifier = train_verifier(pair, token_texts(V, 24, 32), epochs=5, progress=False)
    return pair


@pytest.fixture(scope="module")
def pair(tiny, token_texts):
    p = sprinter_ext.load_pair(tiny.draft, tiny.target)
    p.verifier = train_verifier(p, token_texts(p.vocab_size, 24, 32), epochs=5, progress=False)
    return p


@pytest.mark.parametrize(
    "verify,threshold,max_run",
    [("flagged", 1.5, 20), ("all", 0.5, 4), ("all", -1.0, 3)],
)
def test_lossless_settings_match_the_target(verified_stat_pair, verify, threshold, max_run):
    """threshold > 1 (never accept) and verify='all' (any threshold) are lossless (native
    engine: no bug is planted, and test_engines_equal_reference holds the others to it)."""
    settings, pair = SETTINGS["t1"], verified_stat_pair
    counts = sample_counts(pair, "sprinter", settings, engine="native", verify=verify, threshold=threshold,
                           max_run=max_run)  # fmt: skip
    p = g_test_pvalue(counts, exact_joint(pair.target, settings))
    assert p > ALPHA, f"sprinter verify={verify} threshold={threshold}: G-test p={p:.2e}"


def gen(pair, seed=0, n=24, **kw):
    return sprinter_ext.generate(pair, PROMPT, method="sprinter", max_new_tokens=n, seed=seed,
                                 eos_token_id=None, **kw)  # fmt: skip


def test_threshold_above_one_is_sd_with_k1(pair):
    sd = sprinter_ext.generate(pair, PROMPT, method="sd", k=1, max_new_tokens=24, seed=2, eos_token_id=None)
    sp = gen(pair, seed=2, threshold=1.01)
    assert sp.tokens == sd.tokens and sp.stats["unchecked"] == 0
    assert sp.stats["flagged_runs"] == sp.stats["rounds"] == sp.stats["target_calls"]


@pytest.mark.parametrize("max_run", [1, 3, 7])
@pytest.mark.parametrize("threshold", [0.0, -2.0])
def test_threshold_at_or_below_zero_calls_target_once_per_max_run(pair, max_run, threshold):
    s = gen(pair, threshold=threshold, max_run=max_run).stats
    assert s["flagged_runs"] == 0
    assert s["draft_tokens"] == max_run * s["target_calls"]  # exactly one target call per max_run drafts
    assert s["target_calls"] == s["rounds"]
    assert s["target_calls"] <= math.ceil(24 / max_run)  # each round commits max_run or max_run + 1


@pytest.mark.parametrize("verify", ["flagged", "all"])
def test_same_seed_same_tokens(pair, verify):
    dec = sprinter_ext.Decoder(pair, "sprinter", verify=verify, eos_token_id=None, top_p=0.9)
    a = dec.generate(PROMPT, max_new_tokens=20, seed=9)
    b = dec.generate(PROMPT, max_new_tokens=20, seed=9)
    assert a.tokens == b.tokens and len(a.tokens) == 20
    assert list(dec.stream(PROMPT, max_new_tokens=20, seed=9)) == a.tokens


def test_greedy_all_mode_equals_greedy_ar(pair):
    ar = sprinter_ext.generate(pair, PROMPT, method="ar", max_new_tokens=20, temperature=0.0, eos_token_id=None)
    sp = gen(pair, n=20, verify="all", temperature=0.0, threshold=0.3)
    assert sp.tokens == ar.tokens


def test_bad_inputs(pair):
    bare = sprinter_ext.load_pair(pair.draft, pair.target)  # no verifier attached
    with pytest.raises(ValueError, match="needs a verifier"):
        sprinter_ext.generate(bare, PROMPT, method="sprinter")
    with pytest.raises(TypeError, match="Verifier"):
        gen(pair, verifier="v.safetensors")
    other = sprinter_ext.load_pair(tiny_model("llama", vocab=pair.vocab_size, seed=5), pair.target)
    with pytest.raises(VerifierMismatchError):
        sprinter_ext.generate(other, PROMPT, method="sprinter", verifier=pair.verifier)
    with pytest.raises(ValueError, match="threshold"):
        gen(pair, threshold=float("nan"))
    with pytest.raises(ValueError, match="max_run"):
        gen(pair, max_run=0)
    with pytest.raises(ValueError, match="verify mode"):
        gen(pair, verify="some")
    with pytest.raises(TypeError, match="takes no options"):
        sprinter_ext.generate(pair, PROMPT, method="sd", verifier=pair.verifier)
    assert isinstance(pair.verifier, Verifier)


@pytest.mark.parametrize("engine", ["fused", "native"])
@pytest.mark.parametrize("verify", ["flagged", "all"])
@pytest.mark.parametrize("threshold", [None, 0.3, 0.0])
def test_engines_equal_reference(pair, verify, threshold, engine):
    for seed in range(3):
        ref = gen(pair, seed=seed, verify=verify, threshold=threshold, engine="reference", top_k=40)
        other = gen(pair, seed=seed, verify=verify, threshold=threshold, engine=engine, top_k=40)
        assert other.tokens == ref.tokens
        assert other.stats["engine"] == engine and sorted(other.stats) == sorted(ref.stats)
        for key in ("target_calls", "draft_tokens", "accepted_tokens", "flagged_runs", "unchecked"):
            assert other.stats[key] == ref.stats[key], key
