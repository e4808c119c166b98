"""A pool of Decoders served by worker threads: requests queue, never see DecoderBusyError.

Each worker thread owns its Decoders (a small LRU keyed by method, k and the method's
options; sampling settings are set per request), so a Decoder only ever runs on its
worker's thread, one generation at a time. Requests wait
in one FIFO queue; a request cancelled while waiting (client gone) is skipped. A worker
turns a request into a stream of :class:`Event`\\ s posted to the request's asyncio
queue: ``start`` (the request passed validation; a streaming reply may begin), then
``text`` pieces, then ``done`` (finish reason, usage) or, at any point, ``error``. Any
exception inside a generation becomes an ``error`` event for that request only; the
worker goes on with the next request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import _defaults as D
from .._decoder_args import _DEFAULT, _eos_set
from ..decoding import Decoder
from ..errors import NonFiniteLogitsError, SprinterError
from ..models.pair import ModelPair
from .metrics import Metrics
from .protocol import GenerationRequest, RequestError
from .stops import StopMatcher

__all__ = ["DecoderPool", "Job", "Event"]


@dataclass
class Event:
    kind: str  # "start", "text", "done" or "error"
    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    error: RequestError | None = None
    logprobs: list | None = None  # "text" / "done": the TokenLogprobs of the tokens since the last event


@dataclass
class Job:
    """One request on its way through the pool; `events` is read on the event loop."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    arrival: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    method: str = ""

    def emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()


