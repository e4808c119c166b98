"""The native loop's generation config: the Python mirror of ``_C.GenerationConfig``.

``csrc/engine/engine.h`` ``GenerationConfig`` holds everything one native generation
needs besides its two runners; :class:`GenerationConfig` here has the same fields in
the same order (tests/test_native_boundary.py checks them against the binding), and
:meth:`GenerationConfig.to_native` builds the bound struct, whose constructor checks
every value with the named errors of :mod:`sprinter_ext.errors`. The loop is then

    _C.Generation(target_runner, draft_runner_or_None, config.to_native())
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .sampling import SamplingSettings

__all__ = ["GenerationConfig", "native_generation"]


@dataclass(frozen=True)
class GenerationConfig:
    """What ``_C.Generation`` runs: the method and its options, the settings, the prompt and the seed.

    method: one of ``_C.native_methods()``; k: draft length (sd, ersd); sampling: the
    settings of both models; eos: ids that end the generation; verifier_weights /
    verifier_biases / verifier_features: sprinter's verifier MLP as float32 layers on the
    logits' device and its feature codes (``ops._verifier_layers``, ``ops._feature_codes``);
    threshold, max_run, verify_all: sprinter's options; prompt: token ids (non-empty);
    seed in [0, 2**64); max_new_tokens >= 0.
    """

    method: str
    k: int
    sampling: SamplingSettings
    eos: list[int] = field(default_factory=list)
    verifier_weights: list = field(default_factory=list)
    verifier_biases: list = field(default_factory=list)
    verifier_features: list[int] = field(default_factory=list)
    threshold: float = 0.0
    max_run: int = 1
    verify_all: bool = False
    prompt: list[int] = field(default_factory=list)
    seed: int = 0
    max_new_tokens: int = 0

    def to_native(self):
        """The bound ``sprinter_ext._C.GenerationConfig`` (checks every field; needs the build)."""
        from . import _native

        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["sampling"] = self.sampling.to_native()
        return _native._C.GenerationConfig(**values)


def native_generation(target, draft, *, temperature, top_k, top_p, **rest):
    """``_C.Generation(target, draft, _C.GenerationConfig(...))`` from flat fields.

    For tests and tools that drive the binding directly: `temperature`, `top_k` and
    `top_p` make the bound ``SamplingSettings``, `rest` the other fields; every value is
    checked by the bindings (nothing is checked in Python first).
    """
    from . import _native

    C = _native._C
    config = C.GenerationConfig(sampling=C.SamplingSettings(temperature, top_k, top_p), **rest)
    return C.Generation(target, draft, config)
