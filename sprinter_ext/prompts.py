"""Prompts in, text out: the one place prompts become token ids, and streaming detokenization.

A prompt is one of

- a ``str``: the content of one user message rendered with the tokenizer's chat template
  (when it has one, or ``chat=True``), or, with ``chat=False``, raw text tokenized as is;
- token ids: a list/tuple of ints or a 1-D integer tensor, used as given;
- chat messages: ``[{"role": "user", "content": "..."}, ...]``, rendered with the
  tokenizer's chat template plus the generation prompt (the assistant's turn opener).

``chat=None`` (the default, :mod:`sprinter_ext._defaults`) renders a str as one user
message when the tokenizer has a chat template (Ollama's ``generate`` and llama.cpp's
``llama-cli`` do the same): an Instruct model fed raw text often ends its answer at once
(SmolLM2-135M-Instruct emits ``<|im_end|>`` as its first token). ``chat=False`` keeps it
raw text. :class:`ChatTemplateWarning` stays importable for code that filtered it.

:class:`IncrementalDetokenizer` turns a stream of token ids into text pieces whose
concatenation is the decoded text of all tokens, holding back bytes of a character
that is not complete yet (byte-level BPE splits emoji and CJK over several tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import ChatTemplateWarning  # noqa: F401 - re-exported (no longer raised)
from .errors import ArgumentTypeError, InvalidArgumentError, TokenizerRequiredError

CHAT_ROLES = ("system", "user", "assistant")  # what the API and the server render (OpenAI's three)

__all__ = ["encode_prompt", "render_chat", "has_chat_template", "IncrementalDetokenizer", "ChatTemplateWarning"]


def _split(pair_or_tokenizer) -> tuple[Any, int | None]:
    """(tokenizer or None, vocabulary size or None) of a ModelPair or a tokenizer."""
    from .models.pair import ModelPair

    if isinstance(pair_or_tokenizer, ModelPair):
        return pair_or_tokenizer.tokenizer, pair_or_tokenizer.vocab_size
    if pair_or_tokenizer is None:
        return None, None
    if not callable(getattr(pair_or_tokenizer, "decode", None)):
        raise ArgumentTypeError(
            f"expected a ModelPair or a tokenizer, got {type(pair_or_tokenizer).__name__}"
        )
    return pair_or_tokenizer, len(pair_or_tokenizer)


def has_chat_template(tokenizer) -> bool:
    """True when `tokenizer` can render chat messages (a Hugging Face chat template)."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None)) and callable(
        getattr(tokenizer, "apply_chat_template", None)
    )


def _check_messages(messages: Sequence) -> list[dict]:
    if not messages:
        raise InvalidArgumentError("the chat messages list is empty: give at least one {'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ArgumentTypeError(
                f"chat message {i} must be a dict like {{'role': 'user', 'content': '...'}}, got {type(m).__name__}"
            )
        missing = [key for key in ("role", "content") if key not in m]
        if missing:
            raise InvalidArgumentError(f"chat message {i} has no {' or '.join(map(repr, missing))} key")
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or not role:
            raise InvalidArgumentError(f"chat message {i}: 'role' must be a non-empty str (e.g. 'user'), got {role!r}")
        if role not in CHAT_ROLES:
            hint = " (no tool calling here)" if role in ("tool", "function") else (
                "; use 'system'" if role == "developer" else "")
            raise InvalidArgumentError(f"chat message {i}: role {role!r} is not supported{hint}; roles: {list(CHAT_ROLES)}")
        if not isinstance(content, str):
            raise ArgumentTypeError(f"chat message {i}: 'content' must be a str, got {type(content).__name__}")
        out.append(dict(m))
    return out


def render_chat(tokenizer, messages: Sequence) -> str:
    """The chat template's text for `messages`, ending with the generation prompt."""
    msgs = _check_messages(messages)
    if tokenizer is None:
        raise TokenizerRequiredError("chat messages need a tokenizer with a chat template, but this pair has none")
    if not has_chat_template(tokenizer):
        raise InvalidArgumentError(
            "this tokenizer has no chat template, so chat messages cannot be rendered: pass the text "
            "as a str (raw) or token ids, or load the pair with a tokenizer that has one"
        )
    try:
        # NOTE: render to text, then tokenize without adding special tokens: the template
        # writes its own (<|im_start|> ...), and transformers 5 returns a BatchEncoding,
        # not ids, from tokenize=True.
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja raises its own errors for messages the template rejects
        raise InvalidArgumentError(f"the tokenizer's chat template rejected these messages: {e}") from e


def _is_messages(prompt) -> bool:
    return isinstance(prompt, Mapping) or (
        isinstance(prompt, Sequence) and not isinstance(prompt, str) and len(prompt) > 0 and isinstance(prompt[0], Mapping)
    )


