"""A tokenizer that starts in ~0.1 s: the ``tokenizers`` library, transformers only on demand.

``transformers.AutoTokenizer`` needs the transformers package, whose import costs
several seconds (it pulls torch.distributed, dynamo, ...). The default pair's
tokenizer is a plain ``tokenizer.json`` (``TokenizersBackend`` in transformers 5), so
the calls this library makes -- ``tok(text, add_special_tokens=False).input_ids``,
``encode``, ``decode``, ``len(tok)``, the special-token ids and a chat template
rendered to text or ids -- are answered here by ``tokenizers`` and ``jinja2``
directly, with the same results as transformers' tokenizer
(tests/test_cold_start.py compares them). Any other attribute is forwarded to the
transformers tokenizer, loaded from the same directory the first time it is needed
(:attr:`FastTokenizer.hf`), so code written for a transformers tokenizer keeps working.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

__all__ = ["FastTokenizer", "Encoding"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")
# apply_chat_template keywords answered here; anything else goes to transformers.
_CHAT_KWARGS = {"add_generation_prompt", "tokenize", "return_dict"}


class Encoding(dict):
    """``{"input_ids": [...], "attention_mask": [...]}`` with attribute access, like BatchEncoding."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` with the transformers tokenizer API this library uses.

    Parameters
    ----------
    directory : path
        A saved transformers tokenizer of the ``TokenizersBackend`` kind: ``tokenizer.json``,
        ``tokenizer_config.json`` and optionally ``chat_template.jinja``.
    """

    def __init__(self, directory):
        from tokenizers import Tokenizer

        self._dir = Path(directory)
        self._tk = Tokenizer.from_file(str(self._dir / "tokenizer.json"))
        cfg_path = self._dir / "tokenizer_config.json"
        self._config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        template = self._dir / "chat_template.jinja"
        self.chat_template = template.read_text() if template.is_file() else self._config.get("chat_template")
        for name in _SPECIAL:
            value = self._config.get(name)
            if isinstance(value, dict):  # an AddedToken written out as a dict
                value = value.get("content")
            setattr(self, name, value)
            setattr(self, f"{name}_id", None if value is None else self._tk.token_to_id(value))
        self._hf = None
        self._hf_lock = threading.Lock()
        self._template = None

    @property
    def hf(self):
        """The transformers tokenizer of the same directory (loaded on first use, then kept)."""
        with self._hf_lock:
            if self._hf is None:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(self._dir), local_files_only=True)
            return self._hf

    def __getattr__(self, name):
        # NOTE: only reached for attributes not defined here; private names are not
        # forwarded so that a half-built object (or copy/pickle probing) fails plainly.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.hf, name)

    def __len__(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"FastTokenizer({str(self._dir.name)!r}, vocab={len(self)}, eos={self.eos_token!r})"

    # -- text <-> ids -----------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs) -> list[int]:
        if kwargs or not isinstance(text, str):
            return self.hf.encode(text, add_special_tokens=add_special_tokens, **kwargs)
        return self._tk.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text, add_special_tokens: bool = True, **kwargs):
        if kwargs or not isinstance(text, str):
            return self.hf(text, add_special_tokens=add_special_tokens, **kwargs)
        ids = self._tk.encode(text, add_special_tokens=add_special_tokens).ids
        return Encoding(input_ids=ids, attention_mask=[1] * len(ids))

    def decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        if kwargs:
            return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        return self._tk.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._tk.token_to_id(tokens)
        return [self._tk.token_to_id(t) for t in tokens]

    # -- chat -------------------------------------------------------------------------

    def apply_chat_template(self, conversation, **kwargs):
        """Render `conversation` with the chat template, as transformers does.

        Answered here for a list of ``{"role", "content"}`` dicts with any of
        ``add_generation_prompt``, ``tokenize`` (default True) and ``return_dict``
        (default True: an :class:`Encoding`; False: a list of ids); any other
        argument is passed to the transformers tokenizer.
        """
        simple = (
            self.chat_template is not None
            and set(kwargs) <= _CHAT_KWARGS
            and isinstance(conversation, list)
            and all(isinstance(m, dict) and set(m) <= {"role", "content"} for m in conversation)
        )
        if not simple:
            return self.hf.apply_chat_template(conversation, **kwargs)
        text = self._render(conversation, bool(kwargs.get("add_generation_prompt", False)))
        if not kwargs.get("tokenize", True):
            return text
        ids = self._tk.encode(text, add_special_tokens=False).ids
        if not kwargs.get("return_dict", True):
            return ids
        return Encoding(input_ids=ids, attention_mask=[1] * len(ids))

    def _render(self, messages, add_generation_prompt: bool) -> str:
        if self._template is None:
            # NOTE: the environment transformers renders chat templates in (sandboxed,
            # trim_blocks/lstrip_blocks, loop controls, raise_exception, tojson), so
            # templates render to the same text.
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                from jinja2.exceptions import TemplateError

                raise TemplateError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, ensure_ascii=False, indent=indent, **kw)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.chat_template)
        specials = {name: getattr(self, name) for name in _SPECIAL if getattr(self, name) is not None}
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **specials)
