"""The OpenAI-compatible HTTP app (FastAPI) over a :class:`~sprinter_ext.serve.pool.DecoderPool`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (JSON, or server-sent
events with ``"stream": true``), ``GET /v1/models``, ``GET /v1/models/{id}``,
``GET /health``, ``GET /metrics`` (Prometheus text). ``finish_reason`` is OpenAI's:
``"stop"`` (EOS or a stop string) or ``"length"`` (``max_tokens``). A stream whose client
disconnects stops generating at the next token (the worker takes the next request) and
is counted with status 499. Every refused request gets a 4xx with OpenAI's error envelope
``{"error": {"message", "type", "param", "code"}}``; a failure inside a generation
gets a 500 with the same envelope (or an ``error`` event in a stream) for that request
only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import _defaults as D
from ..errors import ArgumentTypeError
from ..models.pair import ModelPair
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .pool import DecoderPool, Event, Job
from .protocol import RequestError, error_body, parse_chat, parse_completion

__all__ = ["create_app"]


def create_app(pair: ModelPair, *, model_name: str | None = None, pool_size: int = 1, method: str = "sd",
               engine: str = "auto", runner: str = "auto", max_length: int | None = None,
               default_max_tokens: int = D.MAX_NEW_TOKENS, decoders_per_worker: int = 4) -> FastAPI:  # fmt: skip
    """A FastAPI app serving `pair` with the OpenAI API; run it with uvicorn.

    Parameters
    ----------
    pair : ModelPair
        With a tokenizer (the API speaks text); chat requests use its chat template.
    model_name : str, optional
        The id clients send as ``model`` and ``/v1/models`` lists (default: the target's
        ``name_or_path``).
    pool_size : int
        Decoders generating at once (worker threads); more requests wait in a queue.
    method : str
        The method of requests without a ``method`` field.
    engine, runner, max_length : every Decoder's (see :class:`sprinter_ext.Decoder`).
    default_max_tokens : int
        ``max_tokens`` of requests that give none.
    decoders_per_worker : int
        Decoders each worker keeps warm (one per distinct method, k and method options;
        the least recently used is dropped first). Sampling settings need no new Decoder.

    Examples
    --------
    >>> import uvicorn, sprinter_ext
    >>> from sprinter_ext.serve import create_app
    >>> app = create_app(sprinter_ext.load_pair())
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP
    """
    if not isinstance(pair, ModelPair):
        raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")
    if pair.tokenizer is None:
        raise ArgumentTypeError("the server needs a pair with a tokenizer: load_pair(..., tokenizer=...)")
    name = model_name or str(getattr(pair.target.config, "name_or_path", "") or "sprinter-ext")
    metrics = Metrics()
    pool = DecoderPool(pair, size=pool_size, method=method, engine=engine, runner=runner, max_length=max_length,
                       default_max_tokens=default_max_tokens, decoders_per_worker=decoders_per_worker,
                       metrics=metrics)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app):
        yield
        pool.close()

    app = FastAPI(title="sprinter_ext", lifespan=lifespan)
    app.state.pool, app.state.metrics, app.state.model_name = pool, metrics, name
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError):
        return JSONResponse(error_body(e.message, type=e.type, param=e.param, code=e.code), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), type=kind), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        return JSONResponse(error_body(str(e.errors())), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        # NOTE: a bug, not a refusal: still the OpenAI envelope, so clients parse it.
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", type="server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "pool_size": pool.size}

    model_card = {"id": name, "object": "model", "created": created, "owned_by": "sprinter_ext"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}")  # NOTE: :path, since ids such as "org/name" hold a slash
    async def model(model_id: str):
        if model_id != name:
            raise RequestError(f"the model {model_id!r} does not exist; this server serves {name!r}", status=404,
                               param="model", code="model_not_found")  # fmt: skip
        return model_card

    @app.get("/metrics")
    async def metrics_endpoint():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _handle(request, "/v1/completions", parse_completion)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _handle(request, "/v1/chat/completions", parse_chat)

    async def _handle(request: Request, endpoint: str, parse):
        t0 = time.perf_counter()
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            _count(endpoint, 400, t0)
            raise RequestError(f"the request body is not valid JSON: {e}") from e
        try:
            req = parse(body, name, pool.method)
        except RequestError as e:
            _count(endpoint, e.status, t0)
            raise
        job = Job(request=req, loop=asyncio.get_running_loop(), arrival=t0)
        pool.submit(job)
        try:
            first = await job.events.get()
        except BaseException:
            job.cancelled.set()
            raise
        if first.kind == "error":
            _count(endpoint, first.error.status, t0)
            raise first.error
        rid = ("chatcmpl-" if req.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        if req.stream:
            return StreamingResponse(_sse(job, rid, endpoint, t0), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        pieces, lps = [], []
        try:
            while True:
                ev = await job.events.get()
                lps.extend(ev.logprobs or ())
                if ev.kind == "text":
                    pieces.append(ev.text)
                elif ev.kind == "error":
                    _count(endpoint, ev.error.status, t0)
                    raise ev.error
                else:
                    break
        finally:
            job.cancelled.set()
        _count(endpoint, 200, t0)
        text = "".join(pieces)
        lp = _logprobs_body(pair.tokenizer, lps, req.kind) if req.logprobs is not None else None
        if req.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                      "finish_reason": ev.finish_reason}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": ev.finish_reason}
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": int(time.time()), "model": name, "choices": [choice],
                "usage": ev.usage}  # fmt: skip

    async def _sse(job: Job, rid: str, endpoint: str, t0: float):
        chat = job.request.kind == "chat"
        obj = "chat.completion.chunk" if chat else "text_completion"
        stamp = int(time.time())

        offset = [0]  # completions' text_offset of the next token

        def chunk(text: str | None, finish=None, *, role=False, lps=None) -> str:
            lp = None
            if job.request.logprobs is not None and not role:
                lp = _logprobs_body(pair.tokenizer, lps or [], job.request.kind, offset[0])
                if not chat:
                    offset[0] += sum(len(t) for t in lp["tokens"])
            if chat:
                delta = ({"role": "assistant", "content": ""} if role else {}) | ({} if text is None else {"content": text})
                c = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
            else:
                c = {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish}
            return _data({"id": rid, "object": obj, "created": stamp, "model": name, "choices": [c]})

        status, finished = 200, False
        try:
            if chat:
                yield chunk(None, role=True)
            while True:
                ev: Event = await job.events.get()
                if ev.kind == "text":
                    yield chunk(ev.text, lps=ev.logprobs)
                elif ev.kind == "error":
                    # NOTE: the 200 is already sent; an "error" event is what OpenAI's client
                    # turns into an APIError for this stream.
                    status = ev.error.status
                    e = ev.error
                    yield _data(error_body(e.message, type=e.type, param=e.param, code=e.code))
                    break
                else:
                    yield chunk(None, ev.finish_reason, lps=ev.logprobs)
                    if job.request.include_usage:
                        yield _data({"id": rid, "object": obj, "created": stamp, "model": name, "choices": [],
                                     "usage": ev.usage})  # fmt: skip
                    break
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            job.cancelled.set()  # the client may have gone: stop generating for it
            # NOTE: 499 (nginx's "client closed request") counts a stream its client left.
            _count(endpoint, status if finished else 499, t0)

    def _count(endpoint: str, status: int, t0: float) -> None:
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    return app


# NOTE: OpenAI's stand-in for a token that cannot be drawn (log 0 = -inf is not JSON).
_UNLIKELY = -9999.0


def _logprobs_body(tokenizer, entries: list, kind: str, offset: int = 0) -> dict:
    """OpenAI's logprobs object for TokenLogprobs `entries`: chat {"content": [{token, logprob, bytes,
    top_logprobs}], "refusal"}; completions {tokens, token_logprobs, top_logprobs, text_offset}."""
    def text(i: int) -> str:
        return tokenizer.decode([i]) if tokenizer is not None else str(i)

    def num(v: float) -> float:
        return v if v > _UNLIKELY else _UNLIKELY

    if kind == "chat":
        def one(i, v):
            s = text(i)
            return {"token": s, "logprob": num(v), "bytes": list(s.encode("utf-8"))}

        content = [one(e.token, e.logprob) | {"top_logprobs": [one(i, v) for i, v in e.top]} for e in entries]
        return {"content": content, "refusal": None}
    toks = [text(e.token) for e in entries]
    starts, at = [], offset
    for t in toks:
        starts.append(at)
        at += len(t)
    return {"tokens": toks, "token_logprobs": [num(e.logprob) for e in entries],
            "top_logprobs": [{text(i): num(v) for i, v in e.top} for e in entries], "text_offset": starts}


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
