"""``load_pair``: a draft and a target that share one vocabulary, on one device and dtype."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import torch

from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ModelFileError,
    ModelNotFoundError,
    SprinterError,
    VocabularyMismatchError,
)
from .default_pair import load_gguf_model, verify_gguf

__all__ = ["ModelPair", "load_pair", "parse_device", "parse_dtype"]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}  # fmt: skip


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
        self.tokenizer = tokenizer
        self.verifier = verifier  # a SPRINTER Verifier for this draft (the default pair ships one)

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

    @property
    def draft_kind(self) -> str:
        """"head" (an EAGLE-style draft head reading the target's features, sprinter_ext.drafts)
        or "standalone" (a separate draft language model)."""
        from ..drafts.head import DraftHead

        return "head" if isinstance(self._draft, DraftHead) else "standalone"

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
        return f"{_model_name(self._view('draft'))} -> {_model_name(self._view('target'))}"

    def __repr__(self) -> str:
        draft, target = self._view("draft"), self._view("target")
        kind = "draft head" if self.draft_kind == "head" else getattr(draft, "draft_kind", "draft LM")
        tok = "none" if self.tokenizer is None else type(self.tokenizer).__name__
        ver = "none" if self.verifier is None else (
            f"{self.verifier.input_size}->{'x'.join(map(str, self.verifier.hidden)) or 'linear'}, "
            f"threshold {self.verifier.threshold:.3g}"
        )  # fmt: skip
        return (
            f"ModelPair(draft={_model_name(draft)!r} ({kind}, {_layers(draft)} layers), "
            f"target={_model_name(target)!r} ({_layers(target)} layers), {self.device}, "
            f"{str(self.dtype).removeprefix('torch.')}, vocab {self.vocab_size}, tokenizer {tok}, verifier {ver})"
        )


def _layers(model):
    c = model.config
    return getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None) or "?"


def _model_name(model) -> str:
    return getattr(model.config, "name_or_path", "") or type(model).__name__


def parse_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ArgumentTypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise InvalidArgumentError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    return dev


def check_device(dev: torch.device) -> None:
    """InvalidArgumentError unless this torch can put tensors on `dev` (checked before loading)."""
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was asked, but this torch has no usable CUDA "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"device {str(dev)!r} does not exist: {torch.cuda.device_count()} CUDA devices")


# Checkpoints that are pickles: never opened (unpickling can run code), refused by name.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickle(path: Path, role: str) -> None:
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelFileError(
            f"{role} directory {path} holds only pickle checkpoints ({', '.join(pickles[:3])}); sprinter_ext "
            "never unpickles model files: convert them to safetensors first"
        )


def _refuse_non_causal(spec, role: str) -> None:
    """A model whose config loads offline but is no causal LM: say so (not 'not found offline')."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(spec), local_files_only=True)
    except (OSError, ValueError):
        return  # no config here: the model load below reports it
    if getattr(config, "is_encoder_decoder", False) or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InvalidArgumentError(
            f"{role} {str(spec)!r} is a {type(config).__name__} model, not a causal language model; "
            "sprinter_ext decodes with AutoModelForCausalLM families (GPT-2, Llama, Qwen2, ...)"
        )


def parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise InvalidArgumentError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if not isinstance(dtype, str):
        raise ArgumentTypeError(f"dtype must be None, a str or a torch.dtype, got {type(dtype).__name__}")
    key = dtype.lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[key]


def _check_causal(model, role: str) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise ArgumentTypeError(f"{role} must be a transformers PreTrainedModel, got {type(model).__name__}")
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False) or model.get_output_embeddings() is None or not model.can_generate():
        raise InvalidArgumentError(
            f"{role} ({type(model).__name__}) is not a causal language model; "
            "load it with AutoModelForCausalLM (GPT-2, Llama, Qwen2, ... families)"
        )


