"""Every bad input to generate/Decoder raises a named error before generation starts."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import CacheOverflowError, NonFiniteLogitsError, TokenizerRequiredError
from sprinter_ext.models.tiny import tiny_model

P = [1, 2, 3]


@pytest.fixture(scope="module")
def pair():
    return sprinter_ext.load_pair(tiny_model("llama", vocab=64, seed=1), tiny_model("llama", vocab=64, seed=2))


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(method="beam"), ValueError, "unknown method"),
        (dict(method=3), ValueError, "unknown method"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=2.5), TypeError, "k must be an int"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_p=1.01), ValueError, "top_p"),
        (dict(top_k=-3), ValueError, "top_k"),
        (dict(engine="warp"), ValueError, "unknown engine"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(eos_token_id=64), ValueError, "eos_token_id"),
        (dict(verifier=None), TypeError, "takes no options"),
    ],
)
def test_bad_arguments(pair, kw, exc, match):
    with pytest.raises(exc, match=match) as info:
        sprinter_ext.generate(pair, P, **kw)
    # The README's promise: every argument error is a SprinterError and the builtin.
    assert isinstance(info.value, sprinter_ext.SprinterError)
    named = sprinter_ext.InvalidArgumentError if exc is ValueError else sprinter_ext.ArgumentTypeError
    assert isinstance(info.value, named)


@pytest.mark.parametrize(
    "prompt,exc,match",
    [
        ([], ValueError, "empty"),
        (torch.tensor([], dtype=torch.long), ValueError, "empty"),
        ([1, 64], ValueError, r"\[0, 64\)"),
        ([1, -1], ValueError, r"\[0, 64\)"),
        ([1.0, 2.0], TypeError, "ints"),
        (torch.tensor([[1, 2]]), TypeError, "1-D"),
        (torch.tensor([1.0]), TypeError, "integer"),
        (3, TypeError, "prompt must be"),
        ("text", TokenizerRequiredError, "tokenizer"),
    ],
)
def test_bad_prompts(pair, prompt, exc, match):
    with pytest.raises(exc, match=match):
        sprinter_ext.generate(pair, prompt)


def test_prompt_longer_than_the_cache(pair):
    dec = sprinter_ext.Decoder(pair, "sd", k=4, max_length=32)
    with pytest.raises(CacheOverflowError, match="exceeds the static KV cache"):
        dec.generate(list(range(30)), max_new_tokens=8)
    assert dec.generate(list(range(10)), max_new_tokens=8).tokens  # still usable after the refusal


def test_non_finite_logits_stop_without_output():
    target = tiny_model("llama", vocab=64, seed=2)
    with torch.no_grad():
        target.lm_head.weight[7].fill_(float("nan"))
    pair = sprinter_ext.load_pair(tiny_model("llama", vocab=64, seed=1), target)
    for method in ("ar", "sd", "ersd"):
        with pytest.raises(NonFiniteLogitsError, match="NaN/inf"):
            sprinter_ext.generate(pair, P, method=method, max_new_tokens=8)
    stream = sprinter_ext.Decoder(pair, "ar").stream(P, max_new_tokens=8)
    with pytest.raises(NonFiniteLogitsError):
        next(stream)


def test_pair_must_be_a_model_pair():
    with pytest.raises(TypeError, match="ModelPair"):
        sprinter_ext.Decoder(object(), "ar")
