"""The default target's native fast forward over n tokens, timed from a given source tree: an
A/B of two builds of the C++ forward in alternating processes.

    git worktree add /tmp/old <commit> && (cd /tmp/old && python setup.py build_ext --inplace)
    for i in 1 2 3; do
        python bench/forward_ab.py --root /tmp/old --tag old --ctx 200 >> ab.jsonl
        python bench/forward_ab.py --root .        --tag new --ctx 200 >> ab.jsonl
    done
    python bench/forward_ab.py --summary ab.jsonl

Each run prints one JSON line: median ms of ``extend(n tokens)`` after ``--ctx`` cached tokens,
for n = 1..8, float32, 1 thread (bench/draft_length.py's ``forward_cost``). Two builds of ``sprinter_ext._C`` cannot share a process, and
this machine's speed drifts by 10-20% over minutes, so quote the medians over alternating runs
(``--summary``), not one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

NS = (1, 2, 3, 4, 5, 6, 8)


def run(root: str, tag: str, ctx: int, reps: int) -> dict:
    sys.path.insert(0, root)  # before anything imports sprinter_ext
    import torch

    import sprinter_ext
    from draft_length import forward_cost  # bench/ is the script's directory; the timing loop it uses

    torch.set_num_threads(1)
    cost = forward_cost(sprinter_ext.load_pair(verifier=False), NS, reps=reps, rounds=1, ctx=ctx)
    return dict(tag=tag, root=sprinter_ext.__file__, ctx=ctx, ms={n: c["ms"] for n, c in cost.items()})


def summary(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    for tag in dict.fromkeys(r["tag"] for r in rows):
        mine = [r for r in rows if r["tag"] == tag]
        med = {n: statistics.median(r["ms"][n] for r in mine) for n in mine[0]["ms"]}
        one = med[next(iter(med))]
        print(f"{tag:8s} ({len(mine)} runs) " + " ".join(f"n={n}: {v:.1f} ms ({v / one:.2f}x)" for n, v in med.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="source tree whose built sprinter_ext to time")
    ap.add_argument("--tag", default="new")
    ap.add_argument("--ctx", type=int, default=96, help="cached tokens before each forward")
    ap.add_argument("--reps", type=int, default=7, help="timed calls per n")
    ap.add_argument("--summary", default=None, help="a JSON-lines file of earlier runs: print medians per tag")
    args = ap.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return
    print(json.dumps(run(args.root, args.tag, args.ctx, args.reps)))


if __name__ == "__main__":
    main()
