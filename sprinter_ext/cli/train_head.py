"""``python -m sprinter_ext train-head``: train the default pair's draft head (resumable).

    python -m sprinter_ext train-head --work DIR [--minutes 60] [--export HEAD.safetensors]

1. Data (once, resumable): the target's own continuations of offline prompts
   (:mod:`sprinter_ext.drafts.head_data`: chat prompts through the target's chat template
   and plain text, from the training documents; evaluation prompts from held-out documents)
   into DIR/train.jsonl and DIR/heldout.jsonl. Token ids only.
2. Training (:func:`sprinter_ext.drafts.train_head.train_head`): the target's features are
   recomputed per batch; DIR/checkpoint.safetensors is written every --save-every steps, and
   rerunning the same command continues from it (training can span sessions).
3. ``--export FILE`` writes the checkpoint's head as a head file (safetensors + JSON header:
   the target's identity, layers, vocabulary map, data, metrics and this command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ._common import add_threads, run_threaded


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sprinter_ext train-head", description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="directory for the data, the checkpoint and the log")
    ap.add_argument("--minutes", type=float, default=60, help="wall-clock budget of this run's training")
    ap.add_argument("--layers", default="2,15,27", help="target layers whose input streams the head reads")
    ap.add_argument("--vocab", type=int, default=8192, help="draft vocabulary size")
    ap.add_argument("--steps", type=int, default=5, help="unrolled draft steps (training-time test)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=320)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--total-steps", type=int, default=3000, help="length of the cosine schedule")
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--max-new-tokens", type=int, default=112, help="continuation length in the data")
    ap.add_argument("--samples", type=int, default=1,
                    help="continuations per training prompt (sample 0: greedy or T=1 by prompt; more: T=1)")
    ap.add_argument("--heldout-prompts", type=int, default=96)
    ap.add_argument("--teacher-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the target copy that makes the training features and labels (evaluation: float32); "
                    "on CPU ATen's bfloat16 matmuls ran 5.5x slower than float32 here (8x320 tokens: 36 vs 6.5 s)")
    ap.add_argument("--phase", choices=("both", "data", "train"), default="both",
                    help="data: only generate DIR's data; train: only train on what DIR holds (a 'data' run "
                    "may still be adding records in another process); both: one then the other")
    ap.add_argument("--init", default=None, help="a head file to start from when DIR has no checkpoint yet")
    ap.add_argument("--export", default=None, help="write the checkpoint's head to this file and exit")
    add_threads(ap, pinned=True)
    return ap


def _body(args, argv) -> int:
    from ..data import split_documents
    from ..drafts.head_data import build_prompts, generate_corpus
    from ..drafts.train_head import export_head, train_head
    from ..models.default_pair import load_default_target

    if args.samples < 1:
        raise SystemExit(f"--samples must be >= 1 (continuations per training prompt), got {args.samples}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    target, tok = load_default_target()
    target.eval().requires_grad_(False)
    if args.export:
        # the command that trained it: this one without --export FILE
        rest, skip = [], False
        for a in argv or []:
            if skip or a == "--export" or a.startswith("--export="):
                skip = a == "--export"
                continue
            rest.append(a)
        export_head(work / "checkpoint.safetensors", args.export, target,
                    command="python -m sprinter_ext train-head " + " ".join(rest))
        print(f"wrote {args.export}")
        return 0
    if args.phase in ("both", "data"):
        # NOTE: the target generates in float32: on CPU, batched bfloat16 generation through
        # transformers ran ~6x slower than float32 (6 vs 35 tokens/s at batch 32, 2 threads)
        train, held = split_documents()
        generate_corpus(target, build_prompts(tok, held)[: args.heldout_prompts], work / "heldout.jsonl",
                        max_new_tokens=args.max_new_tokens, batch=32, seed=args.seed, eos=tok.eos_token_id)
        generate_corpus(target, build_prompts(tok, train), work / "train.jsonl",
                        max_new_tokens=args.max_new_tokens, batch=32, seed=args.seed, eos=tok.eos_token_id,
                        samples=args.samples)
    if args.phase == "data":
        return 0
    for name in ("train.jsonl", "heldout.jsonl"):
        if not (work / name).exists():
            raise SystemExit(f"{work / name} does not exist: run with --phase data (or both) first")
    train_head(target, tok, work / "train.jsonl", work / "heldout.jsonl", work, minutes=args.minutes,
               layers=[int(x) for x in args.layers.split(",")], vocab=args.vocab, steps=args.steps,
               batch=args.batch, max_len=args.max_len, lr=args.lr, total_steps=args.total_steps,
               save_every=args.save_every, eval_every=args.eval_every, seed=args.seed,
               teacher_dtype=getattr(torch, args.teacher_dtype), settings=vars(args), init=args.init)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_threaded(build_parser(), argv, lambda args: _body(args, argv))
