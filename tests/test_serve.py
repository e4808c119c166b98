"""The OpenAI-compatible server, started on 127.0.0.1 and driven with the official client.

The pair and the server are tests/serve_fixtures.py's (a tiny random Llama pair with the
default pair's real tokenizer); one server (pool of 2) serves the whole module.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

for _mod in ("fastapi", "uvicorn", "prometheus_client", "openai"):
    pytest.importorskip(_mod, reason="the server tests need the [serve] extra and openai ([dev])")
try:  # the HTTP client the installed openai uses (httpx2 for openai 3, httpx before)
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx", reason="openai's HTTP client (httpx2 or httpx) is missing")

import openai  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from serve_fixtures import CHAT, MODEL, NAN_TOKEN, VOCAB, client, pair, server  # noqa: E402,F401  (fixtures)

import sprinter_ext  # noqa: E402
from sprinter_ext.serve import create_app  # noqa: E402
from sprinter_ext.serve.cli import main as serve_main  # noqa: E402
from sprinter_ext.serve.stops import StopMatcher  # noqa: E402


def reference(pair, prompt, *, chat, **kw):
    return sprinter_ext.generate(pair, prompt, chat=chat, **kw)


def test_models_health_and_routes(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["pool_size"] == 2
    r = httpx.get(url + "/v1/nowhere")
    assert r.status_code == 404 and "message" in r.json()["error"]


@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
def test_chat_greedy_equals_generate(pair, client, method):
    ref = reference(pair, CHAT, chat=True, method=method, temperature=0, max_new_tokens=12, seed=0)
    r = client.chat.completions.create(model=MODEL, messages=CHAT, temperature=0, max_tokens=12,
                                       extra_body={"method": method})  # fmt: skip
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text
    assert r.usage.completion_tokens == len(ref.tokens) and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    eos = pair.target.config.eos_token_id
    assert r.choices[0].finish_reason == ("stop" if ref.tokens[-1] == eos else "length")
    pieces = []
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, temperature=0, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"method": method})  # fmt: skip
    chunks = list(stream)
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            pieces.append(c.choices[0].delta.content)
    assert "".join(pieces) == ref.text
    assert len([p for p in pieces if p]) >= 2  # streamed, not one final blob
    assert chunks[-1].usage.completion_tokens == len(ref.tokens) and not chunks[-1].choices
    assert chunks[-2].choices[0].finish_reason == r.choices[0].finish_reason


@pytest.mark.parametrize("extra", [{"method": "sd", "k": 2}, {"method": "ssd", "budget": 2, "k": 3},
                                   {"method": "ersd", "k": 5, "top_k": 50}])
def test_method_options_as_extra_body_fields(pair, client, extra):
    kw = {k: v for k, v in extra.items() if k != "top_k"}
    ref = reference(pair, "Once", chat=False, temperature=0.8, top_k=extra.get("top_k", 0), seed=11,
                    max_new_tokens=9, **kw)  # fmt: skip
    r = client.completions.create(model=MODEL, prompt="Once", temperature=0.8, seed=11, max_tokens=9, extra_body=extra)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == len(ref.tokens)


def test_completions_text_ids_and_seed(pair, client):
    ref = reference(pair, "The tide", chat=False, method="sd", temperature=0, max_new_tokens=10)
    r = client.completions.create(model=MODEL, prompt="The tide", temperature=0, max_tokens=10)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == len(ref.tokens)
    ids = pair.tokenizer("The tide", add_special_tokens=False).input_ids
    r2 = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=10)
    assert r2.choices[0].text == ref.text
    # Sampling: a pure function of the seed, the same as generate()'s.
    want = reference(pair, "The tide", chat=False, method="sd", temperature=1.0, top_p=0.9, seed=7, max_new_tokens=10)
    got = [client.completions.create(model=MODEL, prompt="The tide", temperature=1.0, top_p=0.9, seed=7,
                                     max_tokens=10).choices[0].text for _ in range(2)]  # fmt: skip
    assert got == [want.text, want.text]
    streamed = client.completions.create(model=MODEL, prompt="The tide", temperature=1.0, top_p=0.9, seed=7,
                                         max_tokens=10, stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed if c.choices) == want.text


def test_stop_strings_cut_text_and_never_leak(pair, client):
    from sprinter_ext.prompts import IncrementalDetokenizer

    ref = reference(pair, CHAT, chat=True, method="sd", temperature=0, max_new_tokens=24)
    full, detok, ends = ref.text, IncrementalDetokenizer(pair.tokenizer), []
    for t in ref.tokens:
        ends.append(len(detok.text + detok.push([t])))
    # A stop string that straddles two tokens' text: the stream must hold its first half back.
    cuts = [b for b in ends if 2 <= b <= len(full) - 2 and full.find(full[b - 2 : b + 2]) == b - 2]
    assert cuts, full
    stop = full[cuts[0] - 2 : cuts[0] + 2]
    want = full[: cuts[0] - 2]
    r = client.chat.completions.create(model=MODEL, messages=CHAT, temperature=0, max_tokens=24, stop=[stop, "\x00"])
    assert r.choices[0].message.content == want and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=CHAT, temperature=0, max_tokens=24, stop=stop, stream=True) if c.choices]  # fmt: skip
    assert "".join(pieces) == want  # a leaked partial stop string would show up here


def test_stop_matcher_holds_back_partial_stops():
    m = StopMatcher(["STOP", "xy"])
    assert m.push("ab S") == "ab " and m.push("T") == "" and m.push("Ox") == "STO"
    assert m.push("z") == "xz" and m.flush() == "" and not m.stopped
    m = StopMatcher(["STOP"])
    assert m.push("aST") == "a" and m.push("OP tail") == "" and m.stopped and m.push("more") == ""
    m = StopMatcher(["ab"])
    assert m.push("xa") == "x" and m.flush() == "a"  # the stream ended: the held "a" is text
    assert StopMatcher([]).push("anything") == "anything"


def test_concurrent_requests_beyond_pool_all_complete(pair, client):
    prompts = [f"Story {i}:" for i in range(6)]  # 3x the pool
    refs = [reference(pair, p, chat=False, method="sd", temperature=0, max_new_tokens=8).text for p in prompts]

    def ask(i):
        kw = dict(model=MODEL, prompt=prompts[i], temperature=0, max_tokens=8)
        if i % 2:
            return "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
        return client.completions.create(**kw).choices[0].text

    with ThreadPoolExecutor(6) as ex:
        assert list(ex.map(ask, range(6))) == refs


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 2}, "n"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"method": "nope"}, "method"),
        ({"k": 0}, "k"),
        ({"bogus_option": 1}, "bogus_option"),
        ({"engine": "reference"}, "engine"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": -3}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        ({"model": "gpt-4"}, "model"),
    ],
)
def test_bad_requests_get_4xx_json(server, extra, param):
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 4} | extra
    r = httpx.post(server[0] + "/v1/chat/completions", json=body, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] in ("invalid_request_error", "not_found_error")
    assert err["param"] == param  # every refusal of a field names it


def test_bad_requests_through_the_client_and_raw(server, client):
    with pytest.raises(openai.BadRequestError, match="n=2"):
        client.chat.completions.create(model=MODEL, messages=CHAT, n=2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")
    with pytest.raises(openai.BadRequestError, match="batched"):
        client.completions.create(model=MODEL, prompt=["a", "b"])
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.completions.create(model=MODEL, prompt=[VOCAB + 5], max_tokens=2)
    with pytest.raises(openai.BadRequestError):  # refused before the stream starts
        client.chat.completions.create(model=MODEL, messages=CHAT, temperature=-1, stream=True)
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        r = httpx.post(server[0] + "/v1/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["message"]
    # The workers are alive after all that.
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=3, temperature=0).usage.completion_tokens == 3


def test_generation_error_is_that_requests_only(pair, server, client):
    bad = [5, NAN_TOKEN, 7]
    with pytest.raises(sprinter_ext.NonFiniteLogitsError):
        sprinter_ext.generate(pair, bad, max_new_tokens=4)
    r = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": bad, "max_tokens": 4}, timeout=60)
    assert r.status_code == 500 and r.json()["error"]["code"] == "non_finite_logits"
    with pytest.raises(openai.APIError, match="non-finite|NaN|nan"):
        list(client.completions.create(model=MODEL, prompt=bad, max_tokens=4, stream=True))
    for _ in range(3):  # both workers, still serving
        assert client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=4, temperature=0).choices[0].text


def test_metrics_endpoint(server, client):
    client.completions.create(model=MODEL, prompt="Metrics", max_tokens=6, temperature=0, extra_body={"method": "sd"})
    httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": "x", "n": 3})
    text = httpx.get(server[0] + "/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    def value(family, suffix, **labels):  # noqa: E306
        return sum(s.value for s in fams[family].samples if s.name == family + suffix
                   and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip
    assert value("sprinter_requests", "_total", endpoint="/v1/completions", status="200") >= 1
    assert value("sprinter_requests", "_total", endpoint="/v1/completions", status="400") >= 1
    assert value("sprinter_generation_tokens", "_total", method="sd") >= 6
    assert value("sprinter_time_to_first_token_seconds", "_count", method="sd") >= 1
    assert value("sprinter_inter_token_latency_seconds", "_count", method="sd") >= 5
    rate = value("sprinter_acceptance_rate", "", method="sd")
    drafted = value("sprinter_draft_tokens", "_total", method="sd")
    accepted = value("sprinter_accepted_tokens", "_total", method="sd")
    assert drafted > 0 and 0 <= accepted <= drafted and rate == pytest.approx(accepted / drafted)
    assert value("sprinter_queue_depth", "") == 0


def test_create_app_and_cli_arguments(pair, capsys):
    from sprinter_ext.models.tiny import tiny_pair

    d, t = tiny_pair("gpt2", vocab=64)
    with pytest.raises(sprinter_ext.ArgumentTypeError, match="tokenizer"):
        create_app(sprinter_ext.load_pair(d, t))
    with pytest.raises(sprinter_ext.InvalidArgumentError, match="size"):
        create_app(pair, pool_size=0)
    with pytest.raises(sprinter_ext.InvalidArgumentError, match="method"):
        create_app(pair, method="nope")
    assert serve_main(["--help"]) == 0 and "--pool-size" in capsys.readouterr().out
    from sprinter_ext.__main__ import main as top_main

    assert top_main(["serve", "--help"]) == 0 and "--threads" in capsys.readouterr().out
    assert serve_main(["--threads", "-2"]) == 2
    assert serve_main(["--draft", "only-one"]) == 2
    assert serve_main(["--draft", "head", "--target", "some-target"]) == 2  # "head" is the embedded pair's
    assert serve_main(["--pool-size", "0"]) == 2
    assert serve_main(["--bogus"]) == 2


def test_pool_skips_cancelled_jobs_and_serves_the_next(pair):
    import asyncio

    from sprinter_ext.serve.pool import DecoderPool, Job
    from sprinter_ext.serve.protocol import parse_completion

    pool = DecoderPool(pair, size=1, method="ar")

    async def go():
        loop = asyncio.get_running_loop()
        body = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 5, "temperature": 0}
        gone = Job(request=parse_completion(body, MODEL), loop=loop)
        gone.cancelled.set()  # its client left while it waited in the queue
        live = Job(request=parse_completion(body, MODEL), loop=loop)
        pool.submit(gone)
        pool.submit(live)
        events = [await asyncio.wait_for(live.events.get(), 60)]
        while events[-1].kind not in ("done", "error"):
            events.append(await asyncio.wait_for(live.events.get(), 60))
        return gone, events

    try:
        gone, events = asyncio.run(go())
    finally:
        pool.close()
    ref = sprinter_ext.generate(pair, [5, 6, 7], method="ar", temperature=0, max_new_tokens=5)
    assert gone.events.empty()  # skipped: never started, never answered
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "done"
    assert "".join(e.text for e in events if e.kind == "text") == ref.text
    assert events[-1].usage["completion_tokens"] == len(ref.tokens)
    assert pool.metrics.registry.get_sample_value("sprinter_queue_depth") == 0 and not any(t.is_alive() for t in pool._threads)


def test_unexpected_worker_exception_is_one_500(server, client, monkeypatch):
    pool = server[1].state.pool
    real, calls = pool._setup, []

    def planted(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("planted bug")
        return real(*a, **kw)

    monkeypatch.setattr(pool, "_setup", planted)
    r = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60)
    assert r.status_code == 500 and "planted bug" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "server_error"
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=0).usage.completion_tokens == 2
