"""train_head on a tiny target: it learns (held-out acceptance goes up), resumes from its
checkpoint where it stopped, and exports a head file that loads against its target only."""

from __future__ import annotations

import json

import pytest
import torch

import sprinter_ext
from sprinter_ext.drafts.io import HeadTargetError, load_head
from sprinter_ext.drafts.train_head import export_head, train_head
from sprinter_ext.models.tiny import tiny_model


class _Tok:
    eos_token_id = 63

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 60 for c in text[:200]]


def _records(target, n, seed):
    from sprinter_ext.drafts.head_data import generate_batch

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(0, 60, (6,), generator=g).tolist()
        t = 0.0 if i % 2 == 0 else 1.0
        comp = generate_batch(target, [tuple(prompt)], 24, t, g, eos=None)[0]
        out.append({"index": i, "key": f"k{i}", "chat": False, "prompt": prompt, "completion": comp, "temperature": t})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("head")
    target = tiny_model("llama", vocab=64, layers=3, hidden=32, seed=2, scale=3.0)
    recs = _records(target, 48, 0)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    # evaluated on training records: this checks that optimisation works (held-out acceptance
    # on the real pair is bench/draft_heads.py's job)
    (d / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:8]))
    return d, target


def test_trains_resumes_and_exports(setup):
    d, target = setup
    kw = dict(layers=(0, 1, 2), vocab=48, steps=3, batch=4, max_len=40, lr=3e-3, total_steps=60,
              save_every=5, eval_every=10, teacher_dtype=torch.float32)
    first = train_head(target, _Tok(), d / "train.jsonl", d / "heldout.jsonl", d / "w", minutes=5,
                       **{**kw, "total_steps": 30}, seed=1)
    assert first["step"] == 30
    again = train_head(target, _Tok(), d / "train.jsonl", d / "heldout.jsonl", d / "w", minutes=5,
                       **{**kw, "total_steps": 60}, seed=1)
    assert again["step"] == 60 and len(again["log"]) == 6  # resumed: evals at 10..60, none repeated
    ce = [e["per_step"][0]["ce"] for e in again["log"]]
    assert ce[-1] < 0.9 * ce[0], ce  # the loss on the target's distribution goes down
    export_head(d / "w" / "checkpoint.safetensors", d / "head.safetensors", target, command="pytest")
    pair = sprinter_ext.load_pair(d / "head.safetensors", target)
    assert pair.draft_kind == "head"
    out = sprinter_ext.generate(pair, [1, 2, 3], method="sd", k=3, max_new_tokens=12, temperature=0, eos_token_id=None)
    ar = sprinter_ext.generate(pair, [1, 2, 3], method="ar", max_new_tokens=12, temperature=0, eos_token_id=None)
    assert out.tokens == ar.tokens
    with pytest.raises(HeadTargetError):
        load_head(d / "head.safetensors", tiny_model("llama", vocab=64, layers=3, hidden=32, seed=5))
    # a later session without the work directory starts from the exported head
    warm = train_head(target, _Tok(), d / "train.jsonl", d / "heldout.jsonl", d / "w2", minutes=5,
                      **{**kw, "total_steps": 10}, seed=1, init=d / "head.safetensors")
    assert warm["log"][0]["per_step"][0]["ce"] < ce[0]


def test_training_records_are_generated_whole_or_resumed(default_tokenizer, tmp_path):
    """train-verifier --records FILE makes FILE when it is missing: the target's continuations
    of an even spread of training-split prompts, written through FILE.partial (resumed) and
    renamed only when complete."""
    from sprinter_ext.drafts.head_data import generate_training_records, training_prompt_subset

    tok = default_tokenizer
    target = tiny_model("llama", vocab=len(tok), layers=1, hidden=16, seed=3)
    subset = training_prompt_subset(tok, 5)
    assert len(subset) == 5 and len({p.key for p in subset}) > 1
    assert any(p.chat for p in subset) and subset == training_prompt_subset(tok, 5)
    out = tmp_path / "recs.jsonl"
    # an interrupted run left one record behind: it is kept, the rest is made
    kept = {"index": 0, "key": subset[0].key, "chat": subset[0].chat, "prompt": list(subset[0].ids),
            "completion": [7, 7], "temperature": 0.0}
    out.with_suffix(".partial").write_text(json.dumps(kept) + "\n")
    recs = generate_training_records(target, tok, out, 5, max_new_tokens=3, batch=2)
    assert out.exists() and not out.with_suffix(".partial").exists()
    assert [r["prompt"] for r in recs] == [list(p.ids) for p in subset]
    assert recs[0]["completion"] == [7, 7] and all(1 <= len(r["completion"]) <= 3 for r in recs[1:])
    assert target.dtype == torch.float32  # generation left the target as it was
    with pytest.raises(ValueError, match="number of prompts"):
        training_prompt_subset(tok, 0)


