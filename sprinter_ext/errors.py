"""Named errors. Each subclasses the builtin a caller would expect to catch."""

from __future__ import annotations

__all__ = [
    "SprinterError",
    "ModelNotFoundError",
    "ModelFileError",
    "ChecksumError",
    "VocabularyMismatchError",
    "CacheOverflowError",
    "NonFiniteLogitsError",
    "TokenizerRequiredError",
    "UnsupportedModelError",
    "InvalidArgumentError",
    "ArgumentTypeError",
]


class SprinterError(Exception):
    """Base class of every error sprinter_ext raises on purpose."""


class ModelNotFoundError(SprinterError, FileNotFoundError):
    """A model (id, path or embedded package) cannot be found offline."""


class ModelFileError(SprinterError, ValueError):
    """A model file is corrupt, not a causal LM, or in an unsafe format (pickle is never loaded)."""


class ChecksumError(SprinterError, ValueError):
    """A weights file does not have the sha256 it must have."""


class VocabularyMismatchError(SprinterError, ValueError):
    """Draft and target do not share one vocabulary."""


class CacheOverflowError(SprinterError, ValueError):
    """The tokens would not fit in the static KV cache."""


class NonFiniteLogitsError(SprinterError, FloatingPointError):
    """A model produced NaN or inf logits; generation stopped without output."""


class TokenizerRequiredError(SprinterError, ValueError):
    """Text was given but the pair has no tokenizer."""


class UnsupportedModelError(SprinterError, ValueError):
    """The native runner cannot run this model; the Python ModelRunner can."""


class InvalidArgumentError(SprinterError, ValueError):
    """An argument has a value the call cannot take (the message says which values can)."""


class ArgumentTypeError(SprinterError, TypeError):
    """An argument has a type the call cannot take (the message says which types can)."""
