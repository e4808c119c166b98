"""Triton twin of the randomness contract (sprinter_ext/_rng.py, csrc/common/philox.h).

u(seed, position, stream, index) = ((word >> 9) + 0.5f) * 2**-23 (float32, exact),
word = Philox4x32-10((index >> 2, position & 0xFFFFFFFF, stream, 0),
                     (seed & 0xFFFFFFFF, seed >> 32))[index & 3].
Bit-identical to the torch reference and the C++/CUDA code.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from .._rng import seed_key
from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["philox_uniform"]

# Triton decides at decoration time whether kernels run in the interpreter.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_MAX_U32 = 2**32 - 1
_MAX_N = 4 * 2**32  # index >> 2 must fit in uint32
_MAX_ROWS = 65535  # CUDA's limit on grid axis 1


@triton.jit
def philox4x32_10(c0, c1, c2, c3, key0, key1):
    # c0..c3, key0, key1: uint32 tensors of one shape -> the four output words (uint32).
    # The one Triton statement of Philox4x32-10; draft_sample/verify_tokens use it too.
    # explicit uint32 constants (a bare literal above 2**31 could be typed otherwise)
    m0 = tl.full(c0.shape, 0xD2511F53, tl.uint32)
    m1 = tl.full(c0.shape, 0xCD9E8D57, tl.uint32)
    w0 = tl.full(c0.shape, 0x9E3779B9, tl.uint32)
    w1 = tl.full(c0.shape, 0xBB67AE85, tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, m0)
        lo0 = c0 * m0  # uint32: the low half of the product
        hi1 = tl.umulhi(c2, m1)
        lo1 = c2 * m1
        c0, c1, c2, c3 = hi1 ^ c1 ^ key0, lo1, hi0 ^ c3 ^ key1, lo0
        key0 = key0 + w0  # uint32 wrap-around
        key1 = key1 + w1
    return c0, c1, c2, c3


@triton.jit
def _to_uniform(word):
    # word: uint32 [BLOCK] -> float32 in (0, 1); (m + 0.5) * 2**-23 is exact for m < 2**23
    return ((word >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit(do_not_specialize=["k0", "k1", "stream"])
def _philox_uniform_kernel(
    pos_ptr,  # int64 [B]: positions (taken modulo 2**32)
    out_ptr,  # float32 [B, n], contiguous
    n,  # uniforms per row
    k0,  # uint32 value: seed & 0xFFFFFFFF
    k1,  # uint32 value: seed >> 32
    stream,  # uint32 value
    BLOCK: tl.constexpr,  # Philox counters per program: 4 * BLOCK uniforms
):
    tile = tl.program_id(0).to(tl.int64)
    row = tl.program_id(1).to(tl.int64)
    blk = tile * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] int64, counter word 0
    pos = tl.load(pos_ptr + row)  # scalar int64

    # tl.full, not tl.zeros: the latter is a @jit helper of triton itself, which the
    # interpreter cannot run if triton was imported before TRITON_INTERPRET=1 was set.
    zero = tl.full([BLOCK], 0, tl.uint32)
    c0 = blk.to(tl.uint32)
    c1 = zero + (pos & 0xFFFFFFFF).to(tl.uint32)
    c2 = zero + stream.to(tl.uint32)
    c3 = zero
    key0 = zero + k0.to(tl.uint32)
    key1 = zero + k1.to(tl.uint32)
    c0, c1, c2, c3 = philox4x32_10(c0, c1, c2, c3, key0, key1)

    idx = 4 * blk  # [BLOCK] index of word 0 within the row
    dst = out_ptr + row * n + idx  # [BLOCK] pointers
    tl.store(dst, _to_uniform(c0), mask=idx < n)
    tl.store(dst + 1, _to_uniform(c1), mask=idx + 1 < n)
    tl.store(dst + 2, _to_uniform(c2), mask=idx + 2 < n)
    tl.store(dst + 3, _to_uniform(c3), mask=idx + 3 < n)


def _int(value, name: str, lo: int, hi: int, range_text: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be in {range_text}, got {value}")
    return value


def philox_uniform(seed: int, positions: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """u(seed, positions[b], stream, index) for index < n: float32 [B, n] on positions' device.

    positions: int64 tensor [B] (CUDA, or CPU when TRITON_INTERPRET=1 was set
    before this module was imported).
    """
    seed = _int(seed, "seed", 0, 2**64 - 1, "[0, 2**64)")
    stream = _int(stream, "stream", 0, _MAX_U32, "[0, 2**32)")
    n = _int(n, "n", 0, _MAX_N, "[0, 2**34]")
    if not isinstance(positions, torch.Tensor):
        raise ArgumentTypeError(f"positions must be an int64 torch.Tensor [B], got {type(positions).__name__}")
    if positions.dtype != torch.int64:
        raise ArgumentTypeError(f"positions must be an int64 tensor, got dtype {positions.dtype}")
    if positions.dim() != 1:
        raise InvalidArgumentError(f"positions must be a 1-D tensor [B], got shape {tuple(positions.shape)}")
    if positions.device.type != "cuda" and not _INTERPRET:
        raise InvalidArgumentError(
            f"positions must be a CUDA tensor (got device {positions.device}); to run on CPU set "
            "TRITON_INTERPRET=1 before importing sprinter_ext.kernels.rng"
        )

    positions = positions.contiguous()
    batch = positions.shape[0]
    out = torch.empty((batch, n), dtype=torch.float32, device=positions.device)
    if batch == 0 or n == 0:
        return out
    blocks = (n + 3) // 4
    block = max(16, min(1024, triton.next_power_of_2(blocks)))
    tiles = triton.cdiv(blocks, block)
    for r0 in range(0, batch, _MAX_ROWS):
        rows = min(_MAX_ROWS, batch - r0)
        _philox_uniform_kernel[(tiles, rows)](
            positions[r0 : r0 + rows], out[r0 : r0 + rows], n,
            *seed_key(seed), stream, BLOCK=block,
        )
    return out
