"""Sampling settings and the processed distribution p (or q) that every test and race uses.

``probs(logits, settings)`` is the single definition of "the distribution after
temperature, min-p, top-k and top-p", applied identically to the draft and the target
before any acceptance test or race (DESIGN.md):

- temperature 0: one-hot at the first argmax (greedy; min_p, top_k and top_p do not apply);
- otherwise temperature in [TEMPERATURE_MIN, TEMPERATURE_MAX] and softmax(logits / temperature), then
- min_p > 0: drop token i iff p_i < min_p * max p (after temperature; vLLM's order: before
  top-k/top-p, so top-p's mass is that of the min-p survivors);
- top_k > 0: keep the k highest-ranked tokens, rank = (probability desc, index asc);
- top_p < 1: keep token i iff the mass of the tokens ranked strictly before it is
  < top_p (so the top token is always kept), ranking as above, after top-k;
- renormalise.

The penalties depend on the sequence, so they are a step before ``probs``:
:func:`process_logits` (the one statement of the rule, see there) turns each raw logits row
into the row ``probs`` reads, from the tokens that precede its position. Every engine and
both models go through it, so p and q at a position see the same tokens (exactness).

Logits may hold -inf (a masked token: probability 0). NaN, +inf, or a row with
no finite entry raise :class:`~sprinter_ext.errors.NonFiniteLogitsError`, before and
after the division by the temperature (float32 logits / t can overflow).

These settings are the one definition of what is accepted: the fused ops, the native
loop and the private ``_C`` bindings validate by constructing a SamplingSettings. The
kernels take its C++ mirror, ``sprinter_ext._C.SamplingSettings`` (csrc/common/sampling.h,
:meth:`SamplingSettings.to_native`); :data:`NONFINITE_MESSAGE` is the message every engine
raises (checked against ``_C.NONFINITE_MESSAGE`` by tests/test_native_boundary.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import ArgumentTypeError, InvalidArgumentError, NonFiniteLogitsError

__all__ = [
    "SamplingSettings",
    "probs",
    "check_logits",
    "TEMPERATURE_MIN",
    "TEMPERATURE_MAX",
    "TOP_K_MAX",
    "process_logits",
    "logprobs",
    "TokenLogprob",
    "KERNEL_FIELDS",
    "PENALTY_MAX",
    "REPETITION_PENALTY_MAX",
    "NONFINITE_MESSAGE",
]

# NOTE: every engine works in float32 (1/t, logits / t). 1e-4..1e4 keeps t and 1/t
# normal float32 numbers, -inf / t = -inf (masked tokens stay masked, never NaN) and
# logits up to 3e34 finite after scaling; below it use 0 (greedy), above it the
# distribution is uniform to float32 precision anyway.
TEMPERATURE_MIN = 1e-4
TEMPERATURE_MAX = 1e4
TOP_K_MAX = 2**63 - 1  # int64, as the C++ and Triton kernels take it
# The fields the kernels and the native loop take (csrc/common/sampling.h mirrors these only);
# the others are applied before them, by process_logits.
KERNEL_FIELDS = ("temperature", "top_k", "top_p")
PENALTY_MAX = 2.0  # |presence_penalty|, |frequency_penalty|: OpenAI's and vLLM's range [-2, 2]
REPETITION_PENALTY_MAX = 100.0  # (0, 100]: transformers takes any > 0; past 100 logits are just zeroed
NONFINITE_MESSAGE = (
    "the model produced NaN/inf logits; generation stopped without output. "
    "Check the weights, the dtype (fp16 overflow?) and the inputs"
)


def _number(name: str, v, ok, valid: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number {valid}, got {type(v).__name__}")
    if not ok(v):  # NaN fails every comparison
        raise InvalidArgumentError(f"{name} must be {valid}, got {v}")


@dataclass(frozen=True)
class SamplingSettings:
    """temperature, top_k, top_p, min_p: :func:`probs`; repetition_penalty, presence_penalty,
    frequency_penalty: :func:`process_logits` (neutral values 1, 0, 0 switch them off)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self):
        t, k, p = self.temperature, self.top_k, self.top_p
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ArgumentTypeError(f"temperature must be a number, got {type(t).__name__}")
        if not (t == 0 or TEMPERATURE_MIN <= t <= TEMPERATURE_MAX):  # NaN fails both
            raise InvalidArgumentError(
                f"temperature must be 0 (greedy) or in [{TEMPERATURE_MIN:g}, {TEMPERATURE_MAX:g}], got {t}"
            )
        if isinstance(k, bool) or not isinstance(k, int):
            raise ArgumentTypeError(f"top_k must be an int, got {type(k).__name__}")
        if not 0 <= k <= TOP_K_MAX:
            raise InvalidArgumentError(f"top_k must be >= 0 and < 2**63 (0 disables it), got {k}")
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ArgumentTypeError(f"top_p must be a number, got {type(p).__name__}")
        if not (0.0 < p <= 1.0):
            raise InvalidArgumentError(f"top_p must be in (0, 1] (1 disables it), got {p}")
        _number("min_p", self.min_p, lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0 disables it)")
        _number("repetition_penalty", self.repetition_penalty, lambda v: 0.0 < v <= REPETITION_PENALTY_MAX,
                f"in (0, {REPETITION_PENALTY_MAX:g}] (1 disables it; > 1 discourages repeats)")  # fmt: skip
        for name in ("presence_penalty", "frequency_penalty"):
            _number(name, getattr(self, name), lambda v: -PENALTY_MAX <= v <= PENALTY_MAX,
                    f"in [-{PENALTY_MAX:g}, {PENALTY_MAX:g}] (0 disables it)")  # fmt: skip

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether a penalty is on: the logits then depend on the tokens so far (:func:`process_logits`)."""
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def processed(self) -> bool:
        """Whether :func:`process_logits` changes anything (a penalty, or min_p when sampling).
        The native C++ loop and the fused kernels take temperature/top-k/top-p only: the Python
        engines process the rows before the kernels see them (sprinter_ext/methods/_session.py)."""
        return self.penalized or (self.min_p > 0 and not self.greedy)

    def kernel(self) -> "SamplingSettings":
        """These settings without what :func:`process_logits` already applied (the kernels' part)."""
        return SamplingSettings(**{name: getattr(self, name) for name in KERNEL_FIELDS})

    def to_native(self):
        """The bound ``sprinter_ext._C.SamplingSettings`` (float32 temperature and top_p; needs the build)."""
        from . import _native

        if self.processed:
            raise InvalidArgumentError(
                "the native loop applies temperature, top_k and top_p only; min_p and the repetition/presence/"
                "frequency penalties run on engine='fused' or 'reference' (engine='auto' picks one)"
            )
        return _native._C.SamplingSettings(self.temperature, self.top_k, self.top_p)


def check_logits(logits: torch.Tensor) -> None:
    """Raise NonFiniteLogitsError on NaN, +inf, or a row without any finite value."""
    bad = torch.isnan(logits).any() | torch.isposinf(logits).any()
    if not bool(bad):
        bad = ~torch.isfinite(logits).any(dim=-1).all()
    if bool(bad):
        raise NonFiniteLogitsError(NONFINITE_MESSAGE)


def probs(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """Processed distribution, float32, same shape as `logits` ([..., V]), rows sum to 1."""
    check_logits(logits)
    logits = logits.float()
    if s.greedy:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    scaled = logits / s.temperature
    if s.temperature != 1:
        check_logits(scaled)  # huge finite logits / a small t overflow float32, as in every engine
    if s.min_p > 0:
        scaled = _min_p_mask(scaled, s.min_p)
    p = torch.softmax(scaled, dim=-1)
    if s.top_k <= 0 and s.top_p >= 1.0:
        return p
    sorted_p, order = torch.sort(p, dim=-1, descending=True, stable=True)
    keep = torch.ones_like(sorted_p, dtype=torch.bool)
    if s.top_k > 0:
        keep[..., s.top_k :] = False
        sorted_p = sorted_p * keep
        sorted_p = sorted_p / sorted_p.sum(dim=-1, keepdim=True)
    if s.top_p < 1.0:
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass ranked strictly before
        keep &= before < s.top_p
    mask = torch.zeros_like(keep).scatter_(-1, order, keep)
    p = p * mask
    return p / p.sum(dim=-1, keepdim=True)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the target's processed distribution (the one it
    was sampled from: :func:`logprobs`), and the `top_logprobs` most likely tokens there as
    (token id, logprob) pairs, best first (ties: lower id first)."""

    token: int
    logprob: float
    top: list  # [(int, float)]


def _min_p_mask(scaled: torch.Tensor, min_p: float) -> torch.Tensor:
    """-inf where softmax(scaled)_i < min_p * max softmax(scaled), i.e. scaled_i - max < log(min_p)
    (the same test on temperature-scaled logits, without the softmax; the max token always stays)."""
    top = scaled.max(dim=-1, keepdim=True).values
    return scaled.masked_fill(scaled - top < math.log(min_p), float("-inf"))


def _counts(ctx: torch.Tensor, start: int, first: int, V: int, n: int) -> torch.Tensor:
    """[n, V] float32: row j counts the ids in ctx[start : first + j] (ids outside [0, V) ignored)."""
    def hist(ids: torch.Tensor) -> torch.Tensor:
        ids = ids[(ids >= 0) & (ids < V)]
        return torch.bincount(ids, minlength=V).float()

    base = hist(ctx[min(start, first) : first])  # [V]
    rows = [base]
    for j in range(1, n):  # NOTE: a round has few rows (k + 1), so one small bincount each
        t = first + j - 1
        rows.append(rows[-1] + hist(ctx[t : t + 1]) if t >= start else rows[-1])
    return torch.stack(rows)


def process_logits(logits: torch.Tensor, s: SamplingSettings, context: Sequence[int], prompt_len: int) -> torch.Tensor:
    """The rows :func:`probs` reads, from raw logits [n, V] and the tokens before them.

    Row j decides position ``len(context) - n + 1 + j``: the tokens before it are
    ``context[: len(context) - n + 1 + j]`` (a verification's rows: context = committed tokens +
    drafts; one draft or ``ar`` row: n = 1 and everything in context precedes it). Of those,
    ``[prompt_len:]`` are the generated output. The rule (vLLM's and OpenAI's, in this order):

    - repetition_penalty r (transformers/CTRL; over prompt + output): a token that occurs
      before the position has its logit divided by r if positive, else multiplied by r;
    - presence_penalty a, frequency_penalty f (OpenAI; over the output only):
      logit -= a * [count > 0] + f * count, count = occurrences in the output so far;
    - min_p (when sampling): the tokens :func:`probs` would drop for min_p become -inf, so that
      ``probs(process_logits(x), s.kernel()) == probs(penalised x, s)``: the kernels, which
      know temperature/top-k/top-p only, give the full distribution.

    Returns float32 [n, V]; the logits themselves when nothing applies (``s.processed`` False).
    Exactness of sd/ersd/ssd under these settings rests on every engine calling this for both
    the draft's and the target's rows with the tokens before each row's own position.
    """
    if not s.processed:
        return logits
    check_logits(logits)
    x = logits.float()
    n, V = x.shape
    if s.penalized:
        ctx = torch.tensor(list(context), dtype=torch.int64)
        first = len(ctx) - n + 1  # tokens before row 0
        if first < 0 or not 0 <= prompt_len:
            raise InvalidArgumentError(f"process_logits: {n} rows need >= {n - 1} context tokens, got {len(ctx)}")
        seen = _counts(ctx, 0, first, V, n)  # [n, V] occurrences in prompt + output before each row
        if s.repetition_penalty != 1:
            r = s.repetition_penalty
            x = torch.where((seen > 0).to(x.device), torch.where(x > 0, x / r, x * r), x)
        if s.presence_penalty != 0 or s.frequency_penalty != 0:
            count = _counts(ctx, prompt_len, first, V, n).to(x.device)  # [n, V] in the output only
            x = x - s.frequency_penalty * count - s.presence_penalty * (count > 0).float()
    if s.min_p > 0 and not s.greedy:
        scaled = x / s.temperature
        check_logits(scaled)
        x = x.masked_fill(_min_p_mask(scaled, s.min_p).isneginf() & ~x.isneginf(), float("-inf"))
    return x


def logprobs(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """log of the distribution sampled from: log :func:`probs` computed as a log-softmax (no
    underflow to -inf for small p), float32 [..., V], -inf where a token cannot be drawn.

    Greedy (temperature 0): the log-softmax of the logits as given (penalised by
    :func:`process_logits`), the distribution whose argmax greedy takes (a one-hot would say
    nothing); min_p, top_k and top_p do not apply to greedy decoding.
    """
    x = logits.float()
    if s.greedy:
        check_logits(x)
        return torch.log_softmax(x, dim=-1)
    kept = probs(x, s) > 0
    return torch.log_softmax((x / s.temperature).masked_fill(~kept, float("-inf")), dim=-1)
