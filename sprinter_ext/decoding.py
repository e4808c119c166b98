"""The public decoding API: ``Decoder`` (reusable) and ``generate`` (one call).

Every argument is validated when it is given, with a named error, before any
state changes; a Decoder owns the static KV caches of its pair, so reusing one
keeps buffers warm. One generation at a time per Decoder: a second concurrent
call raises :class:`DecoderBusyError` instead of corrupting the caches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
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
from .sampling import SamplingSettings

__all__ = ["Decoder", "GenerationResult", "generate", "ENGINES", "DecoderBusyError"]

ENGINES = ("auto", "reference", "fused", "native")
NATIVE_METHODS = ("ar", "sd", "ersd", "sprinter")  # what csrc/engine.cpp implements
RUNNERS = ("auto", "python", "native")


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
        eos_token_id = getattr(pair.target.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(pair.target.config, "eos_token_id", None)
    if eos_token_id is None:
        return frozenset()
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < pair.vocab_size:
            raise InvalidArgumentError(f"eos_token_id entries must be ints in [0, {pair.vocab_size}), got {i!r}")
    return frozenset(ids)


def encode_prompt(pair: ModelPair, prompt) -> list[int]:
    """Token ids of `prompt` (str, list of ints or 1-D LongTensor), validated."""
    if isinstance(prompt, str):
        tok = pair.tokenizer
        if tok is None:
            raise TokenizerRequiredError(
                "a str prompt needs a tokenizer, but this pair has none: pass token ids "
                "(list of ints or a 1-D LongTensor) or load_pair(..., tokenizer=...)"
            )
        ids = list(tok(prompt, add_special_tokens=False).input_ids)
    elif isinstance(prompt, torch.Tensor):
        if prompt.dim() != 1 or prompt.dtype not in (torch.int64, torch.int32):
            raise ArgumentTypeError(f"a tensor prompt must be a 1-D integer tensor, got {prompt.dim()}-D {prompt.dtype}")
        ids = [int(t) for t in prompt.tolist()]
    elif isinstance(prompt, Sequence):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise ArgumentTypeError("a list prompt must contain ints (token ids)")
        ids = list(prompt)
    else:
        raise ArgumentTypeError(f"prompt must be a str, a list of ints or a 1-D LongTensor, got {type(prompt).__name__}")
    if not ids:
        raise InvalidArgumentError("the prompt is empty: give at least one token")
    v = pair.vocab_size
    bad = [t for t in ids if not 0 <= t < v]
    if bad:
        raise InvalidArgumentError(f"prompt token ids must be in [0, {v}), got {bad[:5]}")
    return ids


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
        self._target = Lane(make(pair.target, max_length))
        self._draft = Lane(make(pair.draft, self._target.runner.max_len)) if self._module.NEEDS_DRAFT else None
        self.runner = "native" if make is not ModelRunner else "python"
        self._native = self._native_runners() if self.engine == "native" else None
        self._lock = threading.Lock()

    def _runner_factory(self, runner: str, needs_draft: bool):
        """ModelRunner (transformers' forward) or the C++ NativeModel (same protocol, on CPU
        its fast path); auto: native under engine='native' when every model supports it."""
        if runner == "python":
            return ModelRunner
        from .models import native

        models = [self.pair.target] + ([self.pair.draft] if needs_draft else [])
        reasons = [r for r in map(native.unsupported_reason, models) if r] if _native_available() else ["not built"]
        if runner == "native" and reasons:
            raise InvalidArgumentError(f"runner='native' cannot run this pair: {reasons[0]}; use runner='python'")
        if not (runner == "native" or (self.engine == "native" and not reasons)):
            return ModelRunner
        if self.pair.device.type != "cuda":
            return native.native_runner
        # CUDA: one captured graph per forward length the loop uses most (a draft step, the
        # draft catching up on 2 tokens, the target verifying k drafts); others run eagerly.
        # Captured here, once per Decoder.
        lengths = sorted({1, 2, self.k + 1})
        from .models.runner import resolve_max_len

        def graphed(model, max_len):
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

    def encode(self, prompt) -> list[int]:
        """Token ids of `prompt` (str, list of ints or 1-D LongTensor), validated."""
        return encode_prompt(self.pair, prompt)

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
        if self._native is not None:
            yield from self._native_rounds(ids, max_new_tokens, seed, stats)
            return
        self._target.reset_counters()
        if self._draft is not None:
            self._draft.reset_counters()
        s = Session(
            target=self._target, draft=self._draft, settings=self.settings, seed=seed, k=self.k,
            seq=list(ids), options=self._options, fused=self.engine == "fused",
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

    def generate(self, prompt, *, max_new_tokens: int = 64, seed: int = 0) -> GenerationResult:
        """Generate up to `max_new_tokens` new tokens (fewer only if EOS comes first)."""
        ids = self.encode(prompt)
        self._check_run(ids, max_new_tokens, seed)
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            stats: dict = {}
            tokens = [t for toks in self._rounds(ids, max_new_tokens, seed, stats) for t in toks]
        finally:
            self._lock.release()
        return GenerationResult(tokens=tokens, text=self._decode(tokens), stats=stats)

    def stream(self, prompt, *, max_new_tokens: int = 64, seed: int = 0) -> Iterator[int]:
        """Yield token ids as they are committed (same tokens as :meth:`generate`)."""
        ids = self.encode(prompt)
        self._check_run(ids, max_new_tokens, seed)
        return self._stream(ids, max_new_tokens, seed)

    def _stream(self, ids, max_new_tokens, seed) -> Iterator[int]:
        if not self._lock.acquire(blocking=False):
            raise DecoderBusyError("this Decoder is already generating; use one Decoder per thread")
        try:
            for toks in self._rounds(ids, max_new_tokens, seed, {}):
                yield from toks
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
    **method_options,
) -> GenerationResult:
    """Generate with `method` (see :class:`Decoder` for the arguments).

    >>> pair = sprinter_ext.load_pair()
    >>> res = sprinter_ext.generate(pair, "def fib(n):", method="sd", max_new_tokens=32, seed=1)
    >>> res.tokens, res.text, res.stats["target_calls"]
    """
    # NOTE: a one-shot call sizes the static cache to the request (rounded up to 64):
    # attention runs over every slot of a static cache, so 2048 slots for a 100-token
    # job cost ~20% per step on CPU. A Decoder keeps its (larger) cache across calls.
    if not isinstance(pair, ModelPair):
        raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")
    ids = encode_prompt(pair, prompt)
    max_length = None
    module = METHODS.get(method) if isinstance(method, str) else None
    if module is not None and isinstance(max_new_tokens, int) and isinstance(k, int):
        lookahead = module.lookahead(method_options, k) if hasattr(module, "lookahead") else k
        if isinstance(lookahead, int) and not isinstance(lookahead, bool):
            need = len(ids) + max(0, max_new_tokens) + max(k, lookahead)
            max_length = max(64, -(-need // 64) * 64)
            limit = position_limit(pair.target)
            if limit:
                max_length = min(max_length, limit)
    dec = Decoder(
        pair, method, k=k, temperature=temperature, top_k=top_k, top_p=top_p, engine=engine, runner=runner,
        eos_token_id=eos_token_id, max_length=max_length, **method_options,
    )  # fmt: skip
    return dec.generate(ids, max_new_tokens=max_new_tokens, seed=seed)
