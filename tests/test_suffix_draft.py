"""The `suffix` draft: _C.SuffixProposer (csrc/drafts/suffix.cpp) against its Python
reference (sprinter_ext/drafts/suffix.py), hand-checked cases, the adaptive length, the
global trie's FIFO budget under a 1,000-request soak, named errors, and incrementality
(work per round, counted, does not grow with the sequence)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from sprinter_ext._native import _C
from sprinter_ext.drafts.suffix import SuffixProposer as RefSuffixProposer
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError

IMPLS = {"cpp": _C.SuffixProposer, "ref": RefSuffixProposer}


def _f32(values):
    return [float(np.float32(v)) for v in values]


def _same(cpp, ref):
    """cpp and ref are (tokens, confidence, match_length); ref's confidences as float32."""
    return cpp[0] == ref[0] and cpp[2] == ref[2] and cpp[1] == _f32(ref[1])


# -- C++ == Python ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("vocab", [2, 3, 7])
def test_native_equals_reference_on_random_streams(seed, vocab):
    rng = random.Random(1000 * seed + vocab)
    opts = dict(
        max_depth=rng.choice([2, 3, 5, 9]),
        min_match=1,
        alpha=rng.choice([0.5, 1.0, 1.7, 4.0]),
        min_confidence=rng.choice([0.0, 0.1, 0.35]),
        max_global_tokens=rng.choice([1, 13, 61, 1000]),
    )
    opts["min_match"] = rng.randint(1, min(3, opts["max_depth"] - 1))
    cpp, ref = _C.SuffixProposer(**opts), RefSuffixProposer(**opts)
    proposed = 0
    for request in range(9):
        seq = [rng.randrange(vocab) for _ in range(rng.randrange(0, 23))]
        cpp.begin(seq)
        ref.begin(seq)
        for rnd in range(rng.randrange(1, 40)):
            k = rng.randrange(0, 10)
            a, b = cpp.propose(seq, k), ref.propose(seq, k)
            assert _same(a, b), f"request {request} round {rnd} len {len(seq)} k {k}: cpp {a} ref {b}"
            assert len(a[0]) <= k and len(a[1]) == len(a[0])
            assert all(0.0 <= c <= 1.0 for c in a[1]) and a[1] == sorted(a[1], reverse=True)
            proposed += len(a[0])
            # the target accepts a prefix of the proposal (or nothing) plus one token
            seq = seq + a[0][: rng.randrange(0, len(a[0]) + 1)] + [rng.randrange(vocab)] * rng.randrange(0, 3)
        cpp.end(seq)
        ref.end(seq)
        assert (cpp.nodes(), cpp.global_tokens(), cpp.global_requests()) == (
            ref.nodes(),
            ref.global_tokens(),
            ref.global_requests(),
        )
        assert cpp.global_tokens() <= opts["max_global_tokens"]
    assert proposed > 0, "a stream over a small vocabulary must give matches"


def test_native_equals_reference_on_a_long_sequence():
    rng = random.Random(7)
    phrase = [rng.randrange(40) for _ in range(25)]
    seq = [rng.randrange(40) for _ in range(10)]
    cpp, ref = _C.SuffixProposer(max_depth=12), RefSuffixProposer(max_depth=12)
    cpp.begin(seq)
    ref.begin(seq)
    while len(seq) < 1500:
        a, b = cpp.propose(seq, 6), ref.propose(seq, 6)
        assert _same(a, b), (len(seq), a, b)
        seq += phrase[: rng.randrange(1, 8)] if rng.random() < 0.3 else [rng.randrange(40) for _ in range(3)]
    assert cpp.request_nodes() == ref.request_nodes()


