"""Loading the models of a pair, with named errors: what ``load_pair`` (:mod:`sprinter_ext.models.pair`) reads.

Device and dtype arguments (``parse_device``, ``check_device``, ``parse_dtype``), one model
from an id, a directory, a GGUF file or a built model (``_load_one``), the tokenizer, the
placement and verifier checks, the weight format a pair gets (``_with_weights``), and the
refusals of a half-given pair. Nothing here builds a ModelPair: pair.py assembles them.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import torch

from .._quiet import quiet_loading
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ModelFileError,
    ModelNotFoundError,
    SprinterError,
)
from ._refusals import not_found_message, refuse_non_causal, refuse_pickle
from .default_pair import load_gguf_model, verify_gguf

__all__ = ["DRAFT_KINDS", "check_device", "parse_device", "parse_dtype"]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}  # fmt: skip

DRAFT_KINDS = ("head", "standalone", "ngram", "suffix")  # the names load_pair(draft=...) takes besides paths and models


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


def _load_one(spec, role: str, dtype, sha256: str | None, verbose: bool = False):
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
        # checkpoints that are pickles: never opened (unpickling can run code), refused by name
        refuse_pickle(path, role)
        refuse_non_causal(spec, role)
        try:
            # NOTE: local_files_only: nothing is ever downloaded behind the user's back.
            with quiet_loading(verbose):
                model = AutoModelForCausalLM.from_pretrained(str(spec), dtype=dtype or torch.float32, local_files_only=True)
        except pickle.UnpicklingError as e:  # a pickle checkpoint the directory check did not see
            raise ModelFileError(f"{role} model {str(spec)!r} is a pickle checkpoint; convert it to safetensors") from e
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(not_found_message(role, str(spec), e)) from e
        try:
            tok = AutoTokenizer.from_pretrained(str(spec), local_files_only=True)
        except (OSError, ValueError):
            tok = None
    model.eval().requires_grad_(False)
    _check_causal(model, role)
    return model, tok


def _tokenizer_from(tokenizer):
    """A tokenizer given to load_pair: loaded offline when it is a path or id."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(f"tokenizer {str(tokenizer)!r} was not found offline") from e
    return tokenizer


def _place(role: str, model, given, dev: torch.device, dt) -> None:
    """Move a loaded `model` to `dev`; a model given as an object must be there (and in `dt`
    unless it is None) already: named errors."""
    if isinstance(given, (str, os.PathLike)):
        model.to(dev)
        return
    if model.device != dev:
        raise InvalidArgumentError(
            f"the {role} model is on {model.device} but device={str(dev)!r} was asked; "
            f"move it first (model.to({str(dev)!r})) or pass device={str(model.device)!r}"
        )
    if dt is not None and model.dtype != dt:
        raise InvalidArgumentError(
            f"the {role} model has dtype {model.dtype} but dtype={dt} was asked; "
            f"convert it first (model.to({dt})) or pass dtype=None"
        )


def _attach_verifier(pair, verifier, draft, vocab_size: int) -> None:
    """Set a ModelPair's ``pair.verifier`` from a Verifier or a verifier file, checked against
    `draft` (the draft model, a draft head, or a lazy pair's stand-in: the same fingerprint)."""
    from ..verifier import Verifier, check_draft

    if isinstance(verifier, (str, os.PathLike)):
        verifier = Verifier.load(verifier, draft=draft, vocab_size=vocab_size)
    elif isinstance(verifier, Verifier):
        check_draft(verifier, draft, vocab_size)
    else:
        raise ArgumentTypeError(f"verifier must be a Verifier, a path, False or None, got {type(verifier).__name__}")
    pair.verifier = verifier.to(pair.device)


def _refuse_half_pair(draft, target) -> None:
    """The real mistake behind a draft without a target or a target without a draft (named errors)."""
    for role, spec in (("draft", draft), ("target", target)):
        if not isinstance(spec, (str, os.PathLike)):
            continue
        path = Path(spec).expanduser()
        if path.exists():
            continue
        if role == "draft" and isinstance(spec, str) and not any(c in spec for c in "/\\.~"):
            raise InvalidArgumentError(
                f"unknown draft {spec!r}: one of {list(DRAFT_KINDS)}, a draft head file or EAGLE-3 directory, "
                "or a draft model (path, cached hub id, .gguf or PreTrainedModel) given with target="
            )
        kinds = f" (nor a draft kind: one of {list(DRAFT_KINDS)})" if role == "draft" else ""
        raise ModelNotFoundError(f"{role} path {str(spec)!r} does not exist{kinds}; check the path")
    given, missing = ("draft", "target") if target is None else ("target", "draft")
    raise InvalidArgumentError(
        f"a {given} model was given without a {missing}: pass {missing}= too, or neither for the embedded default pair"
        + (" (or a draft head as draft= to pair with the default target)" if given == "draft" else "")
    )


def _check_half(fmt: str, dtype, device) -> None:
    """The 16-bit formats run a float32 model on the CPU: a named error for anything else."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        raise InvalidArgumentError(
            f"weights={fmt!r} stores a float32 target's linear weights in 16 bits for the CPU fast path "
            f"(float32 activations); got {dtype} on {device}: use device='cpu' and dtype=None "
            "(float32), or weights='fp32' (dtype=torch.bfloat16 alone runs the whole model in bfloat16)"
        )


def _with_weights(pair, fmt: str, specs: dict):
    """ModelPair `pair` with weight format `fmt`: the file each role's format reads (a .gguf model's own
    file; the default target's, None in `specs`), refused by name where there is none; "auto":
    gguf where that works, fp32 elsewhere."""
    if fmt == "fp32":
        return pair
    from .weight_formats import HALF_FORMATS

    if fmt in HALF_FORMATS:
        _check_half(fmt, pair.dtype, pair.device)
        pair.weights, pair._weight_sources = fmt, {"target": {}}  # {}: no planted overrides
        return pair
    from .default_pair import find_gguf

    sources = {}
    for role, spec in specs.items():
        if spec is None and role == "target":
            sources[role] = find_gguf()
        elif isinstance(spec, (str, os.PathLike)) and Path(spec).suffix == ".gguf":
            sources[role] = Path(spec)
    runs = pair.device.type == "cpu" and pair.dtype == torch.float32
    if fmt == "auto":
        if "target" not in sources or not runs:
            return pair
        fmt = "gguf"
    if "target" not in sources:
        raise InvalidArgumentError(
            f"weights={fmt!r} needs a target loaded from a .gguf file (the default pair's is one); "
            "use weights='fp32' for this target"
        )
    if not runs:
        raise InvalidArgumentError(
            f"weights={fmt!r} runs on the CPU fast path with float32 activations; got {pair.dtype} on {pair.device}: "
            "use device='cpu' and dtype=None (float32), or weights='fp32'"
        )
    pair.weights, pair._weight_sources = fmt, sources
    return pair
