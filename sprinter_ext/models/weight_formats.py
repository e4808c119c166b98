"""Weight formats: how the native CPU fast path stores a model's linear weights (``load_pair(weights=)``).

Activations, the residual stream, norms, attention, softmax and the KV cache stay in the
model's dtype whatever the format; a format only changes what the small-n linears (the
decode step, the draft step, the verification of up to 16 tokens) stream from memory.
``dtype=`` keeps torch's meaning (the whole model in that dtype); prefill (more than 16
tokens) keeps ATen's GEMM over the model's own weights.

=========  ==============================================================================
``fp32``   the model's own weights, packed once (PackedLinear); today's behaviour
``auto``   (the default) ``gguf`` where it applies, ``fp32`` elsewhere
``gguf``   the GGUF file's Q4_1 / Q8_0 blocks as loaded (QuantLinear, float32
           activations): the model a GGUF target is anyway (transformers dequantises the
           same blocks to float32 bit for bit), at 0.625-1.06 bytes per weight instead of
           4, so its tokens equal ``fp32``'s up to summation order. Needs a target loaded
           from a ``.gguf`` file (the default pair's is)
``f16``    the target's linear weights (and LM head) rounded once to IEEE float16 (11
           significant bits), float32 activations (HalfLinear: F16C widening + float32
           FMA): 2 bytes per weight, any float32 target on the CPU
``bf16``   the same in bfloat16 (8 significant bits): the same bytes, further from fp32
=========  ==============================================================================

The 16-bit formats round the weights the small-n forwards stream; prefill (more than 16
tokens) keeps ATen's GEMM over the float32 weights, so a long prompt is read by the
float32 model and every decode, draft and verification forward by the 16-bit one (the
reference engine, Python over transformers, runs float32 throughout). Embedding lookups
stay float32 (a row per token: no bandwidth to save).

A format is one entry of :data:`FORMATS`: a name, a description and the function that
applies it to a built ``_C.NativeModel``; the pair keeps the name and the runner factories
call :func:`apply` on every native runner they build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["FORMATS", "HALF_FORMATS", "DEFAULT", "parse_weights", "apply", "gguf_blocks"]

# GGUF block types QuantLinear runs, by gguf-py's GGMLQuantizationType name
_BLOCK_TYPES = {"Q4_1": "q4_1", "Q8_0": "q8_0"}


@dataclass(frozen=True)
class WeightFormat:
    name: str
    description: str
    # (native model, the role's source: a file, read blocks, or None; the model's config)
    # -> what to keep as the source for the role's next runner (e.g. the file's blocks, read once)
    apply: Callable[[object, "Path | dict | None", object], object] | None


def _unpermute_rows(blocks: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation for rotary halves (transformers does the same on
    load, ``_reverse_permute_weights``); rows are whole block rows, so it moves bytes only."""
    rows = blocks.shape[0]
    return blocks.reshape(n_head, rows // n_head // 2, 2, -1).transpose(1, 2).reshape(rows, -1)


def gguf_blocks(path: str | Path, config) -> dict[str, tuple[str, torch.Tensor]]:
    """The GGUF file's Q4_1 / Q8_0 matrices as ``{hf name: (format, uint8 blocks [N, bytes])}``,
    rows in transformers' order (q/k un-permuted) for a Llama ``config``."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    kv_heads = kv_heads or heads
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}  # fmt: skip
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for t in reader.tensors:
        fmt = _BLOCK_TYPES.get(t.tensor_type.name)
        if fmt is None or len(t.shape) != 2:
            continue
        blocks = torch.from_numpy(np.array(t.data))  # a copy: the reader maps the file read-only
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            out["model.embed_tokens.weight"] = (fmt, blocks)
        elif t.name == "output.weight":
            out["lm_head.weight"] = (fmt, blocks)
        elif parts[0] == "blk" and parts[2] in names:
            if parts[2] == "attn_q":
                blocks = _unpermute_rows(blocks, heads)
            elif parts[2] == "attn_k":
                blocks = _unpermute_rows(blocks, kv_heads)
            out[f"model.layers.{parts[1]}.{names[parts[2]]}.weight"] = (fmt, blocks)
    return out


def _stack(blocks: dict, names: list[str]) -> tuple[str, torch.Tensor] | None:
    """One linear's blocks from several matrices stacked by rows (q, k, v; gate, up), or None
    when one is missing or they differ in format (that linear then keeps its float32 pack)."""
    got = [blocks.get(n) for n in names]
    if any(g is None for g in got) or len({g[0] for g in got}) != 1:
        return None
    return got[0][0], torch.cat([g[1] for g in got])


def _apply_gguf(runner, path, config) -> dict:
    if path is None:
        raise InvalidArgumentError(
            "weights='gguf' needs a model loaded from a .gguf file (the default pair's target is one); "
            "use weights='fp32' for this model"
        )
    if getattr(config, "model_type", "llama") != "llama":
        raise InvalidArgumentError(f"weights='gguf' runs Llama-family GGUF models, not {config.model_type!r}")
    # NOTE: a dict is blocks already read (gguf_blocks' output; the tests build them from a tiny model)
    blocks = path if isinstance(path, dict) else gguf_blocks(path, config)
    tied = "lm_head.weight" not in blocks
    for i in range(runner.num_layers):
        p = f"model.layers.{i}."
        for part, names in (("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                            ("o", ["self_attn.o_proj"]), ("gate_up", ["mlp.gate_proj", "mlp.up_proj"]),
                            ("down", ["mlp.down_proj"])):  # fmt: skip
            stacked = _stack(blocks, [p + n + ".weight" for n in names])
            if stacked is not None:
                runner.quantize_linear(f"layers.{i}.{part}", stacked[1], stacked[0])
    head = blocks.get("model.embed_tokens.weight" if tied else "lm_head.weight")
    if head is not None:
        runner.quantize_linear("head", head[1], head[0])
    return blocks


_HALF = {"f16": torch.float16, "bf16": torch.bfloat16}


def _apply_half(name: str) -> Callable:
    dtype = _HALF[name]

    def apply(runner, overrides, config) -> dict:
        # NOTE: `overrides` ({linear name: 16-bit weight}) is empty but for the tests' planted bugs
        overrides = overrides if isinstance(overrides, dict) else {}
        for lin in runner.linear_names:
            w16 = overrides.get(lin)
            if w16 is None:
                w = runner.linear_weight(lin)
                w16 = w.to(dtype)
                if not bool(torch.isfinite(w16).all()):
                    big = w[~torch.isfinite(w16)].abs().max().item()
                    raise InvalidArgumentError(
                        f"weights={name!r}: linear {lin!r} has weights beyond {dtype}'s range (|w| up to {big:.3g}); "
                        "use weights='bf16' or weights='fp32' for this model"
                    )
            runner.store_linear16(lin, w16)
        return overrides

    return apply


FORMATS: dict[str, WeightFormat] = {
    "fp32": WeightFormat("fp32", "the model's own weights, packed (today's fast path)", None),
    "gguf": WeightFormat("gguf", "the GGUF file's Q4_1 / Q8_0 blocks as loaded, float32 activations", _apply_gguf),
    "f16": WeightFormat("f16", "linear weights rounded to float16, float32 activations", _apply_half("f16")),
    "bf16": WeightFormat("bf16", "linear weights rounded to bfloat16, float32 activations", _apply_half("bf16")),
}
# The formats that store the target's own float32 weights in 16 bits (no file to read).
HALF_FORMATS = tuple(_HALF)
# NOTE: "auto" = gguf where it applies (a target loaded from a .gguf file, on the CPU, float32:
# the default pair), fp32 elsewhere. gguf's logits equal fp32's fast path (the kernels add each
# product into the same vector lane in the same order), so the default costs no fidelity.
DEFAULT = "auto"


def parse_weights(weights) -> str:
    """The format name for ``load_pair(weights=)``: one of :data:`FORMATS` or "auto" (None:
    :data:`DEFAULT`); named errors otherwise."""
    if weights is None:
        return DEFAULT
    names = ", ".join([*FORMATS, "auto"])
    if not isinstance(weights, str):
        raise ArgumentTypeError(f"weights must be a str (one of {names}) or None, got {type(weights).__name__}")
    key = weights.lower()
    if key not in FORMATS and key != "auto":
        raise InvalidArgumentError(f"unknown weights format {weights!r}: one of {names}")
    return key


def apply(runner, weights: str, source, config):
    """Apply format `weights` to a freshly built native runner (before its first forward).
    Returns what to keep as `source` for the next runner (a file's blocks, read once)."""
    fmt = FORMATS[weights]
    return source if fmt.apply is None else fmt.apply(runner, source, config)
