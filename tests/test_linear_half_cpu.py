"""HalfLinear (csrc/model/linear_half_cpu.h): float16 / bfloat16 weights x float32 activations.

Its forward must match float64 F.linear over the widened weights on odd shapes, n = 1..20
(past the micro-kernels' chunk sizes and the 16-row chunking), every kernel this CPU can
run, 3 seeds; and, the property the format relies on, be bitwise equal to the float32
PackedLinear over the same widened weights on the same ISA (same per-lane summation order).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sprinter_ext import _native
from sprinter_ext.errors import InvalidArgumentError

_C = _native._C
ISAS = ["scalar", "avx2", "avx512", "avx512_bf16"]
RUNNABLE = ISAS[: ISAS.index(_C.cpu_isa()) + 1]
DTYPES = [torch.float16, torch.bfloat16]
SHAPES = [(1, 1), (7, 17), (37, 64), (101, 609), (9, 576)]  # (N, K): odd, padded and unpadded K


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("N,K", SHAPES)
def test_half_linear_matches_float64(dtype, N, K):
    for seed in (0, 1, 2):
        g = torch.Generator().manual_seed(seed * 1000 + N * 7 + K)
        w16 = (torch.randn(N, K, generator=g) * 0.1).to(dtype)
        b = torch.randn(N, generator=g) if seed == 2 else None
        lin = _C.HalfLinear(w16, b)
        assert (lin.in_features, lin.out_features) == (K, N)
        assert lin.dtype == str(dtype).removeprefix("torch.")
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 13, 17, 20):
            x = torch.randn(n, K, generator=g)
            want = F.linear(x.double(), w16.double(), None if b is None else b.double())
            scale = want.abs().max().clamp_min(1.0)
            for isa in RUNNABLE:
                y = lin.forward(x, isa)
                assert y.shape == (n, N) and y.dtype == torch.float32
                err = ((y.double() - want).abs().max() / scale).item()
                assert err < 2e-6, f"{dtype} {isa} N={N} K={K} n={n} seed={seed}: rel err {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
def test_half_linear_is_the_float32_kernel_over_the_widened_weight(dtype):
    """Bitwise: each ISA's 16-bit kernel adds the products in the float32 kernel's order."""
    g = torch.Generator().manual_seed(5)
    for N, K in ((13, 96), (37, 609), (64, 1536)):
        w16 = torch.randn(N, K, generator=g).to(dtype)
        b = torch.randn(N, generator=g)
        half, full = _C.HalfLinear(w16, b), _C.PackedLinear(w16.float(), b)
        assert half.weight_bytes < 0.55 * full.weight_bytes
        for n in (1, 3, 6, 11, 16):
            x = torch.randn(n, K, generator=g)
            for isa in RUNNABLE:
                # NOTE: PackedLinear's kernel for isa avx512_bf16 over float32 weights is the AVX-512 one
                assert torch.equal(half.forward(x, isa), full.forward(x, isa)), f"{dtype} {isa} N={N} K={K} n={n}"


def test_half_linear_planted_bug_and_shapes():
    g = torch.Generator().manual_seed(3)
    w16 = torch.randn(12, 64, generator=g).half()
    lin = _C.HalfLinear(w16)
    x = torch.randn(2, 3, 64, generator=g)
    assert lin.forward(x).shape == (2, 3, 12)
    assert lin.forward(torch.empty(0, 64)).shape == (0, 12)
    assert lin.forward(torch.randn(40, 64, generator=g)).shape == (40, 12)  # > 16 rows: chunks of 16
    # the same bits read as the other 16-bit format are other weights: the reference sees it
    twin = _C.HalfLinear(w16.view(torch.bfloat16))
    assert not torch.allclose(twin.forward(x), lin.forward(x))
    want = F.linear(x.double(), w16.double()).float()
    torch.testing.assert_close(lin.forward(x), want, atol=1e-5, rtol=1e-5)


def test_half_linear_errors():
    w16 = torch.zeros(4, 64, dtype=torch.float16)
    with pytest.raises(InvalidArgumentError, match="float16 or bfloat16, got Float"):
        _C.HalfLinear(w16.float())
    with pytest.raises(InvalidArgumentError, match="2-D"):
        _C.HalfLinear(w16.flatten())
    with pytest.raises(InvalidArgumentError, match="bias must be a float32 CPU tensor"):
        _C.HalfLinear(w16, torch.zeros(4, dtype=torch.float16))
    with pytest.raises(InvalidArgumentError, match="bias"):
        _C.HalfLinear(w16, torch.zeros(5))
    lin = _C.HalfLinear(w16)
    with pytest.raises(InvalidArgumentError, match="K=64"):
        lin.forward(torch.zeros(1, 63))
    with pytest.raises(InvalidArgumentError, match="x must be float32"):
        lin.forward(torch.zeros(1, 64, dtype=torch.float16))
    with pytest.raises(InvalidArgumentError, match="isa must be one of"):
        lin.forward(torch.zeros(1, 64), "sse9")
