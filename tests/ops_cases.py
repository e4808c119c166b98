"""Shared helpers of the fused-op tests: test_ops_draft.py, test_ops_verify.py, test_ops_cuda.py,
test_cuda_emulation.py, test_robust_args.py and test_robust_nan_hidden.py."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from sprinter_ext.verifier.model import Verifier

HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_OK = HAS_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
BACKENDS = ["torch", "cpu", pytest.param("triton", marks=pytest.mark.skipif(
    not TRITON_OK, reason="triton needs CUDA or TRITON_INTERPRET=1 set before it is imported"))]  # fmt: skip


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_verifier(D: int, hidden=(64,), features=("q_token", "max_q", "entropy"), seed: int = 0,
                  threshold: float = 0.5) -> Verifier:  # fmt: skip
    """A random verifier, initialised from its own generator (no global RNG)."""
    v = Verifier(D, hidden=hidden, features=features, threshold=threshold)
    g = gen(seed)
    with torch.no_grad():
        for p in v.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5))
    return v


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> None:
    """allclose that says where it failed (Liger-Kernel's habit)."""
    if torch.allclose(got, want, atol=atol, rtol=rtol, equal_nan=False):
        return
    diff = (got.float() - want.float()).abs()
    i = int(diff.flatten().argmax())
    raise AssertionError(
        f"{name}: max |diff| {diff.max().item():.3g} at flat index {i} "
        f"(got {got.flatten()[i].item()!r}, want {want.flatten()[i].item()!r}; atol={atol}, rtol={rtol})"
    )