# -- hand-checked cases -------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_a_repeated_phrase_proposes_its_continuation(impl):
    p = IMPLS[impl](alpha=2.0)
    phrase = [10, 11, 12, 13, 14, 15, 16]
    seq = [1, 2, *phrase, 3, 4, *phrase[:3]]  # "... 10 11 12" again
    p.begin(seq)
    # the longest suffix with an earlier continuation is "10 11 12" ("4 10 11 12" is new):
    # match 3, so at most ceil(2.0 * 3) = 6 tokens, each seen once after its context
    assert p.propose(seq, 8) == ([13, 14, 15, 16, 3, 4], [1.0] * 6, 3)
    assert p.propose(seq, 2) == ([13, 14], [1.0, 1.0], 3)  # max_tokens caps it
    assert p.propose(seq, 0) == ([], [], 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_most_frequent_continuation_wins_and_ties_take_the_smallest_id(impl):
    seq = [1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 4, 7, 1, 2]
    p = IMPLS[impl](alpha=1.0, min_confidence=0.0)
    p.begin(seq)
    # "1 2" was followed by 3, 3, 4: propose 3 (p = 2/3); "1 2 3" by 9 and 8 once each: the
    # tie goes to 8 (p = 1/2, running 1/3); match 2 allows ceil(1.0 * 2) = 2 tokens
    tokens, confidence, match = p.propose(seq, 8)
    assert (tokens, match) == ([3, 8], 2)
    assert confidence == pytest.approx([2 / 3, 1 / 3], rel=1e-6)
    # min_confidence stops before the first token whose running confidence is below it
    q = IMPLS[impl](alpha=1.0, min_confidence=0.5)
    q.begin(seq)
    assert q.propose(seq, 8)[0] == [3]
    r = IMPLS[impl](alpha=1.0, min_confidence=0.7)
    r.begin(seq)
    assert r.propose(seq, 8) == ([], [], 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_match_and_min_match(impl):
    p = IMPLS[impl]()
    p.begin([1, 2, 3, 4])
    assert p.propose([1, 2, 3, 4], 5) == ([], [], 0)  # nothing repeats
    q = IMPLS[impl](min_match=2)
    seq = [5, 6, 7, 1, 5]  # only a 1-token match ("5" -> 6)
    q.begin(seq)
    assert q.propose(seq, 5) == ([], [], 0)
    p.begin(seq)
    assert p.propose(seq, 5) == ([6], [1.0], 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_draft_length_adapts_to_the_match_length(impl):
    phrase = list(range(100, 130))
    lengths = {}
    for alpha in (0.5, 1.0, 3.0):
        for match in (1, 2, 4, 8):
            p = IMPLS[impl](alpha=alpha, max_depth=16)
            seq = [*phrase, 7, *phrase[:match]]
            p.begin(seq)
            tokens, confidence, m = p.propose(seq, 16)
            assert m == match
            assert tokens == phrase[match : match + len(tokens)]
            lengths[alpha, match] = len(tokens)
    for (alpha, match), n in lengths.items():
        assert n == min(16, math.ceil(alpha * match)), (alpha, match, n)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_chain_slides_past_max_depth(impl):
    phrase = list(range(50, 80))
    p = IMPLS[impl](max_depth=4, alpha=10.0)
    seq = [*phrase, 1, *phrase[:3]]
    p.begin(seq)
    # contexts of at most 3 tokens, but the chain goes on past depth 4, one slide per token
    assert p.propose(seq, 12) == (phrase[3:15], [1.0] * 12, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_global_trie_remembers_earlier_outputs(impl):
    p = IMPLS[impl](alpha=4.0)
    prompt = [1, 2, 3]
    p.begin(prompt)
    p.end([*prompt, 20, 21, 22, 23, 24])  # the output 20..24 joins the global trie
    assert (p.global_tokens(), p.global_requests()) == (5, 1)
    seq = [9, 8, 20, 21]
    p.begin(seq)
    assert p.propose(seq, 8) == ([22, 23, 24], [1.0] * 3, 2)  # the request itself has no match
    # the prompt is not learned: only outputs are
    p.end(seq)
    p.begin([9, 8, 1, 2])
    assert p.propose([9, 8, 1, 2], 8) == ([], [], 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_request_beats_global_unless_global_scores_higher(impl):
    p = IMPLS[impl](alpha=4.0, min_confidence=0.0)
    p.begin([0])
    p.end([0, 5, 6, 7, 8])  # global: 5 6 -> 7 8
    seq = [5, 6, 9, 3, 5, 6]  # request: 5 6 -> 9 3; both match "5 6" and score 1.0 + 1.0
    p.begin(seq)
    assert p.propose(seq, 2) == ([9, 3], [1.0, 1.0], 2)  # a tie goes to the request
    seq = [5, 6, 9, 5, 6, 3, 5, 6]  # request: "5 6" -> 9 or 3 (the tie: 3, p = 1/2), scores 0.5 + 0.5
    p.begin(seq)
    assert p.propose(seq, 2) == ([7, 8], [1.0, 1.0], 2)  # the global chain scores 2.0
    q = IMPLS[impl](alpha=4.0, min_confidence=0.0)  # without the global trie's output
    q.begin(seq)
    assert q.propose(seq, 2) == ([3, 5], [0.5, 0.5], 2)


def test_the_native_proposer_is_a_C_Proposer():
    p = _C.SuffixProposer()
    assert isinstance(p, _C.Proposer) and p.proposer_name == "suffix"
    seq = [1, 2, 3, 1, 2]
    _C.Proposer.begin(p, seq)  # the base class's methods reach the same C++ object
    assert _C.Proposer.propose(p, seq, 4) == p.propose(seq, 4) == ([3, 1], [1.0, 1.0], 2)
    _C.Proposer.end(p, [*seq, 3])
    assert p.global_tokens() == 1 and not p.active  # the output [3] joined the global trie
    assert p.options == _C.suffix_options() == RefSuffixProposer().options


# -- bounded memory -------------------------------------------------------------------------


def _rss_bytes():
    psutil = pytest.importorskip("psutil")
    return psutil.Process().memory_info().rss


def test_the_global_trie_stays_within_its_budget_over_1000_requests():
    budget, depth = 3000, 32
    p = _C.SuffixProposer(max_global_tokens=budget, max_depth=depth)
    rng = random.Random(2024)
    phrases = [[rng.randrange(300) for _ in range(rng.randrange(4, 20))] for _ in range(30)]
    outputs, rss = [], {}
    for request in range(1000):
        prompt = [rng.randrange(300) for _ in range(rng.randrange(20, 120))]
        p.begin(prompt)
        seq = list(prompt)
        for _ in range(rng.randrange(3, 12)):  # a few rounds: a proposal, then what was "committed"
            tokens, _, _ = p.propose(seq, 8)
            seq += tokens[: rng.randrange(0, len(tokens) + 1)] or rng.choice(phrases)[: rng.randrange(1, 6)]
        output = seq[len(prompt) :] + [rng.randrange(300) for _ in range(rng.randrange(0, 90))]
        p.end(prompt + output)
        outputs.append(output)
        assert p.global_tokens() <= budget
        assert p.global_nodes() <= 1 + depth * p.global_tokens()
        assert p.request_nodes() == 1  # end() freed the request trie
        if request in (199, 999):
            rss[request] = _rss_bytes()
    assert p.global_requests() < 1000  # the FIFO evicted
    kept = outputs[len(outputs) - p.global_requests() :]
    assert p.global_tokens() == sum(len(o) for o in kept) > budget // 2
    # eviction is the exact inverse of insertion: the same trie as one built from the kept outputs
    fresh = _C.SuffixProposer(max_global_tokens=budget, max_depth=depth)
    for o in kept:
        fresh.begin([])
        fresh.end(o)
    assert fresh.global_nodes() == p.global_nodes()
    probe = kept[-1][:5]
    for q in (p, fresh):
        q.begin(probe)
    assert p.propose(probe, 8) == fresh.propose(probe, 8)
    grown = rss[999] - rss[199]
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB from request 200 to 1000"


@pytest.mark.parametrize("impl", IMPLS)
def test_an_output_longer_than_the_budget_keeps_its_tail(impl):
    p = IMPLS[impl](max_global_tokens=4, alpha=4.0)
    p.begin([9])
    p.end([9, 1, 2, 3, 4, 5, 6])
    assert (p.global_tokens(), p.global_requests()) == (4, 1)
    p.begin([8, 3])
    assert p.propose([8, 3], 8)[0] == [4, 5, 6]  # 3 4 5 6 kept
    p.end([8, 3])
    p.begin([8, 2])
    assert p.propose([8, 2], 8)[0] == []  # 1 2 dropped


# -- named errors -------------------------------------------------------------------------------

BAD_OPTIONS = [
    (dict(max_depth=0), "max_depth"),
    (dict(max_depth=-4), "max_depth"),
    (dict(max_depth=1), "max_depth"),
    (dict(max_depth=5000), "max_depth"),
    (dict(min_match=0), "min_match must be >= 1"),
    (dict(min_match=-2), "min_match must be >= 1"),
    (dict(min_match=8, max_depth=8), "min_match must be <= max_depth - 1"),  # the range reversed
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha=float("inf")), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(min_confidence=-0.1), "min_confidence"),
    (dict(min_confidence=1.5), "min_confidence"),
    (dict(max_global_tokens=0), "max_global_tokens must be >= 1"),  # a zero budget
    (dict(max_global_tokens=-100), "max_global_tokens must be >= 1"),
]


@pytest.mark.parametrize("impl", [*IMPLS, "options"])
@pytest.mark.parametrize("options,match", BAD_OPTIONS)
def test_bad_options_get_named_errors(impl, options, match):
    make = _C.suffix_options if impl == "options" else IMPLS[impl]
    with pytest.raises(InvalidArgumentError, match=match):
        make(**options)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("options", [dict(max_depth=8.0), dict(max_depth=True), dict(max_global_tokens="9"),
                                     dict(alpha="1"), dict(min_confidence=None)])
def test_option_types_get_named_errors(impl, options):
    with pytest.raises(ArgumentTypeError, match=next(iter(options))):
        IMPLS[impl](**options)


@pytest.mark.parametrize("impl", IMPLS)
def test_options_are_keyword_only_and_known(impl):
    with pytest.raises(TypeError):
        IMPLS[impl](16)
    with pytest.raises(TypeError):
        IMPLS[impl](max_dept=16)


@pytest.mark.parametrize("impl", IMPLS)
def test_misuse_gets_named_errors_and_changes_nothing(impl):
    p = IMPLS[impl]()
    with pytest.raises(RuntimeError, match="before begin"):
        p.propose([1, 2], 3)
    with pytest.raises(RuntimeError, match="before begin"):
        p.end([1, 2])
    with pytest.raises(InvalidArgumentError, match="token ids"):
        p.begin([1, -2])
    assert not p.active and p.nodes() == 2
    p.begin([1, 2, 1])
    with pytest.raises(InvalidArgumentError, match="token ids"):
        p.propose([1, 2, 1, 5, 2**31], 3)
    assert p.indexed_tokens() == 3  # nothing of the bad round was indexed
    with pytest.raises(InvalidArgumentError, match="max_tokens"):
        p.propose([1, 2, 1], -1)
    with pytest.raises(InvalidArgumentError, match="must extend"):
        p.propose([1, 2], 3)
    with pytest.raises(InvalidArgumentError, match="must extend"):
        p.propose([1, 2, 7, 4], 3)
    assert p.propose([1, 2, 1], 3) == ([2], [1.0], 1)
    with pytest.raises(InvalidArgumentError, match="fewer than the prompt"):
        p.end([1])
    p.end([1, 2, 1, 2])
    assert p.global_tokens() == 1


# -- incrementality -------------------------------------------------------------------------


def test_a_round_costs_the_same_at_4k_tokens_as_at_200():
    """Work is counted in trie node visits (_C.SuffixProposer.work()), not timed."""
    depth, vocab, k = 24, 50, 8
    rng = random.Random(11)
    phrases = [[rng.randrange(vocab) for _ in range(rng.randrange(5, 30))] for _ in range(12)]
    p = _C.SuffixProposer(max_depth=depth, alpha=2.0)
    p.begin([])
    p.end(sum(phrases[:6], []))  # a global trie to follow as well
    seq = [rng.randrange(vocab) for _ in range(64)]
    p.begin(seq)
    rounds, new, proposed = [], 0, 0  # rounds: (sequence length, tokens new this round, work)
    while len(seq) < 4096:
        before = p.work()
        tokens, _, _ = p.propose(seq, k)
        rounds.append((len(seq), new, p.work() - before))
        proposed += bool(tokens)
        assert p.indexed_tokens() == len(seq)
        committed = tokens[: rng.randrange(0, len(tokens) + 1)] + rng.choice(phrases)[: rng.randrange(1, 4)]
        seq += committed
        new = len(committed)
    # a new token visits <= depth nodes of each trie; each proposed token scans one node's
    # children (<= vocab) and may re-walk a context of depth - 1 tokens
    for n, fresh, work in rounds[1:]:
        assert work <= 2 * depth * fresh + k * (vocab + depth), (n, fresh, work)
    early = [w / f for n, f, w in rounds if 200 <= n < 800]
    late = [w / f for n, f, w in rounds if n >= 3400]
    assert len(early) > 50 and len(late) > 50
    assert sum(late) / len(late) < 1.5 * sum(early) / len(early)
    assert proposed > len(rounds) // 4  # the rounds did propose (their chains are in the counts)
