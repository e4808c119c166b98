"""Draft kinds x prompt sets x temperature: tokens per target call and speed vs the target alone.

    python bench/drafts.py --prompts 8 --tokens 64 --temps 0,1

Each prompt runs every configuration in turn (interleaved: ar first, then each draft kind at
each k), on the native engine at 1 intra-op thread, through the chat template, on the
hand-written held-out chat and grounded prompt sets (sprinter_ext/chat_prompts.py). Each
configuration is one Decoder kept across the prompts (k="auto" keeps its estimates, the
suffix draft its global tree), built and warmed before timing. Speed-up = ar's wall time per
generated token over the configuration's, summed per set (sampled outputs differ from ar's
in length, so per token is the comparable unit; greedy outputs are ar's token for token). Prints a table, writes bench/results/drafts.json and
drafts.png (speed-up per configuration and the k="auto" cost profile).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

import sprinter_ext
from sprinter_ext.chat_prompts import chat_prompts, grounded_prompts

RESULTS = Path(__file__).parent / "results"


def _configs(spec: str):
    out = []
    for item in spec.split(","):
        draft, method, k = item.split(":")
        out.append((draft, method, k if k == "auto" else int(k)))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--temps", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--configs", default="head:sd:2,head:sd:auto,ngram:sd:auto,suffix:sd:4,suffix:sd:auto,"
                                         "head:ersd:auto,suffix:ersd:auto")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "drafts.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = _configs(args.configs)
    pairs = {d: sprinter_ext.load_pair(draft=d, weights=args.weights) for d in {c[0] for c in configs} | {"head"}}
    sets = {"chat": chat_prompts(args.prompts), "grounded": grounded_prompts(args.prompts)}
    temps = [float(t) for t in args.temps.split(",")]
    rows, profiles = [], {}
    for temp in temps:
        decs = {"ar": sprinter_ext.Decoder(pairs["head"], "ar", temperature=temp)}
        for c in configs:
            decs[c] = sprinter_ext.Decoder(pairs[c[0]], c[1], k=c[2], temperature=temp)
            if decs[c].cost is not None:
                profiles[f"{c[0]}"] = decs[c].cost.profile
        for d in decs.values():  # warm every Decoder once (allocations, first-call costs)
            d.generate(sets["chat"][0], max_new_tokens=4, seed=0)
        for set_name, prompts in sets.items():
            acc = {name: dict(wall=0.0, tokens=0, calls=0, equal=0) for name in decs}
            for i, p in enumerate(tqdm(prompts, desc=f"T={temp:g} {set_name}", leave=False)):
                ref = None
                for name, d in decs.items():
                    t0 = time.perf_counter()
                    r = d.generate(p, max_new_tokens=args.tokens, seed=i)
                    dt = time.perf_counter() - t0
                    a = acc[name]
                    a["wall"] += dt
                    a["tokens"] += len(r.tokens)
                    a["calls"] += r.stats["target_calls"]
                    if name == "ar":
                        ref = r.tokens
                    a["equal"] += r.tokens == ref
            ar_rate = acc["ar"]["wall"] / max(1, acc["ar"]["tokens"])
            for name, a in acc.items():
                label = "ar" if name == "ar" else f"{name[0]} {name[1]} k={name[2]}"
                # NOTE: per token: sampled outputs differ from ar's in length (EOS), so wall sums would not compare
                rows.append(dict(temperature=temp, set=set_name, config=label,
                                 speedup=ar_rate / (a["wall"] / max(1, a["tokens"])),
                                 tokens_per_call=a["tokens"] / max(1, a["calls"]), equal_to_ar=a["equal"],
                                 prompts=len(prompts), ms_per_token=1e3 * a["wall"] / max(1, a["tokens"])))  # fmt: skip
    print(f"\n{'T':>3} {'set':9} {'config':26} {'x ar':>6} {'tok/call':>8} {'=ar':>5} {'ms/tok':>7}")
    for r in rows:
        print(f"{r['temperature']:>3g} {r['set']:9} {r['config']:26} {r['speedup']:6.2f} {r['tokens_per_call']:8.2f} "
              f"{r['equal_to_ar']:>2}/{r['prompts']:<2} {r['ms_per_token']:7.1f}")  # fmt: skip
    try:
        from sprinter_ext import _native

        isa = _native._C.cpu_isa()
    except ImportError:
        isa = "none"
    result = dict(config=dict(vars(args), cpu_isa=isa, torch=torch.__version__), rows=rows,
                  profiles={k: dict(target_ms=v.target_ms, draft_ms=v.draft_ms) for k, v in profiles.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    _plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["config"] != "ar"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    labels = sorted({r["config"] for r in rows})
    groups = sorted({(r["temperature"], r["set"]) for r in rows})
    w = 0.8 / len(groups)
    for j, g in enumerate(groups):
        vals = [next((r["speedup"] for r in rows if (r["temperature"], r["set"]) == g and r["config"] == lab), 0)
                for lab in labels]  # fmt: skip
        ax.bar([i + j * w for i in range(len(labels))], vals, w, label=f"T={g[0]:g} {g[1]}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(labels))], labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speed-up vs ar (wall time)")
    ax.legend(fontsize=8)
    for name, prof in result["profiles"].items():
        t = prof["target_ms"]
        ax2.plot(range(1, len(t) + 1), [x / t[0] for x in t], marker="o", label=f"{name} pair")
    ax2.set_xlabel("tokens per target forward (n)")
    ax2.set_ylabel("T(n) / T(1)")
    ax2.set_title("k='auto' cost profile (target forward)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
