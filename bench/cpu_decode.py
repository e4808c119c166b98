"""CPU decode at the memory-bandwidth floor: the native model's fast path vs its op-for-op path.

    python bench/cpu_decode.py [--reps 5] [--threads 1,2] [--max-n 16] [--greedy-tokens 32]

One run, everything side by side on the default pair (SmolLM2-135M target + shipped draft):

1. per forward, T(n) for n = 1..max_n tokens (a step at n = 1, a verification of n - 1
   drafts otherwise), target and draft, float32 and bfloat16, old path (op for op,
   ``native_runner(fast=False)``) vs new path (``fast=True``: csrc/model/linear_cpu.h), at each
   thread count; the paths alternate call by call so machine drift hits both alike;
2. the floor of a decode step: weight bytes read per step / read bandwidth, the bandwidth
   measured in the same run by summing a 256 MiB float32 array;
3. greedy (temperature 0) tokens of the new path vs the old one over the benchmark's
   held-out prompts; a divergence is reported with the old path's top-1 - top-2 logit
   margin where it happened;
4. the greedy agreement of the bf16 target with the fp32 target on held-out text
   (teacher forced), which with the step times chooses the CPU default dtype.

NOTE on clocks: at 1 thread times are the calling thread's CPU time (time.thread_time),
which the other processes of a shared machine do not inflate by preempting us (they
still share the memory bus); at 2 threads wall time (the pool's workers are other
threads). Each number is the minimum over `reps` calls (the cost without interference
from the machine's other work; the medians are in the JSON too). Writes bench/results/cpu_decode.json
and bench/results/cpu_decode.png (ms vs n).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext.cli.bench import environment
from sprinter_ext.data import heldout_prompts
from sprinter_ext.models.native import native_runner

ROOT = Path(__file__).resolve().parent.parent

CTX = 32  # tokens in the cache before every timed forward


def clock(threads: int):
    return time.thread_time if threads == 1 else time.perf_counter


def read_bandwidth(threads: int, reps: int = 7) -> float:
    """Bytes per second of a sum over a 256 MiB float32 array (best of `reps`)."""
    a = torch.ones(64 << 20)
    clk = clock(threads)
    best = float("inf")
    for _ in range(reps):
        t0 = clk()
        a.sum()
        best = min(best, clk() - t0)
    return a.numel() * 4 / best


def step_bytes(model) -> int:
    """Weight bytes one decode step reads: every layer, the final norm and the head (the
    embedding table only through the head when tied; one row per token is noise)."""
    base = model.model
    params = {id(p): p for p in base.layers.parameters()}
    params.update({id(p): p for p in base.norm.parameters()})
    params.update({id(p): p for p in model.get_output_embeddings().parameters()})
    return sum(p.numel() * p.element_size() for p in params.values())


def time_forwards(runners: dict, ns, reps: int, threads: int) -> tuple[dict, dict]:
    """({path: {n: min seconds}}, {path: {n: median seconds}}) of extend(n tokens) after CTX
    cached tokens, the paths alternating call by call."""
    clk = clock(threads)
    out = {name: {} for name in runners}
    med = {name: {} for name in runners}
    for n in ns:
        toks = list(range(300, 300 + n))
        samples = {name: [] for name in runners}
        for rep in range(reps + 1):  # the first round is a warm-up
            for name, r in runners.items():
                r.truncate(CTX)
                t0 = clk()
                r.extend(toks)
                dt = clk() - t0
                if rep:
                    samples[name].append(dt)
        for name in runners:
            out[name][n] = min(samples[name])
            med[name][n] = statistics.median(samples[name])
    return out, med


def greedy_compare(model, prompts, new_tokens: int) -> dict:
    """Greedy tokens of the fast path vs the op-for-op path; divergences with their margin."""
    fast, exact = native_runner(model, fast=True), native_runner(model, fast=False)
    divergences, compared = [], 0
    for i, ids in enumerate(prompts):
        lf, _ = fast.prefill(ids)
        le, _ = exact.prefill(ids)
        for pos in range(new_tokens):
            tf, te = int(lf.argmax()), int(le.argmax())
            compared += 1
            if tf != te:
                top = le.topk(2).values
                divergences.append(dict(prompt=i, position=pos, fast=tf, exact=te,
                                        exact_margin=float(top[0] - top[1]),
                                        fast_minus_exact_logit_diff=float((lf - le).abs().max())))  # fmt: skip
                break  # the continuations differ from here on
            lf, _ = fast.step(tf)
            le, _ = exact.step(te)
    return dict(tokens_compared=compared, divergences=divergences)


def dtype_agreement(target32, target16, texts, window: int = 128, windows: int = 8) -> dict:
    """Teacher-forced greedy agreement of the bf16 target with the fp32 target on held-out text."""
    agree = total = 0
    with torch.inference_mode():
        for ids in texts[:windows]:
            x = torch.tensor([ids[:window]])
            a = target32(x).logits[0].argmax(-1)
            b = target16(x).logits[0].float().argmax(-1)
            agree += int((a == b).sum())
            total += a.numel()
    return dict(positions=total, agreement=agree / max(total, 1))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["model"], r["threads"]) for r in result["forwards"]})
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    for ax, (model, threads) in zip(axes[0], cells):
        for r in result["forwards"]:
            if (r["model"], r["threads"]) != (model, threads):
                continue
            ns = sorted(int(n) for n in r["ms"])
            ax.plot(ns, [r["ms"][str(n)] for n in ns], marker="o", ms=3,
                    ls="-" if r["path"] == "new" else "--", label=f"{r['dtype']} {r['path']}")  # fmt: skip
        ax.set_title(f"{model}, {threads} thread(s)")
        ax.set_xlabel("tokens per forward (n)")
        ax.set_ylabel("ms per forward")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timed calls per (path, n)")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--max-n", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts for the greedy comparison")
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--ns", default=None, help="comma-separated n values (default: 1..max-n)")
    ap.add_argument("--skip-quality", action="store_true", help="timings only (no greedy/agreement checks)")
    ap.add_argument("--tag", default="", help="suffix of the output files: cpu_decode{tag}.json/.png")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    ns = [int(n) for n in args.ns.split(",")] if args.ns else list(range(1, args.max_n + 1))
    if ns[0] != 1:
        ns = [1] + ns  # T(1) is the reference of every ratio
    threads_list = [int(t) for t in args.threads.split(",")]

    # the standalone draft LM: a NativeModel like the target (a head steps through HeadRunner)
    pair32 = sprinter_ext.load_pair(draft="standalone", verifier=False)
    pair16 = sprinter_ext.load_pair(draft="standalone", dtype=torch.bfloat16, verifier=False)
    pairs = {"float32": pair32, "bfloat16": pair16}
    result = dict(command="python bench/cpu_decode.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  environment=environment(), cpu_isa=_native._C.cpu_isa(), ctx=CTX, reps=args.reps,
                  forwards=[], floors=[], bandwidth_GBps={}, greedy={})  # fmt: skip

    for threads in threads_list:
        torch.set_num_threads(threads)
        bw = read_bandwidth(threads)
        result["bandwidth_GBps"][str(threads)] = bw / 1e9
        print(f"\n{threads} thread(s): read bandwidth {bw / 1e9:.1f} GB/s")
        for model_name in ("target", "draft"):
            for dtype, pair in pairs.items():
                model = getattr(pair, model_name)
                runners = {"old": native_runner(model, max_len=256, fast=False),
                           "new": native_runner(model, max_len=256, fast=True)}  # fmt: skip
                for r in runners.values():
                    r.prefill(list(range(100, 100 + CTX)))
                times, medians = time_forwards(runners, ns, args.reps, threads)
                floor = step_bytes(model) / bw
                for path, t in times.items():
                    ratios = {n: t[n] / t[1] for n in ns}
                    result["forwards"].append(dict(model=model_name, dtype=dtype, path=path, threads=threads,
                                                   ms={str(n): t[n] * 1e3 for n in ns},
                                                   median_ms={str(n): medians[path][n] * 1e3 for n in ns},
                                                   ratio={str(n): ratios[n] for n in ns}))  # fmt: skip
                    result["floors"].append(dict(model=model_name, dtype=dtype, path=path, threads=threads,
                                                 step_ms=t[1] * 1e3, floor_ms=floor * 1e3,
                                                 step_over_floor=t[1] / floor,
                                                 weight_MB=step_bytes(model) / 1e6))  # fmt: skip
                    shown = " ".join(f"{n}:{ratios[n]:.2f}" for n in ns if n in (2, 3, 4, 5, 8, 12, 16))
                    print(f"  {model_name:6} {dtype:8} {path}: step {t[1] * 1e3:6.1f} ms = "
                          f"{t[1] / floor:4.2f}x floor ({floor * 1e3:.1f} ms) | T(n)/T(1) {shown}")  # fmt: skip
                del runners

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"cpu_decode{args.tag}.json", out / f"cpu_decode{args.tag}.png"
    if args.skip_quality:
        json_path.write_text(json.dumps(result, indent=2))
        plot(result, png_path)
        print(f"wrote {json_path} and {png_path}")
        return 0
    torch.set_num_threads(threads_list[0])
    prompts = heldout_prompts(pair32, args.prompts, 48)
    for dtype, pair in pairs.items():
        g = greedy_compare(pair.target, prompts, args.greedy_tokens)
        result["greedy"][dtype] = g
        print(f"\ngreedy new vs old path, target {dtype}: {g['tokens_compared']} tokens, "
              f"{len(g['divergences'])} divergence(s) {g['divergences']}")  # fmt: skip
    from sprinter_ext.data import heldout_texts

    texts = [pair32.tokenizer(t, add_special_tokens=False).input_ids for t in heldout_texts()]
    texts = [ids for ids in texts if len(ids) >= 128][-8:]  # NOTE: the last ones: not the bench's prompts
    result["bf16_vs_fp32_agreement"] = dtype_agreement(pair32.target, pair16.target, texts)
    print(f"bf16 target vs fp32 target, greedy agreement on held-out text: {result['bf16_vs_fp32_agreement']}")

    json_path.write_text(json.dumps(result, indent=2))
    plot(result, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
