"""The SPRINTER verifier: an MLP over the draft's final hidden state (+ cheap q features).

Input, for a draft token x drafted at some position:

    z = [hidden (D floats, what the draft's LM head saw), features (F floats)]

with ``features`` an ordered subset of :data:`FEATURES`, each computed from the
draft's processed distribution q at that position (sampling settings applied):

    q_token = q(x)        max_q = max_i q_i        entropy = -sum_i q_i log q_i  (0 log 0 = 0)

Model: Linear -> ReLU -> ... -> Linear(., 1) -> sigmoid = score in (0, 1); the draft
token is accepted without the target iff score >= threshold. ``hidden=()`` is the
paper's linear probe (arXiv 2502.04557). Input standardisation learned in training
is folded into the first layer, so inference (and the fused kernels) see plain
affine layers: ``verifier.layers`` is the list of (weight [out, in], bias [out]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .io import check_draft, read, save
from .metrics import evaluate, threshold_for_far

__all__ = ["FEATURES", "Verifier", "q_features"]

FEATURES = ("q_token", "max_q", "entropy")


def q_features(q: torch.Tensor, token: torch.Tensor, features: Sequence[str]) -> torch.Tensor:
    """Features of processed draft distributions q [..., V] for tokens [...] -> [..., F] float32."""
    cols = []
    for name in features:
        if name == "q_token":
            cols.append(q.gather(-1, token[..., None].long())[..., 0])
        elif name == "max_q":
            cols.append(q.max(dim=-1).values)
        elif name == "entropy":
            cols.append(-torch.where(q > 0, q * torch.log(q), torch.zeros_like(q)).sum(dim=-1))
        else:
            raise InvalidArgumentError(f"unknown verifier feature {name!r}; choose from {FEATURES}")
    if not cols:
        return q.new_zeros(q.shape[:-1] + (0,), dtype=torch.float32)
    return torch.stack(cols, dim=-1).float()


class Verifier(nn.Module):
    """MLP verifier. Build with :func:`sprinter_ext.train_verifier` or :meth:`load`.

    Parameters
    ----------
    input_size : int
        The draft's hidden size D.
    hidden : sequence of int
        Widths of the hidden layers; () is a linear probe.
    features : sequence of str
        Ordered subset of FEATURES appended to the hidden state.
    threshold : float
        Accept a draft token iff score >= threshold.
    """

    def __init__(self, input_size: int, hidden: Sequence[int] = (), features: Sequence[str] = (), *,
                 threshold: float = 0.5):  # fmt: skip
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise InvalidArgumentError(f"input_size must be a positive int, got {input_size!r}")
        hidden = tuple(hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise InvalidArgumentError(f"hidden must be a sequence of positive ints, got {hidden!r}")
        features = tuple(features)
        bad = [f for f in features if f not in FEATURES]
        if bad or len(set(features)) != len(features):
            raise InvalidArgumentError(f"features must be distinct names from {FEATURES}, got {features!r}")
        self.input_size = input_size
        self.hidden = hidden
        self.features = features
        widths = (input_size + len(features), *hidden, 1)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.threshold = threshold
        self.meta: dict = {}  # draft identity, vocab size, label rule, metrics (see io.py)

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidArgumentError(f"threshold must be a number (not NaN), got {value!r}")
        self._threshold = float(value)

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(weight [out, in], bias [out]), ...]: what the fused kernels consume."""
        return [(lin.weight, lin.bias) for lin in self.linears]

    def inputs(self, hidden: torch.Tensor, q: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """z = [hidden, features(q, token)]: [..., D + F] float32."""
        return torch.cat([hidden.float(), q_features(q, token, self.features)], dim=-1)

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score for inputs z [..., D + F] -> [...]."""
        x = z.to(self.linears[0].weight.dtype)
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i + 1 < len(self.linears):
                x = torch.relu(x)
        return x[..., 0].float()

    def score(self, hidden: torch.Tensor, q: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Verifier score in (0, 1) for draft hidden [..., D], processed q [..., V], tokens [...]."""
        return torch.sigmoid(self.logit(self.inputs(hidden, q, token)))

    def forward(self, hidden, q, token):  # nn.Module protocol
        return self.score(hidden, q, token)

    # -- calibration and files ------------------------------------------------------

    def calibrate(self, data, *, false_accept_rate: float) -> float:
        """Set the threshold to the lowest one whose FAR on held-out `data` is <= the rate.

        `data`: a :class:`~sprinter_ext.verifier.labels.VerifierData` of texts the
        verifier was not trained on (e.g. ``sprinter_ext.verifier.collect(pair, texts)``).
        Returns the new threshold and records the held-out metrics in ``meta``.
        """
        with torch.no_grad():
            s = torch.sigmoid(self.logit(data.inputs(self.features)))
        neg = s[data.label < 0.5]
        if neg.numel() == 0:
            raise InvalidArgumentError("calibration data has no negative examples; give more held-out text")
        self.threshold = threshold_for_far(neg, false_accept_rate)
        self.meta["calibration"] = {"false_accept_rate": false_accept_rate, "examples": len(data)}
        self.meta["metrics"] = evaluate(self, data)
        return self.threshold

    def save(self, path) -> None:
        """Write safetensors weights + a JSON header (see :mod:`sprinter_ext.verifier.io`)."""
        save(self, path)

    @classmethod
    def load(cls, path, *, draft=None, pair=None, vocab_size=None, device="cpu") -> Verifier:
        """Read a verifier file; with `draft` or `pair`, refuse one trained for another draft.

        The header and every tensor are checked before the MLP is allocated
        (:func:`sprinter_ext.verifier.io.read`); bad files raise VerifierFileError.
        """
        if pair is not None:
            draft, vocab_size, device = pair.draft, pair.vocab_size, pair.device
        header, tensors = read(path, FEATURES)
        v = cls(header.pop("input_size"), tuple(header.pop("hidden")), tuple(header.pop("features")),
                threshold=float(header.pop("threshold")))  # fmt: skip
        header.pop("format")
        v.meta = header
        with torch.no_grad():
            for i, lin in enumerate(v.linears):
                lin.weight.copy_(tensors[f"linears.{i}.weight"])
                lin.bias.copy_(tensors[f"linears.{i}.bias"])
        v = v.to(device).eval().requires_grad_(False)
        if draft is not None:
            check_draft(v, draft, vocab_size)
        return v

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden={self.hidden}, features={self.features}, threshold={self.threshold:.4g}"
