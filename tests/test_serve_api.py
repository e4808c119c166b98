"""The server's OpenAI surface beyond generation (issue 31): ``GET /v1/models/{id}``, an
optional ``model``, ``param`` on every refused field, ``finish_reason`` on both endpoints,
and a stream whose client disconnects. Driven with the official ``openai`` client where it
can send the request, raw HTTP where it cannot (a missing ``model``, bad types).
"""

from __future__ import annotations

import re
import time

import pytest

for _mod in ("fastapi", "uvicorn", "prometheus_client", "openai"):
    pytest.importorskip(_mod, reason="the server tests need the [serve] extra and openai ([dev])")
try:  # the HTTP client the installed openai uses (httpx2 for openai 3, httpx before)
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx", reason="openai's HTTP client (httpx2 or httpx) is missing")

import openai  # noqa: E402
from serve_fixtures import CHAT, MODEL, VOCAB, _tokenizer, client, pair, server, serving  # noqa: E402,F401

import sprinter_ext  # noqa: E402
from sprinter_ext.models.tiny import tiny_model  # noqa: E402
from sprinter_ext.prompts import encode_prompt  # noqa: E402
from sprinter_ext.serve import create_app  # noqa: E402


def _post(url, path, body):
    return httpx.post(url + path, json=body, timeout=60)


def test_models_retrieve(server, client):
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL and m.object == "model" and m.owned_by == "sprinter_ext"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4")
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"
    assert MODEL in e.value.body["message"]  # says what is served


def test_models_retrieve_an_id_with_a_slash(pair):
    with serving(create_app(pair, model_name="org/tiny-chat", default_max_tokens=4)) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert c.models.retrieve("org/tiny-chat").id == "org/tiny-chat"
        assert httpx.get(url + "/v1/models/org%2Ftiny-chat").json()["id"] == "org/tiny-chat"
        assert httpx.get(url + "/v1/models/org/other").status_code == 404


@pytest.mark.parametrize("path, field, value", [("/v1/chat/completions", "messages", CHAT),
                                                ("/v1/completions", "prompt", "Once")])  # fmt: skip
