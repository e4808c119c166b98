"""The server's logprobs (chat: logprobs + top_logprobs; completions: logprobs=<int>) in OpenAI's
response shapes, and the penalties / min_p as request fields, with the official openai client:
the values equal the library's generate(logprobs=True) for the same request."""

from __future__ import annotations

import pytest

for _mod in ("fastapi", "uvicorn", "prometheus_client", "openai"):
    pytest.importorskip(_mod, reason="the server tests need the [serve] extra and openai ([dev])")

import openai  # noqa: E402
from serve_fixtures import CHAT, MODEL, client, pair, server  # noqa: E402,F401

import sprinter_ext  # noqa: E402


def _lib(pair, prompt, chat, n, **kw):
    return sprinter_ext.generate(pair, prompt, chat=chat, max_new_tokens=n, seed=7, logprobs=True, **kw)


def test_chat_logprobs_and_top_logprobs(pair, client):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, seed=7, temperature=0.8,
                                       logprobs=True, top_logprobs=3, presence_penalty=0.5,
                                       extra_body={"repetition_penalty": 1.2, "min_p": 0.01})  # fmt: skip
    content = r.choices[0].logprobs.content
    ref = _lib(pair, CHAT, None, 6, temperature=0.8, top_logprobs=3, presence_penalty=0.5, repetition_penalty=1.2,
               min_p=0.01)  # fmt: skip
    assert r.choices[0].message.content == ref.text
    eos = set(sprinter_ext.Decoder(pair, "sd")._eos)
    want = [e for e in ref.logprobs if e.token not in eos]
    assert len(content) == len(want) >= 1
    tok = pair.tokenizer
    for c, e in zip(content, want):
        assert c.token == tok.decode([e.token]) and c.bytes == list(c.token.encode("utf-8"))
        assert c.logprob == pytest.approx(max(e.logprob, -9999.0), abs=1e-5)
        assert [t.logprob for t in c.top_logprobs] == pytest.approx([v for _, v in e.top], abs=1e-5)
        assert [t.token for t in c.top_logprobs] == [tok.decode([i]) for i, _ in e.top]


def test_chat_stream_carries_the_same_logprobs(client):
    kw = dict(model=MODEL, messages=CHAT, max_tokens=6, seed=3, temperature=1.0, logprobs=True, top_logprobs=2)
    full = client.chat.completions.create(**kw).choices[0].logprobs.content
    streamed = [t for ch in client.chat.completions.create(stream=True, **kw) for c in ch.choices
                if c.logprobs is not None for t in c.logprobs.content]  # fmt: skip
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in full]


def test_completions_logprobs_int(pair, client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, seed=7, temperature=0.7,
                                  logprobs=2, frequency_penalty=0.5)  # fmt: skip
    lp = r.choices[0].logprobs
    ref = _lib(pair, "Once upon a time", False, 5, temperature=0.7, top_logprobs=2, frequency_penalty=0.5)
    eos = set(sprinter_ext.Decoder(pair, "sd")._eos)
    want = [e for e in ref.logprobs if e.token not in eos]
    assert lp.token_logprobs == pytest.approx([e.logprob for e in want], abs=1e-5)
    assert lp.tokens == [pair.tokenizer.decode([e.token]) for e in want]
    assert [len(d) <= 2 for d in lp.top_logprobs] == [True] * len(want)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(want))]
    assert "".join(lp.tokens) == r.choices[0].text


def test_no_logprobs_unless_asked(client):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
    assert r.choices[0].logprobs is None
    r = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
    assert r.choices[0].logprobs is None


@pytest.mark.parametrize("kw, param, says", [
    (dict(logprobs=False, top_logprobs=2), "top_logprobs", "needs logprobs=true"),
    (dict(logprobs=True, top_logprobs=21), "top_logprobs", "[0, 20]"),
    (dict(presence_penalty=2.5), "presence_penalty", "[-2, 2]"),
    (dict(extra_body={"min_p": -1}), "min_p", "[0, 1]"),
])  # fmt: skip
def test_bad_logprob_and_penalty_fields_are_400s(client, kw, param, says):
    with pytest.raises(openai.BadRequestError, match=None) as e:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, **kw)
    assert e.value.body["param"] == param and says in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, logprobs=25)
    assert e.value.body["param"] == "logprobs"
