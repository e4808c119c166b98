"""The native (C++/ATen) runner: Llama / GPT-2 forward without Python in the loop.

:func:`native_runner` builds a ``sprinter_ext._C.NativeModel`` from a transformers
model. It speaks the :class:`sprinter_ext.runners.Runner` protocol (``prefill`` /
``step`` / ``extend`` / ``truncate`` / ``scrub``, ``length``; plus ``max_len``,
``vocab_size``, ``device``, ``dtype``, ``hidden_size``) and is also a
``sprinter_ext._C.Runner``, the C++ interface (csrc/engine/runner.h) the native decode loop
drives without taking the GIL. It has no snapshot/restore (``supports_snapshot`` is
False), so methods that need them (ssd) refuse it.

Supported (:func:`supports`): ``LlamaForCausalLM`` (GQA, attention / MLP biases,
tied or untied head, default RoPE only, the default draft's
:class:`~sprinter_ext.models.smol_draft.RestrictedVocabHead`) and
``GPT2LMHeadModel``, in eval mode, with ``attn_implementation`` "sdpa" or "eager".
The forward repeats transformers' ops one for one (csrc/model/native_model.cpp), so on CPU
its logits and hidden states are bitwise equal to ModelRunner's
(tests/test_native_model.py).

The C++ object uses the module's own tensors (detached, not copied): merged weights
as the module holds them at build time. Changing a weight in place later changes the
native model too; replacing a parameter object does not.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArgumentTypeError, InvalidArgumentError, UnsupportedModelError
from .fast_pair import is_tensor_model
from .runner import resolve_max_len
from .smol_draft import RestrictedVocabHead

__all__ = ["native_runner", "cuda_graph_runner", "supports", "unsupported_reason"]

# transformers' ACT2FN names -> the NativeModel activation that computes them
_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_pytorch_tanh",
    "gelu_new": "gelu_new",
    "relu": "relu",
}
_ATTENTION = ("sdpa", "eager")
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _family(model) -> str | None:
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    # NOTE: exact types: a subclass may override the forward this module reproduces.
    if type(model) is LlamaForCausalLM:
        return "llama"
    if type(model) is GPT2LMHeadModel:
        return "gpt2"
    return None


def _llama_reason(model) -> str | None:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaMLP, LlamaRMSNorm

    config, base = model.config, model.model
    rope_type = getattr(base.rotary_emb, "rope_type", None)
    if rope_type != "default":
        return f"rope type {rope_type!r} (only the default RoPE is implemented)"
    if config.hidden_act not in _ACTIVATIONS:
        return f"hidden_act {config.hidden_act!r} (supported: {', '.join(sorted(_ACTIVATIONS))})"
    if len(base.layers) != config.num_hidden_layers:
        return f"{len(base.layers)} layers but config.num_hidden_layers={config.num_hidden_layers}"
    norms = [base.norm]
    for layer in base.layers:
        if type(layer) is not LlamaDecoderLayer or type(layer.mlp) is not LlamaMLP:
            return f"a modified decoder layer ({type(layer).__name__})"
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
        linears = [getattr(layer.self_attn, f"{p}_proj") for p in "qkvo"]
        linears += [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
        if any(type(lin) is not nn.Linear for lin in linears):
            return "a projection that is not a plain nn.Linear (quantized or adapted?)"
    if any(type(n) is not LlamaRMSNorm or n.variance_epsilon != base.norm.variance_epsilon for n in norms):
        return "norms that are not LlamaRMSNorm with one epsilon"
    head = model.get_output_embeddings()
    if type(head) is nn.Linear:
        if head.out_features != config.vocab_size:
            return f"an LM head of {head.out_features} outputs for vocab_size {config.vocab_size}"
    elif type(head) is RestrictedVocabHead:
        if head.vocab_size != config.vocab_size:
            return f"a RestrictedVocabHead over {head.vocab_size} tokens for vocab_size {config.vocab_size}"
    else:
        return f"LM head {type(head).__name__} (supported: nn.Linear, RestrictedVocabHead)"
    return None


def _gpt2_reason(model) -> str | None:
    from transformers.pytorch_utils import Conv1D

    config, base = model.config, model.transformer
    if config.add_cross_attention:
        return "cross-attention (add_cross_attention=True)"
    if config.activation_function not in _ACTIVATIONS:
        return f"activation_function {config.activation_function!r} (supported: {', '.join(sorted(_ACTIVATIONS))})"
    if config._attn_implementation == "eager" and config.reorder_and_upcast_attn:
        return "reorder_and_upcast_attn with eager attention"
    norms = [base.ln_f]
    for block in base.h:
        norms += [block.ln_1, block.ln_2]
        convs = [block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj]
        if any(type(c) is not Conv1D for c in convs):
            return "a projection that is not a plain Conv1D (quantized or adapted?)"
    if any(type(n) is not nn.LayerNorm or n.eps != base.ln_f.eps for n in norms):
        return "norms that are not nn.LayerNorm with one epsilon"
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear or head.out_features != config.vocab_size:
        return f"LM head {type(head).__name__} (supported: nn.Linear over the vocabulary)"
    return None


def unsupported_reason(model) -> str | None:
    """Why :func:`native_runner` cannot run `model` (None: it can)."""
    if is_tensor_model(model):  # the lazy default pair's stand-in: native-ready by construction
        return None
    family = _family(model)
    if family is None:
        return f"{type(model).__name__} is not LlamaForCausalLM or GPT2LMHeadModel"
    if model.training:
        return "the model is in training mode (call model.eval())"
    if getattr(model, "hf_quantizer", None) is not None:
        return "the model is quantized"
    attn = model.config._attn_implementation
    if attn not in _ATTENTION:
        return f"attn_implementation {attn!r} (supported: 'sdpa', 'eager')"
    params = list(model.parameters())
    if any(p.dtype not in _DTYPES for p in params) or len({p.dtype for p in params}) != 1:
        return "parameters must share one float dtype (float32, float64, float16 or bfloat16)"
    if len({p.device for p in params}) != 1 or params[0].device.type == "meta":
        return "parameters must all be on one (non-meta) device"
    return _llama_reason(model) if family == "llama" else _gpt2_reason(model)


def supports(model) -> bool:
    """Whether :func:`native_runner` can run `model` (see the module docstring)."""
    return unsupported_reason(model) is None


def _config_and_tensors(model, max_len: int) -> tuple[dict, dict[str, torch.Tensor]]:
    config = model.config
    head = model.get_output_embeddings()
    if _family(model) == "llama":
        base = model.model
        attn = base.layers[0].self_attn
        cfg = {
            "family": "llama",
            "num_heads": config.num_attention_heads,
            "num_kv_heads": config.num_key_value_heads,
            "head_dim": attn.head_dim,
            "norm_eps": base.norm.variance_epsilon,
            "activation": _ACTIVATIONS[config.hidden_act],
            "attn_scaling": [layer.self_attn.scaling for layer in base.layers],
        }
        extra = {"rotary_emb.inv_freq": base.rotary_emb.inv_freq}
    else:
        base = model.transformer
        cfg = {
            "family": "gpt2",
            "num_heads": config.n_head,
            "num_kv_heads": config.n_head,
            "head_dim": base.h[0].attn.head_dim,
            "norm_eps": base.ln_f.eps,
            "activation": _ACTIVATIONS[config.activation_function],
            "attn_scaling": [block.attn.scaling for block in base.h],
        }
        extra = {}
    cfg.update(
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
        num_layers=len(cfg["attn_scaling"]),
        max_len=max_len,
        attention=config._attn_implementation,
        logit_softcap=getattr(config, "final_logit_softcapping", None) or None,
    )
    tensors = {name: t.detach() for name, t in base.named_parameters(remove_duplicate=False)}
    tensors.update({name: t.detach() for name, t in extra.items()})
    tensors["lm_head.weight"] = head.weight.detach()
    if head.bias is not None:
        tensors["lm_head.bias"] = head.bias.detach()
    if isinstance(head, RestrictedVocabHead):
        tensors["lm_head.token_ids"] = head.token_ids
    return cfg, tensors


def native_runner(model, max_len: int | None = None, *, fast: bool | None = None):
    """A ``sprinter_ext._C.NativeModel`` running `model` with a static KV cache.

    Parameters
    ----------
    model : transformers.LlamaForCausalLM or transformers.GPT2LMHeadModel
        In eval mode, "sdpa" or "eager" attention, one float dtype and device
        (:func:`supports` says whether it qualifies); or the lazy default pair's
        stand-in (``models.fast_pair.TensorModel``), built from its tensors.
    max_len : int, optional
        Cache size in tokens, validated like ModelRunner's: default
        min(2048, max_position_embeddings), at least 2, at most the model's limit.
    fast : bool, optional
        True: the weight-streaming CPU path (csrc/model/linear_cpu.h: every linear of a
        forward over <= 16 tokens streams its weight once; attention over the valid
        prefix), equal to transformers within float tolerance. False: op for op,
        bitwise equal to ModelRunner on CPU. Default: True for a float32/bfloat16
        model on the CPU, else False.

    Returns
    -------
    sprinter_ext._C.NativeModel
        A drop-in for ``ModelRunner(model, max_len)``: ``prefill(ids)`` ->
        (logits [V] float32, hidden [D]) or None, ``step(token)``, ``extend(tokens)``
        -> (logits [n, V] float32, hidden [n, D]), ``truncate(length)``, ``length``.

    Raises
    ------
    TypeError
        `model` is not a torch module.
    UnsupportedModelError
        (a ValueError) The model is not supported; the message says why.
    ValueError
        `max_len` is invalid, or `fast` is True for a model off the CPU or of
        another dtype.

    Examples
    --------
    >>> from sprinter_ext.models.tiny import tiny_model
    >>> runner = native_runner(tiny_model("llama", vocab=97), max_len=64)
    >>> logits, hidden = runner.prefill([1, 2, 3])
    >>> logits.shape, runner.length
    (torch.Size([97]), 3)
    """
    if is_tensor_model(model):
        return model.native_runner(max_len, fast=fast)
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"native_runner needs a transformers model, got {type(model).__name__}")
    reason = unsupported_reason(model)
    if reason is not None:
        raise UnsupportedModelError(
            f"the native runner does not support this model: {reason}; "
            "use sprinter_ext.models.runner.ModelRunner instead"
        )
    max_len = resolve_max_len(model, max_len)
    from .._native import _C

    param = next(model.parameters())
    fast = resolve_fast(fast, param.device, param.dtype)
    cfg, tensors = _config_and_tensors(model, max_len)
    cfg["fast"] = fast
    return _C.NativeModel(cfg, tensors)


def resolve_fast(fast, device, dtype) -> bool:
    """The NativeModel's ``fast`` flag: None -> the fast path wherever it runs (float32 or
    bfloat16 on the CPU); a bool is checked. Every builder of a NativeModel goes through
    here (the C++ default when the key is missing is op for op)."""
    fast_ok = torch.device(device).type == "cpu" and dtype in (torch.float32, torch.bfloat16)
    if fast is None:
        return fast_ok
    if not isinstance(fast, bool):
        raise ArgumentTypeError(f"fast must be a bool or None, got {type(fast).__name__}")
    if fast and not fast_ok:
        raise InvalidArgumentError(
            f"fast=True needs a float32 or bfloat16 model on the CPU, got {dtype} on {device}; "
            "use fast=False"
        )
    return fast


def cuda_graph_runner(model, lengths=(1, 2, 3, 4, 5), max_len: int | None = None):
    """A ``sprinter_ext._C.GraphModel``: :func:`native_runner` whose forwards of `lengths` tokens replay CUDA graphs.

    Parameters
    ----------
    model : transformers.LlamaForCausalLM or transformers.GPT2LMHeadModel
        As for :func:`native_runner`, on a CUDA device.
    lengths : sequence of int
        Forward lengths to capture, each in [1, max_len]: 1 for decode steps, k + 1
        for verifying k drafted tokens. Other lengths and prefill run eagerly.
    max_len : int, optional
        As for :func:`native_runner`.

    Returns
    -------
    sprinter_ext._C.GraphModel
        The same protocol as ModelRunner (and a ``sprinter_ext._C.Runner``);
        capturing resets the cache.

    Raises
    ------
    RuntimeError
        This build of ``sprinter_ext._C`` has no CUDA.
    ValueError
        The model is not on a CUDA device, a length is out of range, or as
        :func:`native_runner`.
    """
    from .._native import _C

    if not hasattr(_C, "GraphModel"):
        raise RuntimeError(
            "cuda_graph_runner needs a CUDA build of sprinter_ext._C (SPRINTER_WITH_CUDA); "
            "this one has none: use native_runner"
        )
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"cuda_graph_runner needs a transformers model, got {type(model).__name__}")
    if model.device.type != "cuda":
        raise InvalidArgumentError(f"CUDA graphs need a model on a CUDA device, got {model.device}")
    lengths = [int(n) for n in lengths]
    return _C.GraphModel(native_runner(model, max_len), lengths)
