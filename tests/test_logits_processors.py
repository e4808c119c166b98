"""min_p and the repetition / presence / frequency penalties (sprinter_ext.sampling.process_logits).

- statistically: sd and ersd samples of the first two tokens (vocab 8, 2000 seeds) against the
  target's exact processed law, written out by hand here (not with the library's function), each
  processor paired with a planted bug that must fail the same test: the target's verification
  rows penalised with the committed tokens only (forgetting the drafts before each row), or
  min_p applied to the draft's rows only;
- exactly: greedy sd == ar, same-seed ersd == ar, same-seed ssd == sd, sprinter(verify="all")
  greedy == ar, fused == reference, under each processor; the native loop refuses them by name
  and engine="auto" runs them on the fused engine;
- named errors for bad values, before anything runs.

NOTE: "the penalty applied to the target only" is no bug for sd or ersd: both are exact for any
proposal q (a worse q only lowers the acceptance rate), so it cannot be a failing twin; the twins
plant what does break exactness.
"""

from __future__ import annotations

import pytest
import torch
from stats_helpers import ALPHA, PROMPT, V, g_test_pvalue, sample_counts

import sprinter_ext
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.methods import _session
from sprinter_ext.sampling import SamplingSettings

PROCESSORS = {
    "repetition": SamplingSettings(1.0, repetition_penalty=5.0),
    "presence_frequency": SamplingSettings(1.0, presence_penalty=1.5, frequency_penalty=1.0),
    "min_p": SamplingSettings(1.0, min_p=0.3),
    "all": SamplingSettings(0.9, top_k=6, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.5,
                            frequency_penalty=0.5),  # fmt: skip
}
RUNNER = dict(runner="native")  # the C++ forward of the tiny llama: the Python engines at ~2 ms a run


def by_hand(logits: torch.Tensor, before: list[int], prompt_len: int, s: SamplingSettings) -> torch.Tensor:
    """The processed distribution written out for one row: penalties, temperature, min_p, top-k."""
    x = logits.double().clone()
    for t in set(before):
        x[t] = x[t] / s.repetition_penalty if x[t] > 0 else x[t] * s.repetition_penalty
    out = before[prompt_len:]
    for t in set(out):
        x[t] -= s.presence_penalty + s.frequency_penalty * out.count(t)
    p = torch.softmax(x / s.temperature, -1)
    p = torch.where(p < s.min_p * p.max(), 0.0, p)
    if s.top_k:
        p[torch.argsort(-p, stable=True)[s.top_k :]] = 0.0
    return p / p.sum()


def exact_joint(target, s: SamplingSettings) -> torch.Tensor:
    """P(t1, t2 | PROMPT) under the target with processor settings `s`: [V, V] float64."""
    with torch.no_grad():
        p1 = by_hand(target(torch.tensor([PROMPT])).logits[0, -1], PROMPT, len(PROMPT), s)
        rows = target(torch.tensor([PROMPT + [t] for t in range(V)])).logits[:, -1]
    p2 = torch.stack([by_hand(rows[t], PROMPT + [t], len(PROMPT), s) for t in range(V)])
    return p1[:, None] * p2


@pytest.fixture(scope="module")
def pair(stat_pair):
    return stat_pair


def test_processors_move_the_law(pair):
    """Each processor changes the two-token law a lot, or the G-tests would prove little."""
    plain = exact_joint(pair.target, SamplingSettings(1.0))
    for name, s in PROCESSORS.items():
        tv = 0.5 * float((exact_joint(pair.target, s) - plain).abs().sum())
        assert tv > 0.1, f"{name}: total variation {tv:.3f} from the unprocessed law"


@pytest.mark.parametrize("method,k", [("sd", 2), ("ersd", 3)])
@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_output_law_is_the_targets_processed_law(pair, method, k, name):
    s = PROCESSORS[name]
    counts = sample_counts(pair, method, s, k, engine="fused", **RUNNER)
    p = g_test_pvalue(counts, exact_joint(pair.target, s))
    assert p > ALPHA, f"{method} k={k} {name}: G-test p={p:.2e}"


