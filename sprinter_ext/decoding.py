"""The public decoding API: ``Decoder`` (reusable) and ``generate`` (one call).

Every argument is validated when it is given, with a named error, before any
state changes; a Decoder owns the static KV caches of its pair, so reusing one
keeps buffers warm. One generation at a time per Decoder: a second concurrent
call raises :class:`DecoderBusyError` instead of corrupting the caches.

This module is the boundary (arguments, prompts, results); what runs the rounds is an
engine from :mod:`sprinter_ext._engine` (the Python round driver or the C++ loop), the
runners come from :mod:`sprinter_ext._engine._runners`, and what a method can run on
from its record in :mod:`sprinter_ext.methods`. The argument checks, ``GenerationResult`` and
the constants (``K_AUTO_MAX``, ``TOP_LOGPROBS_MAX``) are in :mod:`sprinter_ext._decoder_args`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import torch

from . import _defaults as D
from ._decoder_args import (  # noqa: F401 - GenerationResult, K_AUTO_MAX, TOP_LOGPROBS_MAX re-exported
    _DEFAULT,
    K_AUTO_MAX,
    TOP_LOGPROBS_MAX,
    GenerationResult,
    _eos_set,
    check_cost_profile,
    check_draft_fits,
    check_native_can,
    check_pair,
    check_run,
    check_stream,
    check_streamer,
    check_threaded,
    logprob_log,
)
from ._engine import ENGINES, _has_cuda_ops, _native_available, make_engine, one_shot_max_length, pick_engine
from ._engine._runners import RUNNERS, draft_lane, lookup_lane, runner_factory
from ._stopping import Stopping, check_int
from .cost_model import AUTO, CostModel, profile_for
from .errors import DecoderBusyError, InvalidArgumentError
from .methods import METHODS, NATIVE_METHODS, SNAPSHOT_METHODS  # noqa: F401 - NATIVE/SNAPSHOT re-exported
from .methods import get as _method
from .methods._session import Lane, LogprobLog
from .models.pair import ModelPair
from .models.runner import ModelRunner
from .prompts import encode_prompt
from .sampling import SamplingSettings

__all__ = ["Decoder", "GenerationResult", "generate", "ENGINES", "DecoderBusyError"]


class Decoder:
    """A reusable decoder for one pair and one method.

    Parameters
    ----------
    pair : ModelPair
        From :func:`sprinter_ext.load_pair`.
    method : str
        One of ``sprinter_ext.METHODS``: "ar", "sd", "ersd", "sprinter", "ssd".
    k : int or "auto"
        Draft tokens per round (sd, ersd, ssd). "auto" (sd, ersd; sprinter ignores k): a cost
        model (:mod:`sprinter_ext.cost_model`) picks each round's length in 0 .. 8 from the
        target's and draft's measured step times (profiled once per machine and cached) and
        this Decoder's running acceptance; 0 is a plain target step (the default; ssd takes
        k=2 for it). ``cost_profile=`` gives the times instead of measuring them.
    temperature, top_k, top_p, min_p : sampling settings, applied to target and draft alike;
        temperature 0 (the default, :mod:`sprinter_ext._defaults`) is greedy. min_p in [0, 1]
        drops tokens with p < min_p * max p after temperature (as vLLM and transformers).
    repetition_penalty, presence_penalty, frequency_penalty : logits processors applied to the
        target's and the draft's rows alike, from the tokens before each row's position
        (:func:`sprinter_ext.sampling.process_logits`), so sd, ersd, ssd and sprinter with
        verify="all" stay exact: repetition_penalty in (0, 100] (transformers/CTRL, over prompt
        + output; 1 = off), presence/frequency in [-2, 2] (OpenAI, over the output; 0 = off).
        They and min_p run on the Python engines: engine="auto" picks "fused" for them,
        engine="native" refuses them by name.
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
        method: str = D.METHOD,
        *,
        k: int = D.K,
        temperature: float = D.TEMPERATURE,
        top_k: int = D.TOP_K,
        top_p: float = D.TOP_P,
        min_p: float = D.MIN_P,
        repetition_penalty: float = D.REPETITION_PENALTY,
        presence_penalty: float = D.PRESENCE_PENALTY,
        frequency_penalty: float = D.FREQUENCY_PENALTY,
        engine: str = "auto",
        runner: str = "auto",
        eos_token_id=_DEFAULT,
        max_length: int | None = None,
        cost_profile=None,
        **method_options,
    ):
        check_pair(pair)
        m = _method(method)
        if not isinstance(engine, str) or engine not in ENGINES:
            raise InvalidArgumentError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
        if not isinstance(runner, str) or runner not in RUNNERS:
            raise InvalidArgumentError(f"unknown runner {runner!r}; choose one of {list(RUNNERS)}")
        auto = isinstance(k, str) and k == AUTO
        if auto and m.name == "ssd":  # its speculation cache plans its fan-out for a fixed k
            k, auto = D.K_FIXED, False
        self.k = K_AUTO_MAX if auto else check_int("k", k, 1)
        self.settings = SamplingSettings(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                                         frequency_penalty)  # fmt: skip
        self.pair = pair
        self.method = method
        built = _native_available()
        self.engine = pick_engine(engine, m, pair.device, built=built, cuda_ops=_has_cuda_ops)
        if self.engine == "native" and self.settings.processed:
            check_native_can(engine, self.settings, None)
            self.engine = "fused"  # auto: the C++ loop does not process logits
        self._module = m  # the method's registry record (sprinter_ext.methods.Method)
        self._eos = _eos_set(pair, eos_token_id)
        head = pair.draft_kind.split("+")[0] == "head"
        check_draft_fits(pair, m)
        self._options = m.resolve(m.validate(pair, method_options), self.engine, head=head)
        check_threaded(method, self._options, head)
        self._lookahead = m.lookahead_of(self._options, self.k)
        make = runner_factory(pair, m, runner, self.engine, self.k, built=built)
        self._target = Lane(make("target", max_length))
        self._draft = draft_lane(pair, m, make, self._target.runner.max_len, self.engine)
        # a hybrid draft's lookup part: sd and ersd use it (the other methods run the model only)
        self._lookup = lookup_lane(pair, self.engine) if not pair.model_free and m.drafts_by_round else None
        self.runner = "python" if isinstance(self._target.runner, ModelRunner) else "native"
        self.cost = None  # k="auto": the cost model that picks each round's draft length
        if auto and m.drafts_by_round:
            if cost_profile is None:
                draft_runner = getattr(self._draft, "runner", None)
                cost_profile = profile_for(pair, self._target.runner, draft_runner, self.settings.temperature)
            else:
                check_cost_profile(cost_profile)
            self.cost = CostModel(cost_profile, k_max=self.k)
        self._engine = self._make_engine(self.engine)
        self._engine_arg = engine
        self._python_engine = None  # built on first need (see _engine_for)
        self._lock = threading.Lock()

    def _make_engine(self, name: str):
        """Engine `name` over this Decoder's lanes, options and cost model."""
        labels = dict(method=self.method, engine=name, runner=self.runner)
        return make_engine(name, self._module, self._target, self._draft, k=self.k, options=self._options,
                           eos=self._eos, labels=labels, device=self.pair.device, cost=self.cost,
                           lookup=self._lookup)  # fmt: skip

    @property
    def max_length(self) -> int:
        """Static KV cache size in tokens."""
        return self._target.runner.max_len

    @property
    def lookahead(self) -> int:
        """KV room a round may need past the committed tokens (k, or sprinter's max_run, or k + 1
        for ssd): a prompt of n tokens fits ``max_length - n - lookahead`` new tokens."""
        return self._lookahead

    def configure(self, *, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                  min_p: float | None = None, repetition_penalty: float | None = None,
                  presence_penalty: float | None = None, frequency_penalty: float | None = None) -> SamplingSettings:  # fmt: skip
        """Change the sampling settings of this (warm) Decoder for the next generations.

        Arguments left None keep their current value; the new settings are validated as a
        whole (named errors) before any changes. Returns them. Refused with
        :class:`DecoderBusyError` while a generation is running. A Decoder built with
        engine="native" refuses min_p and the penalties (the C++ loop does not apply them); one
        built with engine="auto" runs such generations on the fused engine.
        """
        given = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                     frequency_penalty=frequency_penalty)  # fmt: skip
        cur = self.settings
        new = SamplingSettings(**{name: getattr(cur, name) if v is None else v for name, v in given.items()})
        if self.engine == "native":
            check_native_can(self._engine_arg, new, None)
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
        check_run(ids, max_new_tokens, seed, self._lookahead, self.max_length)

    # -- generation -----------------------------------------------------------------

    def _engine_for(self, settings: SamplingSettings, logprobs: LogprobLog | None):
        """The engine for one generation: the Decoder's own, or (engine="auto" picked the C++ loop,
        which neither processes logits nor returns logprobs) the fused engine over the same lanes."""
        if self.engine != "native" or not (settings.processed or logprobs is not None):
            return self._engine
        check_native_can(self._engine_arg, settings, logprobs)
        if self._python_engine is None:
            self._python_engine = self._make_engine("fused")
        return self._python_engine

    def _rounds(self, ids: list[int], max_new_tokens: int, seed: int, stats: dict,
                logprobs: LogprobLog | None = None) -> Iterator[list[int]]:  # fmt: skip
        engine = self._engine_for(self.settings, logprobs)
        extra = {} if logprobs is None else {"logprobs": logprobs}  # the Python engine's only
        try:
            yield from engine.rounds(ids, max_new_tokens, seed, self.settings, stats, **extra)
        except Exception:
            # NOTE: a failed generation (NaN logits above all) may have left NaN keys/values in
            # the caches, which masked attention still multiplies (0 * NaN = NaN): scrub both
            # so this Decoder serves the next call (runner.scrub(), csrc/engine/runner.h). The native
            # loop scrubs its runners itself; doing it again is cheap and keeps one rule here.
            self._target.runner.scrub()
            if self._draft is not None:
                self._draft.scrub()
            raise

    def _stopping(self, max_new_tokens, stop, stop_token_ids, max_time, text=False) -> Stopping:
        return Stopping(self.pair.tokenizer, self._eos, self.pair.vocab_size, max_new_tokens=max_new_tokens,
                        stop=stop, stop_token_ids=stop_token_ids, max_time=max_time, text=text)  # fmt: skip

    def generate(
        self, prompt, *, max_new_tokens: int = D.MAX_NEW_TOKENS, seed: int = D.SEED, chat: bool | None = D.CHAT,
        streamer=None, stop=None, stop_token_ids=None, max_time: float | None = None, logprobs: bool = False,
        top_logprobs: int | None = None,
    ) -> GenerationResult:
        """Generate up to `max_new_tokens` new tokens (fewer if EOS, a stop or `max_time` comes first).

        `prompt` is a str, token ids or chat messages (``[{"role": "user", "content": ...}]``,
        rendered with the tokenizer's chat template); `chat` says what a str means (see
        :func:`sprinter_ext.prompts.encode_prompt`: None = one user message with the chat
        template when the tokenizer has one, else raw text; False = raw text). `stop`: a str
        or list of strs that end the run where the decoded text shows one (the text is cut
        before it); `stop_token_ids`: ids that end it like EOS; `max_time`: seconds, checked
        after each round. ``finish_reason`` says which ended it (:mod:`sprinter_ext._stopping`).
        `logprobs`: True fills ``res.logprobs``, per generated token its log-probability under
        the target's processed distribution (temperature, min_p, top-k/top-p and penalties
        applied; greedy: the log-softmax of the penalised logits) and the `top_logprobs`
        (0 .. 20, default 0) most likely tokens there; every method reads the target's rows
        of its verification, so nothing extra runs.
        `streamer` follows transformers' streamer convention (``put(ids_tensor)``, ``end()``):
        it gets the prompt ids first, then each round's committed tokens, then ``end()``.
        """
        ids = self.encode(prompt, chat=chat)
        self._check_run(ids, max_new_tokens, seed)
        log = logprob_log(logprobs, top_logprobs)
        if log is not None:
            check_native_can(self._engine_arg, self.settings, log)
        stopping = self._stopping(max_new_tokens, stop, stop_token_ids, max_time)
        check_streamer(streamer)
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            stats: dict = {}
            tokens: list[int] = []
            pieces: list[str] = []
            if streamer is not None:
                streamer.put(torch.tensor([ids]))
            for toks, piece in stopping.run(self._rounds(ids, max_new_tokens, seed, stats, log)):
                tokens.extend(toks)
                pieces.append(piece)
                if streamer is not None and toks:
                    streamer.put(torch.tensor(toks))
            if streamer is not None:
                streamer.end()
        finally:
            self._lock.release()
        text = "".join(pieces) if stopping.text else self._decode(tokens)
        stats["finish_reason"] = stopping.finish_reason
        lps = None if log is None else [log.entries[len(ids) + i] for i in range(len(tokens))]
        return GenerationResult(tokens=tokens, text=text, stats=stats, finish_reason=stopping.finish_reason,
                                logprobs=lps)  # fmt: skip

    def stream(self, prompt, *, max_new_tokens: int = D.MAX_NEW_TOKENS, seed: int = D.SEED,
               chat: bool | None = D.CHAT, text: bool = False, stats: dict | None = None, stop=None,
               stop_token_ids=None, max_time: float | None = None, logprobs: bool = False,
               top_logprobs: int | None = None) -> Iterator:  # fmt: skip
        """Yield what is committed, as it is committed (the same tokens as :meth:`generate`).

        text=False: token ids (ints). text=True: decoded text pieces (non-empty strs) from
        an :class:`~sprinter_ext.prompts.IncrementalDetokenizer`; their concatenation equals
        ``generate(...).text``, a character split over several tokens comes out whole, and a
        partial stop string is held back until it is known not to be one. `stats`, when given
        a dict, is filled with the run's stats and ``"finish_reason"`` when the stream ends.
        `stop`, `stop_token_ids`, `max_time`: as :meth:`generate`. `logprobs`, `top_logprobs`: as
        :meth:`generate`; with logprobs=True (text=False only) each item is the token's
        :class:`~sprinter_ext.sampling.TokenLogprob` (its ``.token`` is the id). Arguments are
        checked here, before the first ``next()``.
        """
        ids = self.encode(prompt, chat=chat)
        self._check_run(ids, max_new_tokens, seed)
        check_stream(text, stats, self.pair.tokenizer)
        log = logprob_log(logprobs, top_logprobs)
        if log is not None:
            if text:
                raise InvalidArgumentError("stream(logprobs=True) yields TokenLogprob items: pass text=False")
            check_native_can(self._engine_arg, self.settings, log)
        stopping = self._stopping(max_new_tokens, stop, stop_token_ids, max_time, text=text)
        return self._stream(ids, max_new_tokens, seed, {} if stats is None else stats, stopping, text, log)

    def _stream(self, ids, max_new_tokens, seed, stats, stopping: Stopping, text: bool, log=None) -> Iterator:
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            pos = len(ids)
            for toks, piece in stopping.run(self._rounds(ids, max_new_tokens, seed, stats, log)):
                if log is not None:
                    yield from (log.entries[pos + i] for i in range(len(toks)))
                    pos += len(toks)
                elif not text:
                    yield from toks
                elif piece:
                    yield piece
        finally:
            stats["finish_reason"] = stopping.finish_reason
            self._lock.release()

    def _decode(self, tokens: list[int]) -> str | None:
        tok = self.pair.tokenizer
        return None if tok is None else tok.decode(tokens, skip_special_tokens=True)


