"""The public decoding API: ``Decoder`` (reusable) and ``generate`` (one call).

Every argument is validated when it is given, with a named error, before any
state changes; a Decoder owns the static KV caches of its pair, so reusing one
keeps buffers warm. One generation at a time per Decoder: a second concurrent
call raises :class:`DecoderBusyError` instead of corrupting the caches.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _rng
from .errors import (
    ArgumentTypeError,
    CacheOverflowError,
    InvalidArgumentError,
    SprinterError,
    TokenizerRequiredError,
)
from .methods import METHODS
from .methods._session import Lane, Session, run
from .models.pair import ModelPair
from .models.runner import ModelRunner, position_limit
from .prompts import IncrementalDetokenizer, encode_prompt
from .sampling import SamplingSettings

__all__ = ["Decoder", "GenerationResult", "generate", "ENGINES", "DecoderBusyError"]

ENGINES = ("auto", "reference", "fused", "native")
NATIVE_METHODS = ("ar", "sd", "ersd", "sprinter")  # what csrc/engine.cpp implements
RUNNERS = ("auto", "python", "native")
SNAPSHOT_METHODS = ("ssd",)  # need runner.snapshot/restore, which only ModelRunner has


def _native_available() -> bool:
    try:
        from . import _native  # noqa: F401
    except ImportError:
        return False
    return True


def _has_cuda_ops() -> bool:
    from .ops import _has_cuda_ops as has

    return has()


def _pick_engine(engine: str, method: str, device: torch.device) -> str:
    """auto: the native loop where it runs (built, CPU, its methods), else fused, else reference."""
    built = _native_available()
    on_device = device.type == "cpu" or (device.type == "cuda" and built and _has_cuda_ops())
    native_ok = built and method in NATIVE_METHODS and on_device
    if engine == "auto":
        return "native" if native_ok else ("fused" if built else "reference")
    if engine == "native" and not native_ok:
        if not built:
            why = "the compiled extension sprinter_ext._C is not built (see the README's install command)"
        elif method not in NATIVE_METHODS:
            why = f"it runs {list(NATIVE_METHODS)}, not {method!r}"
        else:
            why = f"this build has no CUDA ops for a pair on {device} (rebuild against a CUDA torch)"
        raise InvalidArgumentError(f"engine='native' is not available: {why}; use engine='fused' or 'auto'")
    if engine == "fused" and not built:
        raise InvalidArgumentError("engine='fused' needs the compiled extension sprinter_ext._C; build it or use 'reference'")
    return engine


_DEFAULT = object()  # "use the model's own eos_token_id"


class DecoderBusyError(SprinterError, RuntimeError):
    """The Decoder is already generating (one generation at a time per Decoder)."""


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
        native: the whole round loop in C++ (csrc/engine.cpp) with the GIL released,
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
        ``stop_early=True``, ``pin=True`` (see :func:`sprinter_ext.methods.ssd.options`);
        engine "fused" runs the draft on its own thread, "reference" sequentially.
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
        if not isinstance(method, str) or method not in METHODS:
            raise InvalidArgumentError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
        if not isinstance(engine, str) or engine not in ENGINES:
            raise InvalidArgumentError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
        if not isinstance(runner, str) or runner not in RUNNERS:
            raise InvalidArgumentError(f"unknown runner {runner!r}; choose one of {list(RUNNERS)}")
        module = METHODS[method]
        if method_options and not hasattr(module, "options"):
            raise ArgumentTypeError(f"method {method!r} takes no options {sorted(method_options)}")
        self.k = _check_int("k", k, 1)
        self.settings = SamplingSettings(temperature, top_k, top_p)
        self.pair = pair
        self.method = method
        # reference: methods/ in plain PyTorch (the spec); fused: the same state machine
        # with sampling and verification in sprinter_ext.ops (C++ on CPU, Triton on CUDA).
        # native: the whole round loop in C++ (csrc/engine.cpp) calling the same fused ops.
        self.engine = _pick_engine(engine, method, pair.device)
        self._module = module
        self._eos = _eos_set(pair, eos_token_id)
        self._options = module.options(pair, **method_options) if hasattr(module, "options") else {}
        self._lookahead = module.lookahead(self._options, self.k) if hasattr(module, "lookahead") else self.k
        make = self._runner_factory(runner, module.NEEDS_DRAFT)
        self._target = Lane(make("target", max_length))
        self._draft = Lane(make("draft", self._target.runner.max_len)) if self._module.NEEDS_DRAFT else None
        self.runner = "python" if isinstance(self._target.runner, ModelRunner) else "native"
        self._native = self._native_runners() if self.engine == "native" else None
        self._lock = threading.Lock()

    def _runner_factory(self, runner: str, needs_draft: bool):
        """ModelRunner (transformers' forward) or the C++ NativeModel (same protocol; on CPU its
        fast path, or op for op as transformers with fast=False); auto: native under
        engine='native' when every model supports it. Returns make(role, max_len) -> runner."""
        from .models.fast_pair import is_tensor_model

        pair = self.pair
        python = lambda role, max_len: ModelRunner(pair._model(role), max_len)  # noqa: E731
        if runner == "python":
            return python
        if runner == "native" and self.method in SNAPSHOT_METHODS:
            raise InvalidArgumentError(
                f"runner='native' cannot run method {self.method!r}: it snapshots and restores KV entries, "
                "which only the python runner implements; use runner='python' or 'auto'"
            )
        from .models import native

        views = [pair._view("target")] + ([pair._view("draft")] if needs_draft else [])
        # NOTE: the lazy default pair's stand-ins (TensorModel) are native-ready by construction.
        reasons = [native.unsupported_reason(m) for m in views if not is_tensor_model(m)]
        reasons = [r for r in reasons if r] if _native_available() else ["not built"]
        if runner == "native" and reasons:
            raise InvalidArgumentError(f"runner='native' cannot run this pair: {reasons[0]}; use runner='python'")
        if not (runner == "native" or (self.engine == "native" and not reasons)):
            return python
        if self.pair.device.type != "cuda":

            def make(role, max_len):
                view = pair._view(role)
                return view.native_runner(max_len) if is_tensor_model(view) else native.native_runner(view, max_len)

            return make
        # CUDA: one captured graph per forward length the loop uses most (a draft step, the
        # draft catching up on 2 tokens, the target verifying k drafts); others run eagerly.
        # Captured here, once per Decoder.
        lengths = sorted({1, 2, self.k + 1})
        from .models.runner import resolve_max_len

        def graphed(role, max_len):
            model = pair._model(role)
            max_len = resolve_max_len(model, max_len)
            return native.cuda_graph_runner(model, [n for n in lengths if n <= max_len], max_len)

        return graphed

    def _native_runners(self):
        from . import _native

        C = _native._C
        wrap = lambda r: r if isinstance(r, C.Runner) else C.PyRunner(r)  # noqa: E731
        return wrap(self._target.runner), wrap(self._draft.runner) if self._draft is not None else None

    @property
    def max_length(self) -> int:
        return self._target.runner.max_len

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

    def _native_rounds(self, ids: list[int], max_new_tokens: int, seed: int, stats: dict) -> Iterator[list[int]]:
        from . import _native
        from .ops import _feature_codes, _verifier_layers

        o, st = self._options, self.settings
        verifier = o.get("verifier")
        backend = "cuda" if self.pair.device.type == "cuda" else "cpu"
        layers = _verifier_layers(verifier, self.pair.device, backend) if verifier is not None else []
        g = _native._C.Generation(
            self._native[0], self._native[1], self.method, self.k, float(st.temperature), st.top_k,
            float(st.top_p), sorted(self._eos), [w for w, _ in layers], [b for _, b in layers],
            _feature_codes(verifier) if verifier is not None else [], float(o.get("threshold", 0.0)),
            o.get("max_run", 1), o.get("verify") == "all", ids, seed, max_new_tokens,
        )  # fmt: skip
        t0 = time.perf_counter()
        while not g.done:
            toks = g.round()
            if toks:
                yield toks
        out = g.stats()
        if self.method != "sprinter":
            del out["flagged_runs"], out["unchecked"]
        stats.update(out, wall_s=time.perf_counter() - t0, method=self.method, engine=self.engine, runner=self.runner)

    def _rounds(self, ids: list[int], max_new_tokens: int, seed: int, stats: dict) -> Iterator[list[int]]:
        try:
            yield from self._rounds_unguarded(ids, max_new_tokens, seed, stats)
        except Exception:
            # NOTE: a failed generation (NaN logits above all) may have left NaN keys/values in
            # the caches, which masked attention still multiplies (0 * NaN = NaN): scrub both
            # so this Decoder serves the next call (runner.scrub(), csrc/runner.h). The native
            # loop scrubs its runners itself; doing it again is cheap and keeps one rule here.
            self._target.runner.scrub()
            if self._draft is not None:
                self._draft.runner.scrub()
            raise

    def _rounds_unguarded(self, ids: list[int], max_new_tokens: int, seed: int, stats: dict) -> Iterator[list[int]]:
        if self._native is not None:
            yield from self._native_rounds(ids, max_new_tokens, seed, stats)
            return
        self._target.reset_counters()
        if self._draft is not None:
            self._draft.reset_counters()
        s = Session(
            target=self._target, draft=self._draft, settings=self.settings, seed=seed, k=self.k,
            seq=list(ids), options=self._options, backend="auto" if self.engine == "fused" else "torch",
        )  # fmt: skip
        t0 = time.perf_counter()
        n = 0
        for toks in run(s, self._module.round, max_new_tokens, self._eos):
            n += len(toks)
            yield toks
        stats.update(
            new_tokens=n,
            target_calls=self._target.calls,
            draft_calls=self._draft.calls if self._draft is not None else 0,
            target_fed=self._target.fed,
            target_attended=self._target.attended,
            draft_fed=self._draft.fed if self._draft is not None else 0,
            draft_attended=self._draft.attended if self._draft is not None else 0,
            draft_tokens=s.draft_tokens,
            accepted_tokens=s.accepted_tokens,
            rounds=s.rounds,
            wall_s=time.perf_counter() - t0,
            method=self.method,
            engine=self.engine,
            runner=self.runner,
            **s.counters,
        )

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
    # NOTE: a one-shot call sizes the static cache to the request (rounded up to 64):
    # attention runs over every slot of a static cache, so 2048 slots for a 100-token
    # job cost ~20% per step on CPU. A Decoder keeps its (larger) cache across calls.
    if not isinstance(pair, ModelPair):
        raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")
    ids = encode_prompt(pair, prompt, chat=chat)
    max_length = None
    module = METHODS.get(method) if isinstance(method, str) else None
    if module is not None and isinstance(max_new_tokens, int) and isinstance(k, int):
        lookahead = module.lookahead(method_options, k) if hasattr(module, "lookahead") else k
        if isinstance(lookahead, int) and not isinstance(lookahead, bool):
            need = len(ids) + max(0, max_new_tokens) + max(k, lookahead)
            max_length = max(64, -(-need // 64) * 64)
            limit = position_limit(pair._view("target"))
            if limit:
                max_length = min(max_length, limit)
    dec = Decoder(
        pair, method, k=k, temperature=temperature, top_k=top_k, top_p=top_p, engine=engine, runner=runner,
        eos_token_id=eos_token_id, max_length=max_length, **method_options,
    )  # fmt: skip
    return dec.generate(ids, max_new_tokens=max_new_tokens, seed=seed, streamer=streamer)
