"""Draft-head files: this library's format and the public EAGLE-3 checkpoint layout.

This library's format is one safetensors file whose tensors use the EAGLE-3 names
(``fc.weight``, ``midlayer.*``, ``norm.weight``, ``lm_head.weight``, ``d2t`` absolute target
ids) and whose metadata ``sprinter_ext`` is a JSON header::

    {"format": "sprinter_ext-draft-head-v1", "config": {...HeadConfig...},
     "target": {"name": ..., "vocab_size": ..., "hidden_size": ..., "num_hidden_layers": ...,
                "fingerprint": ...},
     "training": {...}, "metrics": {...}, "command": "..."}

``target.fingerprint`` is a hash of a few rows of the target's embedding (bf16-rounded), so a
head is refused (:class:`HeadTargetError`) against another target even of the same shape.

EAGLE-3 layout (what SpecForge / the EAGLE repo / vLLM / SGLang use): a directory with
``config.json`` whose ``architectures`` is ``["LlamaForCausalLMEagle3"]`` and safetensors
weights (``model.safetensors`` or shards) with ``fc``, ``midlayer.*``, ``norm``, ``lm_head``
and the vocabulary maps ``d2t`` (offsets: target id = draft id + d2t[draft id]) and ``t2d``.
Feature layers: ``eagle_config.eagle_aux_hidden_state_layer_ids`` names layers whose
*output* is captured (so ours are those + 1); absent, the public default (2, L/2, L-3) of
layer inputs. Pickled weights (``pytorch_model.bin``) are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import HeadTargetError, InvalidArgumentError, ModelFileError, SprinterError  # noqa: F401 - HeadTargetError re-exported
from .head import DraftHead, HeadConfig

FORMAT = "sprinter_ext-draft-head-v1"
EAGLE3_ARCH = "LlamaForCausalLMEagle3"
_FINGERPRINT_ROWS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987)


def target_identity(target) -> dict:
    """Name, shape and an embedding fingerprint of a Hugging Face causal LM."""
    cfg = target.config
    emb = target.get_input_embeddings().weight.detach()
    rows = [r for r in _FINGERPRINT_ROWS if r < emb.shape[0]]
    sample = emb[rows].to(torch.bfloat16).float().cpu().contiguous()
    return {"name": str(getattr(cfg, "name_or_path", "") or type(target).__name__),
            "vocab_size": int(cfg.vocab_size), "hidden_size": int(cfg.hidden_size),
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "fingerprint": hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16]}


def save_head(head: DraftHead, path: str | os.PathLike, *, target, training: dict | None = None,
              metrics: dict | None = None, command: str | None = None, dtype=torch.bfloat16) -> None:
    """Write `head` (weights in `dtype`) with the identity of the `target` it was trained for."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in head.state_dict().items()}
    header = {"format": FORMAT, "config": head.config.to_dict(), "target": target_identity(target),
              "training": training or {}, "metrics": metrics or {}, "command": command or ""}
    save_file(tensors, str(path), metadata={"sprinter_ext": json.dumps(header)})


def read_header(path: str | os.PathLike) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # not a safetensors file
        raise ModelFileError(f"{path} is not a draft-head safetensors file ({e})") from e
    if "sprinter_ext" not in meta:
        raise ModelFileError(f"{path} has no sprinter_ext header: not a draft head written by save_head()")
    header = json.loads(meta["sprinter_ext"])
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unknown draft-head format {header.get('format')!r} (expected {FORMAT})")
    return header


def check_target(header_target: dict, target, what: str) -> None:
    """Raise HeadTargetError unless `target` is the one the head was made for."""
    mine = target_identity(target)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "fingerprint"):
        if header_target.get(key) != mine[key]:
            raise HeadTargetError(
                f"{what} was trained for target {header_target.get('name')!r} ({key} "
                f"{header_target.get(key)!r}) but this target is {mine['name']!r} ({key} {mine[key]!r}); "
                "load it with the target it was trained for, or train a head for this one "
                "(python -m sprinter_ext train-head)")


