"""SPRINTER verifiers per temperature on held-out chat prompts (the default pair).

    python bench/verifier_temperatures.py [--prompts 24] [--max-new-tokens 96]
        [--verifier standalone=FILE ...] [--out DIR]

A verifier trained at one temperature can be out of its training distribution at another
(a standalone draft's q features are one-hot at temperature 0). This scores each verifier
on examples made separately at temperature 0 and 1, along the target's own greedy
continuations of held-out chat prompts (documents no verifier or draft trained on,
sprinter_ext.data's split), rendered through the target's chat template, with the
``certain`` labels (at temperature 0 they are greedy agreement). Every verifier of one draft
kind is scored on the same examples. Default verifiers: the default pair's own for the
standalone draft and for the head; add others with ``--verifier KIND=FILE``.

Prints a table (AUC, accuracy, false-accept rate, accept rate at each verifier's own
threshold) and writes verifier_temperatures.json under $SPRINTER_EXT_CACHE/results (or --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import sprinter_ext
from sprinter_ext.cli.bench import default_out, environment
from sprinter_ext.data import prompt_set
from sprinter_ext.drafts.head_data import generate_batch
from sprinter_ext.sampling import SamplingSettings
from sprinter_ext.verifier import Verifier, collect
from sprinter_ext.verifier.metrics import evaluate

KINDS = ("standalone", "head")


def parse_verifiers(items: list[str]) -> list[tuple[str, str, str]]:
    """[(kind, name, path)] from KIND=FILE items."""
    out = []
    for it in items:
        kind, sep, path = it.partition("=")
        if not sep or kind not in KINDS or not path:
            raise SystemExit(f"--verifier takes KIND=FILE with KIND in {KINDS}, got {it!r}")
        out.append((kind, Path(path).stem, path))
    return out


@torch.inference_mode()
def texts_and_starts(pair, n: int, n_new: int):
    prompts = prompt_set(pair, "chat", n)
    g = torch.Generator().manual_seed(0)  # greedy: unused
    texts, starts = [], []
    for p in prompts:
        c = generate_batch(pair.target, [tuple(p)], n_new, 0.0, g, eos=None)[0]
        texts.append(list(p) + c)
        starts.append(len(p))
    return texts, starts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--verifier", action="append", default=[], help="KIND=FILE, KIND in standalone|head (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    extra = parse_verifiers(args.verifier)
    torch.set_num_threads(args.threads)
    rows = []
    texts = starts = None
    for kind in KINDS:
        pair = sprinter_ext.load_pair(draft=kind)
        if texts is None:  # the same target continuations for both kinds
            texts, starts = texts_and_starts(pair, args.prompts, args.max_new_tokens)
        verifiers = [("default", pair.verifier)] + [(name, Verifier.load(path, pair=pair))
                                                    for k, name, path in extra if k == kind]  # fmt: skip
        for t in (0.0, 1.0):
            data = collect(pair, texts, label="certain", settings=SamplingSettings(t), starts=starts,
                           max_tokens=10_000, progress=False)  # fmt: skip
            for name, v in verifiers:
                m = evaluate(v, data)
                rows.append({"draft": kind, "verifier": name, "temperature": t, "examples": len(data),
                             "positive_rate": float(data.label.float().mean()), **m,
                             "trained_at": (v.meta or {}).get("temperatures")})  # fmt: skip
    cols = ("draft", "verifier", "temperature", "examples", "positive_rate", "auc", "accuracy", "false_accept_rate",
            "accept_rate", "threshold")  # fmt: skip
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    out = Path(args.out) if args.out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "verifier_temperatures.json"
    path.write_text(json.dumps({"environment": environment(), "args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
