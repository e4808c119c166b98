"""The Decoder's argument checks and result type (:mod:`sprinter_ext.decoding` is their user).

Each check raises a named error before any state changes, so ``Decoder`` and ``generate``
read as what they do; the request-level checks (``check_run``, ``logprob_log``, the stream
arguments) run on every call, the others when a Decoder is built. ``check_native_can`` is
the one list of what engine="native" (the C++ loop) does not do: the Decoder refuses those by
name, or (engine="auto") runs them on the fused engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _rng
from ._stopping import check_int, eos_set
from .cost_model import Profile
from .errors import ArgumentTypeError, CacheOverflowError, InvalidArgumentError, TokenizerRequiredError
from .methods._session import LogprobLog
from .models.pair import ModelPair
from .sampling import SamplingSettings, TokenLogprob

_DEFAULT = object()  # "use the model's own eos_token_id"
K_AUTO_MAX = 8  # k="auto": the most draft tokens a round verifies
TOP_LOGPROBS_MAX = 20  # alternatives per token, as OpenAI's top_logprobs and vLLM's default max_logprobs


@dataclass
class GenerationResult:
    """tokens: the new ids, the one that ended the run included (an EOS or stop id; see
    :mod:`sprinter_ext._stopping`); text: decoded, special tokens skipped, cut before a stop
    string (None without a tokenizer); finish_reason: "eos", "stop", "length" or "time";
    logprobs (``generate(logprobs=True)``, else None): one :class:`~sprinter_ext.sampling.TokenLogprob`
    per token of ``tokens``, under the target's processed distribution at its position."""

    tokens: list[int]
    text: str | None
    stats: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


def _eos_set(pair: ModelPair, eos_token_id) -> frozenset[int]:
    return eos_set(pair, eos_token_id, _DEFAULT)


def check_pair(pair) -> None:
    if not isinstance(pair, ModelPair):
        raise ArgumentTypeError(f"pair must be a ModelPair from sprinter_ext.load_pair, got {type(pair).__name__}")


_NEEDS_MODEL = {  # why a method that needs a draft model cannot take a lookup-only draft
    "sprinter": "its verifier reads a draft model's hidden state",
    "ssd": "it overlaps a draft model's forwards with the target's, and a lookup draft runs none",
}


def check_draft_fits(pair: ModelPair, method) -> None:
    """A method that drafts with a model (its record's needs_draft without drafts_by_round):
    refused by name for a lookup-only draft."""
    if pair.model_free and method.needs_draft and not method.drafts_by_round:
        why = _NEEDS_MODEL.get(method.name, "it drafts with a draft model")
        raise InvalidArgumentError(
            f"method {method.name!r} cannot run a {pair.draft_kind!r} draft: {why}; use method='sd' or 'ersd' "
            "(or a head / standalone draft)")


def check_threaded(method: str, options: dict, head: bool) -> None:
    if options.get("threaded") and head:
        raise InvalidArgumentError(
            f"{method} with a draft head cannot run its draft on its own thread (threaded=True): the head "
            "reads the features the target's verification writes; pass threaded=False or leave it unset "
            "(a head's draft then runs inline)")


def check_cost_profile(cost_profile) -> None:
    if not isinstance(cost_profile, Profile):
        raise ArgumentTypeError(f"cost_profile must be a sprinter_ext.cost_model.Profile, got "
                                f"{type(cost_profile).__name__}")  # fmt: skip


def check_run(ids: list[int], max_new_tokens: int, seed: int, lookahead: int, max_length: int) -> None:
    """A request's sizes and seed: the prompt, the new tokens and a round's lookahead fit the cache."""
    check_int("max_new_tokens", max_new_tokens, 0)
    _rng._check_seed(seed)
    need = len(ids) + max_new_tokens + lookahead
    if need > max_length:
        raise CacheOverflowError(
            f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) + lookahead "
            f"({lookahead}: k or max_run) = {need} "
            f"exceeds the static KV cache ({max_length}); shorten the prompt, ask fewer tokens, "
            "or build the Decoder with a larger max_length"
        )


def check_streamer(streamer) -> None:
    if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise ArgumentTypeError(f"streamer must have put() and end() methods, got {type(streamer).__name__}")


def check_stream(text, stats, tokenizer) -> None:
    """Decoder.stream's own arguments (text=, stats=)."""
    if not isinstance(text, bool):
        raise ArgumentTypeError(f"text must be a bool, got {type(text).__name__}")
    if stats is not None and not isinstance(stats, dict):
        raise ArgumentTypeError(f"stats must be a dict to fill (or None), got {type(stats).__name__}")
    if text and tokenizer is None:
        raise TokenizerRequiredError("stream(text=True) needs a tokenizer, but this pair has none; stream token ids")


def logprob_log(logprobs, top_logprobs) -> LogprobLog | None:
    """The logprobs request of generate(logprobs=, top_logprobs=) (named errors), None when off."""
    if not isinstance(logprobs, bool):
        raise ArgumentTypeError(f"logprobs must be a bool (True returns res.logprobs), got {type(logprobs).__name__}")
    if top_logprobs is not None:
        check_int("top_logprobs", top_logprobs, 0)
        if top_logprobs > TOP_LOGPROBS_MAX:
            raise InvalidArgumentError(f"top_logprobs must be in [0, {TOP_LOGPROBS_MAX}], got {top_logprobs}")
        if not logprobs:
            raise InvalidArgumentError("top_logprobs needs logprobs=True (as in OpenAI's API)")
    return LogprobLog(top_logprobs or 0) if logprobs else None


def check_native_can(engine_arg: str, settings: SamplingSettings, logprobs) -> None:
    """engine="native" (asked by name) refuses what the C++ loop does not do, by name."""
    if engine_arg != "native":
        return
    what = [name for name, on in (("min_p", settings.min_p > 0 and not settings.greedy),
                                  ("repetition_penalty", settings.repetition_penalty != 1),
                                  ("presence_penalty", settings.presence_penalty != 0),
                                  ("frequency_penalty", settings.frequency_penalty != 0),
                                  ("logprobs", logprobs is not None)) if on]  # fmt: skip
    if what:
        raise InvalidArgumentError(
            f"engine='native' does not apply {', '.join(what)} (the C++ loop samples with temperature, top_k and "
            "top_p only); use engine='fused' or 'auto' (which picks the fused engine for them)"
        )
