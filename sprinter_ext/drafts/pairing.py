"""load_pair for a draft head: recognise a head spec and pair it with its target."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidArgumentError, ModelNotFoundError
from ..models.loading import _attach_verifier, _load_one, check_device, parse_device, parse_dtype
from ..models.pair import ModelPair, load_pair



def is_head_spec(draft) -> bool:
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


def load_head_pair(draft, target, *, tokenizer, device, dtype, sha256, verifier) -> ModelPair:
    """load_pair for a draft head: the target (default or given) plus the head, checked against it."""
    from ..drafts.head import DraftHead
    from ..drafts.io import HeadTargetError, load_head

    dev = parse_device(device)
    check_device(dev)
    dt = parse_dtype(dtype)
    source = None
    if target is None:
        base = load_pair("standalone", device=dev, dtype=dt, verifier=False)
        # NOTE: the lazy default target (its TensorModel stand-in) stays lazy: the head pair
        # starts without importing transformers, like load_pair() (models/fast_pair.py)
        source = base._source
        t_model, tok = base._view("target"), base.tokenizer
        if isinstance(draft, str) and draft == "head":
            from ..models.default_pair import default_head_path, default_head_verifier_path

            if verifier is None and default_head_verifier_path().is_file():
                verifier = default_head_verifier_path()  # the shipped head's SPRINTER verifier
            draft = default_head_path()
            if not draft.is_file():
                raise ModelNotFoundError(
                    f"the default pair ships no draft head ({draft} is missing); train one with "
                    "python -m sprinter_ext train-head, or use the standalone draft (load_pair(draft=\"standalone\"))")
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
    pair = ModelPair(draft=head, target=None if source is not None else t_model, tokenizer=tok, source=source)
    if verifier is not None and verifier is not False:
        _attach_verifier(pair, verifier, head, pair.vocab_size)
    return pair
