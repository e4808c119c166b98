"""``load_pair``: a draft and a target that share one vocabulary, on one device and dtype.

``ModelPair`` and ``load_pair``'s dispatch (default pair, given models, lookup and head drafts)
live here; loading one model and the argument, placement, verifier and weight-format checks
are in :mod:`sprinter_ext.models.loading` (``parse_device``, ``parse_dtype``, ``check_device``
and ``DRAFT_KINDS`` stay importable from here).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError, VocabularyMismatchError
from .loading import (  # noqa: F401 - DRAFT_KINDS, check_device, parse_device, parse_dtype re-exported
    DRAFT_KINDS,
    _attach_verifier,
    _check_half,
    _load_one,
    _place,
    _refuse_half_pair,
    _tokenizer_from,
    _with_weights,
    check_device,
    parse_device,
    parse_dtype,
)

__all__ = ["ModelPair", "load_pair", "parse_device", "parse_dtype"]


class ModelPair:
    """A (draft, target) pair of Hugging Face causal LMs plus an optional tokenizer and verifier.

    ``draft`` and ``target`` are transformers models. The embedded default pair loaded on
    the CPU builds them on first access (see :mod:`sprinter_ext.models.fast_pair`): until
    then the native runner works from the same tensors without importing transformers.
    """

    def __init__(self, draft=None, target=None, tokenizer=None, verifier=None, *, source=None):
        if source is None and (draft is None or target is None):
            raise InvalidArgumentError("a ModelPair needs a draft and a target model")
        self._draft, self._target, self._source = draft, target, source
        self._lookup = None  # a hybrid draft's lookup part (LookupDraft) beside the draft model
        self.tokenizer = tokenizer
        self.verifier = verifier  # a SPRINTER Verifier for this draft (the default pair ships one)
        # how the native fast path stores the linear weights (models/weight_formats.py), and the
        # file each role was loaded from where a format reads one (weights="gguf")
        self.weights = "fp32"
        self._weight_sources: dict[str, Path] = {}

    @property
    def draft(self):
        return self._model("draft")

    @draft.setter
    def draft(self, model) -> None:
        self._draft = model

    @property
    def target(self):
        return self._model("target")

    @target.setter
    def target(self, model) -> None:
        self._target = model

    def _model(self, role: str):
        """The transformers model for `role` ("draft"/"target"), built now if it is lazy."""
        given = self._draft if role == "draft" else self._target
        if given is None:
            given = self._source.model(role)
        return given

    def _view(self, role: str):
        """The model, or (lazy default pair, not built yet) its TensorModel stand-in: config,
        generation_config, device, dtype, named_parameters and a native runner, no transformers."""
        given = self._draft if role == "draft" else self._target
        if given is None:
            given = self._source.built(role)
            if given is None:
                given = getattr(self._source, role)
        return given

    def native_runner(self, role: str, max_len=None):
        """The native (C++) runner of `role`, its linears in this pair's weight format."""
        from . import native, weight_formats

        model = self._view(role)
        runner = native.native_runner(model, max_len)
        source = self._weight_sources.get(role)
        if source is not None and self.weights != "fp32":
            # NOTE: the file is read once per pair; every later runner reuses its blocks
            self._weight_sources[role] = weight_formats.apply(runner, self.weights, source, model.config)
        return runner

    @property
    def draft_kind(self) -> str:
        """"head" (an EAGLE-style draft head reading the target's features, sprinter_ext.drafts),
        "standalone" (a separate draft language model), or a lookup draft's kind ("ngram",
        "suffix": no draft model, sprinter_ext.drafts.lookup)."""
        from ..drafts.head import DraftHead

        if self.model_free:
            return self._draft.kind
        base = "head" if isinstance(self._draft, DraftHead) else "standalone"
        return f"{base}+{self._lookup.kind}" if self._lookup is not None else base

    @property
    def model_free(self) -> bool:
        """The draft is a lookup only (no draft model: sprinter_ext.drafts.lookup)."""
        from ..drafts.lookup import LookupDraft

        return isinstance(self._draft, LookupDraft)

    @property
    def lookup_draft(self):
        """The :class:`~sprinter_ext.drafts.lookup.LookupDraft` of a model-free or hybrid draft, else None."""
        return self._draft if self.model_free else self._lookup

    @property
    def device(self) -> torch.device:
        return self._view("target").device

    @property
    def dtype(self) -> torch.dtype:
        return self._view("target").dtype

    @property
    def vocab_size(self) -> int:
        return int(self._view("target").config.vocab_size)

    @property
    def name(self) -> str:
        if self.model_free:
            return f"{self.lookup_draft.name} -> {_model_name(self._view('target'))}"
        if self._lookup is not None:
            return f"{_model_name(self._view('draft'))}+{self._lookup.name} -> {_model_name(self._view('target'))}"
        return f"{_model_name(self._view('draft'))} -> {_model_name(self._view('target'))}"

    def __repr__(self) -> str:
        draft, target = self._view("draft"), self._view("target")
        if self.model_free:
            tok = "none" if self.tokenizer is None else type(self.tokenizer).__name__
            return (f"ModelPair(draft={self.lookup_draft.name!r} (lookup, no model), target={_model_name(target)!r} "
                    f"({_layers(target)} layers), {self.device}, {str(self.dtype).removeprefix('torch.')}, "
                    f"weights {self.weights}, vocab {self.vocab_size}, tokenizer {tok})")  # fmt: skip
        kind = "draft head" if self.draft_kind.startswith("head") else getattr(draft, "draft_kind", "draft LM")
        if self._lookup is not None:
            kind += f" + {self._lookup.name} lookup"
        tok = "none" if self.tokenizer is None else type(self.tokenizer).__name__
        ver = "none" if self.verifier is None else (
            f"{self.verifier.input_size}->{'x'.join(map(str, self.verifier.hidden)) or 'linear'}, "
            f"threshold {self.verifier.threshold:.3g}"
        )  # fmt: skip
        return (
            f"ModelPair(draft={_model_name(draft)!r} ({kind}, {_layers(draft)} layers), "
            f"target={_model_name(target)!r} ({_layers(target)} layers), {self.device}, "
            f"{str(self.dtype).removeprefix('torch.')}, weights {self.weights}, vocab {self.vocab_size}, "
            f"tokenizer {tok}, verifier {ver})"
        )


