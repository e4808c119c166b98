"""1 intra-op thread vs every core, for ar and sd on the default pair, side by side.

``python bench/threads.py [--prompts 4 --max-new-tokens 32 --repeats 3]``: for every
(prompt, repeat) the four cells (ar/sd x 1/all threads) run back to back, so the load of
a shared machine hits them alike; prints median ms/token with p20/p80 and writes
bench/results/threads.{json,png}. This is what chose sprinter_ext._threads.DEFAULT_THREADS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import sprinter_ext
from sprinter_ext._threads import available_cpus
from sprinter_ext.cli.bench import environment
from sprinter_ext.data import heldout_prompts

OUT = Path(__file__).parent / "results"


def _q(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts (48 tokens each)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens per generation")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the prompts")
    ap.add_argument("--methods", default="ar,sd", help="comma-separated methods")
    ap.add_argument("--out", default=str(OUT), help="directory for threads.json / threads.png")
    args = ap.parse_args(argv)
    pair = sprinter_ext.load_pair()
    ps = heldout_prompts(pair, args.prompts, 48)
    counts = sorted({1, available_cpus()})
    methods = [m for m in args.methods.split(",") if m]
    decs = {m: sprinter_ext.Decoder(pair, m, k=4, temperature=1.0, eos_token_id=None, max_length=128) for m in methods}
    prev = torch.get_num_threads()
    cells: dict[str, list[float]] = {}
    load = []
    try:
        for d in decs.values():
            d.generate(ps[0][:8], max_new_tokens=4)
        for rep in range(args.repeats):
            for i, p in enumerate(ps):
                load.append(os.getloadavg()[0])
                for m in methods:
                    for n in counts:
                        torch.set_num_threads(n)
                        t0 = time.perf_counter()
                        res = decs[m].generate(p, max_new_tokens=args.max_new_tokens, seed=i)
                        ms = 1e3 * (time.perf_counter() - t0) / len(res.tokens)
                        cells.setdefault(f"{m}/{n}", []).append(ms)
                print(f"pass {rep + 1}/{args.repeats}, prompt {i + 1}/{len(ps)}", file=sys.stderr)
    finally:
        torch.set_num_threads(prev)
    rows = []
    for key, xs in cells.items():
        m, n = key.split("/")
        rows.append(dict(method=m, threads=int(n), median_ms_per_token=statistics.median(xs), p20=_q(xs, 0.2),
                         p80=_q(xs, 0.8), samples=xs))  # fmt: skip
    for r in rows:
        one = next(x for x in rows if x["method"] == r["method"] and x["threads"] == 1)
        r["vs_1_thread"] = one["median_ms_per_token"] / r["median_ms_per_token"]
    print("| method | threads | ms/token (median) | p20-p80 | speed vs 1 thread |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['threads']} | {r['median_ms_per_token']:.1f} | {r['p20']:.1f}-{r['p80']:.1f} "
              f"| {r['vs_1_thread']:.2f}x |")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    result = dict(rows=rows, load_avg_1min=load, environment=env, config=vars(args),
                  command="python bench/threads.py " + " ".join(sys.argv[1:] if argv is None else argv))  # fmt: skip
    (out / "threads.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for j, m in enumerate(methods):
            for n in counts:
                xs = cells[f"{m}/{n}"]
                ax.scatter([j * (len(counts) + 1) + counts.index(n)] * len(xs), xs, s=12, label=f"{m}, {n} thread(s)")
        ax.set_ylabel("ms/token")
        ax.set_xticks([])
        ax.set_title(f"batch-1 decode, default pair, {available_cpus()} CPUs, shared")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "threads.png", dpi=120)
    except ImportError:
        pass
    print(f"wrote {out / 'threads.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
