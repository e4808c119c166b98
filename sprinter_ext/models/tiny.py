"""Tiny random GPT-2 and Llama models built in memory, for fast tests and host-overhead benchmarks.

Weights come from a seeded ``torch.Generator`` (never the global RNG), so the same
arguments always give the same model.
"""

from __future__ import annotations

import torch
from ..errors import InvalidArgumentError

__all__ = ["tiny_model", "tiny_pair"]


def _config(family: str, vocab: int, layers: int, hidden: int, heads: int, max_pos: int):
    from transformers import GPT2Config, LlamaConfig

    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_positions=max_pos,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            bos_token_id=0,
            eos_token_id=vocab - 1,
        )
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=max_pos,
            bos_token_id=0,
            eos_token_id=vocab - 1,
            tie_word_embeddings=False,
        )
    raise InvalidArgumentError(f"unknown tiny family {family!r}; use 'gpt2' or 'llama'")


def tiny_model(
    family: str = "llama",
    *,
    vocab: int = 128,
    layers: int = 1,
    hidden: int = 32,
    heads: int = 4,
    max_pos: int = 256,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
):
    """A random causal LM; `scale` multiplies the LM head (sharper or flatter distributions)."""
    from transformers import AutoModelForCausalLM

    config = _config(family, vocab, layers, hidden, heads, max_pos)
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif "norm" in name or "ln_" in name:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        head = model.get_output_embeddings()
        if head is not None and scale != 1.0 and not config.tie_word_embeddings:
            head.weight.mul_(scale)
    model.config.name_or_path = f"tiny-{family}-v{vocab}-l{layers}-h{hidden}-s{seed}"
    return model.to(dtype).eval().requires_grad_(False)


def tiny_pair(family: str = "llama", *, vocab: int = 128, seed: int = 0, draft_scale: float = 1.0, **kw):
    """(draft, target) with the same vocabulary; the draft has other random weights."""
    target = tiny_model(family, vocab=vocab, seed=seed, layers=2, **kw)
    draft = tiny_model(family, vocab=vocab, seed=seed + 1000, layers=1, scale=draft_scale, **kw)
    return draft, target
