"""The one set of defaults: what ``generate()``, ``Decoder``, the CLI (``generate``, ``chat``)
and the server use when a value is not given. README, "Defaults", is this table.

- TEMPERATURE 0 (greedy), as transformers' ``generate`` (``do_sample=False``) and the CLI;
  ``temperature=1`` (with a ``seed``) samples. The server uses it too when a request
  gives no temperature (OpenAI's own default is 1: send it to sample).
- CHAT None: a str prompt to a pair whose tokenizer has a chat template is one user
  message rendered with it (Ollama's ``generate`` and llama.cpp's ``llama-cli`` do the
  same); ``chat=False`` keeps it raw text. Messages always use the template, token ids
  never; the server's ``/v1/completions`` is raw text and ``/v1/chat/completions``
  messages, as in vLLM and OpenAI.
- K 2: draft tokens per round, the fastest the README measures with the default pair's
  head (k > 2 adds nothing there). The cost model's ``k="auto"`` replaces this line.
- THREADS None: torch's own intra-op thread count (one per physical core), as a user's
  machine would pick; ``--threads N`` or ``$SPRINTER_EXT_THREADS`` overrides it. Tests and
  benchmarks pin their own (BENCH_THREADS for ``bench``, ``sprinter-sweep`` and training).
"""

from __future__ import annotations

__all__ = ["METHOD", "TEMPERATURE", "TOP_K", "TOP_P", "MIN_P", "REPETITION_PENALTY",
           "PRESENCE_PENALTY", "FREQUENCY_PENALTY", "SEED", "K", "MAX_NEW_TOKENS", "CHAT", "THREADS",
           "BENCH_THREADS", "table"]  # fmt: skip

METHOD = "sd"
TEMPERATURE = 0.0
TOP_K = 0
TOP_P = 1.0
MIN_P = 0.0  # off; as the penalties below: the neutral values (vLLM's and OpenAI's defaults)
REPETITION_PENALTY = 1.0
PRESENCE_PENALTY = 0.0
FREQUENCY_PENALTY = 0.0
SEED = 0
K = 2
MAX_NEW_TOKENS = 128
CHAT = None
THREADS = None
BENCH_THREADS = 1  # measurements on a shared machine: one thread per decoder does not collapse (README, "Threads")


def table() -> dict:
    """Every default by name (what the README table lists; tests compare the two)."""
    return {name.lower(): globals()[name] for name in __all__ if name not in ("table",)}