def encode_prompt(pair_or_tokenizer, prompt, *, chat: bool | None = None) -> list[int]:
    """Token ids of `prompt` (str, token ids or chat messages), validated.

    Parameters
    ----------
    pair_or_tokenizer : ModelPair or tokenizer
        Ids are checked against the pair's vocabulary (or ``len(tokenizer)``).
    prompt : str, list/tuple of ints, 1-D integer tensor, or list of message dicts
    chat : bool or None
        For a str: True renders it as one user message with the chat template; False
        tokenizes it raw; None (default) is True when the tokenizer has a chat template and
        False otherwise (Ollama's ``generate`` and ``llama-cli`` convention). Messages
        always use the template (``chat=False`` with messages is an error); token ids
        are used as given (``chat=True`` with ids is an error).

    Returns
    -------
    list[int], never empty.
    """
    if chat is not None and not isinstance(chat, bool):
        raise ArgumentTypeError(f"chat must be True, False or None, got {type(chat).__name__}")
    tok, vocab = _split(pair_or_tokenizer)
    if _is_messages(prompt):
        if isinstance(prompt, Mapping):
            raise ArgumentTypeError("chat messages must be a list of dicts: wrap the single message in [ ]")
        if chat is False:
            raise InvalidArgumentError("chat=False but the prompt is a list of chat messages; pass a str or token ids")
        ids = _tokenize(tok, render_chat(tok, prompt))
    elif isinstance(prompt, str):
        if tok is None:
            raise TokenizerRequiredError(
                "a str prompt needs a tokenizer, but this pair has none: pass token ids "
                "(list of ints or a 1-D LongTensor) or load_pair(..., tokenizer=...)"
            )
        if chat is None:
            # NOTE: the default (sprinter_ext._defaults.CHAT): a chat turn when the tokenizer has a
            # template, as Ollama's generate and llama-cli do; chat=False is raw text on purpose.
            chat = has_chat_template(tok)
        if chat:
            ids = _tokenize(tok, render_chat(tok, [{"role": "user", "content": prompt}]))
        else:
            ids = _tokenize(tok, prompt)
    else:
        if chat:
            raise InvalidArgumentError("chat=True needs a str or chat messages, not token ids")
        ids = _ids(prompt)
    if not ids:
        raise InvalidArgumentError("the prompt is empty: give at least one token")
    if vocab is not None:
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidArgumentError(f"prompt token ids must be in [0, {vocab}), got {bad[:5]}")
    return ids


def _tokenize(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False).input_ids)


def _ids(prompt) -> list[int]:
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() != 1 or prompt.dtype not in (torch.int64, torch.int32):
            raise ArgumentTypeError(f"a tensor prompt must be a 1-D integer tensor, got {prompt.dim()}-D {prompt.dtype}")
        return [int(t) for t in prompt.tolist()]
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        raise ArgumentTypeError(
            "a bytes prompt is ambiguous (text or token ids?): decode it to a str, or pass a list of ints"
        )
    if isinstance(prompt, Sequence):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise ArgumentTypeError("a list prompt must contain ints (token ids) or chat message dicts")
        return list(prompt)
    raise ArgumentTypeError(
        f"prompt must be a str, a list of ints, a 1-D LongTensor or a list of chat messages, got {type(prompt).__name__}"
    )


class IncrementalDetokenizer:
    """Token ids in, final text pieces out; the pieces concatenate to ``decode(all ids)``.

    Each :meth:`push` decodes a short window (a few tokens of left context plus the
    tokens not yet shown) and returns the text that is final: it holds back a trailing
    U+FFFD, which is what a byte-level BPE decode shows for a character whose UTF-8
    bytes are split over tokens not all seen yet. The left context keeps decoders that
    depend on neighbours (SentencePiece's leading space, merged byte tokens) right.
    :meth:`flush` returns what is left, checked against one decode of every token.

    >>> d = IncrementalDetokenizer(tokenizer)
    >>> pieces = [d.push(ids) for ids in rounds] + [d.flush()]
    >>> "".join(pieces) == tokenizer.decode(all_ids, skip_special_tokens=True)
    True
    """

    # NOTE: the window starts this many tokens before the first unshown one; a
    # character spans at most 4 byte tokens, so 6 leaves room for merges around it.
    CONTEXT = 6

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        if tokenizer is None or not callable(getattr(tokenizer, "decode", None)):
            raise TokenizerRequiredError("IncrementalDetokenizer needs a tokenizer with a decode() method")
        self.tokenizer = tokenizer
        self.skip_special_tokens = bool(skip_special_tokens)
        self.tokens: list[int] = []
        self.text = ""  # everything returned so far
        self._prefix = 0  # window start (left context)
        self._read = 0  # tokens[:_read] are fully shown

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_ids) -> str:
        """Add token ids (an int, a list of ints or a 1-D tensor); return the new final text."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.reshape(-1).tolist()
        elif isinstance(token_ids, int) and not isinstance(token_ids, bool):
            token_ids = [token_ids]
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in token_ids):
            raise ArgumentTypeError("push() takes token ids: an int, a list of ints or an integer tensor")
        self.tokens.extend(token_ids)
        if self._read == len(self.tokens):
            return ""
        shown = self._decode(self.tokens[self._prefix : self._read])
        window = self._decode(self.tokens[self._prefix :])
        if len(window) <= len(shown) or window.endswith("\ufffd") or not window.startswith(shown):
            return ""  # nothing final yet (an incomplete character, or the context changed)
        piece = window[len(shown) :]
        self._read = len(self.tokens)
        self._prefix = max(0, self._read - self.CONTEXT)
        self.text += piece
        return piece

    def flush(self) -> str:
        """The rest of the text (at the end of a generation); resets nothing."""
        full = self._decode(self.tokens)
        if full.startswith(self.text):
            piece = full[len(self.text) :]
        else:  # cannot happen with byte-level BPE; keep the window's view then
            shown = self._decode(self.tokens[self._prefix : self._read])
            piece = self._decode(self.tokens[self._prefix :])[len(shown) :]
        self._read = len(self.tokens)
        self._prefix = max(0, self._read - self.CONTEXT)
        self.text += piece
        return piece
