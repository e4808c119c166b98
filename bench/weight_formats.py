"""Weight formats side by side on held-out chat prompts: do they keep fp32's tokens, and how fast.

    python bench/weight_formats.py [--prompts 12] [--tokens 64] [--threads 1,2] [--reps 5]

One run, default target (SmolLM2-135M-Instruct), native runner, every format built in the
same process and timed call by call in turn (A B C A B C ...), so machine drift hits all alike:

1. greedy agreement with fp32 (``weights="fp32"``): prompts whose `tokens` greedy tokens all
   equal fp32's, the mean matching prefix, and teacher-forced agreement (each format's argmax
   on fp32's own continuation, every position);
2. AR ms/token (a decode step at a context of ~100 tokens), at each thread count;
3. T(n)/T(1), n = 1..8: a forward over n tokens (a verification of n - 1 drafts) against one;
4. (``--methods``) each method's decode ms/token (a 1-token run, the prefill, subtracted) at
   the library's defaults (k=2, greedy, the default pair's draft head), median over the first
   ``--method-prompts`` prompts, against ar of the same format and against fp32's ar.

Formats: ``fp32``, ``gguf`` (the GGUF file's Q4_1 / Q8_0 blocks, float32 activations),
``f16`` and ``bf16`` (the linears and LM head stored in 16 bits, float32 activations) and, for
comparison, ``dtype=torch.bfloat16`` (the whole model in bf16). Writes
bench/results/weight_formats.json and .png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import sprinter_ext
from sprinter_ext import _native
from sprinter_ext.chat_prompts import chat_prompts
from sprinter_ext.cli.bench import environment, write_result
from sprinter_ext.prompts import encode_prompt

FORMATS = {"fp32": dict(weights="fp32"), "gguf": dict(weights="gguf"), "f16": dict(weights="f16"),
           "bf16": dict(weights="bf16"), "bf16 (dtype)": dict(dtype=torch.bfloat16)}


def argmaxes(runner, prompt: list[int], cont: list[int]) -> list[int]:
    """The runner's argmax at every position of `cont` given the prompt and cont's prefix."""
    runner.truncate(0)
    runner.prefill(prompt[:-1])
    ids = [prompt[-1]] + cont[:-1]
    out = []
    for i in range(0, len(ids), 8):  # 8 rows per forward: the fast path's small-n linears
        logits, _ = runner.extend(ids[i : i + 8])
        out += logits.argmax(-1).tolist()
    return out


def time_calls(fns: dict, reps: int) -> dict:
    """Median seconds of each fn, the fns called in turn `reps` times."""
    got = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            got[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in got.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--methods", default="ar,sd,ersd,sprinter", help="comma-separated; '' skips section 4")
    ap.add_argument("--method-prompts", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    pairs = {name: sprinter_ext.load_pair(**kw) for name, kw in FORMATS.items()}
    runners = {name: p.native_runner("target", 1024) for name, p in pairs.items()}
    tok = pairs["fp32"].tokenizer
    prompts = [encode_prompt(tok, m, chat=True) for m in chat_prompts(args.prompts)]

    # 1. agreement with fp32
    conts = {}
    for name, r in runners.items():
        conts[name] = []
        for p in prompts:
            r.truncate(0)
            last = r.prefill(p)[0]
            out = []
            for _ in range(args.tokens):
                out.append(int(last.argmax()))
                last = r.step(out[-1])[0]
            conts[name].append(out)
    quality = {}
    for name, r in runners.items():
        equal, prefix, agree, total = 0, [], 0, 0
        for p, ref, got in zip(prompts, conts["fp32"], conts[name]):
            m = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), len(ref))
            equal += m == len(ref)
            prefix.append(m)
            am = argmaxes(r, p, ref)
            agree += sum(a == b for a, b in zip(am, ref))
            total += len(ref)
        quality[name] = dict(all_equal=equal, prompts=len(prompts), mean_prefix=statistics.mean(prefix),
                             teacher_forced=agree / total, positions=total)  # fmt: skip

    # 2./3. timings at each thread count
    timing = {}
    ctx = prompts[0] + conts["fp32"][0][:40]
    for t in threads:
        torch.set_num_threads(t)
        for r in runners.values():
            r.truncate(0)
            r.prefill(ctx)
        base = len(ctx)

        def forward(r, n):
            def f():
                r.extend(list(range(100, 100 + n)))
                r.truncate(base)
            return f

        step = time_calls({k: forward(r, 1) for k, r in runners.items()}, args.reps * 4)
        # NOTE: every (format, n) in one round robin, so a burst of load on the shared cores
        # lands on all of them alike instead of on one n
        tn = time_calls({(k, n): forward(r, n) for n in range(1, 9) for k, r in runners.items()}, args.reps)
        rows = {k: {n: tn[k, n] for n in range(1, 9)} for k in runners}
        timing[t] = {k: dict(step_ms=step[k] * 1e3, t_n=rows[k], ratio_n={n: rows[k][n] / rows[k][1] for n in rows[k]})
                     for k in runners}  # fmt: skip

    # 4. methods at the defaults, every format, interleaved prompt by prompt
    methods = [m for m in args.methods.split(",") if m]
    torch.set_num_threads(threads[0])
    decoders = {(f, m): sprinter_ext.Decoder(pairs[f], m, eos_token_id=None) for f in pairs for m in methods}
    per_tok = {key: [] for key in decoders}
    for d in decoders.values():  # warm-up: runners built, caches allocated
        d.generate(prompts[0], max_new_tokens=4, seed=0)
    for i, p in enumerate(prompts[: args.method_prompts]):
        for key, d in decoders.items():
            # NOTE: decode time only: a 1-token run (the prefill, ATen's float32 GEMM in every
            # format but dtype=bf16) is subtracted from the full run
            t1 = d.generate(p, max_new_tokens=1, seed=i).stats["wall_s"]
            st = d.generate(p, max_new_tokens=args.tokens, seed=i).stats
            per_tok[key].append((st["wall_s"] - t1) / (st["new_tokens"] - 1))
    method_ms = {f: {m: statistics.median(per_tok[f, m]) * 1e3 for m in methods} for f in pairs}

    bytes_ = {k: r.linear_weight_bytes for k, r in runners.items()}
    print(f"\nweights formats | {_native._C.cpu_isa()} | {args.prompts} held-out chat prompts x {args.tokens} greedy tokens")
    print(f"{'format':14s} {'all equal':>9s} {'prefix':>7s} {'teacher':>8s} {'MB':>6s} " +
          " ".join(f"{f'{t}t ms':>8s} {'x fp32':>6s} {'x gguf':>6s}" for t in threads))  # fmt: skip
    for k in runners:
        q = quality[k]
        cells = " ".join(f"{timing[t][k]['step_ms']:8.1f} {timing[t][k]['step_ms'] / timing[t]['fp32']['step_ms']:6.2f} "
                         f"{timing[t][k]['step_ms'] / timing[t]['gguf']['step_ms']:6.2f}" for t in threads)  # fmt: skip
        print(f"{k:14s} {q['all_equal']:>4d}/{q['prompts']:<4d} {q['mean_prefix']:7.1f} {q['teacher_forced']:8.2%} "
              f"{bytes_[k] / 1e6:6.0f} {cells}")  # fmt: skip
    for t in threads:
        print(f"\nforward over n tokens, {t} thread(s): ms (T(n)/T(1))")
        print(f"{'format':14s} " + " ".join(f"{f'n={n}':>13s}" for n in range(1, 9)))
        for k in runners:
            tn, rn = timing[t][k]["t_n"], timing[t][k]["ratio_n"]
            print(f"{k:14s} " + " ".join(f"{tn[n] * 1e3:6.1f} ({rn[n]:4.2f})" for n in range(1, 9)))
    if methods:
        print(f"\nmethods at the defaults (k=2, greedy), {threads[0]} thread(s): decode ms/token (x ar of the format, x fp32 ar)")
        print(f"{'format':14s} " + " ".join(f"{m:>20s}" for m in methods))
        for f in pairs:
            ar = method_ms[f].get("ar")
            cells = []
            for m in methods:
                v = method_ms[f][m]
                rel = f"{v / ar:4.2f}" if ar else "   -"
                rel32 = f"{v / method_ms['fp32']['ar']:4.2f}" if "ar" in method_ms["fp32"] else "   -"
                cells.append(f"{v:7.1f} ({rel}, {rel32})")
            print(f"{f:14s} " + " ".join(f"{c:>20s}" for c in cells))
    result = dict(command="python " + " ".join(sys.argv), environment=environment(), isa=_native._C.cpu_isa(),
                  prompts=args.prompts, tokens=args.tokens, quality=quality, timing=timing, weight_bytes=bytes_,
                  methods_ms_per_token=method_ms, method_prompts=min(args.method_prompts, len(prompts)))  # fmt: skip
    path = write_result(result, args.out, "weight_formats.json")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(threads), figsize=(5 * len(threads), 3.5), squeeze=False)
        for ax, t in zip(axes[0], threads):
            for k in runners:
                ns = sorted(timing[t][k]["t_n"])
                ax.plot(ns, [timing[t][k]["t_n"][n] * 1e3 for n in ns], marker="o", label=k)
            ax.set(title=f"{t} thread(s)", xlabel="tokens per forward (n)", ylabel="ms")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=100)
        print(f"wrote {path.with_suffix('.png')}")
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