def load_head(path: str | os.PathLike, target, *, dtype=torch.float32) -> DraftHead:
    """A head file from :func:`save_head`, or an EAGLE-3 checkpoint directory, for `target`."""
    path = Path(path)
    if path.is_dir():
        return load_eagle3(path, target, dtype=dtype)
    header = read_header(path)
    check_target(header["target"], target, f"the draft head {path}")
    cfg = HeadConfig(**header["config"])
    t = load_file(str(path))
    head = DraftHead(cfg, t.pop("d2t"))
    _load_weights(head, t, str(path))
    head.header = header
    return head.to(dtype).eval().requires_grad_(False)


def _load_weights(head: DraftHead, tensors: dict, where: str) -> None:
    want = {k: v for k, v in head.state_dict().items() if k != "d2t"}
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise ModelFileError(f"{where} lacks tensors {missing[:4]}{'...' if len(missing) > 4 else ''}")
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise ModelFileError(f"{where}: {k} has shape {tuple(tensors[k].shape)}, the config says {tuple(v.shape)}")
    head.load_state_dict({k: tensors[k].to(v.dtype) for k, v in want.items()} | {"d2t": head.d2t}, strict=True)


def _eagle3_tensors(d: Path) -> dict:
    files = sorted(d.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if pickles:
            raise ModelFileError(
                f"{d} holds pickled weights ({', '.join(pickles)}), which sprinter_ext never loads: "
                "convert them to safetensors where you trust the file")
        raise ModelFileError(f"{d} has no .safetensors weights")
    out: dict = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def load_eagle3(directory: str | os.PathLike, target, *, dtype=torch.float32) -> DraftHead:
    """An EAGLE-3 draft (``LlamaForCausalLMEagle3`` layout) for `target`."""
    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(f"{d} has no config.json: not an EAGLE-3 checkpoint directory")
    conf = json.loads(cfg_path.read_text())
    if EAGLE3_ARCH not in (conf.get("architectures") or []):
        raise ModelFileError(f"{d}/config.json architectures {conf.get('architectures')} is not [{EAGLE3_ARCH!r}]")
    tcfg = target.config
    L = int(tcfg.num_hidden_layers)
    eagle = conf.get("eagle_config") or {}
    ids = eagle.get("eagle_aux_hidden_state_layer_ids")
    layers = tuple(int(i) + 1 for i in ids) if ids else (2, L // 2, L - 3)
    H = int(conf["hidden_size"])
    if H != int(tcfg.hidden_size) or int(conf.get("vocab_size", tcfg.vocab_size)) != int(tcfg.vocab_size):
        raise HeadTargetError(
            f"{d} is an EAGLE-3 head for hidden size {H} / vocab {conf.get('vocab_size')}, but the target "
            f"has {tcfg.hidden_size} / {tcfg.vocab_size}")
    t = _eagle3_tensors(d)
    nh = int(conf["num_attention_heads"])
    draft_vocab = int(conf.get("draft_vocab_size") or t["lm_head.weight"].shape[0])
    cfg = HeadConfig(hidden_size=H, num_heads=nh, num_kv_heads=int(conf.get("num_key_value_heads") or nh),
                     head_dim=int(conf.get("head_dim") or H // nh),
                     intermediate_size=int(conf["intermediate_size"]), feature_layers=layers,
                     draft_vocab_size=draft_vocab, target_vocab_size=int(tcfg.vocab_size), target_layers=L,
                     rms_norm_eps=float(conf.get("rms_norm_eps", 1e-5)),
                     rope_theta=float(conf.get("rope_theta") or (conf.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    if "d2t" in t:
        off = t.pop("d2t")
        if off.dtype.is_floating_point or off.dim() != 1 or off.numel() != draft_vocab:
            raise InvalidArgumentError(f"{d}: d2t must be {draft_vocab} integer offsets, got {tuple(off.shape)} {off.dtype}")
        d2t = torch.arange(draft_vocab) + off.to(torch.int64)
    else:
        d2t = torch.arange(draft_vocab)
    t.pop("t2d", None)
    emb = t.pop("embed_tokens.weight", None)
    head = DraftHead(cfg, d2t)
    _load_weights(head, t, str(d))
    head.header = {"format": "eagle3", "source": str(d), "config": cfg.to_dict()}
    head.embedding = emb  # None: the target's embedding (EAGLE-3 heads share it)
    return head.to(dtype).eval().requires_grad_(False)
