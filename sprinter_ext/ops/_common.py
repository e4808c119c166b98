"""What the fused ops share (private): argument checks, the backend choice, the C++ module,
the verifier's weights in each backend's form, and the race over rows.

One rule per place: every boundary check of :mod:`sprinter_ext.ops` is :func:`_check_tensor`
(named errors, never assert); the backend an op runs on is :func:`_backend`'s choice.
"""

from __future__ import annotations

import os
import weakref

import torch

from .. import _rng
from ..errors import ArgumentTypeError, InvalidArgumentError, NonFiniteLogitsError
from ..sampling import NONFINITE_MESSAGE, SamplingSettings
from ..verifier.model import FEATURES, Verifier

BACKENDS = ("auto", "torch", "cpu", "triton", "cuda")
FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _check_tensor(t, name: str, layout: str, *, dim: int, dtypes, device=None, shape=None) -> None:
    """The one boundary check: type, rank, dtype, device, sizes and contiguity of `t`.

    layout names the dimensions (e.g. "[B, V]"); shape holds the expected size per
    dimension (None = free) with the argument it must agree with, e.g. (("B", 3), None).
    """
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != dim:
        raise InvalidArgumentError(f"{name} must be a {dim}-D tensor {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ArgumentTypeError(f"{name} must have dtype {allowed}; got {t.dtype}. Convert it with .to()")
    if device is not None and t.device != device:
        raise InvalidArgumentError(f"{name} must be on the logits' device {device}, got {t.device}")
    for i, want in enumerate(shape or ()):
        if want is not None and t.shape[i] != want[1]:
            raise InvalidArgumentError(
                f"{name} {layout} has size {t.shape[i]} in dim {i} ({want[0]}), "
                f"but it must be {want[1]} to match the other arguments"
            )
    if not t.is_contiguous():
        raise InvalidArgumentError(f"{name} must be contiguous; pass {name}.contiguous()")


def _settings(temperature, top_k, top_p) -> SamplingSettings:
    return SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p)


def _stream(stream) -> int:
    if isinstance(stream, bool) or not isinstance(stream, int):
        raise ArgumentTypeError(f"stream must be a Stream (or an int), got {type(stream).__name__}")
    if not 0 <= int(stream) <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"stream must be in [0, 2**32), got {stream}")
    return int(stream)


def _has_cuda_ops() -> bool:
    """Whether sprinter_ext._C was built with the CUDA fused ops (a CUDA build of torch)."""
    try:
        from .. import _native as native
    except ImportError:
        return False
    return hasattr(native._C, "draft_sample_cuda")


def _backend(backend, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda":
            return "cuda" if _has_cuda_ops() else "triton"
        return "cpu"
    if backend == "cpu" and device.type != "cpu":
        raise InvalidArgumentError(f"backend='cpu' needs CPU tensors, got device {device}; use 'auto' or 'cuda'")
    if backend == "cuda":
        if device.type != "cuda":
            raise InvalidArgumentError(f"backend='cuda' needs CUDA tensors, got device {device}; use 'auto' or 'cpu'")
        if not _has_cuda_ops():
            raise InvalidArgumentError(
                "backend='cuda' needs sprinter_ext._C built against a CUDA torch (this build has no CUDA "
                "ops); use 'triton', or rebuild with `pip install --no-build-isolation -e .`"
            )
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise InvalidArgumentError(
            f"backend='triton' needs CUDA tensors (got device {device}); to run it on CPU set "
            "TRITON_INTERPRET=1 before triton is imported"
        )
    return backend


def _native():
    from .. import _native as native  # raises an ImportError that says how to rebuild

    if not hasattr(native._C, "draft_sample_cpu"):
        raise ImportError(
            "sprinter_ext._C predates the fused ops; rebuild it with "
            '`pip install --no-build-isolation -e ".[dev]"`'
        )
    return native._C


def _check_verifier(verifier, hidden_size: int) -> None:
    if not isinstance(verifier, Verifier):
        raise ArgumentTypeError(f"verifier must be a sprinter_ext Verifier or None, got {type(verifier).__name__}")
    if verifier.input_size != hidden_size:
        raise InvalidArgumentError(
            f"hidden has size {hidden_size} in dim 1 (D) but the verifier was built for "
            f"input_size={verifier.input_size}; use the verifier trained for this draft model"
        )


_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _verifier_layers(verifier: Verifier, device: torch.device, backend: str):
    """verifier.layers in the backend's form, cached per verifier, device and parameter version.

    cpu, cuda: [(W [out, in], b [out]) float32 contiguous]; triton: the packed buffers of
    kernels/draft_sample.py (pack_layers).
    """
    key = (device, backend, tuple((w.data_ptr(), w._version, b.data_ptr(), b._version) for w, b in verifier.layers))
    hit = _PACKED.get(verifier)
    if hit is not None and hit[0] == key:
        return hit[1]
    layers = [
        (w.detach().to(device, torch.float32).contiguous(), b.detach().to(device, torch.float32).contiguous())
        for w, b in verifier.layers
    ]
    if backend == "triton":
        from ..kernels.draft_sample import pack_layers

        layers = pack_layers(layers, device)
    _PACKED[verifier] = (key, layers)
    return layers


def _feature_codes(verifier: Verifier) -> list[int]:
    return [FEATURES.index(f) for f in verifier.features]


def _raise_non_finite():
    raise NonFiniteLogitsError(NONFINITE_MESSAGE)


def _race_rows(weights: torch.Tensor, seed: int, pos: torch.Tensor, stream: int) -> torch.Tensor:
    """_rng.race over weights [..., V] with positions [...] (flattened for the C++ twin)."""
    flat = _rng.race(weights.reshape(-1, weights.shape[-1]), seed, pos.reshape(-1), stream)
    return flat.view(pos.shape)
