"""SSD vs synchronous SD vs AR on the default pair (and the overlap this machine allows).

    python bench/ssd.py [--prompts 4] [--new-tokens 32] [--k 2 4] [--temperatures 1 0]
                        [--budget 4] [--threads 2] [--pair default|tiny] [--out bench/results/ssd.json]

One run, side by side, interleaved per prompt (every method sees the same load): ar, sd
(sync, `--threads` intra-op threads), sd with 1 thread, ssd engine="fused" (the draft on its
own pinned worker thread, 1 thread each side) with stop_early on and off, ssd engine="fused"
with Saguaro sampling (C = 0.5), and ssd engine="reference" (the schedule run sequentially).
Per config: median ms/token over prompts, ratio to sync SD, hit rate, mean accepted length,
seconds the target waited for the draft, draft time on the critical path, and whether ssd
(C = 1) gave sd's tokens. First, an overlap probe: a target verification forward and draft
steps alone and at the same time on two pinned threads (how parallel the hardware really
is). Writes JSON (device, versions, load average, config, command) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

import sprinter_ext
from sprinter_ext.data import heldout_prompts
from sprinter_ext.models.runner import ModelRunner

ROOT = Path(__file__).resolve().parent.parent

# name -> (method, Decoder options, intra-op threads (None: --threads))
VARIANTS = {
    "ar": ("ar", {}, None),
    "sd": ("sd", {}, None),
    "sd_1thread": ("sd", {}, 1),
    "ssd_fused": ("ssd", {"engine": "fused", "pin": True}, None),
    "ssd_fused_wait": ("ssd", {"engine": "fused", "stop_early": False, "pin": True}, None),
    "ssd_fused_c0.5": ("ssd", {"engine": "fused", "saguaro_c": 0.5, "pin": True}, None),
    "ssd_reference": ("ssd", {"engine": "reference"}, None),
}


def _median(xs):
    return statistics.median(xs) if xs else None


def overlap_probe(pair, k: int, reps: int = 8) -> dict:
    """Target forward over k+1 tokens and draft steps, alone and concurrently (1 thread each)."""
    prompt = list(range(100, 164))
    t_run, d_run = ModelRunner(pair.target, 128), ModelRunner(pair.draft, 128)
    t_run.prefill(prompt)
    d_run.prefill(prompt)
    n = len(prompt)

    def target_once():
        t_run.truncate(n)
        t_run.extend(list(range(200, 201 + k)))

    def draft_once():
        d_run.truncate(n)
        d_run.step(7)

    def timed(fn, m):
        fn()
        t0 = time.perf_counter()
        for _ in range(m):
            fn()
        return (time.perf_counter() - t0) / m

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone_t = statistics.median(timed(target_once, 1) for _ in range(reps))
        alone_d = statistics.median(timed(draft_once, 1) for _ in range(reps))
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        stop = threading.Event()
        steps = []

        def drafter():
            torch.set_num_threads(1)
            if len(cores) >= 2:
                os.sched_setaffinity(0, {cores[-1]})
            while not stop.is_set():
                t0 = time.perf_counter()
                draft_once()
                steps.append(time.perf_counter() - t0)

        aff = os.sched_getaffinity(0) if len(cores) >= 2 else None
        if aff:
            os.sched_setaffinity(0, set(cores[:-1]))
        th = threading.Thread(target=drafter)
        th.start()
        time.sleep(0.05)
        both_t = statistics.median(timed(target_once, 1) for _ in range(reps))
        stop.set()
        th.join()
        # the same, with a GIL-free load on the other core (large C++ matmuls, no Python
        # between them): if the target slows as much, the cost is the hardware, not the GIL
        stop2 = threading.Event()
        w, x = torch.randn(4096, 2048), torch.randn(1, 2048)

        def cpp_load():
            torch.set_num_threads(1)
            if len(cores) >= 2:
                os.sched_setaffinity(0, {cores[-1]})
            while not stop2.is_set():
                torch.nn.functional.linear(x, w)

        th = threading.Thread(target=cpp_load)
        th.start()
        time.sleep(0.05)
        cpp_t = statistics.median(timed(target_once, 1) for _ in range(reps))
        stop2.set()
        th.join()
        if aff:
            os.sched_setaffinity(0, aff)
    finally:
        torch.set_num_threads(prev)
    both_d = statistics.median(steps[1:]) if len(steps) > 1 else None
    # SSD's best case vs sync SD: every lookup hits (no drafting on the critical path) but the
    # target verifies at its concurrent speed; sync SD pays k draft steps + a verification alone.
    bound = (k * alone_d + alone_t) / both_t
    return dict(ssd_bound_vs_sd_all_hits=bound, k=k, target_verify_ms=1e3 * alone_t, draft_step_ms=1e3 * alone_d,
                target_verify_concurrent_ms=1e3 * both_t, target_verify_with_cpp_load_ms=1e3 * cpp_t,
                draft_step_concurrent_ms=1e3 * both_d if both_d else None,
                draft_steps_hidden_per_verify=both_t / both_d if both_d else None)  # fmt: skip


def run(pair, args) -> dict:
    ps = heldout_prompts(pair, args.prompts, args.prompt_tokens, args.seed)
    max_length = -(-(args.prompt_tokens + args.new_tokens + max(args.k) + 1) // 64) * 64
    rows = []
    for temp in args.temperatures:
        for k in args.k:
            decs = {}
            for name, (method, opts, _) in VARIANTS.items():
                kw = dict(opts, budget=args.budget) if method == "ssd" else dict(opts)
                decs[name] = sprinter_ext.Decoder(pair, method, k=k, temperature=temp, eos_token_id=None,
                                                  max_length=max_length, **kw)  # fmt: skip
            per = {name: [] for name in decs}
            for name, dec in decs.items():  # warm-up
                torch.set_num_threads(VARIANTS[name][2] or args.threads)
                dec.generate(ps[0][:8], max_new_tokens=4, seed=args.seed)
            for i, p in enumerate(ps):
                for name, dec in decs.items():
                    torch.set_num_threads(VARIANTS[name][2] or args.threads)
                    res = dec.generate(p, max_new_tokens=args.new_tokens, seed=args.seed + i)
                    per[name].append(res)
            torch.set_num_threads(args.threads)
            sd_ms = _median([1e3 * r.stats["wall_s"] / r.stats["new_tokens"] for r in per["sd"]])
            for name, rs in per.items():
                st = [r.stats for r in rs]
                ms = _median([1e3 * s["wall_s"] / s["new_tokens"] for s in st])
                lookups = sum(s.get("ssd_lookups", 0) for s in st)
                row = dict(temperature=temp, k=k, variant=name, ms_per_token=ms, vs_sd=sd_ms / ms,
                           mean_accepted=sum(s["accepted_tokens"] for s in st) / sum(s["rounds"] for s in st),
                           target_calls_per_token=sum(s["target_calls"] for s in st) / sum(s["new_tokens"] for s in st),
                           new_tokens=sum(s["new_tokens"] for s in st))  # fmt: skip
                if VARIANTS[name][0] == "ssd":
                    wall = sum(s["wall_s"] for s in st)
                    rounds = sum(s["rounds"] for s in st)
                    row.update(
                        hit_rate=sum(s["ssd_hits"] for s in st) / lookups if lookups else 0.0,
                        target_waited_frac=sum(s["target_waited_s"] for s in st) / wall,
                        jit_draft_frac=sum(s["jit_draft_s"] for s in st) / wall,
                        branches_per_round=sum(s["spec_branches"] for s in st) / rounds,
                        spec_draft_steps_per_round=sum(s["spec_draft_steps"] for s in st) / rounds,
                    )  # fmt: skip
                    if VARIANTS[name][1].get("saguaro_c", 1.0) == 1.0:
                        row["same_tokens_as_sd"] = sum(a.tokens == b.tokens for a, b in zip(rs, per["sd"])) / len(rs)
                rows.append(row)
                print(_fmt_row(row), flush=True)
    return dict(rows=rows, prompts=len(ps))


COLS = [("temperature", "t", "{:g}"), ("k", "k", "{}"), ("variant", "variant", "{}"),
        ("ms_per_token", "ms/tok", "{:.1f}"),
        ("vs_sd", "vs sync SD", "{:.2f}x"), ("hit_rate", "hit rate", "{:.2f}"), ("mean_accepted", "mean acc", "{:.2f}"),
        ("target_waited_frac", "target waited", "{:.0%}"), ("jit_draft_frac", "JIT draft", "{:.0%}"),
        ("branches_per_round", "branches/round", "{:.1f}"), ("same_tokens_as_sd", "= sd tokens", "{:.0%}")]  # fmt: skip


def _fmt_row(r: dict) -> str:
    return " | ".join(f.format(r[c]) if r.get(c) is not None else "-" for c, _, f in COLS)


def table(rows) -> str:
    head = " | ".join(h for _, h, _ in COLS)
    return "\n".join(["| " + head + " |", "|" + "---|" * len(COLS)] + ["| " + _fmt_row(r) + " |" for r in rows])


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["temperature"], r["k"]) for r in rows}, key=lambda c: (-c[0], c[1]))
    names = list(VARIANTS)
    fig, ax = plt.subplots(figsize=(11, 4))
    w = 0.8 / len(names)
    for j, name in enumerate(names):
        ys = [next((r["ms_per_token"] for r in rows if (r["temperature"], r["k"]) == c and r["variant"] == name), 0)
              for c in configs]  # fmt: skip
        ax.bar([i + j * w for i in range(len(configs))], ys, w, label=name)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(configs))], [f"t={t:g}, k={k}" for t, k in configs])
    ax.set_ylabel("ms / token (median over prompts)")
    ax.set_title("ssd vs sync sd vs ar, default pair, this CPU")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", choices=("default", "tiny"), default="default")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.0])
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the synchronous methods")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ssd.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.pair == "tiny":
        from sprinter_ext.models.tiny import tiny_pair

        pair = sprinter_ext.load_pair(*tiny_pair("llama", vocab=512, draft_scale=0.5))
    else:
        pair = sprinter_ext.load_pair(draft="standalone")  # threaded ssd needs a draft LM (a head runs inline)
    load0 = os.getloadavg()
    probe = [overlap_probe(pair, k) for k in args.k]
    for p in probe:
        print("overlap probe:", {k: round(v, 2) if isinstance(v, float) else v for k, v in p.items()}, flush=True)
    t0 = time.time()
    res = run(pair, args)
    print(table(res["rows"]))
    out = dict(
        command="python bench/ssd.py " + " ".join(sys.argv[1:] if argv is None else argv),
        device=dict(cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                    affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None),  # fmt: skip
        versions=dict(torch=torch.__version__, python=platform.python_version(), sprinter_ext=sprinter_ext.__version__),
        load_average_before=load0, load_average_after=os.getloadavg(), seconds=time.time() - t0,
        config=dict(pair=pair.name, prompts=res["prompts"], prompt_tokens=args.prompt_tokens,
                    new_tokens=args.new_tokens, k=args.k, temperatures=args.temperatures, budget=args.budget,
                    threads=args.threads, seed=args.seed),  # fmt: skip
        overlap_probe=probe,
        rows=res["rows"],
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    try:
        plot(res["rows"], path.with_suffix(".png"))
    except ImportError:
        pass
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
