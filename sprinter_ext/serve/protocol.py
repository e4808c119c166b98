"""The OpenAI request bodies the server takes, validated into one :class:`GenerationRequest`.

Both endpoints accept the OpenAI fields this library can honour (``model``,
``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``stream``,
``stream_options``) and, as extra body fields, sprinter_ext's own: ``method``,
``k``, ``top_k`` and the chosen method's options (``threshold``, ``max_run``,
``verify``, ``budget``, ``saguaro_c``, ...), which the :class:`~sprinter_ext.Decoder`
validates. OpenAI fields that would change the answer but are not implemented
(``n`` > 1, ``logprobs``, ``tools``, penalties, ...) are refused with a 400 rather
than ignored: a client must never get a silently different answer.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from .. import _defaults as D

__all__ = ["RequestError", "GenerationRequest", "parse_chat", "parse_completion", "error_body"]

# Server-level settings a request may not override (they pick code paths, caches or files).
SERVER_ONLY = ("engine", "runner", "max_length", "eos_token_id", "verifier", "pin", "threaded")

# OpenAI fields that are accepted only at their neutral value: name -> is_neutral(value).
_NEUTRAL = {
    "n": lambda v: v in (None, 1),
    "best_of": lambda v: v in (None, 1),
    "echo": lambda v: v in (None, False),
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v in (None, 0),
    "presence_penalty": lambda v: v in (None, 0, 0.0),
    "frequency_penalty": lambda v: v in (None, 0, 0.0),
    "logit_bias": lambda v: not v,
    "suffix": lambda v: v in (None, ""),
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none", "auto"),
    "response_format": lambda v: v in (None, {"type": "text"}),
    "parallel_tool_calls": lambda v: True,
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
}
# Accepted and ignored: they do not change the tokens.
_IGNORED = ("user", "metadata", "store", "service_tier", "reasoning_effort")
_MAX_STOP = 4  # as OpenAI


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-style JSON error with `status`."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):  # fmt: skip
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = message, status, param, type, code


def error_body(message: str, *, type: str = "invalid_request_error", param=None, code=None) -> dict:
    """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class GenerationRequest:
    """One validated request: what to decode (prompt or messages) and how."""

    kind: str  # "chat" or "completion"
    prompt: Any  # str or list of token ids (completion) or a list of message dicts (chat)
    max_tokens: int | None
    stream: bool
    include_usage: bool
    seed: int
    stop: list[str]
    method: str | None  # None: the server's default
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k
    decoder_kwargs: dict = field(default_factory=dict)  # k and the method's options

    @staticmethod
    def decoder_key_of(method: str, decoder_kwargs: dict) -> tuple:
        """A hashable key of a Decoder (one Decoder per distinct method and settings)."""
        return (method,) + tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in decoder_kwargs.items()))


def _number(body: dict, name: str, default, *, integer: bool = False):
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise RequestError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}", param=name)
    return v


def _common(body, kind: str, model_name: str) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError("model is required: a string (see GET /v1/models)", param="model")
    if model != model_name:
        raise RequestError(f"the model {model!r} does not exist; this server serves {model_name!r}",
                           status=404, param="model", code="model_not_found")  # fmt: skip
    for name, neutral in _NEUTRAL.items():
        if name in body and not neutral(body[name]):
            raise RequestError(f"{name}={body[name]!r} is not supported by this server", param=name,
                               code="unsupported_parameter")  # fmt: skip
    for name in SERVER_ONLY:
        if name in body:
            raise RequestError(f"{name} is a server setting (see `serve --help`), not a request field", param=name,
                               code="unsupported_parameter")  # fmt: skip
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        max_tokens = _number(body, name, None, integer=True)
        if max_tokens < 0:
            raise RequestError(f"{name} must be >= 0, got {max_tokens}", param=name)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}", param="stream")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or set(opts) - {"include_usage", "continuous_usage_stats"}):
        raise RequestError(f"stream_options must be an object with include_usage, got {opts!r}", param="stream_options")
    seed = body.get("seed")
    if seed is None:
        # NOTE: an unseeded request gets a fresh seed from the OS (never a global RNG), as
        # OpenAI's sampling differs between unseeded calls; greedy decoding ignores it.
        seed = secrets.randbits(63)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise RequestError(f"seed must be an integer in [0, 2**64), got {seed!r}", param="seed")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > _MAX_STOP:
        raise RequestError(f"stop must be a non-empty string or a list of at most {_MAX_STOP} of them", param="stop")
    method = body.get("method")
    if method is not None and not isinstance(method, str):
        raise RequestError(f"method must be a string, got {method!r}", param="method")
    sampling = {
        "temperature": _number(body, "temperature", D.TEMPERATURE),
        "top_p": _number(body, "top_p", D.TOP_P),
        "top_k": _number(body, "top_k", D.TOP_K, integer=True),
    }
    kwargs = {}
    if "k" in body:
        kwargs["k"] = _number(body, "k", None, integer=True)
    known = {"model", "messages", "prompt", "max_tokens", "max_completion_tokens", "stream", "stream_options",
             "seed", "stop", "method", "temperature", "top_p", "top_k", "k", *_NEUTRAL, *_IGNORED}  # fmt: skip
    for name, value in body.items():
        if name in known:
            continue
        # Everything else is an option of the method; the Decoder says whether it takes it.
        if not _is_json_scalar_or_list(value):
            raise RequestError(f"method option {name} must be a number, string, boolean or list, got {value!r}",
                               param=name)  # fmt: skip
        kwargs[name] = value
    return GenerationRequest(kind=kind, prompt=None, max_tokens=max_tokens, stream=stream,
                             include_usage=bool(opts and opts.get("include_usage")), seed=seed, stop=stop,
                             method=method, sampling=sampling, decoder_kwargs=kwargs)  # fmt: skip


def _is_json_scalar_or_list(v) -> bool:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return True
    return isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v)


def parse_completion(body, model_name: str) -> GenerationRequest:
    """Validate a ``POST /v1/completions`` body (prompt: a string or token ids, one prompt)."""
    req = _common(body, "completion", model_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise RequestError("one prompt per request: batched prompts are not supported (send one request each)",
                           param="prompt", code="unsupported_parameter")  # fmt: skip
    is_ids = isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    if not (isinstance(prompt, str) or is_ids) or not prompt:
        raise RequestError("prompt must be a non-empty string or a non-empty list of token ids", param="prompt")
    req.prompt = prompt
    return req


def parse_chat(body, model_name: str) -> GenerationRequest:
    """Validate a ``POST /v1/chat/completions`` body (messages with string or text-part content)."""
    req = _common(body, "chat", model_name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string role", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):  # fmt: skip
                raise RequestError(f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts", param="messages")
        out.append({"role": m["role"], "content": content})
    req.prompt = out
    return req
