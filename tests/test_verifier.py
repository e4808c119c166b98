"""The SPRINTER verifier: features, labels, training metrics, calibration, files."""

from __future__ import annotations

import math

import pytest
import torch

import sprinter_ext
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.sampling import SamplingSettings, probs
from sprinter_ext.verifier import Verifier, VerifierMismatchError, auc, collect, q_features, train_verifier


@pytest.fixture(scope="module")
def pair(make_tiny_pair):
    return make_tiny_pair("llama", vocab=96, draft_scale=0.5)


@pytest.fixture(scope="module")
def texts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 96, (int(torch.randint(20, 50, (1,), generator=g)),), generator=g).tolist()
            for _ in range(30)]  # fmt: skip


@pytest.fixture(scope="module")
def verifier(pair, texts):
    return train_verifier(pair, texts, epochs=8, progress=False, false_accept_rate=0.2)


def test_q_features_by_hand():
    q = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    f = q_features(q, torch.tensor([1]), ("q_token", "max_q", "entropy"))
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    torch.testing.assert_close(f, torch.tensor([[0.25, 0.5, h]]))
    with pytest.raises(ValueError, match="unknown verifier feature"):
        q_features(q, torch.tensor([1]), ("q_max",))


def test_linear_probe_and_validation():
    v = Verifier(16, hidden=())
    assert len(v.linears) == 1 and v.linears[0].in_features == 16
    with pytest.raises(ValueError, match="features"):
        Verifier(16, features=("entropy", "entropy"))
    with pytest.raises(ValueError, match="hidden"):
        Verifier(16, hidden=(0,))
    with pytest.raises(ValueError, match="threshold"):
        v.threshold = float("nan")


@pytest.mark.parametrize("rule", ["certain", "sampled", "greedy"])
def test_labels_follow_their_rule(pair, texts, rule):
    data = collect(pair, texts[:3], label=rule, progress=False)
    assert len(data) == sum(len(t) for t in texts[:3])
    # recompute the first text's labels directly from full forwards
    ids = torch.tensor([texts[0]])
    with torch.no_grad():
        q = probs(pair.draft(ids).logits[0], SamplingSettings())
        p = probs(pair.target(ids).logits[0], SamplingSettings())
    first = data.subset(torch.tensor([0]))
    if rule == "greedy":
        want = (q.argmax(-1) == p.argmax(-1)).float()
    else:
        qx = first.features[:, 0]  # q_token of the proposed token
        x = torch.stack([(q[i] == qx[i]).nonzero()[0, 0] for i in range(len(qx))])
        px = p.gather(-1, x[:, None])[:, 0]
        want = (qx <= px).float() if rule == "certain" else None
    if want is not None:
        assert torch.equal(first.label, want)
    assert set(data.label.unique().tolist()) <= {0.0, 1.0}


def test_starts_and_a_mix_of_settings(pair, texts):
    """starts: only continuation positions become examples; several settings concatenate."""
    t0, t1 = SamplingSettings(temperature=0.0), SamplingSettings(temperature=1.0)
    full = collect(pair, texts[:3], settings=t1, seed=5, progress=False)
    starts = [7, 1, 30]
    part = collect(pair, texts[:3], settings=t1, seed=5, starts=starts, progress=False)
    assert len(part) == sum(max(len(t) - (s - 1), 0) for t, s in zip(texts[:3], starts))
    for i, s in enumerate(starts):  # the same examples as the tail of the full collection
        a, b = full.subset(torch.tensor([i])), part.subset(torch.tensor([i]))
        torch.testing.assert_close(b.hidden, a.hidden[s - 1:])
        torch.testing.assert_close(b.label, a.label[s - 1:])
    zero = collect(pair, texts[:3], settings=t0, seed=5, progress=False)
    mix = collect(pair, texts[:3], settings=[t0, t1], seed=5, progress=False)
    torch.testing.assert_close(mix.label, torch.cat([zero.label, full.label]))
    torch.testing.assert_close(mix.features, torch.cat([zero.features, full.features]))
    greedy = collect(pair, texts[:3], label="greedy", seed=5, progress=False)
    torch.testing.assert_close(zero.label, greedy.label)  # certain at T=0 == argmax agreement


