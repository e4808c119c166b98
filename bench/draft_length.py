"""How many tokens to draft per round on this machine: sd at k = 1..K and lossless SPRINTER
(verify="all": the verifier only decides when to stop drafting) against ar, one run.

    python bench/draft_length.py [--draft head|standalone] [--prompts 8] [--max-new-tokens 48]
                                 [--ks 1,2,3,4,5] [--thresholds 0.9,0.8,0.7,0.6] [--max-run 6]

Why: a round of sd costs k draft steps plus one target forward over k + 1 tokens, and on a
CPU that forward is not free per extra token (it is compute- and not only weight-bound:
part 1 measures it), so with acceptance around one half the best k is small. Everything
below runs on held-out chat prompts through the target's chat template, the native engine,
one process, one thread, at temperature 0 and 1; every method is exact (sd, sprinter with
verify="all"), so only speed differs.

1. The target's forward over n = 1..8 tokens relative to one token (NativeModel, medians).
2. Per temperature: ar, sd at each k, sprinter verify="all" at each threshold:
   ms/token, x ar, tokens per target call.

Prints tables and writes JSON under $SPRINTER_EXT_CACHE/results (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from draft_heads import time_decoder  # bench/ is the script's directory (python bench/draft_length.py)
from tqdm.auto import tqdm

import sprinter_ext
from sprinter_ext.cli.bench import environment, write_result
from sprinter_ext.data import prompt_set
from sprinter_ext.models.runner import resolve_max_len


def forward_cost(pair, lengths=(1, 2, 3, 4, 5, 6, 8), reps=15, rounds=3, ctx=100):
    """Median time of a target forward over n tokens after a `ctx`-token prefix, / 1 token."""
    from sprinter_ext.models import native

    view = pair._view("target")
    r = native.native_runner(view, min(max(512, ctx + 64), resolve_max_len(view, None)))
    r.prefill(list(range(300, 300 + ctx)))
    times: dict[int, list[float]] = {n: [] for n in lengths}
    for _ in range(rounds):  # interleaved, so that a change of load hits every length alike
        for n in lengths:
            ts = []
            for _ in range(reps):
                L = r.length
                s = time.perf_counter()
                r.extend(list(range(500, 500 + n)))
                ts.append(time.perf_counter() - s)
                r.truncate(L)
            times[n].append(statistics.median(ts))
    one = statistics.median(times[lengths[0]])
    return {n: {"ms": 1e3 * statistics.median(v), "x_one": statistics.median(v) / one} for n, v in times.items()}


def end_to_end(pair, prompts, n_new, temperature, ks, thresholds, max_run):
    cases = [("ar", "ar", {})] + [(f"sd k={k}", "sd", {"k": k}) for k in ks]
    if pair.verifier is not None:
        cases += [(f"sprinter all @{t:g}", "sprinter", {"verify": "all", "threshold": t, "max_run": max_run})
                  for t in thresholds]
    rows = {}
    for name, method, opts in tqdm(cases, desc=f"T={temperature:g}"):
        dec = sprinter_ext.Decoder(pair, method, temperature=temperature, eos_token_id=None, engine="native", **opts)
        rows[name] = time_decoder(dec, prompts, n_new, warm_tokens=4)
    base = rows["ar"]["ms_per_token"]
    for r in rows.values():
        r["x_ar"] = base / r["ms_per_token"]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draft", choices=["head", "standalone"], default="head")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--ks", default="1,2,3,4,5")
    ap.add_argument("--thresholds", default="0.9,0.8,0.7,0.6")
    ap.add_argument("--max-run", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.ks.split(",") if x]
    thresholds = [float(x) for x in args.thresholds.split(",") if x]
    if not ks or min(ks) < 1:
        raise SystemExit("--ks: a comma-separated list of draft lengths >= 1")
    torch.set_num_threads(1)
    pair = sprinter_ext.load_pair(draft=args.draft)
    prompts = prompt_set(pair, "chat", args.prompts)
    result = {"environment": environment(), "args": vars(args), "forward_cost": forward_cost(pair), "end_to_end": {}}
    for temp in (0.0, 1.0):
        result["end_to_end"][f"T={temp:g}"] = end_to_end(pair, prompts, args.max_new_tokens, temp, ks, thresholds,
                                                         args.max_run)
    print("target forward over n tokens / one token: "
          + ", ".join(f"n={n}: {v['x_one']:.2f}x" for n, v in result["forward_cost"].items()))
    print(f"{'case':<6} {'method':<20} {'ms/token':>9} {'x ar':>6} {'tok/call':>9}")
    for key, rows in result["end_to_end"].items():
        for name, r in rows.items():
            print(f"{key:<6} {name:<20} {r['ms_per_token']:9.1f} {r['x_ar']:6.2f} {r['tokens_per_call']:9.2f}")
    write_result(result, args.out, f"draft_length_{args.draft}.json", indent=1)


if __name__ == "__main__":
    main()
