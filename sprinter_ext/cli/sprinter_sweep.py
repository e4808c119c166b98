"""SPRINTER's speed/fidelity frontier: a threshold sweep on held-out prompts, in one run.

``python -m sprinter_ext sprinter-sweep`` (see ``--help``). Per threshold:
ms/token (median over prompts), speed-up vs SD and vs AR (measured in the same
run, same prompts and seeds), target calls/token, mean run length, FLOPs/token
relative to SD, and fidelity: the target's mean NLL/token (temperature 1) on the
sampled outputs vs SD's outputs (SD is lossless: its NLL is the target's own), and
ROUGE-L of greedy SPRINTER outputs against greedy target outputs. Writes JSON and a
PNG of the frontier under bench/results/.

``--draft head`` (the default) sweeps the default pair's draft head with its verifier, ``--draft
standalone`` its standalone draft LM; ``--prompt-set
chat`` uses held-out chat prompts rendered through the target's chat template (the default
target is an Instruct model) instead of raw held-out text. The NLL comparison carries a 95%
confidence interval over prompts (paired by prompt: the mean per-prompt difference to SD,
relative to SD's mean, with a normal interval).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

from .. import Decoder
from ..data import prompt_set as heldout_prompt_set
from ..flops import generation_flops
from .bench import environment

__all__ = ["main", "sweep", "target_nll", "rouge_l"]

DEFAULT_THRESHOLDS = (1.01, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)


@torch.inference_mode()
def target_nll(pair, prompt: list[int], tokens: list[int]) -> float:
    """Mean NLL/token of `tokens` after `prompt` under the target's raw (T=1) distribution."""
    ids = torch.tensor([prompt + tokens], device=pair.device)
    logp = torch.log_softmax(pair.target(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
    return float(-logp.gather(-1, torch.tensor(tokens, device=pair.device)[:, None]).mean())


class _IdTokenizer:
    """rouge-score tokenizer over space-joined token ids."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


def rouge_l(tokens: list[int], reference: list[int]) -> float:
    """ROUGE-L F1 (rouge-score) over model token ids.

    NOTE: on ids, not decoded text: rouge-score's text tokenizer drops everything
    but [a-z0-9], so an output of newlines or punctuation would score 0 against itself.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_IdTokenizer())
    return scorer.score(" ".join(map(str, reference)), " ".join(map(str, tokens)))["rougeL"].fmeasure


def _run(dec: Decoder, pair, prompts, n, seed, greedy_dec: Decoder | None):
    ms, calls, drafts, rounds, flops, nll, toks, greedy = [], 0, 0, 0, 0, [], 0, []
    for i, p in enumerate(prompts):
        r = dec.generate(p, max_new_tokens=n, seed=seed + i)
        s = r.stats
        ms.append(1e3 * s["wall_s"] / s["new_tokens"])
        calls += s["target_calls"]
        drafts += s["draft_tokens"]
        rounds += s["rounds"]
        flops += generation_flops(pair, s)
        toks += s["new_tokens"]
        nll.append(target_nll(pair, p, r.tokens))
        if greedy_dec is not None:
            greedy.append(greedy_dec.generate(p, max_new_tokens=n, seed=seed + i).tokens)
    return dict(ms_per_token=statistics.median(ms), target_calls_per_token=calls / toks,
                mean_run_length=drafts / max(1, rounds), flops_per_token=flops / toks,
                nll_per_token=statistics.mean(nll), nll_per_prompt=nll), greedy  # fmt: skip


def nll_vs_sd(row: dict, sd: dict) -> tuple[float, float, float]:
    """(percent, 95% low, 95% high): the mean per-prompt NLL difference to SD relative to SD's
    mean NLL (prompts paired; normal interval, which needs >= 2 prompts)."""
    d = [a - b for a, b in zip(row["nll_per_prompt"], sd["nll_per_prompt"])]
    base = statistics.mean(sd["nll_per_prompt"])
    mean = statistics.mean(d)
    half = 1.96 * statistics.stdev(d) / len(d) ** 0.5 if len(d) >= 2 else float("nan")
    return 100.0 * mean / base, 100.0 * (mean - half) / base, 100.0 * (mean + half) / base


def sweep(pair, *, thresholds=DEFAULT_THRESHOLDS, prompts=4, prompt_tokens=48, max_new_tokens=32, k=4,
          max_run=20, seed=0, prompt_set="raw", progress=True) -> dict:  # fmt: skip
    from tqdm.auto import tqdm

    ps = heldout_prompt_set(pair, prompt_set, prompts, prompt_tokens, seed)
    common = dict(eos_token_id=None)
    configs = [("ar", "ar", {}), ("sd", "sd", {"k": k})]
    configs += [(f"sprinter@{t:g}", "sprinter", {"threshold": t, "max_run": max_run}) for t in thresholds]
    base = {}
    rows = []
    for name, method, opts in tqdm(configs, desc="sprinter sweep", disable=not progress, file=sys.stderr):
        dec = Decoder(pair, method, temperature=1.0, **opts, **common)
        gdec = Decoder(pair, method, temperature=0.0, **opts, **common)
        dec.generate(ps[0][:8], max_new_tokens=4, seed=seed)  # warm-up
        row, greedy = _run(dec, pair, ps, max_new_tokens, seed, gdec)
        row["method"] = name
        if method == "sprinter":
            row["threshold"] = opts["threshold"]
        if name == "ar":
            base["greedy_tokens"] = greedy
        rows.append(row)
        base[name] = row
        row["rouge_l_vs_greedy_target"] = statistics.mean(
            rouge_l(t, ref) for t, ref in zip(greedy, base["greedy_tokens"])
        )
    sd, ar = base["sd"], base["ar"]
    for r in rows:
        r["speedup_vs_sd"] = sd["ms_per_token"] / r["ms_per_token"]
        r["speedup_vs_ar"] = ar["ms_per_token"] / r["ms_per_token"]
        r["flops_vs_sd"] = r["flops_per_token"] / sd["flops_per_token"] if sd["flops_per_token"] else None
        r["nll_vs_sd_pct"], lo, hi = nll_vs_sd(r, sd)
        r["nll_vs_sd_pct_ci95"] = [lo, hi]
    config = dict(pair=pair.name, draft=pair.draft_kind, prompt_set=prompt_set, prompts=len(ps),
                  prompt_tokens=prompt_tokens if prompt_set == "raw" else None, max_new_tokens=max_new_tokens,
                  k=k, max_run=max_run, seed=seed, verifier=dict(pair.verifier.meta) if pair.verifier else None,
                  verifier_threshold=pair.verifier.threshold if pair.verifier else None)  # fmt: skip
    return {"rows": rows, "config": config}


def format_table(rows) -> str:
    head = ["method", "ms/token", "vs SD", "vs AR", "target calls/tok", "run length", "FLOPs vs SD",
            "NLL/tok", "NLL vs SD (95% CI)", "ROUGE-L"]  # fmt: skip
    body = [[r["method"], f"{r['ms_per_token']:.1f}", f"{r['speedup_vs_sd']:.2f}x", f"{r['speedup_vs_ar']:.2f}x",
             f"{r['target_calls_per_token']:.3f}", f"{r['mean_run_length']:.2f}",
             f"{r['flops_vs_sd']:.2f}" if r["flops_vs_sd"] else "-", f"{r['nll_per_token']:.3f}",
             f"{r['nll_vs_sd_pct']:+.1f}% [{r['nll_vs_sd_pct_ci95'][0]:+.1f}, {r['nll_vs_sd_pct_ci95'][1]:+.1f}]",
             f"{r['rouge_l_vs_greedy_target']:.3f}"] for r in rows]  # fmt: skip
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    sp = [r for r in rows if "threshold" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "nll_vs_sd_pct", "target NLL/token vs SD (%)"),
                           (axes[1], "rouge_l_vs_greedy_target", "ROUGE-L vs greedy target")):  # fmt: skip
        ax.plot([r["speedup_vs_sd"] for r in sp], [r[key] for r in sp], "o-", label="SPRINTER (threshold)")
        for r in sp:
            ax.annotate(f"{r['threshold']:g}", (r["speedup_vs_sd"], r[key]), fontsize=8,
                        textcoords="offset points", xytext=(4, 4))  # fmt: skip
        for r in rows:
            if r["method"] in ("sd", "ar"):
                ax.plot(r["speedup_vs_sd"], r[key], "s", label=r["method"].upper())
        ax.set_xlabel("speed-up vs SD (latency)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(3.0, ls="--", c="grey", lw=0.8)
    axes[0].axvline(1.7, ls="--", c="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SPRINTER frontier: {result['config']['pair']} ({result['environment']['device']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser():
    from ._common import add_threads, make_parser

    ap = make_parser("sprinter-sweep", __doc__)
    ap.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
                    help="comma-separated verifier thresholds to sweep")  # fmt: skip
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts (one seed each)")
    ap.add_argument("--prompt-tokens", type=int, default=48, help="tokens per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per generation")
    ap.add_argument("-k", type=int, default=4, help="SD's draft length (the baseline)")
    ap.add_argument("--max-run", type=int, default=20, help="SPRINTER's longest run of unchecked draft tokens")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first prompt (prompt i uses seed+i)")
    ap.add_argument("--verifier", default=None, help="verifier file (None: the pair's own)")
    ap.add_argument("--draft", choices=("standalone", "head"), default="head",
                    help="the default pair's draft: its draft head (the default) or the standalone draft LM")
    ap.add_argument("--prompt-set", choices=("raw", "chat"), default="raw",
                    help="held-out raw text prompts, or held-out chat prompts through the chat template")
    add_threads(ap, pinned=True)
    ap.add_argument("--out", default="bench/results", help="directory for sprinter_sweep.json and .png")
    return ap


def main(argv=None) -> int:
    from ._common import run_threaded

    return run_threaded(build_parser(), argv, lambda args: _main(args, argv))


def _main(args, argv) -> int:
    from .. import load_pair

    pair = load_pair(draft=args.draft, verifier=args.verifier)
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    result = sweep(pair, thresholds=thresholds, prompts=args.prompts, prompt_tokens=args.prompt_tokens,
                   max_new_tokens=args.max_new_tokens, k=args.k, max_run=args.max_run, seed=args.seed,
                   prompt_set=args.prompt_set)  # fmt: skip
    result["environment"] = environment()
    result["command"] = "python -m sprinter_ext sprinter-sweep " + " ".join(argv if argv is not None else sys.argv[2:])
    print(format_table(result["rows"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "sprinter_sweep" + ("_head" if args.draft == "head" else "") + ("_chat" if args.prompt_set == "chat" else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"{stem}.png")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0