class DecoderPool:
    """`size` worker threads, each with up to `decoders_per_worker` cached Decoders.

    Parameters
    ----------
    pair : ModelPair
        Shared by every Decoder (the weights are not copied; each Decoder has its KV caches).
    size : int
        Concurrent generations. On a CPU, 1 (the default) gives the lowest latency per
        request: two generations share the cores and memory bandwidth.
    method : str
        The method of requests that do not name one.
    engine, runner, max_length : passed to every :class:`~sprinter_ext.Decoder`.
    default_max_tokens : int
        ``max_tokens`` of requests that give none (clipped to what fits in the cache).
    """

    def __init__(self, pair: ModelPair, *, size: int = 1, method: str = "sd", engine: str = "auto",
                 runner: str = "auto", max_length: int | None = None, decoders_per_worker: int = 4,
                 default_max_tokens: int = D.MAX_NEW_TOKENS, metrics: Metrics | None = None):  # fmt: skip
        from ..errors import InvalidArgumentError

        for name, v in (("size", size), ("decoders_per_worker", decoders_per_worker),
                        ("default_max_tokens", default_max_tokens)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {v!r}")
        self.pair, self.size, self.method = pair, size, method
        self.engine, self.runner, self.max_length = engine, runner, max_length
        self.decoders_per_worker, self.default_max_tokens = decoders_per_worker, default_max_tokens
        self.metrics = metrics or Metrics()
        self._eos = _eos_set(pair, _DEFAULT)
        # Fail at start-up, not on the first request, if the default method cannot run.
        self._warm = self._new_decoder(method, {})
        self._queue: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"sprinter-serve-{i}", daemon=True) for i in range(size)
        ]
        for t in self._threads:
            t.start()

    # -- the public side (event loop) ----------------------------------------------------

    def submit(self, job: Job) -> None:
        self.metrics.queue_depth.inc()
        self._queue.put(job)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers after the requests they are running (queued ones are dropped)."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.metrics.queue_depth.dec()
                job.cancelled.set()
                job.emit(Event("error", error=RequestError("the server is shutting down", status=503,
                                                           type="server_error")))  # fmt: skip
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)

    # -- the worker side -------------------------------------------------------------------

    def _new_decoder(self, method: str, kwargs: dict) -> Decoder:
        return Decoder(self.pair, method, engine=self.engine, runner=self.runner, max_length=self.max_length, **kwargs)

    def _work(self, index: int) -> None:
        cache: OrderedDict[tuple, Decoder] = OrderedDict()
        if index == 0:
            cache[GenerationRequest.decoder_key_of(self.method, {})] = self._warm
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.metrics.queue_depth.dec()
            if job.cancelled.is_set():
                continue
            self.metrics.pool_busy.inc()
            try:
                self._serve(cache, job)
            except RequestError as e:
                job.emit(Event("error", error=e))
            except Exception as e:  # noqa: BLE001 -- never let one request kill the worker
                job.emit(Event("error", error=_server_error(e)))
            finally:
                self.metrics.pool_busy.dec()

    def _decoder(self, cache: OrderedDict, method: str, kwargs: dict) -> Decoder:
        key = GenerationRequest.decoder_key_of(method, kwargs)
        dec = cache.get(key)
        if dec is None:
            dec = self._new_decoder(method, kwargs)
            cache[key] = dec
            while len(cache) > self.decoders_per_worker:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return dec

    def _setup(self, cache: OrderedDict, req: GenerationRequest, stats: dict):
        """The Decoder, prompt ids and token stream of `req`; argument errors become 400s
        whose ``param`` names the field at fault."""
        from ..prompts import encode_prompt

        method = req.method or self.method
        prompt_field = "messages" if req.kind == "chat" else "prompt"
        with _as_request_error(lambda: self._option_at_fault(method, req.decoder_kwargs)):
            dec = self._decoder(cache, method, req.decoder_kwargs)
        # NOTE: sampling settings are read per run (Decoder.configure), so one warm Decoder
        # per method and options serves every temperature/top_p/top_k; the tests hold its
        # output to generate()'s under changing settings. protocol checked them field by field.
        with _as_request_error(lambda: next((n for n in ("min_p", "repetition_penalty", "presence_penalty",
                                                         "frequency_penalty") if n in req.sampling), "temperature")):
            dec.configure(**req.sampling)
        with _as_request_error(lambda: prompt_field):
            ids = encode_prompt(self.pair, req.prompt, chat=req.kind == "chat")
        max_new = req.max_tokens
        if max_new is None:
            # NOTE: lookahead is the cache room a round may need beyond the new tokens
            # (k, or sprinter's max_run); the default never asks for more than fits.
            room = dec.max_length - len(ids) - dec.lookahead
            max_new = max(0, min(self.default_max_tokens, room))
        with _as_request_error(lambda: prompt_field if req.max_tokens is None else req.max_tokens_param):
            lp = dict(logprobs=True, top_logprobs=req.logprobs) if req.logprobs is not None else {}
            tokens = dec.stream(ids, max_new_tokens=max_new, seed=req.seed, stats=stats, **lp)  # validates now
        return method, ids, tokens

    def _option_at_fault(self, method: str, kwargs: dict) -> str:
        """The request field a refused Decoder(method, **kwargs) is about: the method when it
        cannot run on this pair at all, else the first option refused on its own, else (a
        combination) the first option, else the method."""
        from ..methods import get

        m = get(method)
        try:
            m.validate(self.pair, {})
        except (ValueError, TypeError):
            return "method"
        for name in sorted(kwargs):
            if name == "k":
                continue  # checked in protocol
            try:
                m.validate(self.pair, {name: kwargs[name]})
            except (ValueError, TypeError):
                return name
        return min((n for n in kwargs if n != "k"), default="method")

    def _serve(self, cache: OrderedDict, job: Job) -> None:
        from ..prompts import IncrementalDetokenizer

        req, m = job.request, self.metrics
        stats: dict[str, Any] = {}
        method, ids, tokens = self._setup(cache, req, stats)
        job.method = method
        job.emit(Event("start"))
        detok, stops = IncrementalDetokenizer(self.pair.tokenizer), StopMatcher(req.stop)
        n, finish, last = 0, "length", None
        lps = [] if req.logprobs is not None else None  # TokenLogprobs not yet sent
        try:
            for t in tokens:
                if lps is not None:
                    entry, t = t, t.token
                    if t not in self._eos:
                        lps.append(entry)
                now = time.perf_counter()
                # NOTE: what a reader sees: a round commits several tokens at once, so the
                # gaps are one wait per round and ~0 inside it (the mean is time per token).
                if last is None:
                    m.ttft.labels(method).observe(now - job.arrival)
                else:
                    m.itl.labels(method).observe(now - last)
                last = now
                n += 1
                if t in self._eos:  # EOS ends the run (the stream ends after it) and is not text
                    finish = "stop"  # the library's "eos", spelled as OpenAI does
                    continue
                piece = stops.push(detok.push([t]))
                if piece:
                    job.emit(Event("text", text=piece, logprobs=lps))
                    lps = [] if lps is not None else None
                if stops.stopped:
                    finish = "stop"
                    break
                if job.cancelled.is_set():
                    break
            if not stops.stopped:
                tail = stops.push(detok.flush()) + stops.flush()
                if tail:
                    job.emit(Event("text", text=tail, logprobs=lps))
                    lps = [] if lps is not None else None
        except NonFiniteLogitsError as e:
            raise RequestError(f"generation failed: {e}", status=500, type="server_error",
                               code="non_finite_logits") from e  # fmt: skip
        finally:
            tokens.close()  # a stop string or a gone client: end the run, free the Decoder
        # NOTE: a run ended early by a stop string has no Decoder stats (they are written when
        # the stream ends); its tokens still count, its draft/accept counts do not.
        m.record_run(method, len(ids), n, stats)
        usage = {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}
        job.emit(Event("done", finish_reason=finish, usage=usage, logprobs=lps))


@contextmanager
def _as_request_error(param_of):
    """A named argument error (ValueError/TypeError from sprinter_ext) raised inside becomes a
    400 RequestError whose param is ``param_of()``; other errors pass through."""
    try:
        yield
    except SprinterError as e:
        if isinstance(e, (ValueError, TypeError)) and not isinstance(e, NonFiniteLogitsError):
            raise RequestError(str(e), param=param_of()) from e
        raise


def _server_error(e: Exception) -> RequestError:
    return RequestError(f"internal error while generating: {type(e).__name__}: {e}", status=500, type="server_error")