def _stale_target_rows(self, drafts):
    """BUG: every verification row penalised with the committed tokens only (drafts forgotten)."""
    pending = self.target.pending(self.seq)
    logits, _ = self.target.feed(pending + list(drafts))
    rows = logits[len(pending) - 1 :]
    return torch.cat([self.process(rows[j : j + 1], self.seq) for j in range(rows.shape[0])])


def _raw_target_rows(self, drafts):
    """BUG: the target's rows unprocessed (the processors reach the draft only)."""
    pending = self.target.pending(self.seq)
    logits, _ = self.target.feed(pending + list(drafts))
    return logits[len(pending) - 1 :]


@pytest.mark.parametrize(
    "method,k,name,bug",
    [("sd", 2, "repetition", _stale_target_rows), ("sd", 2, "presence_frequency", _stale_target_rows),
     ("ersd", 3, "presence_frequency", _stale_target_rows), ("sd", 2, "min_p", _raw_target_rows),
     ("ersd", 3, "min_p", _raw_target_rows)],
)  # fmt: skip
def test_planted_bug_fails_the_same_test(pair, monkeypatch, method, k, name, bug):
    monkeypatch.setattr(_session.Session, "target_rows", bug)
    s = PROCESSORS[name]
    counts = sample_counts(pair, method, s, k, engine="reference", **RUNNER)
    p = g_test_pvalue(counts, exact_joint(pair.target, s))
    assert p < ALPHA, f"{bug.__name__} passed for {method} {name} (p={p:.2e}): the test has no power"


def _gen(pair, method, s, seed=0, n=24, engine="fused", **kw):
    given = {f: getattr(s, f) for f in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                        "presence_penalty", "frequency_penalty")}  # fmt: skip
    return sprinter_ext.generate(pair, PROMPT, method=method, max_new_tokens=n, seed=seed, eos_token_id=None,
                                 engine=engine, **given, **kw).tokens  # fmt: skip


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_greedy_sd_and_same_seed_ersd_equal_ar(pair, name):
    s = PROCESSORS[name]
    greedy = SamplingSettings(0.0, repetition_penalty=s.repetition_penalty, presence_penalty=s.presence_penalty,
                              frequency_penalty=s.frequency_penalty, min_p=s.min_p)  # fmt: skip
    for engine in ("reference", "fused"):
        ar = _gen(pair, "ar", greedy, engine=engine)
        assert _gen(pair, "sd", greedy, k=3, engine=engine) == ar, (name, engine)
        assert _gen(pair, "ssd", greedy, k=2, engine=engine) == ar, (name, engine)
        for seed in range(4):
            ar = _gen(pair, "ar", s, seed, engine=engine)
            assert _gen(pair, "ersd", s, seed, k=3, engine=engine) == ar, (name, engine, seed)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_same_seed_gives_the_same_tokens_on_every_python_engine_and_ssd_equals_sd(pair, name):
    s = PROCESSORS[name]
    for seed in range(3):
        ref = _gen(pair, "sd", s, seed, k=2, engine="reference")
        assert _gen(pair, "sd", s, seed, k=2, engine="fused") == ref
        assert _gen(pair, "sd", s, seed, k=2, engine="auto") == ref
        # ssd speculates from contexts that are not committed yet: its drafts must be processed
        # with the branch's own tokens, or its proposals (hence its tokens) would differ from sd's
        assert _gen(pair, "ssd", s, seed, k=2, engine="reference", threaded=False) == ref


def test_processors_change_the_tokens(pair):
    """Not vacuous: the processed greedy run differs from the plain one on this pair."""
    plain = _gen(pair, "ar", SamplingSettings(0.0))
    for name in ("repetition", "presence_frequency"):
        s = PROCESSORS[name]
        assert _gen(pair, "ar", SamplingSettings(0.0, repetition_penalty=s.repetition_penalty,
                                                 presence_penalty=s.presence_penalty,
                                                 frequency_penalty=s.frequency_penalty)) != plain, name  # fmt: skip


def test_sprinter_verify_all_greedy_equals_ar(pair, token_texts):
    from sprinter_ext.verifier import train_verifier

    p = sprinter_ext.load_pair(pair.draft, pair.target)
    p.verifier = train_verifier(p, token_texts(V, 24, 32), epochs=5, progress=False)
    s = SamplingSettings(0.0, repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.5)
    ar = _gen(p, "ar", s)
    assert _gen(p, "sprinter", s, verify="all", max_run=4) == ar
    t = PROCESSORS["all"]
    assert _gen(p, "sprinter", t, seed=1, verify="all", max_run=4, engine="reference") == _gen(
        p, "sprinter", t, seed=1, verify="all", max_run=4, engine="fused")


