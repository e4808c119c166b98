"""End-to-end benchmark: every method on the same held-out prompts and seeds, plus HF baselines.

``python -m sprinter_ext bench`` (see ``--help``). Reports per method: ms/token
(median over prompts), speed-up vs AR and vs HF assisted generation, target
calls per token, mean accepted length, analytic FLOPs per token; prints a table
and writes JSON to a user results directory ($SPRINTER_EXT_CACHE/results by default,
or --out); the repository's committed bench/results/ only with --update-repo-results.
Runs with 1 intra-op thread unless --threads says otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .. import Decoder, __version__
from .. import _defaults as D
from ..methods import METHODS
from ..data import PROMPT_SETS, prompt_set as heldout_prompt_set
from ..errors import InvalidArgumentError
from ..flops import generation_flops

__all__ = ["main", "run_bench", "environment", "cpu_name", "format_table", "default_out", "write_result"]


def _hf_generate(pair, ids, max_new_tokens, temperature, assisted, k):
    kw = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=0)
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kw.update(do_sample=False)
    if assisted:
        kw.update(assistant_model=pair.draft)
        # k="auto": HF's own adaptive schedule ("heuristic", from D.K_FIXED tokens) is its counterpart
        auto = k == "auto"
        pair.draft.generation_config.num_assistant_tokens = D.K_FIXED if auto else k
        pair.draft.generation_config.num_assistant_tokens_schedule = "heuristic" if auto else "constant"
    x = torch.tensor([ids], device=pair.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = pair.target.generate(x, attention_mask=torch.ones_like(x), **kw)
    wall = time.perf_counter() - t0
    return out.shape[1] - x.shape[1], wall


def _engines_of(method: str, engines) -> list[str]:
    """The engines a method runs on in the bench: a method without a native loop (ssd) runs
    'fused' for 'native' (ssd: the draft on its own thread), and skips the other engines to
    keep the main job's time."""
    if METHODS[method].native:
        return list(engines)
    return ["fused"] if engines and engines[0] in ("native", "fused") else list(engines[:1])


