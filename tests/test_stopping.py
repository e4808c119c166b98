"""stop strings, stop token ids, max_time and finish_reason on results and streams."""

from __future__ import annotations

import pytest

import sprinter_ext
from sprinter_ext._stopping import StopMatcher
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError, TokenizerRequiredError
from sprinter_ext.models.tiny import tiny_model

P = [1, 2, 3]


@pytest.fixture(scope="module")
def tiny():
    return sprinter_ext.load_pair(tiny_model("llama", vocab=64, seed=1), tiny_model("llama", vocab=64, seed=2))


def test_length_and_eos_reasons(tiny):
    free = sprinter_ext.generate(tiny, P, max_new_tokens=12, eos_token_id=None, temperature=1.0, seed=3)
    assert free.finish_reason == "length" and len(free.tokens) == 12
    eos = free.tokens[5]
    first = free.tokens.index(eos)
    res = sprinter_ext.generate(tiny, P, max_new_tokens=12, eos_token_id=eos, temperature=1.0, seed=3)
    assert res.finish_reason == "eos" and res.tokens == free.tokens[: first + 1]  # EOS kept in tokens
    assert res.stats["finish_reason"] == "eos" and res.stats["new_tokens"] == len(res.tokens)


@pytest.mark.parametrize("method", ["ar", "sd"])
def test_stop_token_ids_cut_where_eos_would(tiny, method):
    kw = dict(max_new_tokens=12, temperature=1.0, seed=3, method=method)
    free = sprinter_ext.generate(tiny, P, eos_token_id=None, **kw)
    stop = free.tokens[4]
    res = sprinter_ext.generate(tiny, P, eos_token_id=None, stop_token_ids=[stop], **kw)
    assert res.finish_reason == "stop" and res.tokens == free.tokens[: free.tokens.index(stop) + 1]
    dec = sprinter_ext.Decoder(tiny, method, temperature=1.0, eos_token_id=None)
    stats = {}
    assert list(dec.stream(P, max_new_tokens=12, seed=3, stop_token_ids=stop, stats=stats)) == res.tokens
    assert stats["finish_reason"] == "stop"
    assert dec.generate(P, max_new_tokens=3, seed=3).finish_reason == "length"  # the Decoder is free again


def test_max_time_ends_after_a_round(tiny):
    res = sprinter_ext.generate(tiny, P, max_new_tokens=60, eos_token_id=None, max_time=1e-9, method="ar")
    assert res.finish_reason == "time" and len(res.tokens) == 1


def test_stop_strings_on_the_default_pair(default_pair):
    q = "Count from 1 to 10, separated by commas."
    free = sprinter_ext.generate(default_pair, q, max_new_tokens=40)
    assert "4" in free.text
    res = sprinter_ext.generate(default_pair, q, max_new_tokens=40, stop=["4"])
    assert res.finish_reason == "stop" and res.text == free.text[: free.text.index("4")]
    dec = sprinter_ext.Decoder(default_pair)
    stats = {}
    pieces = list(dec.stream(q, max_new_tokens=40, text=True, stop="4", stats=stats))
    assert "".join(pieces) == res.text and stats["finish_reason"] == "stop"


def test_a_partial_stop_string_is_held_back():
    m = StopMatcher(["STOP"])
    assert m.push("abc ST") == "abc " and m.push("O") == "" and m.push("x") == "STOx"
    assert m.push("..STO") == ".." and m.push("P tail") == "" and m.stopped


@pytest.mark.parametrize("kw,exc,match", [
    (dict(stop=""), InvalidArgumentError, "non-empty"), (dict(stop=[1]), ArgumentTypeError, "stop must be a str"),
    (dict(stop=["a"] * 17), InvalidArgumentError, "1 to 16"), (dict(stop_token_ids=[99]), InvalidArgumentError, r"\[0, 64\)"),
    (dict(stop_token_ids=1.5), ArgumentTypeError, "stop_token_ids"), (dict(max_time=0), InvalidArgumentError, "max_time"),
    (dict(max_time="1"), ArgumentTypeError, "max_time"), (dict(stop="x"), TokenizerRequiredError, "stop_token_ids"),
])  # fmt: skip
def test_bad_stopping_arguments_are_named(tiny, kw, exc, match):
    with pytest.raises(exc, match=match):
        sprinter_ext.generate(tiny, P, max_new_tokens=2, **kw)
