"""sprinter_ext: fast batch-1 speculative decoding for PyTorch causal language models.

>>> import sprinter_ext
>>> pair = sprinter_ext.load_pair()                     # embedded default pair (draft head), offline
>>> msgs = [{"role": "user", "content": "What is the capital of France?"}]
>>> res = sprinter_ext.generate(pair, msgs, method="sd", max_new_tokens=32, seed=0)
>>> res.text, res.stats

Methods (``sprinter_ext.METHODS``):

- ``ar``: the target alone, autoregressive (the baseline);
- ``sd``: speculative sampling (Leviathan et al. 2023; Chen et al. 2023), lossless;
- ``ersd``: exponential-race speculative sampling (arXiv 2504.15475), lossless and
  drafter-invariant (equals ``ar`` token for token for the same seed);
- ``sprinter``: a learned verifier accepts draft tokens without the target
  (arXiv 2502.04557), approximate; lossless with ``verify="all"``;
- ``ssd``: speculative speculative decoding (arXiv 2603.03251), lossless.

The public names: :func:`load_pair`, :func:`generate`, :class:`Decoder`,
:class:`GenerationResult`, :class:`Verifier`, :func:`train_verifier`, the named errors
of :mod:`sprinter_ext.errors`, and the submodules ``ops`` (fused ops) and ``verifier``.
Docs: README.md ("Python API", "SPRINTER verifiers", "Randomness", "Layout") and
docs/ARCHITECTURE.md (subsystems, which fast path runs where).
"""

from __future__ import annotations

from .errors import (
    ArgumentTypeError,
    CacheOverflowError,
    ChatTemplateWarning,
    ChecksumError,
    DecoderBusyError,
    HeadTargetError,
    InvalidArgumentError,
    ModelFileError,
    ModelNotFoundError,
    NonFiniteLogitsError,
    SprinterError,
    TokenizerRequiredError,
    UnknownOptionError,
    VerifierFileError,
    VerifierMismatchError,
    VerifierNotFoundError,
    VocabularyMismatchError,
)

__version__ = "0.1.0"

# NOTE: the rest of the API is imported on first use (PEP 562), so `import sprinter_ext`
# and `python -m sprinter_ext --version` / `--help` do not pay for importing torch
# (1.3-1.6 s of CPU here); everything that generates needs torch anyway.
_LAZY = {
    "ENGINES": ".decoding", "Decoder": ".decoding",
    "GenerationResult": ".decoding", "generate": ".decoding",
    "ModelPair": ".models.pair", "load_pair": ".models.pair",
    "IncrementalDetokenizer": ".prompts",
    "Verifier": ".verifier", "train_verifier": ".verifier",
}  # fmt: skip
# Submodules reachable as attributes without an explicit import (README: sprinter_ext.verifier.collect).
_SUBMODULES = ("ops", "verifier")


def __getattr__(name: str):
    import importlib

    if name == "METHODS":
        from .methods import METHODS as methods

        value = tuple(sorted(methods))
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module 'sprinter_ext' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


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
    "Verifier",
    "VerifierMismatchError",
    "train_verifier",
    "ops",
    "verifier",
    "ChatTemplateWarning",
    "IncrementalDetokenizer",
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
    "UnknownOptionError",
    "VerifierFileError",
    "VerifierNotFoundError",
    "HeadTargetError",
]