def test_model_is_optional(server, pair, path, field, value):
    chat = field == "messages"
    ref = sprinter_ext.generate(pair, value, chat=chat, temperature=0, max_new_tokens=6)
    for body in ({field: value, "max_tokens": 6}, {field: value, "max_tokens": 6, "model": None}):
        r = _post(server[0], path, body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == MODEL
        got = out["choices"][0]["message"]["content"] if chat else out["choices"][0]["text"]
        assert got == ref.text


# (extra body fields, the param the 400 must name, a word the message must hold)
BAD_FIELDS = [
    ({"temperature": -1}, "temperature", "temperature"),
    ({"temperature": "hot"}, "temperature", "number"),
    ({"top_p": 0}, "top_p", "top_p"),
    ({"top_p": 1.5}, "top_p", "top_p"),
    ({"top_k": -1}, "top_k", "top_k"),
    ({"top_k": 2.5}, "top_k", "top_k"),
    ({"k": 0}, "k", ">= 1"),
    ({"k": "2"}, "k", "must be an int"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"max_tokens": -1}, "max_tokens", ">= 1"),
    ({"max_tokens": "5"}, "max_tokens", "integer"),
    ({"max_tokens": 10**6}, "max_tokens", "cache"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", ">= 1"),
    ({"seed": -1}, "seed", "seed"),
    ({"stop": 5}, "stop", "stop"),
    ({"stream": "yes"}, "stream", "boolean"),
    ({"method": "nope"}, "method", "choose one of"),
    ({"method": 3}, "method", "string"),
    ({"method": "sprinter"}, "method", "verifier"),  # this pair has none
    ({"method": "sd", "threshold": 0.5}, "threshold", "option of sprinter"),
    ({"method": "ssd", "budget": 0}, "budget", "budget"),
    ({"method": "ssd", "saguaro_c": 7}, "saguaro_c", "saguaro_c"),
    ({"foo": 1}, "foo", "unknown field 'foo'"),
    ({"do_sample": True}, "do_sample", "temperature"),
    ({"max_new_tokens": 5}, "max_new_tokens", "max_tokens"),
    ({"repetition_penalty": 0}, "repetition_penalty", "repetition_penalty must be in (0, 100]"),
    ({"min_p": 2}, "min_p", "min_p must be in [0, 1]"),
    ({"frequency_penalty": "x"}, "frequency_penalty", "frequency_penalty must be a number"),
    ({"top_logprobs": 50}, "top_logprobs", "top_logprobs"),
    ({"n": 2}, "n", "n=1"),
    ({"best_of": 3}, "best_of", "best_of=1"),
    ({"logprobs": "yes"}, "logprobs", "logprobs must be"),
    ({"presence_penalty": 3}, "presence_penalty", "presence_penalty must be in [-2, 2]"),
    ({"response_format": {"type": "json_object"}}, "response_format", "text"),
    ({"engine": "reference"}, "engine", "server setting"),
    ({"model": 3}, "model", "string"),
]


@pytest.mark.parametrize("path, field, value", [("/v1/chat/completions", "messages", CHAT),
                                                ("/v1/completions", "prompt", "Once")])  # fmt: skip
@pytest.mark.parametrize("extra, param, says", BAD_FIELDS, ids=[next(iter(e)) + "-" + p for e, p, _ in BAD_FIELDS])
def test_every_refused_field_is_a_400_naming_it(server, path, field, value, extra, param, says):
    r = _post(server[0], path, {"model": MODEL, field: value, "max_tokens": 4} | extra)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert says in err["message"], err["message"]


@pytest.mark.parametrize(
    "messages, says",
    [
        ([{"role": "wizard", "content": "hi"}], "'wizard' is not supported"),
        ([{"role": "tool", "content": "42", "tool_call_id": "x"}], "no tool calling"),
        ([{"role": "developer", "content": "be brief"}] + CHAT, "role system"),
        ([{"role": "function", "content": "x"}], "no tool calling"),
        (CHAT + [{"role": "assistant", "content": "", "tool_calls": []}], "unsupported keys ['tool_calls']"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "text parts"),
    ],
)
def test_unknown_roles_and_message_keys_are_400s(server, client, messages, says):
    with pytest.raises(openai.BadRequestError, match=re.escape(says)) as e:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert e.value.body["param"] == "messages"


def test_fields_of_the_other_endpoint_are_named(server, client):
    with pytest.raises(openai.BadRequestError, match="unknown field 'prompt'.*completions") as e:
        client.chat.completions.create(model=MODEL, messages=CHAT, extra_body={"prompt": "x"})
    assert e.value.body["param"] == "prompt" and e.value.body["code"] == "unknown_parameter"
    with pytest.raises(openai.BadRequestError, match="unknown field 'messages'") as e:
        client.completions.create(model=MODEL, prompt="x", extra_body={"messages": CHAT})
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="token ids") as e:
        client.completions.create(model=MODEL, prompt=[VOCAB + 5], max_tokens=2)
    assert e.value.body["param"] == "prompt"


def test_neutral_values_of_unsupported_fields_are_accepted(server, client):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3, temperature=0, n=1,
                                       presence_penalty=0, frequency_penalty=0, logprobs=False,
                                       response_format={"type": "text"}, user="someone")  # fmt: skip
    assert r.usage.completion_tokens == 3
    r = client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0, messages=[
        {"role": "system", "content": "Be brief."}, *CHAT, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Spain?", "name": "me"}])  # fmt: skip
    assert r.choices[0].finish_reason == "length"


# -- finish_reason ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def eos_server():
    """A server whose target's EOS is the 4th token of its greedy chat answer (the first
    fresh one from there): greedy runs end there, so "stop" from EOS is tested exactly."""
    draft = tiny_model("llama", vocab=VOCAB, layers=1, seed=3, scale=2.0)
    target = tiny_model("llama", vocab=VOCAB, layers=2, seed=0, scale=2.0)
    p = sprinter_ext.load_pair(draft, target, tokenizer=_tokenizer())
    toks = sprinter_ext.generate(p, CHAT, method="ar", temperature=0, max_new_tokens=12).tokens
    i = next(i for i in range(3, len(toks)) if toks[i] not in toks[:i])
    target.generation_config.eos_token_id = target.config.eos_token_id = toks[i]
    p = sprinter_ext.load_pair(draft, target, tokenizer=p.tokenizer)
    with serving(create_app(p, model_name=MODEL, default_max_tokens=12)) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60), p, i + 1