def _load_one(spec, role: str, dtype, sha256: str | None):
    """A model from an id, a local dir, a GGUF file, or a PreTrainedModel. Returns (model, tokenizer|None)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(spec, (str, os.PathLike)):
        _check_causal(spec, role)
        return spec, None
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"{role} GGUF file {path} does not exist")
        if sha256 is not None:
            verify_gguf(path, sha256)
        try:
            model, tok = load_gguf_model(path, dtype=dtype or torch.float32)
        except SprinterError:
            raise
        except (struct.error, ValueError, KeyError, IndexError, OverflowError, MemoryError, EOFError) as e:
            # NOTE: a corrupt or hostile header (e.g. a huge tensor count) fails inside the gguf reader
            raise ModelFileError(f"{role} GGUF file {path} cannot be read ({type(e).__name__}: {e})") from e
        model.config.name_or_path = str(path)
    else:
        if sha256 is not None:
            raise InvalidArgumentError("sha256= checks apply to GGUF files only")
        _refuse_pickle(path, role)
        _refuse_non_causal(spec, role)
        try:
            # NOTE: local_files_only: nothing is ever downloaded behind the user's back.
            model = AutoModelForCausalLM.from_pretrained(str(spec), dtype=dtype or torch.float32, local_files_only=True)
        except pickle.UnpicklingError as e:  # a pickle checkpoint the directory check did not see
            raise ModelFileError(f"{role} model {str(spec)!r} is a pickle checkpoint; convert it to safetensors") from e
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(_not_found_message(role, str(spec), e)) from e
        try:
            tok = AutoTokenizer.from_pretrained(str(spec), local_files_only=True)
        except (OSError, ValueError):
            tok = None
    model.eval().requires_grad_(False)
    _check_causal(model, role)
    return model, tok


def _not_found_message(role: str, spec: str, error: Exception) -> str:
    """What was looked for offline and how to supply it.

    NOTE: transformers' own message for a missing model says it "couldn't connect to
    huggingface.co", which reads like a download attempt; it is quoted only when a local
    directory exists but does not load (then its reason is the useful part)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return (
            f"{role} model directory {str(path)!r} exists but does not hold a loadable causal LM "
            f"(config.json + weights): {type(error).__name__}: {error}"
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as hub_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        hub_cache = "the Hugging Face hub cache"
    hub_id = len(spec.split("/")) <= 2 and not spec.startswith((".", "/", "~")) and "\\" not in spec
    if hub_id:
        looked, fetch = (f"no directory {str(path)!r} and no cached hub copy under {hub_cache}",
                         f"fetch it once yourself (`hf download {spec}`) or pass")  # fmt: skip
    else:
        looked, fetch = f"no directory {str(path)!r}", "check the path, or pass"
    return (
        f"{role} model {spec!r} was not found offline ({looked}). sprinter_ext never downloads: "
        f"{fetch} a local directory, a .gguf file or a loaded PreTrainedModel"
    )


def load_pair(
    draft=None,
    target=None,
    *,
    tokenizer=None,
    device="cpu",
    dtype=None,
    sha256: dict[str, str] | None = None,
    verifier=None,
) -> ModelPair:
    """Load a draft/target pair.

    Parameters
    ----------
    draft, target : str, os.PathLike, PreTrainedModel or None
        A Hugging Face id already in the local cache, a local directory, a ``.gguf``
        file, or a built model. Both None gives the embedded default pair
        (SmolLM2-135M-Instruct and its draft, offline).
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

    Returns
    -------
    ModelPair with ``.draft``, ``.target`` and ``.tokenizer``.

    Examples
    --------
    >>> pair = sprinter_ext.load_pair()                      # embedded default pair
    >>> pair = sprinter_ext.load_pair(draft_model, target_model)
    """
    if _is_head_spec(draft):
        return _load_head_pair(draft, target, tokenizer=tokenizer, device=device, dtype=dtype,
                               sha256=sha256, verifier=verifier)
    dev = parse_device(device)
    check_device(dev)
    dt = parse_dtype(dtype)
    sha256 = dict(sha256 or {})
    unknown = set(sha256) - {"draft", "target"}
    if unknown:
        raise InvalidArgumentError(f"sha256 keys must be 'draft'/'target', got {sorted(unknown)}")
    if (draft is None) != (target is None):
        raise InvalidArgumentError("give both draft and target, or neither for the embedded default pair")

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
        t_model, tok = _load_one(target, "target", dt, sha256.get("target"))
        d_model, d_tok = _load_one(draft, "draft", dt, sha256.get("draft"))
        tok = tok or d_tok
        for role, m, given in (("target", t_model, target), ("draft", d_model, draft)):
            if isinstance(given, (str, os.PathLike)):
                m.to(dev)
            else:
                if m.device != dev:
                    raise InvalidArgumentError(
                        f"the {role} model is on {m.device} but device={str(dev)!r} was asked; "
                        f"move it first (model.to({str(dev)!r})) or pass device={str(m.device)!r}"
                    )
                if dt is not None and m.dtype != dt:
                    raise InvalidArgumentError(
                        f"the {role} model has dtype {m.dtype} but dtype={dt} was asked; "
                        f"convert it first (model.to({dt})) or pass dtype=None"
                    )
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
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelNotFoundError(f"tokenizer {str(tokenizer)!r} was not found offline") from e
        tok = tokenizer
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
        from ..verifier import Verifier, check_draft

        if isinstance(verifier, (str, os.PathLike)):
            # checks it against the draft (the stand-in of a lazy pair has the same fingerprint)
            verifier = Verifier.load(verifier, draft=pair._view("draft"), vocab_size=tv)
        elif isinstance(verifier, Verifier):
            check_draft(verifier, pair._view("draft"), tv)
        else:
            raise ArgumentTypeError(f"verifier must be a Verifier, a path, False or None, got {type(verifier).__name__}")
        pair.verifier = verifier.to(pair.device)
    return pair


def _is_head_spec(draft) -> bool:
    """Is `draft` a draft head: a DraftHead, "head" (the default pair's), a head file or an
    EAGLE-3 checkpoint directory?"""
    from ..drafts.head import DraftHead

    if isinstance(draft, DraftHead) or (isinstance(draft, str) and draft == "head"):
        return True
    if isinstance(draft, (str, os.PathLike)):
        p = Path(draft)
        if p.is_dir() and (p / "config.json").is_file():
            import json

            try:
                arch = json.loads((p / "config.json").read_text()).get("architectures") or []
            except (OSError, ValueError):
                return False
            from ..drafts.io import EAGLE3_ARCH

            return EAGLE3_ARCH in arch
        if p.is_file() and p.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(p), "pt") as f:
                    return "sprinter_ext" in (f.metadata() or {}) and "d2t" in f.keys()
            except Exception:
                return False
    return False