def run_bench(
    pair,
    *,
    methods=tuple(METHODS),
    prompts=4,
    prompt_tokens=48,
    max_new_tokens=32,
    k=4,
    temperature=1.0,
    seed=0,
    hf=True,
    max_run=20,
    engines=("native", "reference"),
    prompt_set="raw",
    progress=True,
) -> dict:
    """Run the comparison, every method on every engine; returns {"rows": [...], "config": {...}}."""
    from tqdm.auto import tqdm

    for m in methods:
        if m not in METHODS:
            raise InvalidArgumentError(f"unknown method {m!r}; choose from {sorted(METHODS)}")
    if "sprinter" in methods and getattr(pair, "verifier", None) is None:
        raise InvalidArgumentError("method 'sprinter' needs a pair with a verifier (load_pair(..., verifier=path))")
    ps = heldout_prompt_set(pair, prompt_set, prompts, prompt_tokens, seed)
    from ..decoding import K_AUTO_MAX

    lookahead = max(K_AUTO_MAX if k == "auto" else k, max_run if "sprinter" in methods else 0)
    longest = max(len(p) for p in ps)  # chat prompts have their own lengths
    max_length = -(-(longest + max_new_tokens + lookahead) // 64) * 64  # static cache sized to the job
    opts = {"sprinter": {"max_run": max_run}}  # NOTE: ssd with a head runs inline (the Decoder's default)
    cells = [(m, e) for m in methods for e in _engines_of(m, engines)]
    decoders = {(m, e): Decoder(pair, m, k=k, temperature=temperature, eos_token_id=None, max_length=max_length,
                                engine=e, **opts.get(m, {})) for m, e in cells}  # fmt: skip
    for dec in decoders.values():  # warm-up: allocate caches, first-call overheads
        dec.generate(ps[0][:8], max_new_tokens=4, seed=seed)
    # NOTE: prompt-major order, so slow drift of a shared machine hits every row alike
    runs = [(cell, i) for i in range(len(ps)) for cell in cells]
    # NOTE: HF assisted generation takes a standalone assistant LM: a head pair gets HF generate only
    baselines = [("hf_ar", False)] if hf else []
    if hf and pair.draft_kind.split("+")[0] == "standalone":
        baselines.append(("hf_assisted", True))
    runs += [((b, "hf"), i) for i in range(len(ps)) for b, _ in baselines]
    per: dict[tuple[str, str], list[dict]] = {}
    for name, i in tqdm(runs, desc="bench", disable=not progress, file=sys.stderr):
        if name in decoders:
            res = decoders[name].generate(ps[i], max_new_tokens=max_new_tokens, seed=seed + i)
            s = res.stats
            per.setdefault(name, []).append(
                dict(ms_per_token=1e3 * s["wall_s"] / max(1, s["new_tokens"]), new_tokens=s["new_tokens"],
                     runner=s["runner"],
                     target_calls=s["target_calls"], rounds=s["rounds"], accepted=s["accepted_tokens"],
                     flops=generation_flops(pair, s))  # fmt: skip
            )
        else:
            n, wall = _hf_generate(pair, ps[i], max_new_tokens, temperature, dict(baselines)[name[0]], k)
            per.setdefault(name, []).append(dict(ms_per_token=1e3 * wall / max(1, n), new_tokens=n))
    rows = []
    for (name, engine), rs in per.items():
        med = statistics.median(r["ms_per_token"] for r in rs)
        tokens = sum(r["new_tokens"] for r in rs)
        row = dict(method=name, engine=engine, runner=rs[0].get("runner", "hf"), ms_per_token=med, new_tokens=tokens)
        if "target_calls" in rs[0]:
            calls = sum(r["target_calls"] for r in rs)
            row.update(
                target_calls_per_token=calls / tokens,
                mean_accepted=sum(r["accepted"] for r in rs) / sum(r["rounds"] for r in rs),
                gflops_per_token=sum(r["flops"] for r in rs) / tokens / 1e9,
            )
        rows.append(row)
    ar = next((r["ms_per_token"] for r in rows if r["method"] == "ar" and r["engine"] == engines[0]), None)
    hfa = next((r["ms_per_token"] for r in rows if r["method"] == "hf_assisted"), None)
    for r in rows:
        r["speedup_vs_ar"] = ar / r["ms_per_token"] if ar else None
        r["speedup_vs_hf_assisted"] = hfa / r["ms_per_token"] if hfa else None
    config = dict(pair=pair.name, prompt_set=prompt_set, prompts=len(ps),
                  prompt_tokens=prompt_tokens if prompt_set == "raw" else [len(p) for p in ps],
                  max_new_tokens=max_new_tokens,
                  k=k, temperature=temperature, seed=seed, dtype=str(pair.dtype), max_run=max_run,
                  engines=list(engines), speedups_relative_to=f"ar on engine {engines[0]}",
                  verifier_threshold=pair.verifier.threshold if getattr(pair, "verifier", None) else None)  # fmt: skip
    return {"rows": rows, "config": config}


def format_table(rows: list[dict]) -> str:
    drafts = [("draft", "{}")] if any("draft" in r for r in rows) else []
    cols = drafts + [("method", "{}"), ("engine", "{}"), ("runner", "{}"), ("ms_per_token", "{:.2f}"), ("speedup_vs_ar", "{:.2f}x"),
            ("speedup_vs_hf_assisted", "{:.2f}x"), ("target_calls_per_token", "{:.2f}"),
            ("mean_accepted", "{:.2f}"), ("gflops_per_token", "{:.3f}")]  # fmt: skip
    head = [c for c, _ in drafts] + ["method", "engine", "runner", "ms/token", "vs AR", "vs HF assisted", "target calls/token", "mean accepted", "GFLOP/token"]
    body = [[fmt.format(r[c]) if r.get(c) is not None else "-" for c, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def cpu_name() -> str | None:
    """The CPU's model name from /proc/cpuinfo (None where there is none, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment() -> dict:
    import transformers

    return dict(device="cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
                cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), torch=torch.__version__,
                transformers=transformers.__version__, python=platform.python_version(),
                sprinter_ext=__version__)  # fmt: skip


REPO_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
ALL_METHODS = tuple(METHODS)  # the registry's order: ar, sd, ersd, sprinter, ssd


def default_out() -> Path:
    """Where a user's bench results go: $SPRINTER_EXT_CACHE/results (default ~/.cache/sprinter_ext/results)."""
    from ..models.default_pair import cache_dir

    return cache_dir() / "results"


def write_result(result: dict, out: str | os.PathLike | None, name: str, indent: int = 2) -> Path:
    """Write a bench script's JSON to `out` (a file) or, when None, to :func:`default_out` / `name`;
    print and return the path."""
    path = Path(out) if out else default_out() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent))
    print(f"wrote {path}")
    return path


def build_parser():
    from ._common import add_threads, k_arg, make_parser

    ap = make_parser("bench", __doc__)
    ap.add_argument("--pair", choices=["default", "tiny"], default="default",
                    help="default: the embedded SmolLM2 pair; tiny: 1-layer random models (host overhead)")  # fmt: skip
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated methods (None: {','.join(ALL_METHODS)}; sprinter only with a verifier)")  # fmt: skip
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts (one seed each)")
    ap.add_argument("--prompt-tokens", type=int, default=48, help="tokens per prompt (raw prompts)")
    ap.add_argument("--prompt-set", choices=PROMPT_SETS, default=None,
                    help="hand-written chat prompts (written, the default pair's default; the tiny pair's is raw) "
                         "or grounded ones (the answer reuses the "
                         "prompt's text), pydoc-derived chat prompts, or raw text, each through the target's chat "
                         "template but raw (the default target is an Instruct model; results: "
                         "methods_<pair>..._<set>.json)")  # fmt: skip
    ap.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per generation (no early stop)")
    ap.add_argument("-k", type=k_arg, default=D.K,
                    help="draft tokens per round (sd, ersd, ssd), or 'auto' (the default; sd, ersd: the cost model "
                         "picks, ssd takes 2)")
    ap.add_argument("--temperature", type=float, default=D.TEMPERATURE,
                    help="0 = greedy, the default (results of another temperature: methods_<pair>..._t<T>.json)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first prompt (prompt i uses seed+i)")
    ap.add_argument("--verifier", default=None, help="verifier file (None: the pair's own)")
    ap.add_argument("--draft", choices=["default", "standalone", "head", "both", "ngram", "suffix", "head+ngram",
                                        "head+suffix"], default=None,
                    help="the default pair's draft: load_pair()'s (default: the head + ngram lookup), its draft head "
                         "alone, the standalone draft LM, or "
                         "both in one run (rows tagged by draft; speed-ups against the first run's ar; HF "
                         "assisted generation needs the standalone draft); a lookup draft (ngram, suffix: sd and "
                         "ersd only) or a hybrid of the head and one")  # fmt: skip
    add_threads(ap, pinned=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="model dtype of the default pair (results: methods_default[_bfloat16].json)")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baselines")
    ap.add_argument("--engines", default="native,reference",
                    help="comma-separated engines to time side by side (first = the speed-up baseline's); "
                         "ssd, which has no native loop, runs on 'fused' in place of 'native' and only there")  # fmt: skip
    ap.add_argument("--out", default=None,
                    help="directory for methods_<pair>.json (None: $SPRINTER_EXT_CACHE/results, "
                         "i.e. ~/.cache/sprinter_ext/results)")  # fmt: skip
    ap.add_argument("--update-repo-results", action="store_true",
                    help="write to the repository's bench/results/ (the committed, README-quoted numbers) "
                         "instead; only from a source checkout")  # fmt: skip
    return ap


def main(argv=None) -> int:
    from .._threads import use_threads

    args = build_parser().parse_args(argv)
    if args.out is not None and args.update_repo_results:
        raise SystemExit("bench: give --out or --update-repo-results, not both")
    if args.update_repo_results and not REPO_RESULTS.is_dir():
        raise SystemExit(f"bench: --update-repo-results needs a source checkout ({REPO_RESULTS} does not exist)")
    out = REPO_RESULTS if args.update_repo_results else Path(args.out) if args.out else default_out()
    with use_threads(args.threads):
        return _main(args, out, argv)


def results_name(pair: str, draft: str, dtype: str, prompt_set: str, temperature: float) -> str:
    """methods_<pair>[_<draft>][_<dtype>][_<set>][_t<T>].json: runs with other settings never overwrite each
    other; the defaults (the default pair's own draft, the tiny pair's only draft; float32; the written
    prompts; greedy) have no tag."""
    draft = "" if pair != "default" or draft == "default" else "_" + draft.replace("+", "_")
    dtype = "" if dtype == "float32" else "_" + dtype
    chat = "" if prompt_set == ("written" if pair == "default" else "raw") else "_" + prompt_set
    temp = "" if temperature == D.TEMPERATURE else f"_t{temperature:g}"
    return f"methods_{pair}{draft}{dtype}{chat}{temp}.json"


def _main(args, out: Path, argv) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # HF warns about min_new_tokens on every baseline call

    from .. import load_pair

    if args.draft is None:
        args.draft = "default" if args.pair == "default" else "standalone"
    if args.prompt_set is None:  # the tiny pair has no tokenizer: raw token ids
        args.prompt_set = "written" if args.pair == "default" else "raw"
    if args.pair == "default":
        dt = getattr(torch, args.dtype)
        kinds = ["standalone", "head"] if args.draft == "both" else [args.draft]
        pairs = [load_pair(draft=None if kind == "default" else kind, verifier=args.verifier, dtype=dt)
                 for kind in kinds]  # fmt: skip
    else:
        if args.draft != "standalone":
            raise SystemExit("bench: --draft head/both needs --pair default (the tiny pair has no trained head)")
        from ..models.tiny import tiny_model

        pair = load_pair(tiny_model("llama", vocab=1000, hidden=64, seed=1),
                         tiny_model("llama", vocab=1000, hidden=64, seed=2))  # fmt: skip
        from ..verifier import train_verifier

        g = torch.Generator().manual_seed(args.seed)  # random "text": only the host overhead matters here
        texts = [torch.randint(0, 1000, (48,), generator=g).tolist() for _ in range(16)]
        pair.verifier = train_verifier(pair, texts, epochs=2, progress=False)
        pairs = [pair]
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    result = None
    for pair in pairs:
        if args.methods is None:
            methods = [m for m in ALL_METHODS if m != "sprinter" or pair.verifier is not None]
            if pair.model_free:  # a lookup draft alone runs sd / ersd
                methods = [m for m in methods if not METHODS[m].needs_draft or METHODS[m].drafts_by_round]
        else:
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        one = run_bench(pair, methods=methods, prompts=args.prompts, prompt_tokens=args.prompt_tokens,
                        max_new_tokens=args.max_new_tokens, k=args.k, temperature=args.temperature,
                        seed=args.seed, hf=not args.no_hf and result is None, engines=engines,
                        prompt_set=args.prompt_set)  # fmt: skip
        if len(pairs) > 1:
            for r in one["rows"]:
                r["draft"] = pair.draft_kind
        if result is None:
            result = one
            result["config"]["drafts"] = [p.draft_kind for p in pairs]
        else:  # speed-ups against the first run's ar (same prompts, seeds and engines)
            ar = next((r["ms_per_token"] for r in result["rows"] if r["method"] == "ar" and r["engine"] == engines[0]),
                      None)  # fmt: skip
            hfa = next((r["ms_per_token"] for r in result["rows"] if r["method"] == "hf_assisted"), None)
            for r in one["rows"]:
                r["speedup_vs_ar"] = ar / r["ms_per_token"] if ar else None
                r["speedup_vs_hf_assisted"] = hfa / r["ms_per_token"] if hfa else None
            result["rows"] += one["rows"]
            result["config"]["head_verifier_threshold"] = one["config"]["verifier_threshold"]
    result["environment"] = environment()
    result["command"] = "python -m sprinter_ext bench " + " ".join(argv if argv is not None else sys.argv[2:])
    print(f"\n{pair.name} | {args.prompts} held-out {args.prompt_set} prompts x {args.max_new_tokens} new tokens | "
          f"k={args.k} temperature={args.temperature} | {result['environment']['device']} | "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print(format_table(result["rows"]))
    out.mkdir(parents=True, exist_ok=True)
    path = out / results_name(args.pair, args.draft, args.dtype, args.prompt_set, args.temperature)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0
