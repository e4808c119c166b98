"""The OpenAI request bodies the server takes, validated into one :class:`GenerationRequest`.

Both endpoints accept the OpenAI fields this library can honour (``model``,
``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``stream``, ``presence_penalty``,
``frequency_penalty``, ``logprobs`` (chat: with ``top_logprobs``; completions: an int),
``stream_options``) and, as extra body fields, sprinter_ext's own: ``method``,
``k``, ``top_k`` and the chosen method's options (``threshold``, ``max_run``,
``verify``, ``budget``, ``saguaro_c``, ...), which the :class:`~sprinter_ext.Decoder`
validates. ``model`` may be omitted (the served model, as vLLM and llama.cpp do).
OpenAI fields that would change the answer but are not implemented (``n`` > 1,
``tools``, ``logit_bias``, ...) are refused with a 400 naming what is supported
rather than ignored: a client must never get a silently different answer. So is a field
no endpoint knows (a typo), and a chat role other than system, user and assistant. Every
refusal of a field names it in the error's ``param``.
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

# OpenAI fields that are accepted only at their neutral value: name -> (is_neutral(value),
# what this server supports instead). Anything else is refused: a client must never get a
# silently different answer.
_NEUTRAL = {
    "n": (lambda v: v in (None, 1), "one choice per request (n=1): send n requests with different seeds"),
    "best_of": (lambda v: v in (None, 1), "best_of=1 only"),
    "echo": (lambda v: v in (None, False), "echo=false only"),
    "logit_bias": (lambda v: not v, "no logit_bias"),
    "suffix": (lambda v: v in (None, ""), "no suffix (insertion)"),
    "tools": (lambda v: not v, "no tool calling: omit tools"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), "tool_choice none or auto (no tools are called)"),
    "functions": (lambda v: not v, "no function calling: omit functions"),
    "function_call": (lambda v: v in (None, "none", "auto"), "function_call none or auto"),
    "response_format": (lambda v: v in (None, {"type": "text"}), 'plain text only: response_format {"type": "text"}'),
    "parallel_tool_calls": (lambda v: True, ""),
    "modalities": (lambda v: v in (None, ["text"]), 'text only: modalities ["text"]'),
    "audio": (lambda v: v is None, "text only: no audio"),
    "prediction": (lambda v: v is None, "no predicted outputs"),
}
# Accepted and ignored: they do not change the tokens.
_IGNORED = ("user", "metadata", "store", "service_tier", "reasoning_effort")
# The chat roles the server renders with the chat template (tool results need tool calls).
from ..prompts import CHAT_ROLES as ROLES  # noqa: E402 - one list of roles for the API and the server
# sprinter_ext's own request fields (as extra body fields), besides the method options.
_OWN = ("method", "k", "top_k", "min_p", "repetition_penalty")  # min_p, repetition_penalty: as vLLM's extra fields
_OPENAI = ("model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "stream",
           "stream_options", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")  # fmt: skip
# The sampling fields (each checked by SamplingSettings, Decoder.configure's arguments).
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
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
    sampling: dict = field(default_factory=dict)  # _SAMPLING: temperature, top_p, top_k, min_p, penalties
    logprobs: int | None = None  # None: off; else the alternatives per token (top_logprobs / completions' logprobs)
    decoder_kwargs: dict = field(default_factory=dict)  # k and the method's options
    max_tokens_param: str = "max_tokens"  # the field max_tokens came in (or max_completion_tokens)

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


def _option_names() -> set[str]:
    from ..methods import METHODS

    return {n for m in METHODS.values() for n in m.option_names}


# Fields of other APIs a client may send by habit, and what to send here instead.
_FIELD_HINTS = {
    "max_new_tokens": "send max_tokens",
    "do_sample": "sampling is on when temperature > 0 (the default 0 is greedy)",
    "prompt": "chat requests send messages (or use POST /v1/completions for a prompt)",
    "messages": "completion requests send prompt (or use POST /v1/chat/completions for messages)",
}


def _check_fields(body: dict, kind: str) -> None:
    """Refuse a field this endpoint does not know, naming it and what is known (400)."""
    own = "messages" if kind == "chat" else "prompt"
    known = {own, *_OPENAI, *_OWN, *_NEUTRAL, *_IGNORED, *SERVER_ONLY} | _option_names()
    for name in body:
        if name in known:
            continue
        hint = f" ({_FIELD_HINTS[name]})" if name in _FIELD_HINTS else ""
        raise RequestError(
            f"unknown field {name!r}{hint}. This endpoint takes {own}, the OpenAI fields {sorted(_OPENAI)} and "
            f"sprinter_ext's {sorted(set(_OWN) | _option_names())}",
            param=name, code="unknown_parameter",
        )  # fmt: skip


def _sampling(body: dict) -> dict:
    """The _SAMPLING fields, each checked by the library's own rule (param names the field)."""
    from ..errors import SprinterError
    from ..sampling import SamplingSettings

    defaults = {"temperature": D.TEMPERATURE, "top_p": D.TOP_P, "top_k": D.TOP_K, "min_p": D.MIN_P,
                "repetition_penalty": D.REPETITION_PENALTY, "presence_penalty": D.PRESENCE_PENALTY,
                "frequency_penalty": D.FREQUENCY_PENALTY}  # fmt: skip
    out = dict(defaults)
    for name in defaults:
        v = body.get(name)
        if v is None:
            continue
        try:
            SamplingSettings(**{**defaults, name: v})  # one field at a time: the error is that field's
        except SprinterError as e:
            raise RequestError(str(e), param=name) from e
        out[name] = v
    return out


