"""The SPRINTER verifier: model, label collection, training, calibration and files."""

from __future__ import annotations

from .io import VerifierMismatchError, check_draft, draft_identity
from .labels import LABELS, VerifierData, collect
from .model import FEATURES, Verifier, q_features
from .train import auc, evaluate, train_verifier

__all__ = [
    "FEATURES",
    "LABELS",
    "Verifier",
    "VerifierData",
    "VerifierMismatchError",
    "auc",
    "check_draft",
    "collect",
    "draft_identity",
    "evaluate",
    "q_features",
    "train_verifier",
]
