"""Analytic FLOP accounting (DESIGN.md, performance model).

A forward over n tokens costs 2 * P * n for the matmul weights P it streams (the
LM head included, the embedding gather excluded) plus 4 * d_attn per attended
(query, key) pair for QK^T and AV, where d_attn = heads * head_dim. The engine
counts tokens fed and (query, key) pairs attended per model (stats
``*_fed`` / ``*_attended``), so a method's FLOPs follow exactly from its stats.
A draft head is counted as one decoder layer whose every Linear (its feature fusion
``fc`` included, which in fact runs only on the target's features) runs per token fed:
a slight over-count of the head's share.
"""

from __future__ import annotations

from torch import nn

__all__ = ["matmul_params", "attention_width", "forward_flops", "generation_flops"]


def matmul_params(model) -> int:
    """Weights multiplied per token: every Linear/Conv1D weight, plus a non-Linear LM head."""
    from transformers.pytorch_utils import Conv1D

    seen: set[int] = set()
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, Conv1D)) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel()
    get_head = getattr(model, "get_output_embeddings", None)  # a draft head (drafts/head.py) has a plain lm_head
    head = get_head() if get_head is not None else None
    if head is not None and not isinstance(head, (nn.Linear, Conv1D)):
        # a custom head (e.g. a restricted vocabulary): count its 2-D tensors
        for t in list(head.parameters()) + list(head.buffers()):
            if t.dim() == 2 and t.is_floating_point() and id(t) not in seen:
                seen.add(id(t))
                total += t.numel()
    return total


def attention_width(model) -> tuple[int, int]:
    """(layers, heads * head_dim) of a decoder."""
    c = model.config
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer")
    heads = getattr(c, "num_attention_heads", None) or getattr(c, "num_heads", None) or getattr(c, "n_head")
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd")
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return int(layers), int(heads * head_dim)


def forward_flops(model, fed: int, attended: int) -> int:
    layers, width = attention_width(model)
    return 2 * matmul_params(model) * fed + 4 * layers * width * attended


def generation_flops(pair, stats: dict) -> int:
    """FLOPs of one generation from its stats (prompt prefill excluded)."""
    total = forward_flops(pair.target, stats["target_fed"], stats["target_attended"])
    if stats.get("draft_fed"):
        total += forward_flops(pair.draft, stats["draft_fed"], stats["draft_attended"])
    return total
