"""Held-out chat prompts written by hand for the benchmarks: the kinds of message people send an
Instruct model (factual, how-to, code, math, advice, creative, rewrite). No training record of
this project comes from them (the draft head and the verifier train on Python-docs prompts and
the target's own writing), so every figure measured on them is held out.

Use :func:`chat_prompts` for message lists ready for ``generate`` / ``encode_prompt``.
"""

from __future__ import annotations

__all__ = ["CHAT_PROMPTS", "chat_prompts"]

CHAT_PROMPTS: tuple[str, ...] = (
    "What causes the seasons on Earth?",
    "How do I make a simple tomato sauce for pasta?",
    "Write a Python function that checks whether a string is a palindrome.",
    "If a train travels 180 km in 2.5 hours, what is its average speed?",
    "I have a job interview tomorrow. How should I prepare tonight?",
    "Write a short poem about autumn leaves.",
    "Rewrite this sentence to sound more formal: 'hey, can you send me that report asap?'",
    "What is the difference between a list and a tuple in Python?",
    "Give me three ideas for a rainy weekend with kids.",
    "Explain photosynthesis to a ten-year-old.",
    "How can I stop procrastinating when I study?",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "What are the health benefits of drinking water?",
    "Write a haiku about the ocean.",
    "How do I reverse a linked list? Explain the idea briefly.",
    "What should I pack for a three-day hiking trip?",
)


def chat_prompts(n: int | None = None) -> list[list[dict]]:
    """The first `n` prompts (all when None) as one-turn chat message lists."""
    items = CHAT_PROMPTS if n is None else CHAT_PROMPTS[:n]
    return [[{"role": "user", "content": text}] for text in items]