def _layers(model):
    c = model.config
    return getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None) or "?"


def _model_name(model) -> str:
    return getattr(model.config, "name_or_path", "") or type(model).__name__


def load_pair(
    draft=None,
    target=None,
    *,
    tokenizer=None,
    device="cpu",
    dtype=None,
    sha256: dict[str, str] | None = None,
    verifier=None,
    weights=None,
    lookup=None,
    verbose: bool = False,
) -> ModelPair:
    """Load a draft/target pair.

    Parameters
    ----------
    draft, target : str, os.PathLike, PreTrainedModel or None
        A Hugging Face id already in the local cache, a local directory, a ``.gguf``
        file, or a built model. Both None gives the embedded default pair, offline:
        SmolLM2-135M-Instruct with its EAGLE-style draft head and the ``"ngram"`` lookup
        beside it (the same as ``draft="head+ngram"``; sd and ersd take, each round,
        whichever the cost model expects more from); ``draft="head"`` gives the head alone,
        ``draft="standalone"`` its standalone draft LM, ``draft="ngram"`` / ``"suffix"`` a
        lookup alone. A draft head (a head file, an EAGLE-3 checkpoint directory, a built
        DraftHead) goes with the default target or a given one.
    tokenizer : str, path, tokenizer or None
        Overrides the tokenizer found with the target (None when models were given
        as objects without one: then prompts must be token ids).
    device : str or torch.device
        Where the models must live. Loaded models are moved there; models passed as
        objects must already be there.
    dtype : None, str or torch.dtype
        Floating-point dtype. None keeps float32 for loaded models and accepts
        whatever a passed model has.
    sha256 : dict, optional
        ``{"draft": hex, "target": hex}`` checksums for GGUF files.
    verifier : Verifier, path, False or None
        The SPRINTER verifier to attach as ``pair.verifier`` (checked against the
        draft). None: the default pair's committed one, nothing for other pairs.
        False: attach none.
    weights : str or None
        How the native CPU fast path stores the linear weights
        (:mod:`sprinter_ext.models.weight_formats`): ``"fp32"`` the model's own, packed;
        ``"gguf"`` the Q4_1 / Q8_0 blocks of the ``.gguf`` file a model was loaded from
        (the default pair's target is one), float32 activations: the same model, up to
        summation order, at a fifth of the bytes; ``"f16"`` / ``"bf16"``: a float32
        target's linear weights rounded to 16 bits, float32 activations (half the
        bytes; f16 keeps fp32's greedy tokens); ``"auto"`` (None, the default):
        ``"gguf"`` where it applies (the default pair on the CPU), ``"fp32"`` elsewhere.
        Activations, norms, attention and the KV cache keep the model's dtype.
    lookup : None, "ngram", "suffix" or a LookupDraft
        A model-free draft to run beside the draft model (a hybrid: sd and ersd take the
        lookup's proposal or the model's drafts each round; see sprinter_ext.cost_model).
        ``draft="head+suffix"`` is ``draft="head", lookup="suffix"``. ``draft="ngram"`` /
        ``"suffix"`` alone: a lookup with no draft model (sd, ersd).
    verbose : bool
        Show transformers' loading progress bars (default False: no third-party output).

    Returns
    -------
    ModelPair with ``.draft``, ``.target`` and ``.tokenizer``.

    Examples
    --------
    >>> pair = sprinter_ext.load_pair()                      # embedded default pair (draft head)
    >>> pair = sprinter_ext.load_pair(draft="standalone")    # the same target, standalone draft LM
    >>> pair = sprinter_ext.load_pair(draft_model, target_model)
    """
    from ..drafts.pairing import is_head_spec, load_head_pair
    from .weight_formats import HALF_FORMATS, parse_weights

    fmt = parse_weights(weights)
    if fmt in HALF_FORMATS and (dtype is not None or device != "cpu"):
        # NOTE: refused before any model is loaded; a given model's dtype is checked after
        _check_half(fmt, parse_dtype(dtype) or torch.float32, parse_device(device))
    from ..drafts.lookup import LOOKUP_KINDS, LookupDraft, lookup_draft

    if draft is None and target is None and lookup is None:
        # NOTE: the default pair's draft is its head with the ngram lookup beside it (README, "The
        # default pair"): sd and ersd take whichever the cost model expects more from each round.
        # Not "suffix": its global tree learns across requests, so sd's sampled tokens for a seed
        # would depend on what the Decoder served before (the randomness contract, DESIGN.md)
        draft, lookup = "head", "ngram"
    elif draft is None and target is None:
        draft = "head"

    if isinstance(draft, str) and "+" in draft and draft.split("+", 1)[1] in LOOKUP_KINDS:
        model_part, lookup_part = draft.split("+", 1)
        if lookup is not None:
            raise InvalidArgumentError(f"draft={draft!r} already names a lookup; drop lookup= or use draft={model_part!r}")
        draft, lookup = model_part, lookup_part
    if lookup is not None:
        if isinstance(draft, LookupDraft) or (isinstance(draft, str) and draft in LOOKUP_KINDS):
            raise InvalidArgumentError("lookup= goes beside a draft model; the draft is a lookup already")
        spec = lookup if isinstance(lookup, LookupDraft) else None
        if spec is None:
            if not isinstance(lookup, str):
                raise ArgumentTypeError(f"lookup must be one of {list(LOOKUP_KINDS)} or a LookupDraft, got "
                                        f"{type(lookup).__name__}")  # fmt: skip
            spec = lookup_draft(lookup)
        pair = load_pair(draft, target, tokenizer=tokenizer, device=device, dtype=dtype, sha256=sha256,
                         verifier=verifier, weights=weights, verbose=verbose)  # fmt: skip
        pair._lookup = spec
        return pair

    if isinstance(draft, LookupDraft) or (isinstance(draft, str) and draft in LOOKUP_KINDS):
        spec = draft if isinstance(draft, LookupDraft) else lookup_draft(draft)
        return _lookup_pair(spec, target, tokenizer=tokenizer, device=device, dtype=dtype, sha256=sha256,
                            verifier=verifier, weights=fmt, verbose=verbose)  # fmt: skip
    if is_head_spec(draft):
        pair = load_head_pair(draft, target, tokenizer=tokenizer, device=device, dtype=dtype,
                              sha256=sha256, verifier=verifier)
        return _with_weights(pair, fmt, {"target": target})
    return _with_weights(_load_models(draft, target, tokenizer=tokenizer, device=device, dtype=dtype,
                                      sha256=sha256, verifier=verifier, verbose=verbose), fmt,
                        {"draft": draft, "target": target})


