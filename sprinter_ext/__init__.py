"""sprinter_ext: fast batch-1 speculative decoding for PyTorch causal language models.

>>> import sprinter_ext
>>> pair = sprinter_ext.load_pair()                     # embedded default pair, offline
>>> res = sprinter_ext.generate(pair, "The tide", method="sd", max_new_tokens=32, seed=0)
>>> res.text, res.stats

Methods: ``ar`` (target alone), ``sd`` (speculative sampling), ``ersd``
(exponential-race speculative sampling). See README.md and DESIGN.md.
"""

from __future__ import annotations

from .decoding import ENGINES, Decoder, DecoderBusyError, GenerationResult, generate
from .errors import (
    ArgumentTypeError,
    CacheOverflowError,
    ChecksumError,
    InvalidArgumentError,
    ModelFileError,
    ModelNotFoundError,
    NonFiniteLogitsError,
    SprinterError,
    TokenizerRequiredError,
    VocabularyMismatchError,
)
from .methods import METHODS as _METHODS
from .models.pair import ModelPair, load_pair

__version__ = "0.1.0"

METHODS = tuple(sorted(_METHODS))


def build_info() -> dict:
    """Versions and capabilities of this build (torch, CUDA or not, compiler, triton)."""
    from ._native import build_info as _build_info

    return _build_info()


__all__ = [
    "METHODS",
    "ENGINES",
    "Decoder",
    "DecoderBusyError",
    "GenerationResult",
    "ModelPair",
    "build_info",
    "generate",
    "load_pair",
    "ArgumentTypeError",
    "CacheOverflowError",
    "InvalidArgumentError",
    "ChecksumError",
    "ModelFileError",
    "ModelNotFoundError",
    "NonFiniteLogitsError",
    "SprinterError",
    "TokenizerRequiredError",
    "VocabularyMismatchError",
]
