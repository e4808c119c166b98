"""``verify_tokens``: the target side of a round, one fused op (dispatcher + its torch spec).

For every drafted position the acceptance test (``mode="sd"``: speculative sampling;
``mode="race"``: ERSD's shared race), the recovered token after the first rejection, or the
bonus token when every draft token is accepted; fixed-shape outputs, no host synchronisation.
The torch backend (:func:`_verify_tokens_torch`) is the rules' only statement: the reference
engine's methods/sd.py and methods/ersd.py call it; the other backends (csrc/ops/ops_cpu.cpp,
``triton/verify_tokens.py``, csrc/ops/cuda/ops_cuda.cu) are held to it by tests/test_ops_verify.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _rng
from .._rng import Stream
from ..errors import InvalidArgumentError
from ..sampling import probs
from ._common import FLOATS, _backend, _check_tensor, _native, _race_rows, _raise_non_finite, _settings

__all__ = ["VerifyResult", "verify_tokens"]

_MODES = ("sd", "race")


@dataclass(frozen=True)
class VerifyResult:
    """Result of :func:`verify_tokens` (B = batch size, n = draft tokens per row)."""

    tokens: torch.Tensor  # [B, n + 1] int64: committed tokens, padded with -1
    num_accepted: torch.Tensor  # [B] int64: accepted draft tokens (num_accepted + 1 committed)


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
    _check_tensor(target_logits, "target_logits", "[B, n + 1, V]", dim=3, dtypes=FLOATS)
    B, n1, V = target_logits.shape
    if n1 < 1 or V < 1:
        raise InvalidArgumentError(f"target_logits [B, n + 1, V] needs n + 1 >= 1 and V >= 1, got {tuple(target_logits.shape)}")
    n, dev = n1 - 1, target_logits.device
    _check_tensor(draft_probs, "draft_probs", "[B, n, V]", dim=3, dtypes=FLOATS, device=dev,
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
    from ..kernels.verify_tokens import verify_tokens_triton

    tokens, num = verify_tokens_triton(
        target_logits, draft_probs, draft_tokens, start_position, seed, s.temperature, s.top_k, s.top_p, mode
    )
    return VerifyResult(tokens, num)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """SD's unnormalised residual max(p - q, 0), where a rejected draft is resampled from (the race
    does not need the normalisation)."""
    return torch.clamp(p - q, min=0.0)


def _verify_tokens_torch(target_logits, q, x, start, seed, s, mode) -> VerifyResult:
    """The spec of the SD and ERSD accept rules (backend "torch"; the reference engine runs it).

    The rules in words: :mod:`sprinter_ext.methods.sd` (mode "sd") and
    :mod:`sprinter_ext.methods.ersd` (mode "race"). Every position is decided at once
    (fixed shapes) and only the leading run of accepts counts, so a decision after the
    first rejection is computed but never read.
    """
    B, n1, _ = target_logits.shape
    n = n1 - 1
    p = probs(target_logits, s)  # [B, n + 1, V]
    pos = start[:, None] + torch.arange(n1, device=start.device)  # [B, n + 1]
    if mode == "sd":
        coins = _rng.uniform(seed, pos[:, :n].reshape(-1), Stream.COIN, 1, device=p.device).view(B, n)
        px = p[:, :n].gather(-1, x[..., None])[..., 0]  # [B, n]
        qx = q.float().gather(-1, x[..., None])[..., 0]  # [B, n]
        accepted = coins * qx < px
        recovered = _race_rows(residual(p[:, :n], q.float()), seed, pos[:, :n], Stream.RESIDUAL)
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
