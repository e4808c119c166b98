"""Named errors. Each subclasses the builtin a caller would expect to catch.

Every error sprinter_ext raises on purpose is defined here (the modules that raise them
re-export theirs, so ``sprinter_ext.verifier.io.VerifierFileError`` and
``sprinter_ext.DecoderBusyError`` still work), and all of them derive from
:class:`SprinterError`.
"""

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
    "UnknownOptionError",
    "DecoderBusyError",
    "VerifierMismatchError",
    "VerifierFileError",
    "VerifierNotFoundError",
    "HeadTargetError",
    "ChatTemplateWarning",
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


class UnknownOptionError(InvalidArgumentError, TypeError):
    """A keyword no method takes (a typo, or an option of another library such as
    ``do_sample``); the message lists the valid ones. A TypeError like Python's own
    "unexpected keyword argument", and an InvalidArgumentError (ValueError)."""


class DecoderBusyError(SprinterError, RuntimeError):
    """The Decoder is already generating (one generation at a time per Decoder)."""


class VerifierMismatchError(SprinterError, ValueError):
    """The verifier was trained for another draft model."""


class VerifierFileError(InvalidArgumentError):
    """A verifier file whose header or tensors do not follow the format (a ValueError)."""


class VerifierNotFoundError(SprinterError, FileNotFoundError):
    """A verifier file that does not exist."""


class HeadTargetError(SprinterError, ValueError):
    """A draft head was loaded against a target it was not trained for."""


class ChatTemplateWarning(UserWarning):
    """A str prompt was tokenized raw though the tokenizer has a chat template."""
