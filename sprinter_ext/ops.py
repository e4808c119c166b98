"""The two fused ops of a speculative-decoding round, one public entry point each.

- :func:`draft_sample`: draft side, per draft token. From a draft logits row and
  the draft's last hidden state: apply the sampling settings, race-sample the token,
  compute q(token) and the features of q, run the verifier MLP.
- :func:`verify_tokens`: target side, per verification. For every drafted position
  the acceptance test (``mode="sd"``: speculative sampling; ``mode="race"``: ERSD's
  shared race), the recovered token after the first rejection, or the bonus token
  when every draft token is accepted; fixed-shape outputs, no host synchronisation.

Terms (as in vLLM's rejection sampler): *accepted* tokens are draft tokens the
target keeps; the *recovered* token replaces the first rejected one; the *bonus*
token follows when all n draft tokens are accepted. A round commits
``num_accepted + 1`` tokens.

Backends: ``"torch"`` (the plain-PyTorch statement below: the spec, built from
:func:`sprinter_ext.sampling.probs`, :mod:`sprinter_ext._rng` and the
:class:`~sprinter_ext.verifier.model.Verifier`), ``"cpu"`` (C++ in csrc/ops/ops_cpu.cpp,
``sprinter_ext._C``), ``"triton"`` (kernels/draft_sample.py, kernels/verify_tokens.py;
CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), ``"cuda"`` (CUDA C++ in
csrc/ops/cuda/ops_cuda.cu, ``sprinter_ext._C`` built against a CUDA torch; CUDA tensors).
``"auto"`` picks cuda for CUDA tensors when ``sprinter_ext._C`` has the CUDA ops, else
triton, and cpu for CPU tensors. All backends give the same tokens, counts and accept
flags (up to ties caused by float rounding, e.g. two race scores within an ulp) and
probabilities/scores equal to float32 rounding.

NOTE: the triton and cuda backends never synchronise with the host. Where the torch
and cpu backends raise NonFiniteLogitsError, they return a flagged row instead
(draft: token -1, q_token 0, score 0, accept False; verify: num_accepted -1 and a row
of -1); the caller checks for it when it reads the results anyway.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

import torch

from . import _rng
from ._rng import Stream
from .errors import ArgumentTypeError, InvalidArgumentError, NonFiniteLogitsError
from .sampling import NONFINITE_MESSAGE, SamplingSettings, probs
from .verifier.model import FEATURES, Verifier

__all__ = ["DraftSample", "VerifyResult", "draft_sample", "verify_tokens", "BACKENDS"]

BACKENDS = ("auto", "torch", "cpu", "triton", "cuda")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_MODES = ("sd", "race")


@dataclass(frozen=True)
class DraftSample:
    """Result of :func:`draft_sample` (B = batch size, V = vocabulary size)."""

    token: torch.Tensor  # [B] int64: the race winner
    probs: torch.Tensor  # [B, V] float32: the processed draft distribution q
    q_token: torch.Tensor  # [B] float32: q(token)
    score: torch.Tensor | None  # [B] float32 verifier score in [0, 1]; None without verifier
    accept: torch.Tensor | None  # [B] bool: score >= verifier.threshold; None without verifier


@dataclass(frozen=True)
class VerifyResult:
    """Result of :func:`verify_tokens` (B = batch size, n = draft tokens per row)."""

    tokens: torch.Tensor  # [B, n + 1] int64: committed tokens, padded with -1
    num_accepted: torch.Tensor  # [B] int64: accepted draft tokens (num_accepted + 1 committed)


# ------------------------------------------------------------------ checks ----
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
        from . import _native as native
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
    from . import _native as native  # raises an ImportError that says how to rebuild

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
        from .kernels.draft_sample import pack_layers

        layers = pack_layers(layers, device)
    _PACKED[verifier] = (key, layers)
    return layers


def _feature_codes(verifier: Verifier) -> list[int]:
    return [FEATURES.index(f) for f in verifier.features]


# --------------------------------------------------------------- draft op ----
def draft_sample(
    logits: torch.Tensor,
    hidden: torch.Tensor,
    position: torch.Tensor,
    *,
    seed: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stream: int = Stream.DRAFT,
    verifier: Verifier | None = None,
    backend: str = "auto",
) -> DraftSample:
    """Sample draft tokens and score them with the verifier, in one pass over each logits row.

    Per row: q = the processed distribution of ``logits`` (temperature, top-k, top-p,
    exactly as :func:`sprinter_ext.sampling.probs`), token = the race
    argmax_i q_i / E_i with E = -log u(seed, position, stream, i), then
    q(token), max q and the entropy of q, and the verifier MLP on
    [hidden, features in ``verifier.features`` order].

    Parameters
    ----------
    logits : torch.Tensor
        Draft logits, shape ``[B, V]``, float32, float16 or bfloat16 (computed in
        float32). ``-inf`` marks a masked token; NaN/+inf raise
        :class:`~sprinter_ext.errors.NonFiniteLogitsError` (torch and cpu backends;
        the triton and cuda backends do not synchronise, they return token ``-1``,
        q_token 0, score 0 and accept False for such a row).
    hidden : torch.Tensor
        The draft's last hidden state per row, shape ``[B, D]``, same float dtypes.
    position : torch.Tensor
        Absolute position of the token being drafted, shape ``[B]``, int64.
    seed : int
        Seed of the randomness contract, in ``[0, 2**64)``.
    temperature, top_k, top_p : float, int, float
        Sampling settings (:class:`~sprinter_ext.sampling.SamplingSettings`).
    stream : Stream
        Noise stream of the race: ``Stream.DRAFT`` for sd, ``Stream.TARGET`` for ersd.
    verifier : Verifier, optional
        When given (``input_size == D``), ``score`` and ``accept`` are filled.
    backend : {"auto", "torch", "cpu", "triton", "cuda"}

    Returns
    -------
    DraftSample
        ``token [B]`` int64, ``probs [B, V]`` float32 (q), ``q_token [B]`` float32,
        ``score [B]`` float32 and ``accept [B]`` bool (None without a verifier). A NaN
        verifier logit (non-finite hidden state) scores 0, so the token is flagged.

    Examples
    --------
    >>> import torch
    >>> from sprinter_ext.ops import draft_sample
    >>> from sprinter_ext.verifier.model import Verifier
    >>> g = torch.Generator().manual_seed(0)
    >>> v = Verifier(576, hidden=(64,), features=("q_token", "max_q", "entropy"))
    >>> logits, hidden = torch.randn(1, 49152, generator=g), torch.randn(1, 576, generator=g)
    >>> out = draft_sample(logits, hidden, torch.tensor([17]), seed=0, top_k=50, verifier=v)
    >>> out.token.shape, out.probs.shape, out.accept.dtype
    (torch.Size([1]), torch.Size([1, 49152]), torch.bool)
    """
    _check_tensor(logits, "logits", "[B, V]", dim=2, dtypes=_FLOATS)
    B, V = logits.shape
    if V == 0:
        raise InvalidArgumentError("logits must have at least one column (V >= 1)")
    dev = logits.device
    _check_tensor(hidden, "hidden", "[B, D]", dim=2, dtypes=_FLOATS, device=dev, shape=(("B", B),))
    _check_tensor(position, "position", "[B]", dim=1, dtypes=(torch.int64,), device=dev, shape=(("B", B),))
    s = _settings(temperature, top_k, top_p)
    _rng._check_seed(seed)
    stream = _stream(stream)
    if verifier is not None:
        _check_verifier(verifier, hidden.shape[1])
    backend = _backend(backend, dev)

    if backend == "torch":
        return _draft_sample_torch(logits, hidden, position, seed, s, stream, verifier)
    layers = _verifier_layers(verifier, dev, backend) if verifier is not None else []
    codes = _feature_codes(verifier) if verifier is not None else []
    if backend in ("cpu", "cuda"):
        native = _native()
        fn = native.draft_sample_cpu if backend == "cpu" else native.draft_sample_cuda
        token, q, q_token, score, bad = fn(
            logits, hidden.float(), position, seed, stream, float(s.temperature), s.top_k, float(s.top_p),
            [w for w, _ in layers], [b for _, b in layers], codes,
        )  # fmt: skip
        if backend == "cpu" and bool(bad.any()):  # cuda: no host sync, the row is flagged (see top)
            _raise_non_finite()
    else:
        from .kernels.draft_sample import draft_sample_triton, pack_layers

        packed = layers if verifier is not None else pack_layers([], dev)
        token, q, q_token, score = draft_sample_triton(
            logits, hidden, position, seed, stream, s.temperature, s.top_k, s.top_p, packed, codes
        )
    if verifier is None:
        return DraftSample(token, q, q_token, None, None)
    # token -1 (a flagged row of triton/cuda) is never accepted, whatever the threshold
    return DraftSample(token, q, q_token, score, (score >= verifier.threshold) & (token >= 0))


def _raise_non_finite():
    raise NonFiniteLogitsError(NONFINITE_MESSAGE)


def _race_rows(weights: torch.Tensor, seed: int, pos: torch.Tensor, stream: int) -> torch.Tensor:
    """_rng.race over weights [..., V] with positions [...] (flattened for the C++ twin)."""
    flat = _rng.race(weights.reshape(-1, weights.shape[-1]), seed, pos.reshape(-1), stream)
    return flat.view(pos.shape)


def _draft_sample_torch(logits, hidden, position, seed, s, stream, verifier) -> DraftSample:
    q = probs(logits, s)  # [B, V] float32
    token = _race_rows(q, seed, position, stream)  # [B]
    q_token = q.gather(-1, token[:, None])[:, 0]
    if verifier is None:
        return DraftSample(token, q, q_token, None, None)
    with torch.no_grad():
        score = torch.nan_to_num(verifier.score(hidden, q, token), nan=0.0)
    return DraftSample(token, q, q_token, score, score >= verifier.threshold)


# -------------------------------------------------------------- verify op ----
def verify_tokens(
    target_logits: torch.Tensor,
    draft_probs: torch.Tensor,
    draft_tokens: torch.Tensor,
    start_position: torch.Tensor,
    *,
    seed: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    mode: str = "sd",
    backend: str = "auto",
) -> VerifyResult:
    """Verify n draft tokens per row against the target; fixed shapes, no host sync.

    p_i = the processed target distribution of ``target_logits[:, i]`` (sampling
    settings applied as :func:`sprinter_ext.sampling.probs`), positions
    ``start_position + i``.

    - ``mode="sd"`` (speculative sampling, :func:`sprinter_ext.methods.sd.verify`):
      x_i is accepted iff u * q_i(x_i) < p_i(x_i), u = u(seed, start + i, COIN, 0);
      the first rejected x_i is replaced by the race over max(p_i - q_i, 0)
      (RESIDUAL noise at start + i); if all n pass, the bonus is the race over p_n
      (TARGET noise at start + n).
    - ``mode="race"`` (ERSD, :mod:`sprinter_ext.methods.ersd`): t_i = race over p_i
      with TARGET noise at start + i; x_i is accepted while t_i == x_i; the first
      mismatch commits t_i, else the bonus t_n.

    Parameters
    ----------
    target_logits : torch.Tensor
        ``[B, n + 1, V]``, float32/float16/bfloat16 (computed in float32).
    draft_probs : torch.Tensor
        The processed draft distributions q, ``[B, n, V]``, same float dtypes (unused
        by ``mode="race"`` beyond the shape check).
    draft_tokens : torch.Tensor
        ``[B, n]`` int64, the drafted tokens x_i.
    start_position : torch.Tensor
        ``[B]`` int64, absolute position of the first drafted token.
    seed : int
        Seed of the randomness contract, in ``[0, 2**64)``.
    temperature, top_k, top_p : float, int, float
        The target's sampling settings.
    mode : {"sd", "race"}
    backend : {"auto", "torch", "cpu", "triton", "cuda"}

    Returns
    -------
    VerifyResult
        ``tokens [B, n + 1]`` int64: the accepted draft tokens, then the recovered or
        bonus token, then -1 padding; ``num_accepted [B]`` int64. NaN/+inf target
        logits raise NonFiniteLogitsError (torch, cpu); the triton and cuda backends
        return ``num_accepted = -1`` and a row of -1 instead (no host sync).

    Examples
    --------
    >>> import torch
    >>> from sprinter_ext.ops import verify_tokens
    >>> g = torch.Generator().manual_seed(0)
    >>> p_logits = torch.randn(1, 5, 49152, generator=g)
    >>> q = torch.softmax(torch.randn(1, 4, 49152, generator=g), -1)
    >>> x = torch.randint(0, 49152, (1, 4), generator=g)
    >>> out = verify_tokens(p_logits, q, x, torch.tensor([100]), seed=0, mode="sd")
    >>> out.tokens.shape, out.num_accepted.shape
    (torch.Size([1, 5]), torch.Size([1]))
    """
    _check_tensor(target_logits, "target_logits", "[B, n + 1, V]", dim=3, dtypes=_FLOATS)
    B, n1, V = target_logits.shape
    if n1 < 1 or V < 1:
        raise InvalidArgumentError(f"target_logits [B, n + 1, V] needs n + 1 >= 1 and V >= 1, got {tuple(target_logits.shape)}")
    n, dev = n1 - 1, target_logits.device
    _check_tensor(draft_probs, "draft_probs", "[B, n, V]", dim=3, dtypes=_FLOATS, device=dev,
                  shape=(("B", B), ("n", n), ("V", V)))  # fmt: skip
    _check_tensor(draft_tokens, "draft_tokens", "[B, n]", dim=2, dtypes=(torch.int64,), device=dev,
                  shape=(("B", B), ("n", n)))  # fmt: skip
    _check_tensor(start_position, "start_position", "[B]", dim=1, dtypes=(torch.int64,), device=dev,
                  shape=(("B", B),))  # fmt: skip
    if mode not in _MODES:
        raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
    if dev.type == "cpu" and n > 0 and not bool(((draft_tokens >= 0) & (draft_tokens < V)).all()):
        # NOTE: checked on CPU only (free there); on CUDA this would be a host sync, and
        # the kernel treats an out-of-range token as rejected instead.
        raise InvalidArgumentError(f"draft_tokens must be token ids in [0, V) = [0, {V})")
    if dev.type == "cpu" and n > 0:
        # NOTE: the same CPU-only rule: q must be a distribution per row (finite, >= 0, not all
        # zero), else SD's p/q ratios and residuals are NaN and the result silently garbage.
        q = draft_probs.float()
        if not bool(torch.isfinite(q).all()) or bool((q < 0).any()) or not bool((q.sum(-1) > 0).all()):
            raise InvalidArgumentError(
                "draft_probs must be probability rows: finite, >= 0 and not all zero (NaN, negative or "
                "all-zero rows were given)"
            )
    s = _settings(temperature, top_k, top_p)
    _rng._check_seed(seed)
    backend = _backend(backend, dev)

    if backend == "torch":
        return _verify_tokens_torch(target_logits, draft_probs, draft_tokens, start_position, seed, s, mode)
    if backend in ("cpu", "cuda"):
        native = _native()
        fn = native.verify_tokens_cpu if backend == "cpu" else native.verify_tokens_cuda
        tokens, num, bad = fn(
            target_logits, draft_probs, draft_tokens, start_position, seed,
            float(s.temperature), s.top_k, float(s.top_p), mode == "sd",
        )  # fmt: skip
        if backend == "cpu" and bool(bad.any()):  # cuda: no host sync, the row is flagged (see top)
            _raise_non_finite()
        return VerifyResult(tokens, num)
    from .kernels.verify_tokens import verify_tokens_triton

    tokens, num = verify_tokens_triton(
        target_logits, draft_probs, draft_tokens, start_position, seed, s.temperature, s.top_k, s.top_p, mode
    )
    return VerifyResult(tokens, num)


def _verify_tokens_torch(target_logits, q, x, start, seed, s, mode) -> VerifyResult:
    B, n1, _ = target_logits.shape
    n = n1 - 1
    p = probs(target_logits, s)  # [B, n + 1, V]
    pos = start[:, None] + torch.arange(n1, device=start.device)  # [B, n + 1]
    if mode == "sd":
        coins = _rng.uniform(seed, pos[:, :n].reshape(-1), Stream.COIN, 1, device=p.device).view(B, n)
        px = p[:, :n].gather(-1, x[..., None])[..., 0]  # [B, n]
        qx = q.float().gather(-1, x[..., None])[..., 0]  # [B, n]
        accepted = coins * qx < px
        recovered = _race_rows(torch.clamp(p[:, :n] - q.float(), min=0.0), seed, pos[:, :n], Stream.RESIDUAL)
        bonus = _race_rows(p[:, n], seed, pos[:, n], Stream.TARGET)
        candidate = torch.cat([recovered, bonus[:, None]], dim=1)  # [B, n + 1]
    else:
        candidate = _race_rows(p, seed, pos, Stream.TARGET)  # [B, n + 1] target winners
        accepted = candidate[:, :n] == x
    num = torch.cumprod(accepted.to(torch.int64), dim=1).sum(dim=1)  # [B] leading accepts
    idx = torch.arange(n1, device=p.device)[None, :]
    padded = torch.cat([x, x.new_full((B, 1), -1)], dim=1)  # [B, n + 1]
    chosen = candidate.gather(1, num[:, None])  # [B, 1]
    tokens = torch.where(idx < num[:, None], padded, torch.where(idx == num[:, None], chosen, -1))
    return VerifyResult(tokens, num)
