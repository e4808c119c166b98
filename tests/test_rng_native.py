"""C++ (sprinter_ext._C) and Triton (sprinter_ext.kernels.rng) twins of the
randomness contract must equal the torch reference sprinter_ext._rng bit for bit."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before the Triton kernel module is imported (decoration time).
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sprinter_ext import _C, _rng  # noqa: E402

MASK32 = 0xFFFFFFFF

# Random123 known-answer vectors for Philox4x32-10: (counter, key, expected).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

SEEDS = [0, 1, 2**32 + 5, 2**64 - 1]
# With seed 0, stream 1, position 251 has word >> 9 == 2**23 - 1 at index 50250:
# the largest uniform, 1 - 2**-24 (an early contract rounded it up to 1.0).
POSITIONS = [0, 1, 251, 2**31, 2**32 - 1]
NS = [1, 3, 111, 1000, 50257]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox4x32_known_answers(counter, key, expected):
    assert _C.philox4x32(counter, key) == expected
    assert _C.philox4x32(list(counter), list(key)) == expected


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_agrees_with_known_answers(counter, key, expected):
    c = [torch.tensor(x, dtype=torch.int64) for x in counter]
    out = _rng.philox4x32(*c, *key)
    assert tuple(int(x) for x in out) == expected


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", NS)
def test_uniform_matches_reference(seed, n):
    for position in POSITIONS:
        for stream in range(4):
            got = _C.philox_uniform(seed, position, stream, n)
            want = _rng.uniform_torch(seed, position, stream, n)
            assert got.dtype == torch.float32 and got.shape == (n,) and got.device.type == "cpu"
            assert torch.equal(got, want), (seed, position, stream, n)


def test_uniform_range_and_large_positions():
    u = _C.philox_uniform(0, 251, 1, 50257)
    assert torch.equal(u, _rng.uniform_torch(0, 251, 1, 50257))
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert float(u[50250]) == 1.0 - 2.0**-24
    # positions are taken modulo 2**32, like the reference's int64 & 0xFFFFFFFF
    assert torch.equal(_C.philox_uniform(9, 2**32 + 17, 2, 64), _C.philox_uniform(9, 17, 2, 64))
    assert torch.equal(_C.philox_uniform(9, 2**63 - 1, 2, 64), _rng.uniform_torch(9, 2**63 - 1, 2, 64))


def test_uniform_empty():
    assert _C.philox_uniform(0, 0, 0, 0).shape == (0,)


POS_TENSOR = torch.tensor([0, 1, 251, 2**31, 2**32 - 1, 2**32 + 7, 2**62, -1], dtype=torch.int64)


@pytest.mark.parametrize("n", [1, 3, 111, 1000, 50257])
@pytest.mark.parametrize("seed", [0, 2**32 + 5, 2**64 - 1])
def test_batched_matches_reference(seed, n):
    for stream in range(4):
        want = _rng.uniform_torch(seed, POS_TENSOR, stream, n)
        got = _C.philox_uniform_batched(seed, POS_TENSOR, stream, n)
        assert got.shape == (len(POS_TENSOR), n) and got.dtype == torch.float32
        assert torch.equal(got, want), (seed, stream, n)
        # philox_uniform dispatches on a tensor position
        assert torch.equal(_C.philox_uniform(seed, POS_TENSOR, stream, n), want)


def test_batched_rows_equal_scalar_calls_and_strided_input():
    pos = torch.arange(20, dtype=torch.int64)[::3]  # non-contiguous
    got = _C.philox_uniform_batched(123, pos, 3, 77)
    for b, p in enumerate(pos.tolist()):
        assert torch.equal(got[b], _C.philox_uniform(123, p, 3, 77))


def test_batched_empty_shapes():
    empty = torch.empty(0, dtype=torch.int64)
    assert _C.philox_uniform_batched(0, empty, 0, 10).shape == (0, 10)
    assert _C.philox_uniform_batched(0, POS_TENSOR, 0, 0).shape == (len(POS_TENSOR), 0)


@pytest.mark.parametrize(
    "args,exc",
    [
        ((-1, 0, 0, 4), ValueError),
        ((2**64, 0, 0, 4), ValueError),
        ((1.5, 0, 0, 4), TypeError),
        ((True, 0, 0, 4), TypeError),
        (("0", 0, 0, 4), TypeError),
        ((0, -1, 0, 4), ValueError),
        ((0, 2**63, 0, 4), ValueError),
        ((0, 0.0, 0, 4), TypeError),
        ((0, 0, -1, 4), ValueError),
        ((0, 0, 2**32, 4), ValueError),
        ((0, 0, 0, -1), ValueError),
        ((0, 0, 0, 2**34 + 1), ValueError),
        ((0, 0, 0, None), TypeError),
    ],
)
def test_uniform_bad_arguments(args, exc):
    with pytest.raises(exc):
        _C.philox_uniform(*args)


@pytest.mark.parametrize(
    "positions,exc,match",
    [
        (torch.zeros(3, dtype=torch.int32), TypeError, "int64"),
        (torch.zeros(3, dtype=torch.float32), TypeError, "int64"),
        (torch.zeros(2, 3, dtype=torch.int64), ValueError, "1-D"),
        (torch.tensor(5), ValueError, "1-D"),
        ([0, 1, 2], TypeError, "Tensor"),
        (torch.zeros(3, dtype=torch.int64, device="meta"), ValueError, "device"),
    ],
)
def test_batched_bad_positions(positions, exc, match):
    with pytest.raises(exc, match=match):
        _C.philox_uniform_batched(0, positions, 0, 8)


def test_batched_bad_scalars():
    pos = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="seed"):
        _C.philox_uniform_batched(-5, pos, 0, 8)
    with pytest.raises(ValueError, match="stream"):
        _C.philox_uniform_batched(0, pos, 2**32, 8)
    with pytest.raises(ValueError, match="n must be"):
        _C.philox_uniform_batched(0, pos, 0, -8)


@pytest.mark.parametrize(
    "counter,key,exc",
    [
        ((0, 0, 0), (0, 0), ValueError),
        ((0, 0, 0, 0), (0,), ValueError),
        ((0, 0, 0, 2**32), (0, 0), ValueError),
        ((0, 0, 0, 0), (-1, 0), ValueError),
        ((0, 0, 0, 0.5), (0, 0), TypeError),
        (0, (0, 0), TypeError),
        ((0, 0, 0, 0), "ab", TypeError),
    ],
)
def test_philox4x32_bad_arguments(counter, key, exc):
    with pytest.raises(exc):
        _C.philox4x32(counter, key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_matches_reference():
    if not _C.build_info()["with_cuda"]:
        pytest.skip("sprinter_ext._C was built without CUDA")
    pos = POS_TENSOR.cuda()
    for seed in (0, 2**64 - 1):
        for n in (1, 111, 50257):
            got = _C.philox_uniform(seed, pos, 2, n)
            assert got.device == pos.device
            assert torch.equal(got.cpu(), _rng.uniform_torch(seed, POS_TENSOR, 2, n))


# --------------------------------------------------------------------------- Triton
def _triton_rng():
    pytest.importorskip("triton", reason="triton is not installed")
    from sprinter_ext.kernels import rng

    interpreted = type(rng._philox_uniform_kernel).__name__ == "InterpretedFunction"
    if not torch.cuda.is_available() and not interpreted:
        # imported earlier in this process, before TRITON_INTERPRET=1 was set:
        # re-decorate the kernels for the interpreter
        rng = importlib.reload(rng)
    return rng


def test_triton_matches_reference():
    rng = _triton_rng()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pos = POS_TENSOR.to(device)
    for seed in (0, 2**32 + 5, 2**64 - 1):
        for n in (1, 111, 1000):
            for stream in range(4) if n == 111 else (0, 3):
                got = rng.philox_uniform(seed, pos, stream, n)
                assert got.shape == (len(pos), n) and got.dtype == torch.float32
                assert torch.equal(got.cpu(), _rng.uniform_torch(seed, POS_TENSOR, stream, n)), (seed, n, stream)
    # the largest-uniform corner (seed 0, position 251, stream 1, index 50250)
    pos = torch.tensor([251], dtype=torch.int64, device=device)
    assert torch.equal(rng.philox_uniform(0, pos, 1, 50257).cpu(), _rng.uniform_torch(0, 251, 1, 50257)[None])


def test_triton_empty_and_bad_arguments():
    rng = _triton_rng()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert rng.philox_uniform(0, torch.empty(0, dtype=torch.int64, device=device), 0, 5).shape == (0, 5)
    pos = torch.zeros(2, dtype=torch.int64, device=device)
    with pytest.raises(ValueError):
        rng.philox_uniform(2**64, pos, 0, 4)
    with pytest.raises(TypeError):
        rng.philox_uniform(0.0, pos, 0, 4)
    with pytest.raises(ValueError):
        rng.philox_uniform(0, pos, -1, 4)
    with pytest.raises(ValueError):
        rng.philox_uniform(0, pos, 0, -4)
    with pytest.raises(TypeError):
        rng.philox_uniform(0, pos.to(torch.int32), 0, 4)
    with pytest.raises(ValueError):
        rng.philox_uniform(0, pos[None], 0, 4)
    with pytest.raises(TypeError):
        rng.philox_uniform(0, [0, 1], 0, 4)
