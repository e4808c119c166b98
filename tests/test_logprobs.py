"""generate(logprobs=True, top_logprobs=N): per generated token its log-probability under the
target's processed distribution and the N best alternatives, for every method, checked against
an independent computation: transformers' own forward of the target over prompt + output and its
logits processors (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, MinPLogitsWarper,
TopKLogitsWarper), the OpenAI presence/frequency formula written out here."""

from __future__ import annotations

import math

import pytest
import torch
from stats_helpers import PROMPT
from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper)  # fmt: skip

import sprinter_ext
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.sampling import TokenLogprob

SAMPLED = dict(temperature=0.8, top_k=6, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.4,
               frequency_penalty=0.3)  # fmt: skip
GREEDY = dict(temperature=0.0, repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3)
PLAIN = dict(temperature=1.0)


def expected(target, tokens: list[int], cfg: dict) -> list[torch.Tensor]:
    """log p(. | PROMPT + tokens[:i]) for each i, by transformers' forward and processors."""
    out = []
    with torch.no_grad():
        logits = target(torch.tensor([PROMPT + tokens])).logits[0].double()
    for i in range(len(tokens)):
        ids = torch.tensor([PROMPT + tokens[:i]])
        x = logits[len(PROMPT) - 1 + i][None].clone()
        x = RepetitionPenaltyLogitsProcessor(cfg.get("repetition_penalty", 1.0))(ids, x)
        for t in set(tokens[:i]):
            x[0, t] -= cfg.get("presence_penalty", 0.0) + cfg.get("frequency_penalty", 0.0) * tokens[:i].count(t)
        if cfg["temperature"] > 0:
            x = TemperatureLogitsWarper(cfg["temperature"])(ids, x)
            if cfg.get("min_p"):
                x = MinPLogitsWarper(cfg["min_p"])(ids, x)
            if cfg.get("top_k"):
                x = TopKLogitsWarper(cfg["top_k"])(ids, x)
        out.append(torch.log_softmax(x[0], -1))
    return out


@pytest.fixture(scope="module")
def pair(stat_pair):
    return stat_pair


@pytest.mark.parametrize("cfg", [SAMPLED, GREEDY, PLAIN], ids=["sampled", "greedy", "plain"])
@pytest.mark.parametrize("method,opts", [("ar", {}), ("sd", dict(k=3)), ("ersd", dict(k=2)),
                                         ("ssd", dict(k=2, threaded=False))])  # fmt: skip
@pytest.mark.parametrize("engine", ["reference", "fused", "auto"])
def test_logprobs_are_the_targets_processed_log_softmax(pair, method, opts, cfg, engine):
    res = sprinter_ext.generate(pair, PROMPT, method=method, max_new_tokens=16, seed=5, eos_token_id=None,
                                engine=engine, logprobs=True, top_logprobs=3, **cfg, **opts)  # fmt: skip
    assert res.stats["engine"] in ("reference", "fused")
    assert len(res.logprobs) == len(res.tokens) == 16
    for i, (tok, entry, lp) in enumerate(zip(res.tokens, res.logprobs, expected(pair.target, res.tokens, cfg))):
        assert isinstance(entry, TokenLogprob) and entry.token == tok
        assert entry.logprob == pytest.approx(float(lp[tok]), abs=1e-4), (i, tok)
        assert math.isfinite(entry.logprob)  # a token sampled can never have probability 0
        want = torch.topk(lp, 3)
        assert [v for _, v in entry.top] == pytest.approx(want.values.tolist(), abs=1e-4)
        assert [v for _, v in entry.top] == pytest.approx([float(lp[t]) for t, _ in entry.top], abs=1e-4)
    if cfg is GREEDY:
        assert all(e.top[0][0] == e.token for e in res.logprobs)  # greedy takes the argmax


def test_sprinter_logprobs_cover_the_unchecked_tokens(pair, token_texts):
    from sprinter_ext.verifier import train_verifier

    p = sprinter_ext.load_pair(pair.draft, pair.target)
    p.verifier = train_verifier(p, token_texts(8, 24, 32), epochs=5, progress=False)
    for verify in ("flagged", "all"):
        res = sprinter_ext.generate(p, PROMPT, method="sprinter", max_new_tokens=12, seed=1, eos_token_id=None,
                                    logprobs=True, verify=verify, max_run=4, threshold=0.0, **SAMPLED)  # fmt: skip
        lps = expected(p.target, res.tokens, SAMPLED)
        assert [e.logprob for e in res.logprobs] == pytest.approx([float(lp[t]) for lp, t in zip(lps, res.tokens)],
                                                                  abs=1e-4)  # fmt: skip


def test_top_logprobs_default_and_off(pair):
    res = sprinter_ext.generate(pair, PROMPT, max_new_tokens=3, logprobs=True)
    assert [e.top for e in res.logprobs] == [[], [], []]
    assert sprinter_ext.generate(pair, PROMPT, max_new_tokens=3).logprobs is None
    res = sprinter_ext.generate(pair, PROMPT, max_new_tokens=2, logprobs=True, top_logprobs=20)
    assert all(len(e.top) == 8 for e in res.logprobs)  # at most the vocabulary


def test_logprobs_do_not_change_the_tokens_and_an_auto_decoder_falls_back(pair):
    dec = sprinter_ext.Decoder(pair, "sd", temperature=1.0)
    assert dec.engine == "native"
    plain = dec.generate(PROMPT, max_new_tokens=10, seed=3)
    res = dec.generate(PROMPT, max_new_tokens=10, seed=3, logprobs=True)
    assert res.stats["engine"] == "fused" and res.tokens == plain.tokens
    assert dec.generate(PROMPT, max_new_tokens=10, seed=3).stats["engine"] == "native"


@pytest.mark.parametrize("kw,err,match", [
    (dict(logprobs="yes"), ArgumentTypeError, "logprobs must be a bool"),
    (dict(logprobs=1), ArgumentTypeError, "logprobs must be a bool"),
    (dict(logprobs=True, top_logprobs=21), InvalidArgumentError, r"top_logprobs must be in \[0, 20\]"),
    (dict(logprobs=True, top_logprobs=-1), InvalidArgumentError, "top_logprobs must be >= 0"),
    (dict(logprobs=True, top_logprobs=2.0), ArgumentTypeError, "top_logprobs must be an int"),
    (dict(top_logprobs=2), InvalidArgumentError, "top_logprobs needs logprobs=True"),
])  # fmt: skip
def test_bad_logprobs_arguments_are_named_errors(pair, kw, err, match):
    with pytest.raises(err, match=match):
        sprinter_ext.generate(pair, PROMPT, max_new_tokens=2, **kw)


def test_native_engine_refuses_logprobs_by_name(pair):
    dec = sprinter_ext.Decoder(pair, "sd", engine="native")
    with pytest.raises(InvalidArgumentError, match="engine='native' does not apply logprobs"):
        dec.generate(PROMPT, max_new_tokens=2, logprobs=True)
