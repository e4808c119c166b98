"""Prompts (str / ids / chat messages) and the incremental detokenizer.

A tiny random pair with the default pair's real tokenizer (vocab 49152, byte-level BPE
with a chat template) keeps these fast while exercising real multi-byte tokens.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError, SprinterError, TokenizerRequiredError
from sprinter_ext.prompts import IncrementalDetokenizer, encode_prompt

MSGS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tok(default_tokenizer):
    return default_tokenizer


@pytest.fixture(scope="module")
def chat_pair(tok, make_tiny_pair):
    """Tiny random models over the real tokenizer: random text, lots of multi-byte pieces."""
    return make_tiny_pair("llama", vocab=len(tok), tokenizer=tok, draft_scale=0.5, hidden=32)


def test_messages_use_the_chat_template(tok, chat_pair):
    ids = encode_prompt(chat_pair, MSGS)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert "What is the capital of France?" in text
    assert encode_prompt(tok, MSGS) == ids  # a tokenizer works as well as a pair
    assert encode_prompt(chat_pair, "What is the capital of France?", chat=True) == ids


def test_plain_str_is_a_chat_turn_when_a_template_exists(tok, chat_pair):
    raw = tok("Hello there", add_special_tokens=False).input_ids
    turn = encode_prompt(chat_pair, "Hello there", chat=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_prompt(chat_pair, "Hello there") == turn != raw  # the default: a user message
        assert encode_prompt(chat_pair, "Hello there", chat=False) == raw  # raw text on purpose
        assert encode_prompt(chat_pair, raw) == raw  # ids: as given
    dec = sprinter_ext.Decoder(chat_pair, "ar")
    assert dec.generate("Hello there", max_new_tokens=3).tokens == dec.generate(turn, max_new_tokens=3).tokens


def test_no_warning_without_a_template(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_prompt(tiny, [1, 2, 3]) == [1, 2, 3]
        assert encode_prompt(tiny, torch.tensor([4, 5])) == [4, 5]


@pytest.mark.parametrize(
    "prompt, chat, err, match",
    [
        ([], None, InvalidArgumentError, "empty"),
        ({"role": "user", "content": "hi"}, None, ArgumentTypeError, r"wrap the single message"),
        ([{"role": "user"}], None, InvalidArgumentError, "no 'content'"),
        ([{"content": "hi"}], None, InvalidArgumentError, "no 'role'"),
        ([{"role": "", "content": "hi"}], None, InvalidArgumentError, "non-empty str"),
        ([{"role": 3, "content": "hi"}], None, InvalidArgumentError, "non-empty str"),
        ([{"role": "user", "content": 5}], None, ArgumentTypeError, "'content' must be a str"),
        ([{"role": "user", "content": "hi"}, "x"], None, ArgumentTypeError, "message 1 must be a dict"),
        (MSGS, False, InvalidArgumentError, "chat=False"),
        ([1, 2], True, InvalidArgumentError, "chat=True needs a str"),
        ("hi", "yes", ArgumentTypeError, "chat must be"),
        ([1, "a"], None, ArgumentTypeError, "must contain ints"),
        (3.5, None, ArgumentTypeError, "prompt must be"),
    ],
)
def test_malformed_prompts_raise_named_errors(chat_pair, prompt, chat, err, match):
    with pytest.raises(err, match=match) as info:
        encode_prompt(chat_pair, prompt, chat=chat)
    assert isinstance(info.value, SprinterError)


def test_messages_need_a_tokenizer_with_a_template(tiny, chat_pair):
    with pytest.raises(TokenizerRequiredError):
        encode_prompt(tiny, MSGS)
    with pytest.raises(TokenizerRequiredError):
        encode_prompt(tiny, "text")
    no_template = type("T", (), {})()  # duck-typed tokenizer without a template
    no_template.decode = lambda ids, **kw: ""
    no_template.__len__ = None
    with pytest.raises(InvalidArgumentError, match="no chat template"):
        sprinter_ext.prompts.render_chat(no_template, MSGS)


def test_generate_and_stream_take_messages(chat_pair):
    dec = sprinter_ext.Decoder(chat_pair, "sd", temperature=0, k=3)
    a = dec.generate(MSGS, max_new_tokens=12, seed=1)
    ids = encode_prompt(chat_pair, MSGS)
    assert a.tokens == dec.generate(ids, max_new_tokens=12, seed=1).tokens
    assert list(dec.stream(MSGS, max_new_tokens=12, seed=1)) == a.tokens
    one = sprinter_ext.generate(chat_pair, "What is the capital of France?", chat=True, method="sd",
                                temperature=0, k=3, max_new_tokens=12, seed=1)  # fmt: skip
    assert one.tokens == a.tokens


def _pieces_equal_decode(tok, ids, chunks):
    d = IncrementalDetokenizer(tok)
    pieces, i = [], 0
    for n in chunks:
        pieces.append(d.push(ids[i : i + n]))
        i += n
    pieces.append(d.flush())
    want = tok.decode(ids, skip_special_tokens=True)
    assert "".join(pieces) == want
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in want
    return pieces


@pytest.mark.parametrize("text", ["naïve café 😀👍🏽 你好，世界！ مرحبا", "🎉🎉🎉 emoji only", "日本語のテキスト"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_detokenizer_across_multibyte_characters(tok, text, chunk):
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) > len(text.split())  # byte-level BPE splits these characters over tokens
    singles = [tok.decode([t]) for t in ids]
    assert any("\ufffd" in s for s in singles)  # ...so decoding token by token would break them
    pieces = _pieces_equal_decode(tok, ids, [chunk] * (len(ids) // chunk + 1))
    assert "".join(pieces) == text


def test_detokenizer_skips_special_tokens_and_random_ids(tok):
    ids = tok("<|im_start|>assistant\nHi 😀<|im_end|>", add_special_tokens=False).input_ids
    d = IncrementalDetokenizer(tok)
    assert d.push(ids) + d.flush() == "assistant\nHi 😀"
    d = IncrementalDetokenizer(tok, skip_special_tokens=False)
    assert d.push(ids) + d.flush() == "<|im_start|>assistant\nHi 😀<|im_end|>"
    gen = torch.Generator().manual_seed(7)
    for seed in range(3):  # random ids: invalid UTF-8 sequences must still add up
        ids = torch.randint(0, len(tok), (40,), generator=gen).tolist()
        _pieces_equal_decode(tok, ids, [1, 4, 2, 7, 3] * 6)
    with pytest.raises(ArgumentTypeError):
        IncrementalDetokenizer(tok).push(["a"])
    with pytest.raises(TokenizerRequiredError):
        IncrementalDetokenizer(None)


@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
def test_stream_text_equals_generate_text(chat_pair, method):
    dec = sprinter_ext.Decoder(chat_pair, method, temperature=1.0, k=3)
    for seed in (0, 1):
        res = dec.generate(MSGS, max_new_tokens=24, seed=seed)
        stats: dict = {}
        pieces = list(dec.stream(MSGS, max_new_tokens=24, seed=seed, text=True, stats=stats))
        assert all(isinstance(p, str) and p for p in pieces)
        assert "".join(pieces) == res.text
        assert stats["new_tokens"] == len(res.tokens)


def test_stream_text_needs_a_tokenizer(tiny):
    dec = sprinter_ext.Decoder(tiny, "ar")
    with pytest.raises(TokenizerRequiredError):
        dec.stream([1, 2], text=True)
    with pytest.raises(ArgumentTypeError):
        dec.stream([1, 2], text="yes")


def test_transformers_streamer_convention(chat_pair, capsys):
    from transformers import TextIteratorStreamer, TextStreamer

    dec = sprinter_ext.Decoder(chat_pair, "sd", temperature=1.0, k=3)
    res = dec.generate(MSGS, max_new_tokens=20, seed=3, streamer=TextStreamer(chat_pair.tokenizer, skip_prompt=True,
                                                                                skip_special_tokens=True))  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == res.text.rstrip("\n")
    it = TextIteratorStreamer(chat_pair.tokenizer, skip_prompt=True, skip_special_tokens=True)
    dec.generate(MSGS, max_new_tokens=20, seed=3, streamer=it)
    assert "".join(it) == res.text
    with pytest.raises(ArgumentTypeError, match="put"):
        dec.generate(MSGS, max_new_tokens=2, streamer=object())


@pytest.mark.parametrize("role", ["wizard", "tool", "developer"])
def test_unknown_chat_roles_are_named_errors(chat_pair, role):
    with pytest.raises(InvalidArgumentError, match=f"role '{role}' is not supported"):
        encode_prompt(chat_pair, [{"role": role, "content": "hi"}])
    for ok in ("system", "user", "assistant"):
        encode_prompt(chat_pair, [{"role": ok, "content": "hi"}])