def _lookup_pair(spec, target, *, tokenizer, device, dtype, sha256, verifier, weights, verbose) -> ModelPair:
    """load_pair for a lookup draft (no draft model): the default target or a given one."""
    if verifier is not None and verifier is not False:
        raise InvalidArgumentError(
            f"a {spec.kind!r} draft has no draft model, so no SPRINTER verifier fits it (the verifier reads a "
            "draft's hidden state); pass verifier=None, or a head / standalone draft")
    sha = dict(sha256 or {})
    if "draft" in sha:
        raise InvalidArgumentError(f"sha256['draft'] was given, but a {spec.kind!r} draft has no file")
    if target is None:
        # the default pair's target, lazy as load_pair() leaves it (models/fast_pair.py)
        base = load_pair("standalone", device=device, dtype=dtype, sha256=sha256, verifier=False, weights=weights,
                         verbose=verbose)  # fmt: skip
        base._draft = spec
        return base
    dev = parse_device(device)
    check_device(dev)
    dt = parse_dtype(dtype)
    if isinstance(target, str) and target in DRAFT_KINDS:
        raise InvalidArgumentError(f"target={target!r} is a draft kind; give a target model (or None: the default)")
    t_model, tok = _load_one(target, "target", dt, sha.get("target"), verbose)
    _place("target", t_model, target, dev, None)  # NOTE: a given target keeps its dtype here
    if tokenizer is not None:
        tok = _tokenizer_from(tokenizer)
    pair = ModelPair(draft=spec, target=t_model, tokenizer=tok)
    return _with_weights(pair, weights, {"target": target})


