"""QuantLinear (csrc/model/linear_quant_cpu.h): GGUF Q4_1 / Q8_0 blocks x float32 activations.

Blocks are built here from the GGUF block layout, with a plain-torch dequantiser written
from the format's definition; the kernel's dequantize() must equal it (and gguf-py's) bit
for bit, and its forward must match float64 F.linear over those weights on odd shapes,
n = 1..20 (past the micro-kernels' chunk sizes), every kernel this CPU can run, 3 seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sprinter_ext import _native
from sprinter_ext.errors import InvalidArgumentError

_C = _native._C
ISAS = ["scalar", "avx2", "avx512", "avx512_bf16"]
RUNNABLE = ISAS[: ISAS.index(_C.cpu_isa()) + 1]
BLOCK_BYTES = {"q4_1": 20, "q8_0": 34}


def make_blocks(N: int, K: int, fmt: str, g: torch.Generator) -> torch.Tensor:
    """Random GGUF blocks [N, K / 32 * bytes]: f16 scale (and minimum), random quants."""
    nb = K // 32
    d = (torch.rand(N, nb, generator=g) * 0.02 + 1e-3).half()
    quants = torch.randint(0, 256, (N, nb, 16 if fmt == "q4_1" else 32), generator=g, dtype=torch.uint8)
    parts = [d.view(torch.uint8).view(N, nb, 2)]
    if fmt == "q4_1":
        parts.append((-torch.rand(N, nb, generator=g) * 0.1).half().view(torch.uint8).view(N, nb, 2))
    return torch.cat(parts + [quants], dim=2).reshape(N, nb * BLOCK_BYTES[fmt])


def dequantize_ref(blocks: torch.Tensor, fmt: str) -> torch.Tensor:
    """The GGUF definition: Q4_1 w = d * q + m (element i: low nibble of byte i, i + 16: its
    high nibble); Q8_0 w = d * q (int8). float32 arithmetic, as gguf-py computes it."""
    N = blocks.shape[0]
    b = blocks.view(N, -1, BLOCK_BYTES[fmt])
    d = b[:, :, 0:2].contiguous().view(torch.float16).float()
    if fmt == "q4_1":
        m = b[:, :, 2:4].contiguous().view(torch.float16).float()
        qs = b[:, :, 4:]
        q = torch.cat([qs & 0x0F, qs >> 4], dim=2).float()
        return (d * q + m).reshape(N, -1)
    q = b[:, :, 2:].contiguous().view(torch.int8).float()
    return (d * q).reshape(N, -1)


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
@pytest.mark.parametrize("N,K", [(1, 32), (7, 96), (37, 64), (101, 608)])
def test_quant_linear_matches_float64(fmt, N, K):
    for seed in (0, 1, 2):
        g = torch.Generator().manual_seed(seed * 100 + N + K)
        blocks = make_blocks(N, K, fmt, g)
        w = dequantize_ref(blocks, fmt)
        b = torch.randn(N, generator=g) if seed == 2 else None
        lin = _C.QuantLinear(blocks, fmt, b)
        assert (lin.in_features, lin.out_features, lin.format) == (K, N, fmt)
        assert torch.equal(lin.dequantize(), w)
        for n in (1, 2, 3, 5, 6, 7, 13, 20):
            x = torch.randn(n, K, generator=g)
            want = F.linear(x.double(), w.double(), None if b is None else b.double())
            scale = want.abs().max().clamp_min(1.0)
            for isa in RUNNABLE:
                y = lin.forward(x, isa)
                assert y.shape == (n, N) and y.dtype == torch.float32
                err = ((y.double() - want).abs().max() / scale).item()
                assert err < 2e-6, f"{fmt} {isa} N={N} K={K} n={n} seed={seed}: rel err {err:.3g}"


def test_quant_linear_planted_bug_and_shapes():
    g = torch.Generator().manual_seed(3)
    blocks = make_blocks(12, 64, "q4_1", g)
    lin = _C.QuantLinear(blocks, "q4_1")
    x = torch.randn(2, 3, 64, generator=g)
    assert lin.forward(x).shape == (2, 3, 12)
    assert lin.forward(torch.empty(0, 64)).shape == (0, 12)
    # the reference catches a wrong nibble order: swapping the halves changes the weights
    b = blocks.view(12, 2, 20).clone()
    b[:, :, 4:] = (b[:, :, 4:] << 4) | (b[:, :, 4:] >> 4)
    swapped = _C.QuantLinear(b.reshape(12, 40), "q4_1")
    assert not torch.equal(swapped.dequantize(), lin.dequantize())
    assert not torch.allclose(swapped.forward(x), lin.forward(x))


def test_quant_linear_reads_the_shipped_gguf_like_gguf_py():
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize

    from sprinter_ext.models.default_pair import find_gguf

    reader = gguf.GGUFReader(find_gguf())
    seen = set()
    for t in reader.tensors:
        fmt = t.tensor_type.name.lower()
        if fmt not in BLOCK_BYTES or fmt in seen:
            continue
        seen.add(fmt)
        raw = np.array(t.data[:64])  # the first 64 rows are enough
        lin = _C.QuantLinear(torch.from_numpy(raw), fmt)
        want = torch.from_numpy(dequantize(raw, t.tensor_type).astype(np.float32))
        assert torch.equal(lin.dequantize(), want), t.name
    assert seen == {"q4_1", "q8_0"}


def test_quant_linear_errors():
    g = torch.Generator().manual_seed(0)
    blocks = make_blocks(4, 64, "q4_1", g)
    with pytest.raises(InvalidArgumentError, match="unknown block format 'q4_0': one of q4_1, q8_0"):
        _C.QuantLinear(blocks, "q4_0")
    with pytest.raises(InvalidArgumentError, match="uint8"):
        _C.QuantLinear(blocks.float(), "q4_1")
    with pytest.raises(InvalidArgumentError, match="whole number"):
        _C.QuantLinear(blocks[:, :30], "q4_1")
    with pytest.raises(InvalidArgumentError, match="2-D"):
        _C.QuantLinear(blocks.flatten(), "q4_1")
    bad = blocks.clone()
    bad[1, 20:22] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)  # f16 +inf as block 1's scale
    with pytest.raises(InvalidArgumentError, match="row 1, block 1 has a non-finite scale"):
        _C.QuantLinear(bad, "q4_1")
    with pytest.raises(InvalidArgumentError, match="bias"):
        _C.QuantLinear(blocks, "q4_1", torch.zeros(5))
    lin = _C.QuantLinear(blocks, "q4_1")
    with pytest.raises(InvalidArgumentError, match="K=64"):
        lin.forward(torch.zeros(1, 63))
    with pytest.raises(InvalidArgumentError, match="float32"):
        lin.forward(torch.zeros(1, 64, dtype=torch.float64))
    with pytest.raises(InvalidArgumentError, match="isa must be one of"):
        lin.forward(torch.zeros(1, 64), "sse9")