def _finish(c, stream: bool, chat: bool, prompt, **kw):
    if chat:
        r = c.chat.completions.create(model=MODEL, messages=prompt, temperature=0, stream=stream, **kw)
    else:
        r = c.completions.create(model=MODEL, prompt=prompt, temperature=0, stream=stream, **kw)
    if not stream:
        return r.choices[0].finish_reason
    reasons = [ch.choices[0].finish_reason for ch in r if ch.choices]
    assert all(x is None for x in reasons[:-1])  # only the last chunk says why
    return reasons[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_finish_reason_on_both_endpoints(eos_server, client, pair, stream, chat):
    c, eos_pair, n_eos = eos_server
    ids = encode_prompt(eos_pair, CHAT)  # the same tokens as a completion prompt
    prompt = CHAT if chat else ids
    assert _finish(c, stream, chat, prompt, max_tokens=12) == "stop"  # EOS, spelled as OpenAI does
    assert _finish(c, stream, chat, prompt, max_tokens=n_eos - 1) == "length"
    r = c.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=12)
    assert r.usage.completion_tokens == n_eos  # the EOS counts, as in generate()
    ref = sprinter_ext.generate(pair, CHAT, temperature=0, max_new_tokens=24)
    stop = ref.text[3:6]
    if stop.strip():
        assert _finish(client, stream, chat, CHAT if chat else ids, max_tokens=24, stop=stop) == "stop"


# -- a client that leaves ---------------------------------------------------------------


def test_client_disconnect_frees_the_worker_and_is_counted(pair):
    app = create_app(pair, model_name=MODEL, pool_size=1, default_max_tokens=16)
    pool, slow_s = app.state.pool, 0.05
    real = pool._setup

    def slowly(cache, req, stats):  # each token 50 ms: 150 tokens would take 7.5 s
        method, ids, tokens = real(cache, req, stats)

        def gen():
            try:
                for t in tokens:
                    time.sleep(slow_s)
                    yield t
            finally:
                tokens.close()

        return method, ids, gen()

    pool._setup = slowly
    with serving(app) as url:
        body = {"prompt": "Once", "max_tokens": 150, "temperature": 0, "stream": True, "method": "ar"}
        t0 = time.monotonic()
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # the first text: the client leaves
        m = app.state.metrics.registry

        def sample(name, **labels):
            return m.get_sample_value(name, labels) or 0.0

        deadline = time.monotonic() + 30
        while (sample("sprinter_requests_total", endpoint="/v1/completions", status="499") < 1
               or sample("sprinter_pool_busy") or not sample("sprinter_generation_tokens_total", method="ar")):
            assert time.monotonic() < deadline, "the disconnected stream was never cancelled"
            time.sleep(0.02)
        freed = time.monotonic() - t0
        assert freed < 150 * slow_s / 2, freed  # stopped, not run to the end
        made = sample("sprinter_generation_tokens_total", method="ar")
        assert 1 <= made < 100 and sample("sprinter_prompt_tokens_total", method="ar") >= 1
        pool._setup = real
        # The one worker takes the next request at once.
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert c.completions.create(model=MODEL, prompt="x", max_tokens=3, temperature=0).usage.completion_tokens == 3
        assert sample("sprinter_requests_total", endpoint="/v1/completions", status="200") == 1
        assert sample("sprinter_queue_depth") == 0