def _method_options(body: dict, method: str | None, default_method: str) -> dict:
    """k and the chosen method's options (values checked later by the Decoder, per option)."""
    from .._stopping import check_int
    from ..errors import SprinterError
    from ..methods import check_option_names, get

    try:
        m = get(method or default_method)
    except SprinterError as e:
        raise RequestError(str(e), param="method") from e
    kwargs = {}
    if "k" in body:
        try:
            kwargs["k"] = "auto" if body["k"] == "auto" else check_int("k", body["k"], 1)  # the Decoder's rule
        except SprinterError as e:
            raise RequestError(f"{e} (draft tokens per round)", param="k") from e
    for name in sorted(_option_names() & set(body)):
        value = body[name]
        try:
            check_option_names(m, {name: value})
        except SprinterError as e:
            raise RequestError(str(e), param=name, code="unsupported_parameter") from e
        if not _is_json_scalar_or_list(value):
            raise RequestError(f"method option {name} must be a number, string, boolean or list, got {value!r}",
                               param=name)  # fmt: skip
        kwargs[name] = value
    return kwargs


def _common(body, kind: str, model_name: str, default_method: str) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model must be a string (see GET /v1/models) or omitted, got {model!r}", param="model")
    if model is not None and model != model_name:
        raise RequestError(f"the model {model!r} does not exist; this server serves {model_name!r} (or omit model)",
                           status=404, param="model", code="model_not_found")  # fmt: skip
    for name, (neutral, supported) in _NEUTRAL.items():
        if name in body and not neutral(body[name]):
            raise RequestError(f"{name}={body[name]!r} is not supported by this server; supported: {supported}",
                               param=name, code="unsupported_parameter")  # fmt: skip
    for name in SERVER_ONLY:
        if name in body:
            raise RequestError(f"{name} is a server setting (see `serve --help`), not a request field", param=name,
                               code="unsupported_parameter")  # fmt: skip
    _check_fields(body, kind)
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, None, integer=True)
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(f"{name} must be >= 1 (or omitted for the server's default), got {max_tokens}", param=name)
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
    sampling = _sampling(body)
    kwargs = _method_options(body, method, default_method)
    logprobs = _logprobs(body, kind)
    return GenerationRequest(kind=kind, prompt=None, max_tokens=max_tokens, stream=stream,
                             include_usage=bool(opts and opts.get("include_usage")), seed=seed, stop=stop,
                             method=method, sampling=sampling, decoder_kwargs=kwargs,
                             max_tokens_param=name, logprobs=logprobs)  # fmt: skip


def _logprobs(body: dict, kind: str) -> int | None:
    """chat: logprobs (bool) + top_logprobs (0..20); completions: logprobs (int 0..20), as OpenAI."""
    from .._decoder_args import TOP_LOGPROBS_MAX

    lp, top = body.get("logprobs"), body.get("top_logprobs")
    if kind == "chat":
        if lp is not None and not isinstance(lp, bool):
            raise RequestError(f"logprobs must be a boolean on chat completions, got {lp!r}", param="logprobs")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= TOP_LOGPROBS_MAX:
                raise RequestError(f"top_logprobs must be an integer in [0, {TOP_LOGPROBS_MAX}], got {top!r}",
                                   param="top_logprobs")  # fmt: skip
            if not lp:
                raise RequestError("top_logprobs needs logprobs=true", param="top_logprobs")
        return (top or 0) if lp else None
    if top is not None:
        raise RequestError("top_logprobs is a chat completions field; completions take logprobs=<int>",
                           param="top_logprobs")  # fmt: skip
    if lp is None:
        return None
    if isinstance(lp, bool) or not isinstance(lp, int) or not 0 <= lp <= TOP_LOGPROBS_MAX:
        raise RequestError(f"logprobs must be an integer in [0, {TOP_LOGPROBS_MAX}] on completions (alternatives "
                           f"per token), got {lp!r}", param="logprobs")  # fmt: skip
    return lp


def _is_json_scalar_or_list(v) -> bool:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return True
    return isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v)


def parse_completion(body, model_name: str, default_method: str = D.METHOD) -> GenerationRequest:
    """Validate a ``POST /v1/completions`` body (prompt: a string or token ids, one prompt)."""
    req = _common(body, "completion", model_name, default_method)
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


def parse_chat(body, model_name: str, default_method: str = D.METHOD) -> GenerationRequest:
    """Validate a ``POST /v1/chat/completions`` body (messages with string or text-part content;
    roles system, user and assistant)."""
    req = _common(body, "chat", model_name, default_method)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string role", param="messages")
        if m["role"] not in ROLES:
            why = " (no tool calling on this server)" if m["role"] in ("tool", "function") else ""
            hint = " (send developer instructions as role system)" if m["role"] == "developer" else ""
            raise RequestError(f"messages[{i}].role {m['role']!r} is not supported{why}{hint}; roles: {list(ROLES)}",
                               param="messages")  # fmt: skip
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise RequestError(f"messages[{i}] has unsupported keys {extra}; a message has role, content (and name)",
                               param="messages")  # fmt: skip
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
