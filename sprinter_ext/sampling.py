"""Sampling settings and the processed distribution p (or q) that every test and race uses.

``probs(logits, settings)`` is the single definition of "the distribution after
temperature, top-k and top-p", applied identically to the draft and the target
before any acceptance test or race (DESIGN.md):

- temperature 0: one-hot at the first argmax (greedy);
- otherwise temperature in [TEMPERATURE_MIN, TEMPERATURE_MAX] and softmax(logits / temperature), then
- top_k > 0: keep the k highest-ranked tokens, rank = (probability desc, index asc);
- top_p < 1: keep token i iff the mass of the tokens ranked strictly before it is
  < top_p (so the top token is always kept), ranking as above, after top-k;
- renormalise.

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
    "NONFINITE_MESSAGE",
]

# NOTE: every engine works in float32 (1/t, logits / t). 1e-4..1e4 keeps t and 1/t
# normal float32 numbers, -inf / t = -inf (masked tokens stay masked, never NaN) and
# logits up to 3e34 finite after scaling; below it use 0 (greedy), above it the
# distribution is uniform to float32 precision anyway.
TEMPERATURE_MIN = 1e-4
TEMPERATURE_MAX = 1e4
TOP_K_MAX = 2**63 - 1  # int64, as the C++ and Triton kernels take it
NONFINITE_MESSAGE = (
    "the model produced NaN/inf logits; generation stopped without output. "
    "Check the weights, the dtype (fp16 overflow?) and the inputs"
)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_native(self):
        """The bound ``sprinter_ext._C.SamplingSettings`` (float32 temperature and top_p; needs the build)."""
        from . import _native

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