def generate(
    pair: ModelPair,
    prompt,
    *,
    method: str = D.METHOD,
    max_new_tokens: int = D.MAX_NEW_TOKENS,
    temperature: float = D.TEMPERATURE,
    top_k: int = D.TOP_K,
    top_p: float = D.TOP_P,
    min_p: float = D.MIN_P,
    repetition_penalty: float = D.REPETITION_PENALTY,
    presence_penalty: float = D.PRESENCE_PENALTY,
    frequency_penalty: float = D.FREQUENCY_PENALTY,
    seed: int = D.SEED,
    k: int = D.K,
    engine: str = "auto",
    runner: str = "auto",
    eos_token_id=_DEFAULT,
    chat: bool | None = D.CHAT,
    streamer=None,
    stop=None,
    stop_token_ids=None,
    max_time: float | None = None,
    logprobs: bool = False,
    top_logprobs: int | None = None,
    **method_options,
) -> GenerationResult:
    """Generate with `method` (see :class:`Decoder` for the arguments).

    >>> pair = sprinter_ext.load_pair()
    >>> sprinter_ext.generate(pair, "What is the capital of France?").text   # greedy, chat template
    'The capital of France is Paris.'
    >>> res = sprinter_ext.generate(pair, "def fib(n):", temperature=1, seed=1, chat=False)  # raw, sampled
    >>> res.tokens, res.text, res.finish_reason, res.stats["target_calls"]
    """
    # NOTE: a one-shot call sizes the static cache to the request (see one_shot_max_length).
    check_pair(pair)
    ids = encode_prompt(pair, prompt, chat=chat)
    m = METHODS.get(method) if isinstance(method, str) else None
    max_length = one_shot_max_length(pair, m, ids, max_new_tokens, k, method_options)
    dec = Decoder(
        pair, method, k=k, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, engine=engine, runner=runner, eos_token_id=eos_token_id,
        max_length=max_length, **method_options,
    )  # fmt: skip
    return dec.generate(ids, max_new_tokens=max_new_tokens, seed=seed, streamer=streamer, stop=stop,
                        stop_token_ids=stop_token_ids, max_time=max_time, logprobs=logprobs,
                        top_logprobs=top_logprobs)  # fmt: skip
