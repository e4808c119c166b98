"""How a draft head's acceptance grows with training: several heads, one held-out evaluation.

    python bench/head_learning_curve.py --head A.safetensors[:STEPS] --head B.safetensors[:STEPS] ...
        [--heldout FILE.jsonl] [--n 48] [--k 5]

Each head is evaluated by the trainer's own held-out evaluation
(``sprinter_ext.drafts.train_head.evaluate``: teacher-forced 1 - TV and greedy agreement per
draft position over the first `n` held-out records, and greedy tokens per target call at k
simulated on `n` / 2 greedy records) on the SAME records, so the points are comparable.
STEPS (default: the head file's ``training.steps``) is the head's total optimiser steps of
batch 8 x 320 tokens, counting the runs it was warm-started from.

Then a least-squares line in log2(steps) through the evaluated points says how many steps
the issue's acceptance goals (3.0 tokens per call at k=5 and temperature 0, 1 - TV >= 0.6 at
draft position 1 and averaged over the k positions) would take if the trend held; with the seconds per step of this machine (``--step-seconds``,
measured by the training run) that is CPU time. A log-linear trend is an optimistic reading
(learning curves flatten), so the figure is a lower bound on what the goals cost.

Held-out records default to the ones `python -m sprinter_ext train-head --phase data` would
write (same prompts, seed and length), generated once into the results folder's cache.
Prints a table, writes JSON and a PNG under $SPRINTER_EXT_CACHE/results (or --out FILE.json).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from sprinter_ext.cli.bench import default_out, environment, write_result

GOALS = {"tokens_per_call": 3.0, "accept_pos1": 0.6, "accept_mean": 0.6}  # accept_mean: over the k positions


def parse_head(spec: str) -> tuple[Path, int | None]:
    path, sep, steps = spec.rpartition(":")
    return (Path(path), int(steps)) if sep and steps.isdigit() else (Path(spec), None)


def heldout_records(path: Path | None, target, tok, n_prompts: int, max_new_tokens: int, seed: int) -> list[dict]:
    from sprinter_ext.data import split_documents
    from sprinter_ext.drafts.head_data import build_prompts, generate_corpus
    from sprinter_ext.drafts.train_head import read_records

    if path is None:  # train-head's held-out data: same prompts, seed and length
        path = default_out() / "cache" / f"head_heldout_{n_prompts}_{max_new_tokens}_{seed}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        _, held = split_documents()
        generate_corpus(target, build_prompts(tok, held)[:n_prompts], path, max_new_tokens=max_new_tokens,
                        batch=32, seed=seed, eos=tok.eos_token_id)
    return read_records(path)


def fit_log2(steps: list[int], values: list[float]) -> tuple[float, float] | None:
    """(a, b) of value = a + b * log2(steps), least squares; None with < 2 distinct steps."""
    xs = [math.log2(s) for s in steps]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(values) / len(values)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, values)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def steps_to(goal: float, fit) -> float | None:
    if fit is None or fit[1] <= 0:
        return None  # no upward trend: never, on this reading
    return 2 ** ((goal - fit[0]) / fit[1])


def plot(rows, fits, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "tokens_per_call", "tokens per target call (k=5, T=0)"),
                           (axes[1], "accept_pos1", "1 - TV, draft position 1 (T=1)")):
        xs = [r["steps"] for r in rows]
        ax.plot(xs, [r[key] for r in rows], "o", label="evaluated heads")
        fit = fits[key]
        goal = GOALS[key]
        if fit is not None:
            end = steps_to(goal, fit) or max(xs) * 4
            end = min(max(end, max(xs)) * 1.2, 1e7)
            grid = [min(xs) * (end / min(xs)) ** (i / 50) for i in range(51)]
            ax.plot(grid, [fit[0] + fit[1] * math.log2(g) for g in grid], "--", label="log-linear fit")
        ax.axhline(goal, color="tab:red", lw=1, label=f"goal {goal}")
        ax.set_xscale("log")
        ax.set_xlabel("optimiser steps (batch 8 x 320 tokens)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Default pair's draft head: held-out acceptance vs training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", action="append", required=True, help="head file, optionally :STEPS")
    ap.add_argument("--heldout", type=Path, default=None, help="held-out records (train-head's heldout.jsonl)")
    ap.add_argument("--heldout-prompts", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=112)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--n", type=int, default=48, help="held-out records evaluated per head")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--step-seconds", type=float, default=13.5,
                    help="seconds per training step on this machine (train-head's progress bar)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON path (default $SPRINTER_EXT_CACHE/results/head_learning_curve.json; the PNG beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sprinter_ext.drafts.io import load_head, read_header
    from sprinter_ext.drafts.train_head import evaluate
    from sprinter_ext.models.default_pair import load_default_target

    target, tok = load_default_target()
    target.eval().requires_grad_(False)
    held = heldout_records(args.heldout, target, tok, args.heldout_prompts, args.max_new_tokens, args.seed)
    rows = []
    for spec in args.head:
        path, steps = parse_head(spec)
        header = read_header(path)
        steps = steps or int(header["training"]["steps"])
        head = load_head(path, target)
        ev = evaluate(head, target, held, list(head.config.feature_layers), args.k, k=args.k, n=args.n)
        per = ev["per_step"]
        rows.append({"head": str(path), "steps": steps, "tokens_per_call": ev["tokens_per_call"],
                     "accept_pos1": per[0]["accept"], "accept_mean": sum(p["accept"] for p in per) / len(per),
                     "accept": [p["accept"] for p in per],
                     "greedy": [p["greedy"] for p in per]})
        accs = " ".join(f"{p['accept']:.3f}" for p in per)
        print(f"{path.name}: {steps} steps, tokens/call {ev['tokens_per_call']:.3f}, 1-TV {accs}", flush=True)
    rows.sort(key=lambda r: r["steps"])
    fits = {key: fit_log2([r["steps"] for r in rows], [r[key] for r in rows]) for key in GOALS}
    extrap = {}
    for key, goal in GOALS.items():
        need = steps_to(goal, fits[key])
        extrap[key] = {"goal": goal, "fit": fits[key], "steps": need,
                       "cpu_hours": None if need is None else need * args.step_seconds / 3600}

    print(f"\n{'steps':>7} {'tok/call':>9} {'1-TV pos1..' + str(args.k):<36} head")
    for r in rows:
        print(f"{r['steps']:>7} {r['tokens_per_call']:>9.3f} {' '.join(f'{a:.3f}' for a in r['accept']):<36} "
              f"{Path(r['head']).name}")
    for key, e in extrap.items():
        if e["steps"] is None:
            print(f"{key} -> {e['goal']}: no upward trend in these points")
        else:
            print(f"{key} -> {e['goal']}: ~{e['steps']:.3g} steps on the log-linear trend "
                  f"(~{e['cpu_hours']:.3g} h at {args.step_seconds} s/step, one core)")
    result = {"bench": "head_learning_curve", "environment": environment(), "args": vars(args) | {"heldout": str(args.heldout)},
              "records": len(held), "rows": rows, "extrapolation": extrap}
    path = write_result(result, args.out, "head_learning_curve.json")
    plot(rows, fits, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
