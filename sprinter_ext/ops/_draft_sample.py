"""``draft_sample``: the draft side of a round, one fused op (dispatcher + its torch spec).

From a draft logits row and the draft's last hidden state: apply the sampling settings,
race-sample the token, compute q(token) and the features of q, run the verifier MLP.
The torch backend (:func:`_draft_sample_torch`) is the rule's only statement; the other
backends (csrc/ops/ops_cpu.cpp, ``triton/draft_sample.py``, csrc/ops/cuda/ops_cuda.cu) are held
to it by tests/test_ops_draft.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _rng
from .._rng import Stream
from ..sampling import probs
from ..verifier.model import Verifier
from ._common import (FLOATS, _backend, _check_tensor, _check_verifier, _feature_codes, _native, _race_rows,
                      _raise_non_finite, _settings, _stream, _verifier_layers)  # fmt: skip

__all__ = ["DraftSample", "draft_sample"]


@dataclass(frozen=True)
class DraftSample:
    """Result of :func:`draft_sample` (B = batch size, V = vocabulary size)."""

    token: torch.Tensor  # [B] int64: the race winner
    probs: torch.Tensor  # [B, V] float32: the processed draft distribution q
    q_token: torch.Tensor  # [B] float32: q(token)
    score: torch.Tensor | None  # [B] float32 verifier score in [0, 1]; None without verifier
    accept: torch.Tensor | None  # [B] bool: score >= verifier.threshold; None without verifier


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
    _check_tensor(logits, "logits", "[B, V]", dim=2, dtypes=FLOATS)
    B, V = logits.shape
    if V == 0:
        raise InvalidArgumentError("logits must have at least one column (V >= 1)")
    dev = logits.device
    _check_tensor(hidden, "hidden", "[B, D]", dim=2, dtypes=FLOATS, device=dev, shape=(("B", B),))
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
        from ..kernels.draft_sample import draft_sample_triton, pack_layers

        packed = layers if verifier is not None else pack_layers([], dev)
        token, q, q_token, score = draft_sample_triton(
            logits, hidden, position, seed, stream, s.temperature, s.top_k, s.top_p, packed, codes
        )
    if verifier is None:
        return DraftSample(token, q, q_token, None, None)
    # token -1 (a flagged row of triton/cuda) is never accepted, whatever the threshold
    return DraftSample(token, q, q_token, score, (score >= verifier.threshold) & (token >= 0))


def _draft_sample_torch(logits, hidden, position, seed, s, stream, verifier) -> DraftSample:
    """The spec of the draft rule (backend "torch"; the reference engine runs it).

    q = the processed draft distribution, the token its race with `stream` noise at its
    position, and the verifier's score of (hidden, q, token); a NaN score (non-finite
    hidden state) is 0, so such a token is always flagged.
    """
    q = probs(logits, s)  # [B, V] float32
    token = _race_rows(q, seed, position, stream)  # [B]
    q_token = q.gather(-1, token[:, None])[:, 0]
    if verifier is None:
        return DraftSample(token, q, q_token, None, None)
    with torch.no_grad():
        score = torch.nan_to_num(verifier.score(hidden, q, token), nan=0.0)
    return DraftSample(token, q, q_token, score, score >= verifier.threshold)
