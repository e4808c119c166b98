"""The randomness contract (README, "Randomness"), in plain PyTorch.

Every random number in sprinter_ext is a counter-based uniform

    u(seed, position, stream, index) in (0, 1)

computed by Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011) with

    key     = (seed & 0xFFFFFFFF, seed >> 32)            seed in [0, 2**64)
    counter = (index >> 2, position, stream, 0)           all uint32
    word    = philox(counter, key)[index & 3]             uint32
    u       = ((word >> 9) + 0.5) * 2**-23                float32, exact

`position` is the absolute position (0-based, prompt included) of the token
being decided, `stream` one of :class:`Stream`, `index` a vocabulary entry.
Sampling from unnormalised weights w is the exponential race
argmax_i w_i / E_i with E_i = -log(u_i): P(i wins) = w_i / sum(w).

The C++ (csrc/common/philox.h) and Triton (kernels/rng.py) twins implement the same
function bit for bit; tests/test_rng.py holds the known-answer vectors all of them
must match. :class:`Stream` and :func:`seed_key` have one C++ definition
(csrc/common/philox.h, bound as ``_C.Stream`` / ``_C.seed_key``); these Python ones
exist so the torch spec runs without a build, and tests/test_native_boundary.py
checks them (and the Triton kernels' plain-int constants) against the binding.
No global RNG state is read or written anywhere in the library.
"""

from __future__ import annotations

import enum

import torch
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "Stream",
    "seed_key",
    "philox4x32",
    "uniform",
    "uniform_torch",
    "exponential",
    "race",
    "MAX_SEED",
]

MAX_SEED = 2**64 - 1

_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_ROUNDS = 10


class Stream(enum.IntEnum):
    """What a random number is for. Values are part of the contract (== ``_C.Stream``)."""

    DRAFT = 0  # the draft model's race sample of a proposal
    TARGET = 1  # the target's race sample (ar tokens, bonus tokens, ersd's shared race)
    COIN = 2  # the speculative-sampling acceptance coin, one per position
    RESIDUAL = 3  # the race over norm(max(p - q, 0)) after a rejection


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    # a: int64 tensor holding uint32 values; m: uint32 constant.
    # NOTE: int64 multiplication of two uint32 values overflows int64, so the
    # product is formed from 16-bit limbs of `a`; every intermediate < 2**50.
    a_lo = a & 0xFFFF
    a_hi = a >> 16
    x = a_lo * m  # < 2**48
    z = a_hi * m + (x >> 16)  # < 2**49; product = z * 2**16 + (x & 0xFFFF)
    hi = z >> 16
    lo = ((z & 0xFFFF) << 16) | (x & 0xFFFF)
    return hi, lo


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: int, k1: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 counters (broadcastable)."""
    for r in range(_ROUNDS):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        if r + 1 < _ROUNDS:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key (k0, k1) of a seed in [0, 2**64): (seed & 0xFFFFFFFF, seed >> 32).

    Raises ArgumentTypeError / InvalidArgumentError for anything else (== ``_C.seed_key``).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgumentError(f"seed must be in [0, 2**64), got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


_check_seed = seed_key  # the name the engines validate a seed with


_native = None  # sprinter_ext._native once looked up; False when unavailable


def _native_module():
    global _native
    if _native is None:
        try:
            from . import _native as mod
        except ImportError:  # source tree without a build: the torch spec still works
            mod = False
        _native = mod
    return _native


def uniform(
    seed: int,
    position: int | torch.Tensor,
    stream: int,
    n: int,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """u(seed, position, stream, index) for index in [0, n).

    position: an int, or an int64 tensor of shape [] or [B]; returns float32 of
    shape [n] or [B, n]. On CPU this runs the C++ twin (bit-identical, tested
    against :func:`uniform_torch`, ~50x faster); elsewhere the torch spec.
    """
    native = _native_module()
    if native and torch.device(device).type == "cpu":
        seed_key(seed)
        if isinstance(position, int) and position >= 0:
            return native.philox_uniform(seed, position, int(stream), n)
        if isinstance(position, torch.Tensor) and position.device.type == "cpu" and position.dim() <= 1:
            pos = position.to(torch.int64)
            if pos.dim() == 0:
                return native.philox_uniform_batched(seed, pos[None], int(stream), n)[0]
            return native.philox_uniform_batched(seed, pos, int(stream), n)
    return uniform_torch(seed, position, stream, n, device=device)


def uniform_torch(
    seed: int,
    position: int | torch.Tensor,
    stream: int,
    n: int,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The plain-PyTorch statement of :func:`uniform` (any device, any position shape [...])."""
    k0, k1 = seed_key(seed)
    pos = torch.as_tensor(position, dtype=torch.int64, device=device)
    blocks = (n + 3) // 4
    c0 = torch.arange(blocks, dtype=torch.int64, device=device)  # [blocks]
    c1 = (pos & _MASK32).unsqueeze(-1)  # [..., 1]
    c2 = torch.full((), int(stream) & _MASK32, dtype=torch.int64, device=device)
    c3 = torch.zeros((), dtype=torch.int64, device=device)
    x = torch.stack(philox4x32(c0, c1, c2, c3, k0, k1), dim=-1)  # [..., blocks, 4]
    words = x.flatten(-2)[..., :n]  # [..., n]
    # NOTE: 23 bits, not 24: (m + 0.5) must fit float32's 24-bit significand, or
    # the top value would round to 1.0 (E = 0, an infinite race score).
    return ((words >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def exponential(seed: int, position: int | torch.Tensor, stream: int, n: int, *, device="cpu") -> torch.Tensor:
    """E = -log(u): the race noise, float32, shape [..., n]."""
    return -torch.log(uniform(seed, position, stream, n, device=device))


def race(weights: torch.Tensor, seed: int, position: int | torch.Tensor, stream: int) -> torch.Tensor:
    """Sample argmax_i weights_i / E_i along the last dim (weights >= 0, any scale).

    Returns int64 of shape weights.shape[:-1]. Ties (only possible between
    zero weights, or in a one-hot row) go to the lowest index.
    """
    e = exponential(seed, position, stream, weights.shape[-1], device=weights.device)
    return torch.argmax(weights.to(torch.float32) / e, dim=-1)
