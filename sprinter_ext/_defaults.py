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
- K "auto": sd and ersd verify, each round, the number of draft tokens a cost model
  (:mod:`sprinter_ext.cost_model`) expects the most tokens per second from, 0 to 8, 0 being
  a plain target step; measured faster than any fixed k on the README's chat and grounded
  prompts (bench/drafts.py). ssd plans its fan-out for a fixed k: "auto" is K_FIXED (2)
  there; sprinter's run length is its verifier's (k unused).
- THREADS None: torch's own intra-op thread count (one per physical core), as a user's
  machine would pick; ``--threads N`` or ``$SPRINTER_EXT_THREADS`` overrides it. Tests and
  benchmarks pin their own (BENCH_THREADS for ``bench``, ``sprinter-sweep`` and training).
"""

from __future__ import annotations

__all__ = ["METHOD", "TEMPERATURE", "TOP_K", "TOP_P", "MIN_P", "REPETITION_PENALTY",
           "PRESENCE_PENALTY", "FREQUENCY_PENALTY", "SEED", "K", "K_FIXED", "MAX_NEW_TOKENS", "CHAT", "THREADS",
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
K = "auto"
K_FIXED = 2  # ssd's k under "auto"; the fastest fixed k the README measures with the head
MAX_NEW_TOKENS = 128
CHAT = None
THREADS = None
BENCH_THREADS = 1  # measurements on a shared machine: one thread per decoder does not collapse (README, "Threads")


def table() -> dict:
    """Every default by name (what the README table lists; tests compare the two)."""
    return {name.lower(): globals()[name] for name in __all__ if name not in ("table",)}
