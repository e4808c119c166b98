"""SPRINTER verifier data and training for a draft head (drafts/verifier_data.py via verifier.collect):
the examples are what the head's runner gives the verifier while decoding, at every draft position."""

from __future__ import annotations

import pytest
import torch
from test_draft_head_engines import random_head

import sprinter_ext
from sprinter_ext import _rng
from sprinter_ext.drafts.runner import head_runner_factory
from sprinter_ext.errors import InvalidArgumentError
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings, probs
from sprinter_ext.verifier import VerifierMismatchError, collect, train_verifier
from sprinter_ext.verifier.model import FEATURES, q_features

STEPS = 3


@pytest.fixture(scope="module")
def pair():
    target = tiny_model("llama", vocab=64, layers=3, hidden=32, seed=9)
    head = random_head(target, (0, 2), list(range(0, 64, 3)) + [1, 5], seed=4, scale=0.3)
    return sprinter_ext.load_pair(head, target)


def _texts(n: int, length: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (length + (i % 3),), generator=g).tolist() for i in range(n)]


@pytest.mark.parametrize("label,temperature", [("certain", 1.0), ("sampled", 0.7), ("greedy", 0.0)])
def test_examples_are_what_the_runner_gives_while_decoding(pair, label, temperature):
    """Row for (draft position j, input p): the head runner after a round whose last target
    feature is at p - j, fed the text's tokens; its hidden state, q features and label."""
    text = _texts(1, 14, seed=1)[0]
    start = 5
    s = SamplingSettings(temperature=temperature)
    data = collect(pair, [text], label=label, settings=s, seed=3, starts=[start], steps=STEPS, progress=False)
    n = len(text)
    with torch.inference_mode():
        t_logits = pair.target(torch.tensor([text])).logits[0].float()
    rows = []
    for j in range(STEPS):
        for p in range(max(j, start - 2), n - 1):
            m = p - j + 1  # the target has run x_0 .. x_{m-1}; x_m came from its verification
            make = head_runner_factory(pair, "python")
            tr, hr = make("target", 64), make("draft", 64)
            tr.prefill(text[:m])
            logits, hidden = hr.prefill(text[:m + 1])
            for i in range(j):  # draft steps fed the text's tokens
                logits, hidden = hr.step(text[m + 1 + i])
            q = probs(logits[None].float(), s)
            pt = probs(t_logits[p + 1][None], s)
            pos = torch.tensor([p + 2])
            if label == "greedy":
                x = q.argmax(-1)
                y = float(x == pt.argmax(-1))
            else:
                x = _rng.race(q, 3, pos, _rng.Stream.DRAFT)
                qx, px = float(q[0, x]), float(pt[0, x])
                y = float(qx <= px) if label == "certain" else float(
                    float(_rng.uniform(3, pos, _rng.Stream.COIN, 1)[0, 0]) * qx < px)
            rows.append((hidden.float(), q_features(q, x, FEATURES)[0], y))
    assert len(data) == len(rows)
    for r, (h, f, y) in enumerate(rows):
        torch.testing.assert_close(data.hidden[r], h, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(data.features[r], f, atol=2e-5, rtol=1e-4)
        assert float(data.label[r]) == y, r
    assert (data.text_index == 0).all()


def test_a_mix_of_temperatures_concatenates_and_greedy_certain_is_agreement(pair):
    texts = _texts(4, 12, seed=2)
    t0, t1 = SamplingSettings(temperature=0.0), SamplingSettings(temperature=1.0)
    a = collect(pair, texts, settings=t0, seed=0, steps=2, progress=False)
    b = collect(pair, texts, settings=t1, seed=0, steps=2, progress=False)
    mix = collect(pair, texts, settings=[t0, t1], seed=0, steps=2, progress=False)
    assert len(mix) == len(a) + len(b)
    torch.testing.assert_close(mix.hidden, torch.cat([a.hidden, b.hidden]))
    torch.testing.assert_close(mix.label, torch.cat([a.label, b.label]))
    g = collect(pair, texts, label="greedy", settings=t1, seed=0, steps=2, progress=False)
    # at temperature 0 q and p are one-hot: q(x) <= p(x) iff the argmaxes agree
    torch.testing.assert_close(a.label, g.label)
    # the processed q features at T=0 are the one-hot ones (1, 1, 0): a verifier trained on
    # T=1 only would never have seen them; the mix has both
    assert torch.allclose(a.features, torch.tensor([1.0, 1.0, 0.0]).expand_as(a.features))
    assert not torch.allclose(b.features[:, 2], torch.zeros(len(b)))


def test_train_verifier_for_a_head_is_tied_to_it(pair):
    texts = _texts(12, 16, seed=3)
    v = train_verifier(pair, texts, hidden=(8,), features=("max_q",), epochs=2, steps=2,
                       settings=[SamplingSettings(temperature=0.0), SamplingSettings(temperature=1.0)],
                       progress=False)
    assert v.input_size == pair.draft.verifier_input_size
    assert v.meta["temperatures"] == [0.0, 1.0]
    out = sprinter_ext.generate(pair, [3, 4, 5], method="sprinter", verifier=v, max_new_tokens=12, seed=0,
                                eos_token_id=None)
    assert len(out.tokens) == 12
    other = random_head(pair.target, (0, 2), list(range(0, 64, 3)) + [1, 5], seed=99, scale=0.3)
    with pytest.raises(VerifierMismatchError):
        sprinter_ext.generate(sprinter_ext.load_pair(other, pair.target), [3, 4, 5], method="sprinter",
                              verifier=v, max_new_tokens=4)


def test_named_errors(pair):
    texts = _texts(2, 10, seed=4)
    with pytest.raises(InvalidArgumentError, match="settings"):
        collect(pair, texts, settings=[], progress=False)
    with pytest.raises(InvalidArgumentError, match="settings"):
        collect(pair, texts, settings=[0.0], progress=False)
    with pytest.raises(InvalidArgumentError, match="starts"):
        collect(pair, texts, starts=[1], progress=False)
    with pytest.raises(InvalidArgumentError, match="steps"):
        collect(pair, texts, steps=0, progress=False)
    with pytest.raises(InvalidArgumentError, match="nothing to learn"):
        collect(pair, texts, starts=[50, 50], progress=False)


def test_verifier_state_is_the_normed_output_and_the_raw_confidence(pair):
    head = pair.draft
    g = torch.randn(5, head.config.hidden_size, generator=torch.Generator().manual_seed(0))
    st = head.verifier_state(g)
    assert st.shape == (5, head.verifier_input_size) == (5, head.config.hidden_size + 2)
    torch.testing.assert_close(st[:, :-2], head.norm(g))
    p = torch.softmax(head.logits(g).float(), -1)
    torch.testing.assert_close(st[:, -2], p.max(-1).values)
    torch.testing.assert_close(st[:, -1], -(p * p.log()).sum(-1))
    # the runner hands exactly this to the verifier, whatever the sampling temperature
    make = head_runner_factory(pair, "python")
    tr, hr = make("target", 32), make("draft", 32)
    tr.prefill([1, 2, 3])
    logits, hidden = hr.prefill([1, 2, 3, 4])
    assert hidden.shape == (head.verifier_input_size,) and hr.hidden_size == head.verifier_input_size
    q = torch.softmax(logits.float(), -1)
    torch.testing.assert_close(hidden[-2], q.max(), atol=1e-6, rtol=1e-5)
