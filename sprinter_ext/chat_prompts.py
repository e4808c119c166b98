"""Held-out chat prompts written by hand for the benchmarks: the kinds of message people send an
Instruct model (factual, how-to, code, math, advice, creative, rewrite). No training record of
this project comes from them (the draft head and the verifier train on Python-docs prompts and
the target's own writing), so every figure measured on them is held out.

Use :func:`chat_prompts` for message lists ready for ``generate`` / ``encode_prompt``.
:data:`GROUNDED_PROMPTS` (:func:`grounded_prompts`) are *grounded* requests, also written by
hand: the answer reuses text given in the prompt (repeat, rewrite, extract from a passage,
document or edit a given function), where a lookup draft (``"ngram"``, ``"suffix"``) shines.
"""

from __future__ import annotations

__all__ = ["CHAT_PROMPTS", "GROUNDED_PROMPTS", "chat_prompts", "grounded_prompts"]

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


_PASSAGE = ("The Great Barrier Reef is the world's largest coral reef system. It lies off the coast of "
            "Queensland, Australia, and stretches for more than 2,300 kilometres. The reef is made of "
            "thousands of individual reefs and hundreds of islands, and it can be seen from space.")
_CODE = ("def average(values):\n    total = 0\n    for value in values:\n        total = total + value\n"
         "    return total / len(values)\n")
_CODE2 = ("def count_words(text):\n    counts = {}\n    for word in text.split():\n"
          "        word = word.lower()\n        counts[word] = counts.get(word, 0) + 1\n    return counts\n")

GROUNDED_PROMPTS: tuple[str, ...] = (
    f"Repeat the following paragraph exactly, word for word:\n\n{_PASSAGE}",
    f"Rewrite this paragraph in the past tense, keeping everything else the same:\n\n{_PASSAGE}",
    f"From the paragraph below, copy the sentence that says where the reef is.\n\n{_PASSAGE}",
    f"Add a docstring to this Python function and return the whole function:\n\n{_CODE}",
    f"Rename the variable 'total' to 'running_sum' in this function and show the full code:\n\n{_CODE}",
    f"Add type hints to this function and return the complete code:\n\n{_CODE2}",
    f"Change this function so it ignores punctuation, and show the whole updated function:\n\n{_CODE2}",
    "Fix the spelling mistakes in this text and return it: 'Teh quick brown fox jumpd over the lazzy dog. "
    "Teh dog was not amused, and the fox ran awya into the forrest.'",
    "Turn this list into a numbered list, keeping each item's wording: apples, oranges, bread, milk, "
    "eggs, butter, cheese, rice.",
    f"Quote the first two sentences of this paragraph, then say in one line what it is about:\n\n{_PASSAGE}",
    "Convert these notes into full sentences, keeping all the facts: meeting Monday 10am; budget "
    "approved; Sarah leads design; launch moved to June; next review in two weeks.",
    f"Write this function again with a comment above every line:\n\n{_CODE2}",
)


def grounded_prompts(n: int | None = None) -> list[list[dict]]:
    """The first `n` grounded prompts (all by default) as one-turn chat message lists."""
    ps = GROUNDED_PROMPTS if n is None else GROUNDED_PROMPTS[:n]
    return [[{"role": "user", "content": p}] for p in ps]
