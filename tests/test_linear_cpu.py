"""The weight-streaming CPU linear (csrc/model/linear_cpu.h) and NativeModel's fast path that uses it.

PackedLinear against torch.nn.functional.linear in float64 on odd shapes (K not a multiple
of the vector width, N not a multiple of the 4-row group, n = 1..17), every kernel this CPU
can run (the scalar fallback runs everywhere), several seeds; then the fast NativeModel
against ModelRunner with tolerances on logits and equal greedy tokens.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sprinter_ext import _native
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.models.native import native_runner
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.models.tiny import tiny_model

_C = _native._C
ISAS = ["scalar", "avx2", "avx512", "avx512_bf16"]
RUNNABLE = ISAS[: ISAS.index(_C.cpu_isa()) + 1]
# float32: accumulation order only; bfloat16: the product is exact in float32, the output
# is rounded to bf16 (2^-8 relative), plus vdpbf16ps' own pairwise rounding.
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2)}


def reference(x, w, b):
    """F.linear in float64 on the same (bf16-valued) numbers, then the output dtype."""
    return F.linear(x.double(), w.double(), None if b is None else b.double())


def check_close(got, want, dtype, what):
    """assert_close scaled by the dot products' magnitude, with the worst entry on failure."""
    tol = TOL[dtype]
    scale = want.abs().max().clamp_min(1.0)
    diff = (got.double() - want).abs()
    bound = tol["atol"] * scale + tol["rtol"] * want.abs()
    bad = diff > bound
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())} entries off; first at {i}: got "
                             f"{got.flatten()[i].item():.6g}, want {want.flatten()[i].item():.6g}")


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N,K", [(1, 1), (7, 33), (37, 53), (101, 576), (64, 1000)])
def test_packed_linear_matches_f_linear(isa, dtype, N, K):
    for seed in (0, 1, 2):
        g = torch.Generator().manual_seed(seed * 1000 + N * 7 + K)
        w = torch.randn(N, K, generator=g).to(dtype)
        b = torch.randn(N, generator=g).to(dtype) if seed != 1 else None
        lin = _C.PackedLinear(w, b)
        assert (lin.in_features, lin.out_features) == (K, N)
        for n in range(1, 18):  # 17: past the small-n limit, at::linear's path
            x = torch.randn(n, K, generator=g).to(dtype)
            y = lin.forward(x, isa)
            assert y.shape == (n, N) and y.dtype == dtype
            check_close(y, reference(x, w, b), dtype, f"{isa} {dtype} N={N} K={K} n={n} seed={seed}")


def test_packed_linear_shapes_strides_and_planted_bug():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(24, 40, generator=g)
    lin = _C.PackedLinear(w.t().contiguous().t())  # a transposed (GPT-2 Conv1D-like) weight
    x = torch.randn(1, 3, 40, generator=g)
    y = lin.forward(x)
    assert y.shape == (1, 3, 24)
    check_close(y, reference(x, w, None), torch.float32, "3-D input, strided weight")
    assert lin.forward(torch.empty(0, 40)).shape == (0, 24)
    # the check catches a wrong answer: one weight entry off is one output column off
    w2 = w.clone()
    w2[5, 7] += 1.0
    with pytest.raises(AssertionError, match="entries off"):
        check_close(_C.PackedLinear(w2).forward(x), reference(x, w, None), torch.float32, "planted")


def test_packed_linear_errors():
    w = torch.randn(8, 16)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        _C.PackedLinear(torch.randn(8))
    with pytest.raises(InvalidArgumentError, match="float32 or bfloat16"):
        _C.PackedLinear(w.double())
    with pytest.raises(InvalidArgumentError, match="bias"):
        _C.PackedLinear(w, torch.randn(7))
    lin = _C.PackedLinear(w)
    with pytest.raises(InvalidArgumentError, match="K=16"):
        lin.forward(torch.randn(2, 15))
    with pytest.raises(InvalidArgumentError, match="dtype"):
        lin.forward(torch.randn(2, 16).bfloat16())
    with pytest.raises(InvalidArgumentError, match="isa"):
        lin.forward(torch.randn(2, 16), "sse9")


def test_cpu_isa_is_detected():
    assert _C.cpu_isa() in ISAS


def fast_walk(model, seed, dtype):
    """Random prefill/step/extend/truncate on ModelRunner and the fast NativeModel: close logits."""
    ref, nat = ModelRunner(model, max_len=48), native_runner(model, max_len=48, fast=True)
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.15, rtol=0.05)

    def close(a, b, what):
        torch.testing.assert_close(a[0], b[0], **tol, msg=lambda m: f"{what}: {m}")

    ids = torch.randint(0, vocab, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
    close(nat.prefill(ids), ref.prefill(ids), "prefill")
    for call in range(20):
        op = int(torch.randint(0, 4, (1,), generator=g))
        room = 48 - ref.length
        if op == 0 and ref.length > 0:
            length = int(torch.randint(0, ref.length + 1, (1,), generator=g))
            ref.truncate(length)
            nat.truncate(length)
        elif op == 1 or room < 2:
            if room == 0:
                ref.truncate(10)
                nat.truncate(10)
            t = int(torch.randint(0, vocab, (1,), generator=g))
            close(nat.step(t), ref.step(t), f"call {call} step")
        else:
            n = int(torch.randint(2, min(room, 17) + 1, (1,), generator=g))
            toks = torch.randint(0, vocab, (n,), generator=g).tolist()
            close(nat.extend(toks), ref.extend(toks), f"call {call} extend({n})")
        assert nat.length == ref.length


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family,hidden,heads", [("llama", 48, 6), ("llama", 40, 4), ("gpt2", 40, 5)])
def test_fast_native_model_is_close(family, hidden, heads, dtype):
    for seed in (0, 1):
        model = tiny_model(family, vocab=101, layers=2, hidden=hidden, heads=heads, seed=seed, dtype=dtype)
        fast_walk(model, seed, dtype)


def test_fast_greedy_tokens_equal_transformers():
    """Greedy decoding through both runners gives the same tokens (fp32)."""
    model = tiny_model("llama", vocab=97, layers=3, hidden=48, heads=6, seed=4)
    ref, nat = ModelRunner(model, max_len=64), native_runner(model, max_len=64)
    a, b = ref.prefill([3, 1, 4, 1, 5]), nat.prefill([3, 1, 4, 1, 5])
    for _ in range(40):
        ta, tb = int(a[0].argmax()), int(b[0].argmax())
        assert ta == tb
        a, b = ref.step(ta), nat.step(tb)


def test_fast_option_errors():
    model = tiny_model("llama", vocab=64)
    with pytest.raises(ArgumentTypeError, match="fast must be a bool"):
        native_runner(model, fast=1)
    with pytest.raises(InvalidArgumentError, match="fast=True"):
        native_runner(model.double(), fast=True)
    assert native_runner(model.double()).dtype == torch.float64  # default: op for op there
