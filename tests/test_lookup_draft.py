"""The model-free drafts ("ngram"; "suffix" through the engines, its tree in test_suffix_draft.py):
the ngram rule, C++ == Python, the engines, exactness, named errors."""

from __future__ import annotations

import random

import pytest
import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext.drafts.lookup import LookupLane, NgramProposer, lookup_draft
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings
from stats_helpers import ALPHA, V, decoder_counts, exact_joint, g_test_pvalue

_C = _native._C

# every one of the V ids appears earlier with a continuation, so a 1-gram always matches
PROMPT = [1, 5, 2, 7, 3, 1, 5, 2, 4, 6, 0, 3, 2, 6, 4, 1, 7, 0, 5]


def _stream(seed: int, n: int, vocab: int) -> list[int]:
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < n:  # phrases that repeat, as text does, plus noise
        if out and rng.random() < 0.5:
            start = rng.randrange(len(out))
            out.extend(out[start : start + rng.randint(1, 6)])
        else:
            out.append(rng.randrange(vocab))
    return out[:n]


def test_rule_longest_match_first_and_most_recent():
    p = NgramProposer(min_n=1, max_n=3)
    #          0  1  2  3  4  5  6  7  8  9
    seq = [9, 1, 2, 3, 8, 2, 3, 4, 1, 2, 3]
    p.begin(seq[:3])
    toks, conf, n = p.propose(seq, 4)
    # the 3-gram (1, 2, 3) ended at 3 -> what followed: 8, 2, 3, 4
    assert (toks, n) == ([8, 2, 3, 4], 3) and conf == [1.0] * 4
    p.begin([])
    seq2 = [5, 2, 3, 7, 6, 2, 3, 9, 4, 3]
    toks, _, n = p.propose(seq2, 2)
    # only the 1-gram (3,) matches; its most recent earlier end is 6 -> 9, 4
    assert (toks, n) == ([9, 4], 1)
    p.begin([])
    assert p.propose([1, 2, 3, 4], 5) == ([], [], 0)  # no repeat, no proposal
    p.begin([])
    assert p.propose([1, 2, 1], 5) == ([2, 1], [1 / 3] * 2, 1)  # cut at the sequence's end
    assert p.propose([1, 2, 1, 2], 0) == ([], [], 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_range", [(1, 4), (2, 2), (1, 1), (3, 7)])
def test_cpp_proposes_what_the_python_rule_does(seed, n_range):
    lo, hi = n_range
    seq = _stream(seed, 400, vocab=6 + seed)
    rng = random.Random(100 + seed)
    py, cc = NgramProposer(min_n=lo, max_n=hi), _C.NgramProposer(min_n=lo, max_n=hi)
    for request in range(2):  # begin() resets: the second request sees nothing of the first
        cut = rng.randint(1, 40)
        py.begin(seq[:cut])
        cc.begin(seq[:cut])
        L = cut + 1
        while L <= len(seq):
            k = rng.randint(0, 9)
            a, b = py.propose(seq[:L], k), cc.propose(seq[:L], k)
            assert a[0] == list(b[0]) and a[2] == b[2], (request, L, k)
            assert a[1] == pytest.approx(list(b[1]))
            L += rng.randint(1, 5)
        assert py.indexed == cc.indexed


def test_work_grows_with_new_tokens_only():
    p = _C.NgramProposer(min_n=1, max_n=4)
    seq = _stream(7, 4000, vocab=50)
    p.begin(seq[:1])
    marks = []
    for L in range(100, 4001, 100):
        p.propose(seq[:L], 8)
        marks.append(p.indexed)
    steps = {b - a for a, b in zip(marks, marks[1:])}
    assert steps == {400}  # 100 new positions x 4 n-gram lengths per round of 100 tokens, whatever the length


@pytest.mark.parametrize(
    "options, err",
    [
        (dict(min_n=0), InvalidArgumentError),
        (dict(min_n=-1), InvalidArgumentError),
        (dict(max_n=65), InvalidArgumentError),
        (dict(min_n=3, max_n=2), InvalidArgumentError),
        (dict(min_n=1.5), ArgumentTypeError),
        (dict(max_n=True), ArgumentTypeError),
    ],
)
def test_bad_options_are_named_errors(options, err):
    with pytest.raises(err):
        NgramProposer(**options)
    with pytest.raises(err):
        _C.NgramProposer(**options)
    with pytest.raises(err):
        lookup_draft("ngram", **options)


def test_reversed_range_message_says_what_to_do():
    with pytest.raises(InvalidArgumentError, match="reversed.*min_n <= max_n"):
        lookup_draft("ngram", min_n=4, max_n=2)
    with pytest.raises(InvalidArgumentError, match="unknown lookup draft 'tri'"):
        lookup_draft("tri")
    with pytest.raises(InvalidArgumentError, match="extend the request"):
        p = _C.NgramProposer()
        p.begin([1, 2, 3])
        p.propose([1, 2, 4], 2)


@pytest.fixture(scope="module")
def tiny_target():
    return tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)


def _pair(target, kind="ngram", **options):
    return sprinter_ext.load_pair(lookup_draft(kind, **options) if options else kind, target)