def test_auto_runs_them_on_the_fused_engine_and_native_refuses_them_by_name(pair):
    dec = sprinter_ext.Decoder(pair, "sd", repetition_penalty=1.2)
    assert dec.engine == "fused"
    assert dec.generate(PROMPT, max_new_tokens=4).stats["engine"] == "fused"
    for kw in (dict(min_p=0.1, temperature=1.0), dict(repetition_penalty=1.2), dict(presence_penalty=0.1),
               dict(frequency_penalty=-0.1)):  # fmt: skip
        with pytest.raises(InvalidArgumentError, match=f"engine='native' does not apply {next(iter(kw))}"):
            sprinter_ext.Decoder(pair, "sd", engine="native", **kw)
    # min_p does nothing to greedy decoding: the native loop runs it
    assert sprinter_ext.Decoder(pair, "sd", engine="native", min_p=0.5).engine == "native"
    nat = sprinter_ext.Decoder(pair, "sd", engine="native")
    with pytest.raises(InvalidArgumentError, match="engine='native' does not apply presence_penalty"):
        nat.configure(presence_penalty=0.5)
    assert nat.settings.presence_penalty == 0  # refused before any change
    # an auto Decoder that picked the C++ loop runs a processed generation on the fused engine
    auto = sprinter_ext.Decoder(pair, "sd")
    assert auto.engine == "native"
    plain = auto.generate(PROMPT, max_new_tokens=6)
    auto.configure(frequency_penalty=2.0)
    res = auto.generate(PROMPT, max_new_tokens=6)
    assert res.stats["engine"] == "fused"
    assert res.tokens == sprinter_ext.generate(pair, PROMPT, max_new_tokens=6, frequency_penalty=2.0).tokens
    auto.configure(frequency_penalty=0.0)
    assert auto.generate(PROMPT, max_new_tokens=6).stats["engine"] == "native"
    assert auto.generate(PROMPT, max_new_tokens=6).tokens == plain.tokens


BAD = [
    (dict(min_p=-0.1), InvalidArgumentError, r"min_p must be in \[0, 1\]"),
    (dict(min_p=1.5), InvalidArgumentError, r"min_p must be in \[0, 1\]"),
    (dict(min_p=float("nan")), InvalidArgumentError, r"min_p must be in \[0, 1\]"),
    (dict(min_p="0.1"), ArgumentTypeError, "min_p must be a number"),
    (dict(repetition_penalty=0), InvalidArgumentError, r"repetition_penalty must be in \(0, 100\]"),
    (dict(repetition_penalty=-1.0), InvalidArgumentError, r"repetition_penalty must be in \(0, 100\]"),
    (dict(repetition_penalty=1e3), InvalidArgumentError, r"repetition_penalty must be in \(0, 100\]"),
    (dict(repetition_penalty=True), ArgumentTypeError, "repetition_penalty must be a number"),
    (dict(presence_penalty=2.5), InvalidArgumentError, r"presence_penalty must be in \[-2, 2\]"),
    (dict(presence_penalty=float("inf")), InvalidArgumentError, r"presence_penalty must be in \[-2, 2\]"),
    (dict(frequency_penalty=-3), InvalidArgumentError, r"frequency_penalty must be in \[-2, 2\]"),
    (dict(frequency_penalty="0.5"), ArgumentTypeError, "frequency_penalty must be a number"),
]


@pytest.mark.parametrize("kw,err,match", BAD)
def test_bad_values_are_named_errors(pair, kw, err, match):
    with pytest.raises(err, match=match):
        sprinter_ext.generate(pair, PROMPT, max_new_tokens=2, **kw)
    with pytest.raises(err, match=match):
        sprinter_ext.Decoder(pair, "sd", **kw)
    dec = sprinter_ext.Decoder(pair, "sd", engine="fused")
    with pytest.raises(err, match=match):
        dec.configure(**kw)
    assert dec.settings == SamplingSettings(0.0)  # nothing changed
