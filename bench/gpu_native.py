"""The native loop on a GPU: GPT-2 small (draft) and GPT-2 XL (target), random fp16 weights, batch 1.

Measures, in one run:
- AR ms/token of the native loop (CUDA-graph runners) against the weight-streaming floor,
  bytes(target weights) / measured device copy bandwidth (goal <= 1.2x the floor);
- host overhead = wall - device time, where device time is the number of forwards of each
  length times that forward's GPU time (CUDA events over back-to-back replays);
- SD and SPRINTER with forced acceptance patterns (draft == target: everything accepted;
  a verifier that accepts all or flags all), to time the loop itself;
- the reference engine on the same Decoder settings, for the ratio.

Writes bench/results/gpu_native.json. Without a GPU it says so, writes that, and exits 0.

    python bench/gpu_native.py [--tokens 64] [--k 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "gpu_native.json"


def gpt2(size: str, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    dims = {"small": (768, 12, 12), "xl": (1600, 48, 25)}[size]
    cfg = GPT2Config(n_embd=dims[0], n_layer=dims[1], n_head=dims[2], n_positions=1024)
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = GPT2LMHeadModel(cfg)
    return model.to(dtype).eval().requires_grad_(False)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    return 2 * nbytes * 10 / (start.elapsed_time(end) / 1e3)  # read + write, bytes/s


def device_ms(runner, n: int, reps: int = 20) -> float:
    """GPU time of one forward of n tokens (the captured graph when n is captured)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    runner.prefill(list(range(8)))
    times = []
    for _ in range(reps):
        runner.truncate(8)
        torch.cuda.synchronize()
        start.record()
        runner.extend(list(range(n))) if n > 1 else runner.step(1)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        result = dict(device=None, note="no GPU was available: nothing measured")
        OUT.write_text(json.dumps(result, indent=2))
        print("no GPU available: nothing measured (wrote bench/results/gpu_native.json)")
        return 0

    import sprinter_ext
    from sprinter_ext.verifier import Verifier

    dtype = torch.float16
    draft, target = gpt2("small", dtype), gpt2("xl", dtype)
    pair = sprinter_ext.load_pair(draft, target)
    same = sprinter_ext.load_pair(target, target)  # draft == target: every proposal accepted
    bw = copy_bandwidth()
    weight_bytes = sum(p.numel() * p.element_size() for p in target.parameters())
    floor_ms = 1e3 * weight_bytes / bw
    prompt = list(range(1, 33))
    rows = []

    def timed(name, p, method, engine, **kw):
        dec = sprinter_ext.Decoder(p, method, k=args.k, engine=engine, temperature=0.0, eos_token_id=None,
                                   max_length=256, **kw)  # fmt: skip
        dec.generate(prompt, max_new_tokens=8)  # warm-up (graphs were captured in the constructor)
        walls, stats = [], None
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = dec.generate(prompt, max_new_tokens=args.tokens)
            torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
            stats = res.stats
        wall = statistics.median(walls)
        row = dict(name=name, method=method, engine=engine, runner=dec.runner, ms_per_token=1e3 * wall / args.tokens,
                   target_calls=stats["target_calls"], draft_calls=stats["draft_calls"])  # fmt: skip
        if dec.runner == "native":
            t_run, d_run = dec._target.runner, dec._draft.runner if dec._draft is not None else None
            dev = stats["target_calls"] * device_ms(t_run, stats["target_fed"] // max(1, stats["target_calls"]))
            if d_run is not None and stats["draft_calls"]:
                dev += stats["draft_calls"] * device_ms(d_run, 1)
            row.update(device_ms=dev, host_overhead=max(0.0, 1 - dev / (1e3 * wall)))
        rows.append(row)
        print(row, file=sys.stderr)

    timed("ar", pair, "ar", "native")
    timed("ar", pair, "ar", "reference")
    timed("sd, all accepted", same, "sd", "native")
    timed("sd, all accepted", same, "sd", "reference")
    hidden = target.config.n_embd
    for name, thr in (("sprinter, verifier accepts all", -1.0), ("sprinter, verifier flags all", 2.0)):
        v = Verifier(hidden, hidden=()).to("cuda")
        timed(name, same, "sprinter", "native", verifier=v, threshold=thr, max_run=args.k)
    ar = next(r for r in rows if r["method"] == "ar" and r["engine"] == "native")
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, dtype=str(dtype),
                  copy_bandwidth_GBps=bw / 1e9, target_weight_GB=weight_bytes / 1e9, floor_ms_per_token=floor_ms,
                  ar_vs_floor=ar["ms_per_token"] / floor_ms, rows=rows,
                  command="python bench/gpu_native.py " + " ".join(argv or sys.argv[1:]))  # fmt: skip
    OUT.write_text(json.dumps(result, indent=2))
    print(f"{result['device']}: floor {floor_ms:.2f} ms/token, AR native {ar['ms_per_token']:.2f} "
          f"({result['ar_vs_floor']:.2f}x the floor)")  # fmt: skip
    for r in rows:
        print(f"| {r['name']} | {r['engine']} | {r['ms_per_token']:.2f} ms/token | "
              f"host overhead {r.get('host_overhead', float('nan')):.1%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