def test_pair_and_refusals(tiny_target):
    pair = _pair(tiny_target)
    assert pair.draft_kind == "ngram" and pair.lookup_draft.kind == "ngram"
    assert "ngram" in repr(pair) and pair.name.startswith("ngram ->")
    for method in ("sprinter", "ssd"):
        with pytest.raises(InvalidArgumentError, match="cannot run a 'ngram' draft"):
            sprinter_ext.Decoder(pair, method)
    with pytest.raises(InvalidArgumentError, match="no SPRINTER verifier"):
        sprinter_ext.load_pair("ngram", tiny_target, verifier="x.safetensors")
    with pytest.raises(InvalidArgumentError, match="sprinter cannot run a model-free draft"):
        from sprinter_ext._generation import GenerationConfig

        cfg = GenerationConfig(method="sprinter", k=2, sampling=SamplingSettings(0.0), eos=[], verifier_weights=[],
                               verifier_biases=[], verifier_features=[], threshold=0.5, max_run=4, verify_all=False,
                               prompt=[1, 2], seed=0, max_new_tokens=4)  # fmt: skip
        _C.Generation(sprinter_ext.load_pair("ngram", tiny_target).native_runner("target", 32), None,
                      cfg.to_native(), proposer=_C.NgramProposer())  # fmt: skip


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
@pytest.mark.parametrize("engine", ["reference", "fused", "native"])
def test_greedy_sd_and_same_seed_ersd_equal_ar(tiny_target, engine, kind):
    pair = _pair(tiny_target, kind)
    kw = dict(max_new_tokens=40, eos_token_id=None, engine=engine)
    ar0 = sprinter_ext.generate(pair, PROMPT, method="ar", temperature=0, **kw)
    for k in (1, 3, 6):
        sd = sprinter_ext.generate(pair, PROMPT, method="sd", temperature=0, k=k, **kw)
        assert sd.tokens == ar0.tokens
        assert sd.stats["target_calls"] <= ar0.stats["target_calls"]
    assert sd.stats["draft_tokens"] > 0 and sd.stats["accepted_tokens"] > 0
    for seed in range(4):
        ar1 = sprinter_ext.generate(pair, PROMPT, method="ar", temperature=1.0, seed=seed, **kw).tokens
        for k in (2, 5):
            er = sprinter_ext.generate(pair, PROMPT, method="ersd", temperature=1.0, seed=seed, k=k, **kw)
            assert er.tokens == ar1, (seed, k)


@pytest.mark.parametrize("kind, options", [("ngram", dict(max_n=3)), ("suffix", dict(max_depth=8))])
def test_engines_agree_token_for_token_when_sampling(tiny_target, kind, options):
    pair = _pair(tiny_target, kind, **options)
    for seed in range(3):
        runs = [sprinter_ext.generate(pair, PROMPT, method="sd", temperature=0.9, top_k=6, seed=seed, k=3,
                                      max_new_tokens=30, eos_token_id=None, engine=e)  # fmt: skip
                for e in ("reference", "fused", "native")]
        assert runs[0].tokens == runs[1].tokens == runs[2].tokens
        assert runs[0].stats["accepted_tokens"] == runs[2].stats["accepted_tokens"]


def _counts(dec, seeds=2000):
    return decoder_counts(dec, PROMPT, seeds)


class _UniformQLane(LookupLane):
    """The planted bug: drafts verified as if sampled from a uniform q instead of one-hot."""

    def one_hot(self, toks):
        q = super().one_hot(toks)
        return torch.full_like(q, 1.0 / q.shape[-1])


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
@pytest.mark.parametrize("engine", ["reference", "native"])
def test_sd_with_lookup_draft_is_exact(tiny_target, engine, kind):
    pair = _pair(tiny_target, kind)
    st = SamplingSettings(1.0)
    want = exact_joint(tiny_target, st, PROMPT)
    dec = sprinter_ext.Decoder(pair, "sd", k=2, temperature=1.0, eos_token_id=None, engine=engine)
    p = g_test_pvalue(_counts(dec), want)
    assert p > ALPHA, f"sd with the {kind} draft ({engine}): G-test p={p:.2e}"
    if engine == "reference":
        bad = sprinter_ext.Decoder(pair, "sd", k=2, temperature=1.0, eos_token_id=None, engine="reference")
        bad._draft.__class__ = _UniformQLane
        assert bad._engine.draft is bad._draft
        p_bad = g_test_pvalue(_counts(bad), want)
        assert p_bad < ALPHA, f"the test has no power on one-hot drafts (p={p_bad:.2e})"


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
def test_default_target_lookup_greedy_equals_ar_on_a_grounded_prompt(kind):
    pair = sprinter_ext.load_pair(draft=kind)
    from sprinter_ext.chat_prompts import grounded_prompts

    prompt = grounded_prompts(1)[0]  # repeat a paragraph word for word
    ar = sprinter_ext.generate(pair, prompt, method="ar", max_new_tokens=40)
    sd = sprinter_ext.generate(pair, prompt, method="sd", max_new_tokens=40, k=4)
    assert len(ar.tokens) >= 20
    assert sd.tokens == ar.tokens and sd.text == ar.text
    assert sd.stats["target_calls"] < 0.7 * ar.stats["target_calls"]
    er = sprinter_ext.generate(pair, prompt, method="ersd", max_new_tokens=40, k=4, temperature=1.0, seed=5)
    assert er.tokens == sprinter_ext.generate(pair, prompt, method="ar", max_new_tokens=40, temperature=1.0,
                                              seed=5).tokens  # fmt: skip
