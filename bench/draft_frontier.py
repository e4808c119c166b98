"""Cost / agreement frontier of SmolLM2-135M draft candidates on this CPU.

    python bench/draft_frontier.py [--threads 1] [--tokens 4096] [--extra NAME=WEIGHTS.safetensors ...]

For every variant: median KV-cached decode step (ms) of the draft and of the
target (the runner's path: ``base_model`` with a StaticCache and a 4-D additive
mask, then ``get_output_embeddings()``), their ratio c, greedy agreement with
the target (teacher forced, held-out text of :func:`sprinter_ext.data.heldout_texts`),
and the speculative-decoding speed-up estimate for k = 1..4 drafted tokens

    speedup(k) = (1 - a^(k+1)) / (1 - a) / (k c + t_t(k+1) / t_t(1))

with a = agreement and t_t(n) the measured target forward over n new tokens.
Writes bench/results/draft_frontier.json and .png.
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

from sprinter_ext.cli.bench import cpu_name
from sprinter_ext.data import heldout_texts, train_texts
from sprinter_ext.models.default_pair import load_default_target
from sprinter_ext.models.runner import cache_keyword
from sprinter_ext.models.smol_draft import (
    assemble_draft,
    build_default_draft,
    default_weights_path,
    read_draft_weights,
)

ROOT = Path(__file__).resolve().parent.parent

CTX = 64  # prompt length before the timed decode steps
MAX_LEN = 128


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count()}
    name = cpu_name()
    if name:
        info["model_name"] = name
    return info


def _mask(n_new: int, start: int, L: int, dtype) -> torch.Tensor:
    q = torch.arange(start, start + n_new).unsqueeze(1)
    k = torch.arange(L).unsqueeze(0)
    m = torch.zeros(n_new, L, dtype=dtype)
    m.masked_fill_(k > q, float("-inf"))
    return m.view(1, 1, n_new, L)


class Stepper:
    """Runner-style KV-cached forward of one model."""

    def __init__(self, model, prompt: torch.Tensor):
        from transformers import StaticCache

        self.model = model
        self.dtype = model.get_output_embeddings().weight.dtype
        self.cache = StaticCache(config=model.config, max_cache_len=MAX_LEN)
        self.prompt = prompt
        self.forward(prompt, 0)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        n = ids.shape[1]
        pos = torch.arange(start, start + n)
        # transformers 5 StaticCache layers write at their own cumulative_length,
        # not at cache_position: rewind them to `start`
        for layer in self.cache.layers:
            cl = getattr(layer, "cumulative_length", None)
            if isinstance(cl, torch.Tensor):
                cl.fill_(start)
            elif cl is not None:
                layer.cumulative_length = start
        h = self.model.base_model(
            input_ids=ids, **{cache_keyword(self.model.base_model): self.cache}, cache_position=pos, position_ids=pos.unsqueeze(0),
            attention_mask=_mask(n, start, MAX_LEN, self.dtype), use_cache=True,
        ).last_hidden_state
        return self.model.get_output_embeddings()(h[:, -1:])

    def time(self, n_new: int = 1) -> float:
        """Seconds of one forward over n_new tokens at position CTX (cache rows rewritten each time)."""
        ids = self.prompt[:, :n_new]
        t0 = time.perf_counter()
        self.forward(ids, CTX)
        return time.perf_counter() - t0


def interleaved_step_ms(draft_st: Stepper, target_st: Stepper, rounds: int, per: int) -> tuple[float, float]:
    d, t = [], []
    for _ in range(rounds):
        t += [target_st.time() for _ in range(per)]
        d += [draft_st.time() for _ in range(per)]
    return statistics.median(d) * 1e3, statistics.median(t) * 1e3


@torch.no_grad()
def agreement(model, chunks: torch.Tensor, ref_argmax: torch.Tensor) -> float:
    hit = 0
    for i in range(chunks.shape[0]):
        h = model.base_model(chunks[i : i + 1]).last_hidden_state
        pred = model.get_output_embeddings()(h).argmax(-1)
        hit += int((pred == ref_argmax[i : i + 1]).sum())
    return hit / ref_argmax.numel()


def speedups(alpha: float, c: float, verify: dict[int, float]) -> dict[int, float]:
    out = {}
    for k in range(1, 5):
        a = min(alpha, 1 - 1e-9)
        out[k] = (1 - a ** (k + 1)) / (1 - a) / (k * c + verify[k + 1])
    return out


def kept_by_frequency(tok, n: int) -> torch.Tensor:
    import collections

    cnt = collections.Counter()
    for t in train_texts():
        cnt.update(tok(t)["input_ids"])
    top = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return torch.tensor(sorted(t for t, _ in top), dtype=torch.long)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=4096, help="held-out tokens for the agreement")
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--skip", type=int, default=3072,
                   help="held-out tokens skipped first (train_draft selects checkpoints on the first 2048)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per", type=int, default=6)
    p.add_argument("--extra", action="append", default=[], help="NAME=PATH: more trained weights files to include")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "draft_frontier.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_begin = time.time()

    target, tok = load_default_target(progress=False)
    target.requires_grad_(False)

    ids: list[int] = []
    for para in heldout_texts():
        ids += tok(para)["input_ids"] + [tok.eos_token_id]
    if args.skip + args.chunk > len(ids):
        raise ValueError(f"--skip {args.skip} leaves less than one chunk of the {len(ids)} held-out tokens")
    ids_eval = ids[args.skip :]
    n_chunks = max(1, min(args.tokens, len(ids_eval)) // args.chunk)
    chunks = torch.tensor(ids_eval[: n_chunks * args.chunk]).view(n_chunks, args.chunk)
    ref = torch.cat([target(chunks[i : i + 1]).logits.argmax(-1) for i in range(n_chunks)])
    text_acc = float((ref[:, :-1] == chunks[:, 1:]).float().mean())
    print(f"held-out: {chunks.numel()} tokens; target top-1 accuracy on the text {text_acc:.3f}", file=sys.stderr)

    prompt = torch.tensor((ids * 2)[:CTX]).unsqueeze(0)
    target_st = Stepper(target, prompt)
    for _ in range(3):
        target_st.time()
    samples: dict[int, list[float]] = {n: [] for n in range(1, 6)}
    for _ in range(4):  # interleaved rounds: load changes hit every n alike
        for n in samples:
            samples[n] += [target_st.time(n) for _ in range(4)]
    t_n = {n: statistics.median(v) for n, v in samples.items()}
    verify = {n: t_n[n] / t_n[1] for n in t_n}
    print("target verify cost t(n)/t(1): " + ", ".join(f"n={n}: {v:.2f}" for n, v in verify.items()), file=sys.stderr)

    kept4k = kept_by_frequency(tok, 4096)
    kept2k = kept_by_frequency(tok, 2048)
    kept8k = kept_by_frequency(tok, 8192)
    # (name, family, builder)
    variants = [
        ("first2", "truncated", lambda: assemble_draft(target, range(2))),
        ("first4", "truncated", lambda: assemble_draft(target, range(4))),
        ("first6", "truncated", lambda: assemble_draft(target, range(6))),
        ("first12", "truncated", lambda: assemble_draft(target, range(12))),
        ("L0,1,28,29", "layer subset", lambda: assemble_draft(target, [0, 1, 28, 29])),
        ("L0-2,27-29", "layer subset", lambda: assemble_draft(target, [0, 1, 2, 27, 28, 29])),
        ("L0,10,20,29", "layer subset", lambda: assemble_draft(target, [0, 10, 20, 29])),
        ("even15", "layer subset", lambda: assemble_draft(target, range(0, 30, 2))),
        ("first2+head2k", "restricted head", lambda: assemble_draft(target, range(2), kept_ids=kept2k)),
        ("first2+head4k", "restricted head", lambda: assemble_draft(target, range(2), kept_ids=kept4k)),
        ("first4+head4k", "restricted head", lambda: assemble_draft(target, range(4), kept_ids=kept4k)),
        ("first4+head8k", "restricted head", lambda: assemble_draft(target, range(4), kept_ids=kept8k)),
    ]
    for spec in args.extra:
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--extra wants NAME=PATH, got {spec!r}")
        variants.append((name, "trained", lambda path=path: build_default_draft(target, path=path)))
    if default_weights_path().is_file():
        variants.append(("trained (default)", "trained", lambda: build_default_draft(target)))

    rows = []
    for name, family, build in variants:
        t0 = time.perf_counter()
        draft = build()
        load_s = time.perf_counter() - t0
        agr = agreement(draft, chunks, ref)
        st = Stepper(draft, prompt)
        for _ in range(3):
            st.time()
        d_ms, t_ms = interleaved_step_ms(st, target_st, args.rounds, args.per)
        c = d_ms / t_ms
        sp = speedups(agr, c, verify)
        kbest = max(sp, key=sp.get)
        row = {
            "name": name, "family": family, "layers": draft.config.num_hidden_layers,
            "head": "full" if not hasattr(draft.get_output_embeddings(), "token_ids")
            else f"kept {draft.get_output_embeddings().token_ids.numel()}",
            "draft_ms": d_ms, "target_ms": t_ms, "ratio": c, "agreement": agr,
            "speedup": {str(k): v for k, v in sp.items()}, "best_k": kbest, "best_speedup": sp[kbest],
            "build_s": load_s,
        }
        rows.append(row)
        print(f"{name:>20s} {row['head']:>10s} draft {d_ms:6.2f} ms target {t_ms:6.2f} ms c={c:.3f} "
              f"agree={agr:.3f} best k={kbest} x{sp[kbest]:.3f}", file=sys.stderr, flush=True)
        del draft, st

    hdr = f"{'variant':>20s} {'family':>15s} {'head':>10s} {'draft ms':>8s} {'tgt ms':>7s} {'ratio':>6s} {'agree':>6s} " + " ".join(f"{'SD k=' + str(k):>7s}" for k in range(1, 5))
    print(hdr)
    for r in rows:
        print(f"{r['name']:>20s} {r['family']:>15s} {r['head']:>10s} {r['draft_ms']:8.2f} {r['target_ms']:7.2f} "
              f"{r['ratio']:6.3f} {r['agreement']:6.3f} " + " ".join(f"{r['speedup'][str(k)]:7.3f}" for k in range(1, 5)))

    best = max(rows, key=lambda r: r["best_speedup"])
    print(f"best SD estimate: {best['name']} k={best['best_k']} x{best['best_speedup']:.3f}")
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "threads": torch.get_num_threads(),
        "config": {"heldout_tokens": int(chunks.numel()), "heldout_skip": args.skip, "chunk": args.chunk, "ctx": CTX, "max_cache_len": MAX_LEN,
                   "rounds": args.rounds, "per": args.per, "dtype": str(target.dtype)},
        "target_top1_text_accuracy": text_acc,
        "target_verify_ratio": {str(k): v for k, v in verify.items()},
        "target_step_ms_1": t_n[1] * 1e3,
        "variants": rows,
        "best": {"name": best["name"], "k": best["best_k"], "speedup": best["best_speedup"]},
        "runtime_s": time.time() - t_begin,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colors = {"truncated": "tab:blue", "layer subset": "tab:orange", "restricted head": "tab:green", "trained": "tab:red"}
    for fam, col in colors.items():
        sel = [r for r in rows if r["family"] == fam]
        if sel:
            ax.scatter([r["ratio"] for r in sel], [r["agreement"] for r in sel], c=col, label=fam)
    for r in rows:
        ax.annotate(r["name"], (r["ratio"], r["agreement"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(0.25, ls="--", c="gray", lw=0.8)
    ax.axhline(0.5, ls="--", c="gray", lw=0.8)
    ax.set_xlabel("draft step / target step (cost ratio c)")
    ax.set_ylabel("greedy agreement with target (held-out)")
    ax.set_title(f"SmolLM2-135M draft frontier ({torch.get_num_threads()} thread(s), fp32)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {time.time() - t_begin:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
