"""The SPRINTER verifier: model, label collection, training, metrics and calibration, files.

Imports point one way: model.py uses io.py (the file format) and metrics.py; train.py and
labels.py use model.py; io.py and metrics.py import neither (no import loop).
"""

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
