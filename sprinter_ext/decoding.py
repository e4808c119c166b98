"""The public decoding API: ``Decoder`` (reusable) and ``generate`` (one call).

Every argument is validated when it is given, with a named error, before any
state changes; a Decoder owns the static KV caches of its pair, so reusing one
keeps buffers warm. One generation at a time per Decoder: a second concurrent
call raises :class:`DecoderBusyError` instead of corrupting the caches.

This module is the boundary (arguments, prompts, results); what runs the rounds is an
engine from :mod:`sprinter_ext._engine` (the Python round driver or the C++ loop), the
runners come from :mod:`sprinter_ext._engine._runners`, and what a method can run on
from its record in :mod:`sprinter_ext.methods`.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _rng
from ._engine import ENGINES, make_engine, one_shot_max_length, pick_engine
from ._engine._runners import RUNNERS, runner_factory
from .errors import (
    ArgumentTypeError,
    CacheOverflowError,
    DecoderBusyError,
    InvalidArgumentError,
    TokenizerRequiredError,
)
from .methods import METHODS, NATIVE_METHODS, SNAPSHOT_METHODS  # noqa: F401 - NATIVE/SNAPSHOT re-exported
from .methods import get as _method
from .methods._session import Lane
from .models.pair import ModelPair
from .models.runner import ModelRunner
from .prompts import IncrementalDetokenizer, encode_prompt
from .sampling import SamplingSettings

__all__ = ["Decoder", "GenerationResult", "generate", "ENGINES", "DecoderBusyError"]


def _native_available() -> bool:
    try:
        from . import _native  # noqa: F401
    except ImportError:
        return False
    return True


def _has_cuda_ops() -> bool:
    from .ops import _has_cuda_ops as has

    return has()


_DEFAULT = object()  # "use the model's own eos_token_id"


@dataclass
class GenerationResult:
    tokens: list[int]  # the new tokens only
    text: str | None  # decoded new text; None without a tokenizer
    stats: dict[str, Any] = field(default_factory=dict)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise InvalidArgumentError(f"{name} must be >= {low}, got {value}")
    return value


def _eos_set(pair: ModelPair, eos_token_id) -> frozenset[int]:
    if eos_token_id is _DEFAULT:
        target = pair._view("target")  # no transformers build for a lazy default pair
        eos_token_id = getattr(target.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(target.config, "eos_token_id", None)
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, (list, tuple, set, frozenset)):
        ids = list(eos_token_id)
    elif isinstance(eos_token_id, torch.Tensor) and eos_token_id.dim() == 1:
        ids = eos_token_id.tolist()
    else:
        ids = [eos_token_id]
    out = []
    for i in ids:
        # NOTE: numpy and 0-d torch integers count as ints (operator.index), floats and bools do not
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)
        except TypeError:
            raise ArgumentTypeError(
                f"eos_token_id must be an int, a list of ints or None, got {type(i).__name__} {i!r}"
            ) from None
        if not 0 <= i < pair.vocab_size:
            raise InvalidArgumentError(f"eos_token_id entries must be ints in [0, {pair.vocab_size}), got {i!r}")
        out.append(i)
    return frozenset(out)


class Decoder:
    """A reusable decoder for one pair and one method.

    Parameters
    ----------
    pair : ModelPair
        From :func:`sprinter_ext.load_pair`.
    method : str
        One of ``sprinter_ext.METHODS``: "ar", "sd", "ersd", "sprinter", "ssd".
    k : int
        Draft tokens per round (sd, ersd, ssd).
    temperature, top_k, top_p : sampling settings, applied to target and draft alike;
        temperature 0 is greedy.
    engine : "auto", "reference", "fused" or "native"
        reference: the plain-PyTorch methods (the specification); fused: the same state
        machine with sampling/verification in the fused ops (C++ on CPU, Triton on CUDA);
        native: the whole round loop in C++ (csrc/engine/engine.cpp) with the GIL released,
        calling the fused ops directly (CPU; ar, sd, ersd, sprinter); auto: native where
        it runs, else fused when the extension is built, else reference. Same tokens for
        the same seed on every engine.
    runner : "auto", "python" or "native"
        How each model's forward runs: python = transformers' modules over a static cache
        (sprinter_ext.models.runner.ModelRunner, any causal LM); native = the C++/ATen
        forward of Llama and GPT-2 (sprinter_ext.models.native, no Python per call; on CPU
        its weight-streaming fast path, equal to transformers within float tolerance; the
        bitwise op-for-op path is ``native_runner(model, fast=False)``); auto = native under
        engine="native" when both models are supported, else python.
    eos_token_id : int, list of ints or None
        Stop tokens (included in the output). Default: the target's; None: never stop early.
    max_length : int, optional
        Static KV cache size in tokens (prompt + new tokens + k). Default: min(2048, model limit).
    **method_options
        sprinter: ``verifier`` (default: the pair's), ``threshold`` (default: the
        verifier's), ``max_run=20``, ``verify="flagged"`` or ``"all"``.
        ssd: ``budget=4``, ``saguaro_c=1.0``, ``fanout=None``, ``accept_rate=None``, ``r=None``,
        ``stop_early=True``, ``threaded=None``, ``pin=False`` (see
        :func:`sprinter_ext.methods.ssd.options`): ``threaded`` runs the draft on its own thread
        (True) or inline (False); its default None keeps the engines' old meaning, threaded
        under engine="fused" and inline under "reference", and is inline for a draft head.
        ``pin=True`` splits the cores between the two threads for each round; otherwise the
        caller's thread count and CPU affinity are left alone.

    Which method runs on which engine and runner comes from its record in
    :data:`sprinter_ext.methods.METHODS`; a combination it cannot run (ssd on engine="native"
    or runner="native") is refused here with InvalidArgumentError. Sampling settings can be
    changed between generations with :meth:`configure`.
    """

    def __init__(
        self,
        pair: ModelPair,
        method: str = "sd",
        *,
        k: int = 4,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        engine: str = "auto",
        runner: str = "auto",
        eos_token_id=_DEFAULT,
        max_length: int | None = None,
        **method_options,
    ):
        if not isinstance(pair, ModelPair):
            raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")
        m = _method(method)
        if not isinstance(engine, str) or engine not in ENGINES:
            raise InvalidArgumentError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
        if not isinstance(runner, str) or runner not in RUNNERS:
            raise InvalidArgumentError(f"unknown runner {runner!r}; choose one of {list(RUNNERS)}")
        self.k = _check_int("k", k, 1)
        self.settings = SamplingSettings(temperature, top_k, top_p)
        self.pair = pair
        self.method = method
        built = _native_available()
        self.engine = pick_engine(engine, m, pair.device, built=built, cuda_ops=_has_cuda_ops)
        self._module = m  # the method's registry record (sprinter_ext.methods.Method)
        self._eos = _eos_set(pair, eos_token_id)
        head = pair.draft_kind == "head"
        self._options = m.resolve(m.validate(pair, method_options), self.engine, head=head)
        if self._options.get("threaded") and head:
            raise InvalidArgumentError(
                f"{method} with a draft head cannot run its draft on its own thread (threaded=True): the head "
                "reads the features the target's verification writes; pass threaded=False or leave it unset "
                "(a head's draft then runs inline)")
        self._lookahead = m.lookahead_of(self._options, self.k)
        make = runner_factory(pair, m, runner, self.engine, self.k, built=built)
        self._target = Lane(make("target", max_length))
        self._draft = Lane(make("draft", self._target.runner.max_len)) if m.needs_draft else None
        self.runner = "python" if isinstance(self._target.runner, ModelRunner) else "native"
        labels = dict(method=method, engine=self.engine, runner=self.runner)
        self._engine = make_engine(self.engine, m, self._target, self._draft, k=self.k, options=self._options,
                                   eos=self._eos, labels=labels, device=pair.device)  # fmt: skip
        self._lock = threading.Lock()

    @property
    def max_length(self) -> int:
        """Static KV cache size in tokens."""
        return self._target.runner.max_len

    @property
    def lookahead(self) -> int:
        """KV room a round may need past the committed tokens (k, or sprinter's max_run, or k + 1
        for ssd): a prompt of n tokens fits ``max_length - n - lookahead`` new tokens."""
        return self._lookahead

    def configure(self, *, temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None) -> SamplingSettings:  # fmt: skip
        """Change the sampling settings of this (warm) Decoder for the next generations.

        Arguments left None keep their current value; the new settings are validated as a
        whole (named errors) before any changes. Returns them. Refused with
        :class:`DecoderBusyError` while a generation is running.
        """
        cur = self.settings
        new = SamplingSettings(
            cur.temperature if temperature is None else temperature,
            cur.top_k if top_k is None else top_k,
            cur.top_p if top_p is None else top_p,
        )
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is generating; change its settings between generations")
        try:
            self.settings = new
        finally:
            self._lock.release()
        return new

    # -- inputs ---------------------------------------------------------------------

    def encode(self, prompt, *, chat: bool | None = None) -> list[int]:
        """Token ids of `prompt` (str, token ids or chat messages; see :func:`sprinter_ext.prompts.encode_prompt`)."""
        return encode_prompt(self.pair, prompt, chat=chat)

    def _check_run(self, ids: list[int], max_new_tokens: int, seed: int) -> None:
        _check_int("max_new_tokens", max_new_tokens, 0)
        _rng._check_seed(seed)
        need = len(ids) + max_new_tokens + self._lookahead
        if need > self.max_length:
            raise CacheOverflowError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) + lookahead "
                f"({self._lookahead}: k or max_run) = {need} "
                f"exceeds the static KV cache ({self.max_length}); shorten the prompt, ask fewer tokens, "
                "or build the Decoder with a larger max_length"
            )

    # -- generation -----------------------------------------------------------------

    def _rounds(self, ids: list[int], max_new_tokens: int, seed: int, stats: dict) -> Iterator[list[int]]:
        try:
            yield from self._engine.rounds(ids, max_new_tokens, seed, self.settings, stats)
        except Exception:
            # NOTE: a failed generation (NaN logits above all) may have left NaN keys/values in
            # the caches, which masked attention still multiplies (0 * NaN = NaN): scrub both
            # so this Decoder serves the next call (runner.scrub(), csrc/engine/runner.h). The native
            # loop scrubs its runners itself; doing it again is cheap and keeps one rule here.
            self._target.runner.scrub()
            if self._draft is not None:
                self._draft.runner.scrub()
            raise

    def generate(
        self, prompt, *, max_new_tokens: int = 64, seed: int = 0, chat: bool | None = None, streamer=None
    ) -> GenerationResult:
        """Generate up to `max_new_tokens` new tokens (fewer only if EOS comes first).

        `prompt` is a str, token ids or chat messages (``[{"role": "user", "content": ...}]``,
        rendered with the tokenizer's chat template); `chat` says what a str means (see
        :func:`sprinter_ext.prompts.encode_prompt`: None = raw text, with a warning when the
        tokenizer has a chat template). `streamer` follows transformers' streamer convention
        (``put(ids_tensor)``, ``end()``; e.g. ``TextStreamer(tok, skip_prompt=True)``): it gets
        the prompt ids first, then each round's committed tokens, then ``end()``.
        """
        ids = self.encode(prompt, chat=chat)
        self._check_run(ids, max_new_tokens, seed)
        if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise ArgumentTypeError(f"streamer must have put() and end() methods, got {type(streamer).__name__}")
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            stats: dict = {}
            tokens: list[int] = []
            if streamer is not None:
                streamer.put(torch.tensor([ids]))
            for toks in self._rounds(ids, max_new_tokens, seed, stats):
                tokens.extend(toks)
                if streamer is not None:
                    streamer.put(torch.tensor(toks))
            if streamer is not None:
                streamer.end()
        finally:
            self._lock.release()
        return GenerationResult(tokens=tokens, text=self._decode(tokens), stats=stats)

    def stream(
        self,
        prompt,
        *,
        max_new_tokens: int = 64,
        seed: int = 0,
        chat: bool | None = None,
        text: bool = False,
        stats: dict | None = None,
    ) -> Iterator:
        """Yield what is committed, as it is committed (the same tokens as :meth:`generate`).

        text=False: token ids (ints). text=True: decoded text pieces (non-empty strs) from
        an :class:`~sprinter_ext.prompts.IncrementalDetokenizer`; their concatenation equals
        ``generate(...).text``, and a character split over several tokens comes out whole.
        `stats`, when given a dict, is filled with the run's stats when the stream ends.
        Arguments are checked here, before the first ``next()``.
        """
        ids = self.encode(prompt, chat=chat)
        self._check_run(ids, max_new_tokens, seed)
        if not isinstance(text, bool):
            raise ArgumentTypeError(f"text must be a bool, got {type(text).__name__}")
        if stats is not None and not isinstance(stats, dict):
            raise ArgumentTypeError(f"stats must be a dict to fill (or None), got {type(stats).__name__}")
        if text and self.pair.tokenizer is None:
            raise TokenizerRequiredError("stream(text=True) needs a tokenizer, but this pair has none; stream token ids")
        out = {} if stats is None else stats
        if text:
            return self._stream_text(ids, max_new_tokens, seed, out)
        return self._stream(ids, max_new_tokens, seed, out)

    def _stream(self, ids, max_new_tokens, seed, stats) -> Iterator[int]:
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            for toks in self._rounds(ids, max_new_tokens, seed, stats):
                yield from toks
        finally:
            self._lock.release()

    def _stream_text(self, ids, max_new_tokens, seed, stats) -> Iterator[str]:
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        detok = IncrementalDetokenizer(self.pair.tokenizer)
        try:
            for toks in self._rounds(ids, max_new_tokens, seed, stats):
                piece = detok.push(toks)
                if piece:
                    yield piece
            piece = detok.flush()
            if piece:
                yield piece
        finally:
            self._lock.release()

    def _decode(self, tokens: list[int]) -> str | None:
        tok = self.pair.tokenizer
        return None if tok is None else tok.decode(tokens, skip_special_tokens=True)


def generate(
    pair: ModelPair,
    prompt,
    *,
    method: str = "sd",
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    k: int = 4,
    engine: str = "auto",
    runner: str = "auto",
    eos_token_id=_DEFAULT,
    chat: bool | None = None,
    streamer=None,
    **method_options,
) -> GenerationResult:
    """Generate with `method` (see :class:`Decoder` for the arguments).

    >>> pair = sprinter_ext.load_pair()
    >>> res = sprinter_ext.generate(pair, "def fib(n):", method="sd", max_new_tokens=32, seed=1, chat=False)
    >>> res.tokens, res.text, res.stats["target_calls"]
    >>> msgs = [{"role": "user", "content": "What is the capital of France?"}]
    >>> sprinter_ext.generate(pair, msgs, temperature=0).text   # chat template applied
    'The capital of France is Paris.'
    """
    # NOTE: a one-shot call sizes the static cache to the request (see one_shot_max_length).
    if not isinstance(pair, ModelPair):
        raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")
    ids = encode_prompt(pair, prompt, chat=chat)
    m = METHODS.get(method) if isinstance(method, str) else None
    max_length = one_shot_max_length(pair, m, ids, max_new_tokens, k, method_options)
    dec = Decoder(
        pair, method, k=k, temperature=temperature, top_k=top_k, top_p=top_p, engine=engine, runner=runner,
        eos_token_id=eos_token_id, max_length=max_length, **method_options,
    )  # fmt: skip
    return dec.generate(ids, max_new_tokens=max_new_tokens, seed=seed, streamer=streamer)
