"""NativeModel (C++/ATen forward) vs ModelRunner (transformers forward): time per call.

    python bench/native_model.py [--threads 1] [--steps 300] [--ctx 32] [--max-len 256] [--skip-default]

For each model, both runners are prefilled with the same `ctx` random tokens, then
timed call by call, alternating blocks of 25 calls between the two so that machine
drift hits both alike: ``step(token)`` (one decode step) and ``extend(5 tokens)``
(one verification forward of 4 drafted tokens + 1), truncating back to `ctx` between
calls (untimed). Both attend over the whole static cache (max_len slots), so the cost
does not depend on the position. Models: a tiny random Llama (1 layer, hidden 64,
vocab 1000) where the host overhead dominates, and the default pair's SmolLM2-135M
target and draft. Reports the median with p20/p80 (ms) and the speed-up of the
medians; writes bench/results/native_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sprinter_ext  # noqa: E402
from sprinter_ext.cli.bench import cpu_name  # noqa: E402
from sprinter_ext.models.native import native_runner  # noqa: E402
from sprinter_ext.models.runner import ModelRunner  # noqa: E402
from sprinter_ext.models.tiny import tiny_model  # noqa: E402

BLOCK = 25  # calls per runner before switching to the other
EXTEND = 5


def quantiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return {"median_ms": statistics.median(xs) * 1e3, "p20_ms": pick(0.2) * 1e3, "p80_ms": pick(0.8) * 1e3, "n": len(xs)}


def time_calls(runners: dict, call, ctx: int, steps: int) -> dict:
    """Alternating blocks of `call(runner)`; each runner is truncated back to `ctx` before a call."""
    times = {name: [] for name in runners}
    for _ in range(2):  # warm-up
        for r in runners.values():
            r.truncate(ctx)
            call(r)
    while min(len(t) for t in times.values()) < steps:
        for name, r in runners.items():
            for _ in range(BLOCK):
                r.truncate(ctx)
                t0 = time.perf_counter()
                call(r)
                times[name].append(time.perf_counter() - t0)
    return {name: quantiles(t) for name, t in times.items()}


def bench_model(label: str, model, *, ctx: int, max_len: int, steps: int) -> dict:
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (ctx,), generator=g).tolist()
    draft = torch.randint(0, vocab, (EXTEND,), generator=g).tolist()
    runners = {"ModelRunner": ModelRunner(model, max_len=max_len), "NativeModel": native_runner(model, max_len=max_len)}
    for r in runners.values():
        r.prefill(prompt)
    out = {"model": label, "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
           "vocab": vocab, "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    for op, call in (("step", lambda r: r.step(draft[0])), (f"extend{EXTEND}", lambda r: r.extend(draft))):
        res = time_calls(runners, call, ctx, steps)
        res["speedup"] = res["ModelRunner"]["median_ms"] / res["NativeModel"]["median_ms"]
        out[op] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300, help="timed calls per runner and operation")
    ap.add_argument("--ctx", type=int, default=32, help="prompt length before the timed calls")
    ap.add_argument("--max-len", type=int, default=256, help="static cache size of both runners")
    ap.add_argument("--skip-default", action="store_true", help="only the tiny model")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "native_model.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cases = [("tiny-llama-l1-h64-v1000", tiny_model("llama", vocab=1000, layers=1, hidden=64, heads=4))]
    if not args.skip_default:
        pair = sprinter_ext.load_pair(draft="standalone")  # a draft LM: NativeModel runs it (a head has HeadRunner)
        cases += [("SmolLM2-135M target", pair.target), ("default draft", pair.draft)]
    rows = [bench_model(label, m, ctx=args.ctx, max_len=args.max_len, steps=args.steps) for label, m in cases]

    print(f"per-call wall time, ms (median [p20, p80]), {args.threads} thread(s), ctx {args.ctx}, max_len {args.max_len}")
    print(f"{'model':26s} {'op':8s} {'ModelRunner':>24s} {'NativeModel':>24s} {'speed-up':>9s}")
    for row in rows:
        for op in ("step", f"extend{EXTEND}"):
            cells = [f"{row[op][k]['median_ms']:7.3f} [{row[op][k]['p20_ms']:.3f}, {row[op][k]['p80_ms']:.3f}]"
                     for k in ("ModelRunner", "NativeModel")]
            print(f"{row['model']:26s} {op:8s} {cells[0]:>24s} {cells[1]:>24s} {row[op]['speedup']:8.2f}x")

    import transformers

    result = {
        "benchmark": "native_model",
        "command": "python bench/native_model.py " + " ".join(sys.argv[1:]),
        "device": "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version(), "sprinter_ext": sprinter_ext.__version__
                     if hasattr(sprinter_ext, "__version__") else None},
        "config": {"ctx": args.ctx, "max_len": args.max_len, "steps": args.steps, "block": BLOCK, "extend": EXTEND},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