def test_training_reports_held_out_metrics(verifier, pair):
    m = verifier.meta["metrics"]
    assert {"accuracy", "auc", "precision", "recall", "false_accept_rate"} <= set(m)
    assert m["false_accept_rate"] <= 0.2 + 1e-9  # calibrated on the held-out texts
    assert verifier.meta["train_texts"] + verifier.meta["val_texts"] == 30
    assert verifier.meta["draft_hidden_size"] == 32 and verifier.meta["vocab_size"] == 96


def test_auc_against_brute_force():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 5, (60,), generator=g).float()  # many ties
    y = torch.randint(0, 2, (60,), generator=g).float()
    pos, neg = s[y > 0.5], s[y < 0.5]
    want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))
    assert math.isclose(auc(s, y), want, rel_tol=1e-12)


def test_save_load_round_trip(verifier, pair, tmp_path):
    path = tmp_path / "v.safetensors"
    verifier.save(path)
    v2 = Verifier.load(path, pair=pair)
    assert v2.threshold == verifier.threshold and v2.features == verifier.features
    z = torch.randn(4, 35)
    torch.testing.assert_close(v2.logit(z), verifier.logit(z))
    assert b"pickle" not in path.read_bytes()[:200]


def test_load_against_another_draft_fails(verifier, pair, tmp_path):
    path = tmp_path / "v.safetensors"
    verifier.save(path)
    other = tiny_model("llama", vocab=96, seed=999, layers=1)  # same shape, other weights
    with pytest.raises(VerifierMismatchError, match="trained for draft"):
        Verifier.load(path, draft=other)
    with pytest.raises(VerifierMismatchError, match="hidden size"):
        Verifier.load(path, draft=tiny_model("llama", vocab=96, hidden=48))
    with pytest.raises(VerifierMismatchError, match="vocabulary"):
        Verifier.load(path, draft=pair.draft, vocab_size=97)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        Verifier.load(bad)
    with pytest.raises(FileNotFoundError):
        Verifier.load(tmp_path / "missing.safetensors")


def test_same_draft_in_another_dtype_loads(verifier, pair, tmp_path):
    """The fingerprint names the weights' origin: the draft in bf16, rounded twice (its
    deltas added to a bf16 base), still matches; another model in bf16 still fails."""
    import copy

    path = tmp_path / "v.safetensors"
    verifier.save(path)
    draft16 = copy.deepcopy(pair.draft).to(torch.bfloat16)
    with torch.no_grad():  # a second rounding, as smol_draft's bf16 build does
        for p in draft16.parameters():
            p.add_(p * 2.0**-8)
    Verifier.load(path, draft=draft16)
    other16 = tiny_model("llama", vocab=96, seed=999, layers=1).to(torch.bfloat16)
    with pytest.raises(VerifierMismatchError, match="trained for draft"):
        Verifier.load(path, draft=other16)
    far = copy.deepcopy(pair.draft)
    with torch.no_grad():
        far.lm_head.weight.mul_(1.2)  # one tensor 20% off: not the same weights
    with pytest.raises(VerifierMismatchError, match="trained for draft"):
        Verifier.load(path, draft=far)


def test_default_pair_loads_in_bfloat16_with_its_verifier():
    pair = sprinter_ext.load_pair(dtype=torch.bfloat16)
    assert pair.target.dtype == torch.bfloat16 and pair.verifier is not None


def test_training_errors(pair, texts):
    with pytest.raises(ValueError, match="label rule"):
        train_verifier(pair, texts, label="maybe")
    with pytest.raises(ValueError, match="val_fraction"):
        train_verifier(pair, texts, val_fraction=1.0, progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        train_verifier(pair, ["some text", "more"], progress=False)


def test_verifier_modules_import_one_way():
    """io.py (the file format) and metrics.py import neither model.py nor train.py/labels.py
    at run time, so model.py can import them at the top: no import loop."""
    import ast
    from pathlib import Path

    import sprinter_ext.verifier as pkg

    root = Path(pkg.__file__).parent
    for name in ("io", "metrics"):
        tree = ast.parse((root / f"{name}.py").read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}  # fmt: skip
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only}  # fmt: skip
        assert not imported & {"model", "train", "labels"}, (name, imported)