def _load_head_pair(draft, target, *, tokenizer, device, dtype, sha256, verifier) -> ModelPair:
    """load_pair for a draft head: the target (default or given) plus the head, checked against it."""
    from ..drafts.head import DraftHead
    from ..drafts.io import HeadTargetError, load_head

    dev = parse_device(device)
    check_device(dev)
    dt = parse_dtype(dtype)
    if target is None:
        base = load_pair(device=dev, dtype=dt, verifier=False)
        t_model, tok = base.target, base.tokenizer
        if isinstance(draft, str) and draft == "head":
            from .default_pair import default_head_path

            draft = default_head_path()
            if not draft.is_file():
                raise ModelNotFoundError(
                    f"the default pair ships no draft head ({draft} is missing); train one with "
                    "python -m sprinter_ext train-head, or use the standalone draft (load_pair())")
    else:
        if isinstance(draft, str) and draft == "head":
            raise InvalidArgumentError('draft="head" names the default pair\'s head: give a head file or '
                                       "directory for another target")
        t_model, tok = _load_one(target, "target", dt, dict(sha256 or {}).get("target"))
        if isinstance(target, (str, os.PathLike)):
            t_model.to(dev)
        elif t_model.device != dev:
            raise InvalidArgumentError(
                f"the target model is on {t_model.device} but device={str(dev)!r} was asked; move it first")
    if isinstance(draft, DraftHead):
        head = draft
        c, tc = head.config, t_model.config
        if (c.hidden_size, c.target_vocab_size, c.target_layers) != (
                int(tc.hidden_size), int(tc.vocab_size), int(tc.num_hidden_layers)):
            raise HeadTargetError(
                f"the draft head is for a target with hidden size {c.hidden_size}, vocab {c.target_vocab_size}, "
                f"{c.target_layers} layers; this target has {tc.hidden_size}, {tc.vocab_size}, {tc.num_hidden_layers}")
    else:
        head = load_head(draft, t_model)
    head = head.to(device=t_model.device, dtype=t_model.dtype)
    if tokenizer is not None:
        tok = tokenizer
    pair = ModelPair(draft=head, target=t_model, tokenizer=tok)
    if verifier is not None and verifier is not False:
        from ..verifier import Verifier

        if isinstance(verifier, (str, os.PathLike)):
            verifier = Verifier.load(verifier)
        if not isinstance(verifier, Verifier):
            raise ArgumentTypeError(f"verifier must be a Verifier, a path, False or None, got {type(verifier).__name__}")
        pair.verifier = verifier.to(pair.device)
    return pair
