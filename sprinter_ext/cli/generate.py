"""Generate from the command line: streams the answer to stdout, the run's stats to stderr.

    python -m sprinter_ext generate "What is the capital of France?" --method sd

With a chat-template tokenizer (the default pair's) the prompt is sent as a user message
(--raw: as raw text to continue). Greedy by default (--temperature 0), so the same
question gives the same answer; --temperature 1 --seed N samples.
"""

from __future__ import annotations

import json
import sys
import time

from ._common import add_decoding_args, add_threads, make_parser

__all__ = ["build_parser", "main", "format_stats"]


def build_parser():
    ap = make_parser("generate", __doc__)
    ap.add_argument("prompt", help="the question (or text to continue with --raw); '-' reads it from stdin")
    add_decoding_args(ap, max_help="most new tokens (fewer when the model ends)",
                      seed_help="seed of every random draw (same seed, same text)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--chat", dest="chat", action="store_true", default=None,
                      help="send the prompt as a user message with the chat template (default: when the tokenizer has one)")  # fmt: skip
    mode.add_argument("--raw", dest="chat", action="store_false", help="continue the prompt as raw text (default: only when the tokenizer has no chat template)")
    ap.add_argument("--system", default=None, help="a system message before the prompt, chat mode only (None: the template's own default)")
    ap.add_argument("--draft", default=None,
                    help="draft: path, .gguf, cached HF id, a draft head file/directory, or, for the embedded pair, "
                         "'head' (the default) or 'standalone' (its draft LM)")
    ap.add_argument("--target", default=None, help="target model: path, .gguf or cached HF id (None: the embedded one)")
    ap.add_argument("--verifier", default=None, help="SPRINTER verifier file (None: the pair's own)")
    ap.add_argument("--threshold", type=float, default=None, help="SPRINTER's threshold (None: the verifier's)")
    ap.add_argument("--max-run", type=int, default=20, help="SPRINTER's longest unchecked run")
    ap.add_argument("--no-stream", action="store_true", help="print the answer once, at the end")
    ap.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, stats) instead of text")
    ap.add_argument("--quiet", action="store_true", help="no stats line on stderr")
    add_threads(ap)
    return ap


def format_stats(stats: dict, wall_s: float) -> str:
    """One line: tokens, time, tokens/s, draft acceptance, target calls."""
    n = stats.get("new_tokens", 0)
    parts = [f"{n} tokens in {wall_s:.2f} s ({n / wall_s if wall_s > 0 else 0:.1f} tokens/s)"]
    drafted = stats.get("draft_tokens", 0)
    if drafted:
        acc = stats.get("accepted_tokens", 0)
        parts.append(f"acceptance {acc}/{drafted} = {acc / drafted:.2f}")
    calls = stats.get("target_calls", 0)
    parts.append(f"target calls {calls}" + (f" ({calls / n:.2f}/token)" if n else ""))
    parts.append(f"{stats.get('method')} on {stats.get('engine')} engine, {stats.get('runner')} runner")
    return " | ".join(parts)


def _prompt(args, tokenizer):
    from ..prompts import has_chat_template

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    chat = has_chat_template(tokenizer) if args.chat is None else args.chat
    if not chat:
        if args.system is not None:
            raise SystemExit("generate: --system needs chat mode (drop --raw)")
        return text, False
    msgs = ([{"role": "system", "content": args.system}] if args.system is not None else []) + [
        {"role": "user", "content": text}
    ]
    return msgs, True


def main(argv=None) -> int:
    from ._common import run_threaded

    return run_threaded(build_parser(), argv, _run)


def _run(args) -> int:
    import sprinter_ext
    from ..errors import SprinterError

    try:
        pair = sprinter_ext.load_pair(args.draft, args.target, verifier=args.verifier)
        opts = {"max_run": args.max_run, "threshold": args.threshold} if args.method == "sprinter" else {}
        prompt, chat = _prompt(args, pair.tokenizer)
        dec = sprinter_ext.Decoder(pair, args.method, k=args.k, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, engine=args.engine, runner=args.runner, **opts)  # fmt: skip
        stats: dict = {}
        t0 = time.perf_counter()
        if args.no_stream or args.json or pair.tokenizer is None:
            res = dec.generate(prompt, max_new_tokens=args.max_new_tokens, seed=args.seed, chat=None if chat else False)
            stats, text, tokens = res.stats, res.text, res.tokens
            if args.json:
                print(json.dumps({"text": text, "tokens": tokens, "stats": stats}))
            else:
                print(text if text is not None else " ".join(map(str, tokens)))
        else:
            for piece in dec.stream(prompt, max_new_tokens=args.max_new_tokens, seed=args.seed, chat=None if chat else False,
                                    text=True, stats=stats):  # fmt: skip
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        wall = time.perf_counter() - t0
    except SprinterError as e:
        print(f"generate: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(format_stats(stats, wall), file=sys.stderr)
    return 0
