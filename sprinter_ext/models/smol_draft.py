"""The embedded default draft for SmolLM2-135M-Instruct.

The draft is a :class:`transformers.LlamaForCausalLM` built from the loaded
target: a few of the target's own decoder layers (copied, then patched with the
small trained low-rank deltas stored in ``data/smollm2_draft.safetensors``),
the target's token embedding (shared, frozen), the target's final norm and a
*restricted-vocabulary* LM head: the rows of the target's (tied) output
embedding for the ``N`` most frequent tokens of the training text only.  The
head returns logits over the full vocabulary with ``-inf`` outside the kept
set, so the draft's distribution q is exactly 0 there and speculative decoding
stays lossless.

Only the trained parts (low-rank deltas, norms, a logit bias over the kept
set) and the kept token ids live in the weights file; everything else is taken
from the target at load time, so loading costs well under a second.

The text it was trained on, and the held-out text the benchmarks use, come from
:mod:`sprinter_ext.data` (one deterministic train / held-out split by document);
the trainer is :mod:`sprinter_ext.cli.train_draft`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ChecksumError, InvalidArgumentError, ModelNotFoundError

__all__ = [
    "DRAFT_ID",
    "WEIGHTS_FORMAT",
    "default_weights_path",
    "build_default_draft",
    "RestrictedVocabHead",
]

DRAFT_ID = "sprinter_ext/smollm2-draft-v1"
WEIGHTS_FORMAT = "sprinter_ext.smollm2_draft.v1"
WEIGHTS_FILE = "smollm2_draft.safetensors"

# ---------------------------------------------------------------------------
# the draft model
# ---------------------------------------------------------------------------


class RestrictedVocabHead(nn.Module):
    """LM head over a kept subset of the vocabulary.

    ``weight`` holds the output-embedding rows of the kept tokens ``token_ids``
    (sorted, unique); ``bias`` an optional per-kept-token logit bias.  The
    output has the full ``vocab_size`` last dimension, ``-inf`` outside the
    kept set (softmax gives those tokens probability exactly 0).
    """

    def __init__(self, weight: torch.Tensor, token_ids: torch.Tensor, vocab_size: int, bias: torch.Tensor | None = None):
        super().__init__()
        if weight.dim() != 2 or token_ids.dim() != 1 or weight.shape[0] != token_ids.shape[0]:
            raise InvalidArgumentError(f"weight {tuple(weight.shape)} and token_ids {tuple(token_ids.shape)} do not match")
        if token_ids.numel() == 0 or int(token_ids.min()) < 0 or int(token_ids.max()) >= vocab_size:
            raise InvalidArgumentError(f"token ids must lie in [0, {vocab_size})")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise InvalidArgumentError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        self.vocab_size = int(vocab_size)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.register_buffer("token_ids", token_ids.to(torch.long), persistent=False)
        self.in_features = weight.shape[1]
        self.out_features = self.vocab_size

    def restricted_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the kept tokens only, ``[..., N]`` (order of ``token_ids``)."""
        return nn.functional.linear(hidden, self.weight, self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = self.restricted_logits(hidden)
        out = small.new_full((*small.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.token_ids, small)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, kept={self.weight.shape[0]}, vocab_size={self.vocab_size}"


_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_NORMS = ("input_layernorm", "post_attention_layernorm")


def _submodule(mod: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        mod = getattr(mod, part)
    return mod


def assemble_draft(
    target,
    layers,
    *,
    kept_ids: torch.Tensor | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    name_or_path: str = DRAFT_ID,
):
    """A LlamaForCausalLM made of target layers ``layers`` (target indices, in order).

    ``kept_ids``: restrict the head to these token ids (None: full tied head).
    ``tensors``: trained parts, keys ``layers.{j}.{linear}.lora_A`` / ``lora_B``
    (low-rank deltas W += B @ A), ``layers.{j}.{norm}.weight`` (replacement
    RMSNorm weights), ``norm.weight`` (final norm) and ``head.bias`` (logit
    bias over the kept set); ``j`` indexes the draft's layers.
    """
    from transformers import LlamaForCausalLM

    layers = [int(i) for i in layers]
    n_target = target.config.num_hidden_layers
    if not layers or any(i < 0 or i >= n_target for i in layers):
        raise InvalidArgumentError(f"layers must be target layer indices in [0, {n_target}), got {layers}")
    tensors = dict(tensors or {})
    dev = target.model.embed_tokens.weight.device
    dtype = target.model.embed_tokens.weight.dtype

    cfg = copy.deepcopy(target.config)
    cfg.num_hidden_layers = len(layers)
    cfg.tie_word_embeddings = False
    cfg.name_or_path = name_or_path
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[i] for i in layers]
    with torch.device("meta"):
        draft = LlamaForCausalLM(cfg)

    draft.model.embed_tokens = target.model.embed_tokens  # shared, frozen
    new_layers = []
    for j, i in enumerate(layers):
        layer = copy.deepcopy(target.model.layers[i])
        layer.self_attn.layer_idx = j
        for name in _LINEARS:
            a = tensors.pop(f"layers.{j}.{name}.lora_A", None)
            b = tensors.pop(f"layers.{j}.{name}.lora_B", None)
            if (a is None) != (b is None):
                raise InvalidArgumentError(f"layer {j} {name}: lora_A and lora_B must come together")
            if a is not None:
                lin = _submodule(layer, name)
                delta = b.to(dev, torch.float32) @ a.to(dev, torch.float32)
                if delta.shape != lin.weight.shape:
                    raise InvalidArgumentError(f"layer {j} {name}: delta {tuple(delta.shape)} != weight {tuple(lin.weight.shape)}")
                lin.weight.data = (lin.weight.data.float() + delta).to(dtype)
        for name in _NORMS:
            w = tensors.pop(f"layers.{j}.{name}.weight", None)
            if w is not None:
                _submodule(layer, name).weight.data = w.to(dev, dtype).clone()
        new_layers.append(layer)
    draft.model.layers = nn.ModuleList(new_layers)
    draft.model.norm = copy.deepcopy(target.model.norm)
    w = tensors.pop("norm.weight", None)
    if w is not None:
        draft.model.norm.weight.data = w.to(dev, dtype).clone()
    draft.model.rotary_emb = copy.deepcopy(target.model.rotary_emb)

    out_w = target.get_output_embeddings().weight
    bias = tensors.pop("head.bias", None)
    if kept_ids is None:
        if bias is not None:
            raise InvalidArgumentError("head.bias needs kept_ids")
        head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, device="meta")
        head.weight = out_w  # shared with the target
    else:
        kept_ids = kept_ids.to(dev, torch.long)
        if kept_ids.numel() > 1 and not bool((kept_ids[1:] > kept_ids[:-1]).all()):
            raise InvalidArgumentError("kept_ids must be sorted and unique")
        head = RestrictedVocabHead(
            out_w.detach()[kept_ids].clone(), kept_ids, cfg.vocab_size,
            None if bias is None else bias.to(dev, dtype).clone(),
        )
    draft.lm_head = head
    if tensors:
        raise InvalidArgumentError(f"unexpected tensors in draft weights: {sorted(tensors)[:5]}")

    for name, t in list(draft.named_parameters()) + list(draft.named_buffers()):
        if t.is_meta:
            raise RuntimeError(f"draft tensor {name} was left on the meta device")
    draft.generation_config = copy.deepcopy(target.generation_config)
    draft.config.name_or_path = name_or_path
    draft.requires_grad_(False)
    return draft.eval()


# ---------------------------------------------------------------------------
# loading the committed weights
# ---------------------------------------------------------------------------

# sha256 of the committed data/smollm2_draft.safetensors (checked when the
# default file is loaded; any other file is checked by its format field and
# the tensors_sha256 recorded in its metadata).
DEFAULT_WEIGHTS_SHA256 = "b2c2c00b8b2bbf71c6363c8f53f4fb07bae714e9d4d75278c206696e0430c7a8"


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent / "data" / WEIGHTS_FILE


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update((t.view(torch.uint8) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def read_draft_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a draft weights file, validated (format, tensor checksum)."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"draft weights {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ChecksumError(f"{path} is not a readable safetensors file: {e}") from e
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ChecksumError(
            f"{path} has format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}: not a draft weights "
            "file of this library version"
        )
    got = _tensors_sha256(tensors)
    if got != meta.get("tensors_sha256"):
        raise ChecksumError(f"{path}: tensor checksum {got} does not match its metadata: the file is corrupt")
    for k in ("layers", "vocab"):
        if k not in meta:
            raise ChecksumError(f"{path}: metadata field {k!r} missing")
    if "kept_ids" not in tensors:
        raise ChecksumError(f"{path}: tensor 'kept_ids' missing")
    return tensors, meta


def draft_weights(path: str | os.PathLike | None = None) -> tuple[list[int], torch.Tensor, dict[str, torch.Tensor]]:
    """(target layer indices, kept token ids, trained tensors) of a draft weights file, validated.

    ``path`` None: the committed ``data/smollm2_draft.safetensors``, whose sha256 is checked.
    """
    if path is None:
        path = default_weights_path()
        if DEFAULT_WEIGHTS_SHA256 is not None:
            from .default_pair import sha256_file

            got = sha256_file(path) if path.is_file() else None
            if got is None:
                raise ModelNotFoundError(f"the committed draft weights {path} are missing; reinstall sprinter_ext")
            if got != DEFAULT_WEIGHTS_SHA256:
                raise ChecksumError(
                    f"{path} has sha256 {got}, expected {DEFAULT_WEIGHTS_SHA256}: the file is corrupt or "
                    "not the release this library was built with"
                )
    tensors, meta = read_draft_weights(path)
    layers = json.loads(meta["layers"])
    kept = tensors.pop("kept_ids").to(torch.long)
    if kept.numel() != int(json.loads(meta["vocab"])):
        raise ChecksumError(f"{path}: {kept.numel()} kept ids, metadata says {meta['vocab']}")
    return layers, kept, tensors


def build_default_draft(target, *, path: str | os.PathLike | None = None):
    """The default draft for the loaded SmolLM2-135M target (same device and dtype).

    ``path``: a weights file written by :mod:`sprinter_ext.cli.train_draft`
    (default: the committed ``data/smollm2_draft.safetensors``, whose sha256 is
    checked).  The draft reuses the target's embedding (by reference) and
    copies of its layers, so it must be built from the target it will serve.
    """
    cfg = target.config
    if getattr(cfg, "model_type", None) != "llama" or cfg.vocab_size != 49152 or cfg.hidden_size != 576:
        raise InvalidArgumentError(
            "build_default_draft needs the SmolLM2-135M target (llama, hidden 576, vocab 49152), got "
            f"{getattr(cfg, 'model_type', None)} hidden {getattr(cfg, 'hidden_size', None)} vocab {cfg.vocab_size}"
        )
    layers, kept, tensors = draft_weights(path)
    draft = assemble_draft(target, layers, kept_ids=kept, tensors=tensors, name_or_path=DRAFT_ID)
    return draft
