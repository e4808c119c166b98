"""Held-out metrics of a verifier: ROC AUC, accuracy/precision/recall, and the threshold
for a requested false-accept rate.

False-accept rate (FAR) = P(score >= threshold | label 0): how often a token the
label rule would reject gets accepted unchecked.

NOTE: this module imports neither the Verifier class nor the label code (they are
duck-typed: ``verifier.logit``/``.features``/``.threshold``, ``data.inputs``/``.label``),
so model.py can use it for ``Verifier.calibrate`` without an import loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .labels import VerifierData
    from .model import Verifier

__all__ = ["auc", "evaluate", "threshold_for_far"]


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half."""
    pos, neg = int(labels.sum()), int((1 - labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    s = scores.double()
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    uniq, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    if len(uniq) < len(s):  # average ranks within ties
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    r_pos = float(ranks[labels > 0.5].sum())
    return (r_pos - pos * (pos + 1) / 2) / (pos * neg)


def evaluate(verifier: Verifier, data: VerifierData, threshold: float | None = None) -> dict:
    """Held-out metrics of `verifier` on `data` at `threshold` (default: its own)."""
    thr = verifier.threshold if threshold is None else threshold
    with torch.no_grad():
        s = torch.sigmoid(verifier.logit(data.inputs(verifier.features)))
    y = data.label
    acc = s >= thr
    tp = int((acc & (y > 0.5)).sum())
    fp = int((acc & (y < 0.5)).sum())
    neg, pos = int((y < 0.5).sum()), int((y > 0.5).sum())
    return {
        "examples": len(y),
        "positive_rate": pos / max(1, len(y)),
        "accuracy": float(((acc.float() == y).float().mean())),
        "auc": auc(s, y),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, pos),
        "false_accept_rate": fp / max(1, neg),
        "accept_rate": float(acc.float().mean()),
        "threshold": thr,
    }


def threshold_for_far(scores_neg: torch.Tensor, far: float) -> float:
    """Lowest threshold t with mean(scores_neg >= t) <= far."""
    if not 0.0 <= far <= 1.0 or math.isnan(far):
        raise InvalidArgumentError(f"false_accept_rate must be in [0, 1], got {far}")
    s = torch.sort(scores_neg.float(), descending=True).values
    allowed = math.floor(far * len(s) + 1e-9)  # negatives that may score >= t
    if allowed >= len(s):
        return 0.0
    # accept at most `allowed` negatives: t just above the (allowed+1)-th highest score.
    # NOTE: the step is taken in float32, the scores' dtype: torch compares a float32
    # tensor with a Python float in float32, so a float64 step would round away.
    return float(torch.nextafter(s[allowed], torch.tensor(math.inf)))