def test_corpus_samples_extend_and_resume(tmp_path):
    """samples=N adds T=1 continuations s * len(prompts) + i of every prompt; raising N later
    keeps the records already made; a half-written last line is left for the next read."""
    from sprinter_ext.drafts.head_data import Prompt, generate_corpus
    from sprinter_ext.drafts.train_head import read_records

    target = tiny_model("llama", vocab=64, layers=1, hidden=16, seed=4)
    prompts = [Prompt(f"k{i}", tuple(range(1 + i, 6 + i)), False) for i in range(5)]
    path = tmp_path / "c.jsonl"
    one = generate_corpus(target, prompts, path, max_new_tokens=4, batch=2, seed=3)
    assert [r["index"] for r in one] == list(range(5))
    assert [r["temperature"] for r in one] == [0.0, 1.0, 0.0, 1.0, 0.0]
    three = generate_corpus(target, prompts, path, max_new_tokens=4, batch=2, seed=3, samples=3)
    assert [r["index"] for r in three] == list(range(15))
    assert three[:5] == one  # the earlier records are kept as they were
    assert all(r["temperature"] == 1.0 and r["prompt"] == list(prompts[r["index"] % 5].ids) for r in three[5:])
    assert len({tuple(r["completion"]) for r in three if r["index"] % 5 == 1}) > 1  # new samples differ
    assert generate_corpus(target, prompts, path, max_new_tokens=4, batch=2, seed=3, samples=3) == three
    with pytest.raises(ValueError, match="samples must be >= 1"):
        generate_corpus(target, prompts, tmp_path / "x.jsonl", samples=0)
    with path.open("a") as fh:
        fh.write('{"index": 99, "key"')  # a generation running alongside is mid-write
    assert sorted(read_records(path), key=lambda r: r["index"]) == three


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_teacher_rows_equal_the_full_teacher(seed):
    """teacher(rows=) runs the LM head on the wanted positions only: there it equals the full
    teacher (features everywhere), elsewhere it is 0 / -1."""
    from sprinter_ext.drafts.train_head import make_batch, teacher

    target = tiny_model("llama", vocab=64, layers=3, hidden=32, seed=seed, scale=3.0)
    g = torch.Generator().manual_seed(seed)
    recs = [{"prompt": torch.randint(0, 64, (int(n),), generator=g).tolist(),
             "completion": torch.randint(0, 64, (int(m),), generator=g).tolist()}
            for n, m in zip(torch.randint(1, 9, (3,), generator=g), torch.randint(1, 7, (3,), generator=g))]
    ids, valid = make_batch(recs, 12)
    rows = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], 1)
    d2t = torch.tensor([0, 3, 5, 9, 17, 40, 63])
    full = teacher(target, ids, (0, 2), d2t)
    part = teacher(target, ids, (0, 2), d2t, rows=rows)
    torch.testing.assert_close(part[0], full[0])
    for x, y in zip(full[1:], part[1:]):
        torch.testing.assert_close(y[rows], x[rows])
    assert bool((part[1][~rows] == 0).all()) and bool((part[2][~rows] == -1).all())


def test_cli_phases_refuse_what_they_cannot_do(tmp_path):
    """train-head --samples 0 is refused before anything is loaded; --phase train on a work
    directory without data says to generate it first."""
    from sprinter_ext.cli.train_head import main

    with pytest.raises(SystemExit, match="--samples must be >= 1"):
        main(["--work", str(tmp_path / "a"), "--samples", "0"])
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit, match="run with --phase data"):
        main(["--work", str(tmp_path / "b"), "--phase", "train"])