def _load_models(draft, target, *, tokenizer, device, dtype, sha256, verifier, verbose) -> ModelPair:
    """load_pair for a standalone draft LM (the default pair's or a given one)."""
    dev = parse_device(device)
    check_device(dev)
    dt = parse_dtype(dtype)
    sha256 = dict(sha256 or {})
    unknown = set(sha256) - {"draft", "target"}
    if unknown:
        raise InvalidArgumentError(f"sha256 keys must be 'draft'/'target', got {sorted(unknown)}")
    if isinstance(draft, str) and draft == "standalone" and target is None:
        draft = None  # the default pair's standalone draft LM (None or "head": its draft head)
    if (draft is None) != (target is None):
        _refuse_half_pair(draft, target)

    source = None
    if draft is None and dev.type == "cpu":
        from .fast_pair import load_default_source

        # NOTE: the warm cache on the CPU needs no transformers import (models/fast_pair.py);
        # None: the first load, which converts the GGUF with transformers below.
        source = load_default_source(dt or torch.float32, dev)
    if source is not None:
        t_model, d_model, tok = source.target, source.draft, source.tokenizer
    elif draft is None:
        from .default_pair import load_default_target
        from .smol_draft import build_default_draft

        t_model, tok = load_default_target(dtype=dt or torch.float32)
        t_model.to(dev)
        d_model = build_default_draft(t_model)
    else:
        t_model, tok = _load_one(target, "target", dt, sha256.get("target"), verbose)
        d_model, d_tok = _load_one(draft, "draft", dt, sha256.get("draft"), verbose)
        tok = tok or d_tok
        _place("target", t_model, target, dev, dt)
        _place("draft", d_model, draft, dev, dt)
    if d_model.dtype != t_model.dtype:
        raise InvalidArgumentError(
            f"draft dtype {d_model.dtype} differs from target dtype {t_model.dtype}; pass dtype= to load both alike"
        )
    if d_model.device != t_model.device:
        raise InvalidArgumentError(f"draft on {d_model.device} but target on {t_model.device}; put both on one device")

    dv, tv = int(d_model.config.vocab_size), int(t_model.config.vocab_size)
    if dv != tv:
        raise VocabularyMismatchError(
            f"draft vocabulary ({dv}) differs from the target's ({tv}); speculative decoding needs "
            "a draft with the target's tokenizer (same family, e.g. a smaller model of the same series)"
        )

    if tokenizer is not None:
        tok = _tokenizer_from(tokenizer)
    if tok is not None and len(tok) > tv:
        raise VocabularyMismatchError(
            f"the tokenizer has {len(tok)} tokens but the models' vocabulary has {tv}; pass the models' own tokenizer"
        )
    if source is not None:
        pair = ModelPair(tokenizer=tok, source=source)
    else:
        pair = ModelPair(draft=d_model, target=t_model, tokenizer=tok)
    if verifier is None and draft is None:
        from .default_pair import default_verifier_path

        verifier = default_verifier_path()
        if not verifier.is_file():  # tests/test_default_pair.py insists that it is there
            verifier = None
    if verifier is not None and verifier is not False:
        _attach_verifier(pair, verifier, pair._view("draft"), tv)
    return pair

