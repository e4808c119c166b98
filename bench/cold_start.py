"""Cold start of the cached default pair: N fresh processes, the median time of each phase.

    python bench/cold_start.py [--runs 5] [--threads 1] [--root DIR] [--label NAME]
                               [--out bench/results/cold_start.json]

Each run is a new ``python`` process that imports sprinter_ext, calls ``load_pair()``,
builds the default ``Decoder(pair, "sd")`` (native engine and runner on the CPU) and
takes the first streamed token of a str prompt. Phases (seconds, CLOCK_MONOTONIC,
which is one clock for all processes on Linux):

    startup      spawn -> first line of the child script (the interpreter itself)
    import       ``import sprinter_ext`` (lazy since this script was added: torch then loads in load_pair)
    load_pair    ``sprinter_ext.load_pair()``
    decoder      ``Decoder(pair, "sd")`` (builds the runners)
    first_token  prefill + the first round until its first token comes out
    to_load      spawn -> load_pair returned          (what a service waits before it can build Decoders)
    to_token     spawn -> first token                 (the user-visible cold start)
    cpu          user + system CPU seconds of the child up to the first token

CPU time is reported beside wall time because a shared machine moves wall time 2-4x.
``--root`` imports sprinter_ext from another checkout (e.g. an older commit, to
measure "before"); the pair must already be converted in the user cache (run
``python -c "import sprinter_ext; sprinter_ext.load_pair()"`` once). Writes JSON with
the command, machine and versions, and a PNG of the phases when matplotlib is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
t = {"start": time.monotonic()}
import sprinter_ext
t["import"] = time.monotonic()
pair = sprinter_ext.load_pair()
t["load_pair"] = time.monotonic()
dec = sprinter_ext.Decoder(pair, "sd")
t["decoder"] = time.monotonic()
first = next(iter(dec.stream(PROMPT, max_new_tokens=8, seed=0)))
t["first_token"] = time.monotonic()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"t": t, "cpu": ru.ru_utime + ru.ru_stime, "token": first, "engine": dec.engine,
                  "runner": dec.runner, "transformers_imported": "transformers" in sys.modules}))
"""
PROMPT = "The tide"
PHASES = ("startup", "import", "load_pair", "decoder", "first_token")


def one_run(root: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads)}
    code = CHILD.replace("PROMPT", repr(PROMPT))
    spawn = time.monotonic()
    # NOTE: cwd=root: `python -c` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the child process failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    t = res.pop("t")
    marks = [spawn, t["start"], t["import"], t["load_pair"], t["decoder"], t["first_token"]]
    res.update({p: b - a for p, a, b in zip(PHASES, marks, marks[1:])})
    res.update(to_load=t["load_pair"] - spawn, to_token=t["first_token"] - spawn)
    return res


def versions(root: Path) -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        out["sprinter_ext_commit"] = rev.stdout.strip() or None
    except OSError:
        out["sprinter_ext_commit"] = None
    return out


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = list(results)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(labels)))
    for i, label in enumerate(labels):
        left = 0.0
        for phase in PHASES:
            w = results[label]["median"][phase]
            ax.barh(i, w, left=left, label=phase if i == 0 else None, color=f"C{PHASES.index(phase)}")
            left += w
    ax.set_yticks(range(len(labels)), labels)
    ax.axvline(3.0, color="k", ls="--", lw=0.8)
    ax.set_xlabel("seconds from spawn to the first token (median of runs; dashed: the 3 s goal)")
    ax.legend(ncol=len(PHASES), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes to time (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children (default 1)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to import sprinter_ext from (default: this one)")
    ap.add_argument("--label", default=None, help="name of this measurement in the JSON (default: the commit)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start.json",
                    help="JSON file; an existing one keeps its other labels (default bench/results/cold_start.json)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1")

    vers = versions(args.root)
    label = args.label or vers["sprinter_ext_commit"] or "run"
    one_run(args.root, args.threads)  # warm the page cache and .pyc files; not counted
    runs = [one_run(args.root, args.threads) for _ in range(args.runs)]
    keys = PHASES + ("to_load", "to_token", "cpu")
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(f"{label}: {args.runs} fresh processes, OMP_NUM_THREADS={args.threads}, "
          f"engine {runs[0]['engine']}, runner {runs[0]['runner']}, "
          f"transformers imported: {runs[0]['transformers_imported']}")  # fmt: skip
    print(f"{'phase':<12} {'median s':>9} {'min s':>7} {'max s':>7}")
    for k in keys:
        vals = [r[k] for r in runs]
        print(f"{k:<12} {median[k]:9.2f} {min(vals):7.2f} {max(vals):7.2f}")

    results = json.loads(args.out.read_text()).get("results", {}) if args.out.is_file() else {}
    results[label] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "runs": runs,
        "median": median,
        "versions": vers,
        "threads": args.threads,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},  # fmt: skip
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"prompt": PROMPT, "phases": list(keys), "results": results}, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def _cpu_name():
    from sprinter_ext.cli.bench import cpu_name

    return cpu_name()


if __name__ == "__main__":
    main()
