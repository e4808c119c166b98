"""Chat in the terminal: each turn goes through the chat template with the whole
conversation so far, and the answer streams to stdout as it is decoded.

    python -m sprinter_ext chat
    python -m sprinter_ext chat --system "Answer in one sentence." --method sd --stats

Commands at the prompt: /reset forgets the conversation (the --system message stays),
/stats turns the stats line on or off, /help lists the commands, /exit (or Ctrl-D) ends.
Ctrl-C stops an answer (the turn is dropped) and, at the prompt, ends the chat. The stats
line goes to stderr after the answer's newline, so it never lands inside an answer. Greedy
by default; with --temperature > 0, turn i samples with seed --seed + i.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from .. import _defaults as D
from ._common import add_decoding_args, add_threads, make_parser

__all__ = ["build_parser", "main", "ChatSession", "COMMANDS"]

COMMANDS = {
    "/reset": "forget the conversation (the system message stays)",
    "/stats": "turn the stats line after each answer on or off",
    "/help": "list these commands",
    "/exit": "end the chat (also /quit, Ctrl-D)",
}
PROMPT = ">>> "


def build_parser():
    ap = make_parser("chat", __doc__)
    add_decoding_args(ap, max_help="most new tokens per answer", seed_help="seed of the first turn (turn i: seed + i)")
    ap.add_argument("--system", default=None, help="a system message that starts the conversation (None: the template's own)")
    ap.add_argument("--draft", default=None,
                    help="draft: path, .gguf, cached HF id or draft head; for the embedded pair 'head' (the default) "
                         "or 'standalone'")  # fmt: skip
    ap.add_argument("--target", default=None, help="target model: path, .gguf or cached HF id (None: the embedded one)")
    ap.add_argument("--verifier", default=None, help="SPRINTER verifier file (None: the pair's own)")
    ap.add_argument("--stats", action="store_true", help="start with the stats line on (/stats toggles it)")
    add_threads(ap)
    return ap


@dataclass
class ChatSession:
    """A conversation with one Decoder: :meth:`ask` streams an answer and keeps the turn.

    >>> s = ChatSession(sprinter_ext.Decoder(pair), max_new_tokens=64)   # doctest: +SKIP
    >>> s.ask("What is the capital of France?", print)                   # doctest: +SKIP
    """

    decoder: object  # sprinter_ext.Decoder
    max_new_tokens: int = D.MAX_NEW_TOKENS
    seed: int = D.SEED
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    turns: int = 0

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]

    def ask(self, text: str, write) -> tuple[str, dict]:
        """Stream the answer to `text` through ``write(piece)``; returns (answer, stats). The
        turn joins the conversation only when the answer ends (an interrupt drops it)."""
        from ..errors import CacheOverflowError

        dec = self.decoder
        msgs = self.messages + [{"role": "user", "content": text}]
        ids = dec.encode(msgs)
        room = dec.max_length - len(ids) - dec.lookahead
        if room < 1:
            raise CacheOverflowError(f"the conversation ({len(ids)} tokens) fills the KV cache ({dec.max_length}); "
                                     "type /reset to start over")  # fmt: skip
        stats: dict = {}
        pieces: list[str] = []
        stream = dec.stream(ids, max_new_tokens=min(self.max_new_tokens, room), seed=self.seed + self.turns,
                            text=True, stats=stats)  # fmt: skip
        try:
            for piece in stream:
                pieces.append(piece)
                write(piece)
        finally:
            stream.close()  # an interrupt ends the run and frees the Decoder
        answer = "".join(pieces)
        self.messages = msgs + [{"role": "assistant", "content": answer}]
        self.turns += 1
        return answer, stats


def main(argv=None) -> int:
    from ._common import run_threaded

    return run_threaded(build_parser(), argv, _run)


def _run(args) -> int:
    import sprinter_ext

    from ..errors import SprinterError
    from ..prompts import has_chat_template
    from .generate import format_stats

    out, err = sys.stdout, sys.stderr
    try:
        pair = sprinter_ext.load_pair(args.draft, args.target, verifier=args.verifier)
        if not has_chat_template(pair.tokenizer):
            print("chat: this pair's tokenizer has no chat template; use `generate --raw` for raw text", file=err)
            return 2
        dec = sprinter_ext.Decoder(pair, args.method, k=args.k, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, engine=args.engine, runner=args.runner)  # fmt: skip
        session = ChatSession(dec, max_new_tokens=args.max_new_tokens, seed=args.seed, system=args.system)
    except SprinterError as e:
        print(f"chat: {type(e).__name__}: {e}", file=err)
        return 1
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        print(f"chat ({args.method}, {'greedy' if args.temperature == 0 else f'temperature {args.temperature}'}); "
              "/help for commands, /exit to end", file=err, flush=True)  # fmt: skip
    show_stats = args.stats

    def write(piece: str) -> None:
        out.write(piece)
        out.flush()

    while True:
        try:
            line = input(PROMPT if interactive else "")
        except EOFError:
            if interactive:
                out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd = text.split()[0].lower()
            if cmd in ("/exit", "/quit"):
                return 0
            if cmd == "/reset":
                session.reset()
                print("(conversation reset)", file=err, flush=True)
            elif cmd == "/stats":
                show_stats = not show_stats
                print(f"(stats {'on' if show_stats else 'off'})", file=err, flush=True)
            elif cmd == "/help":
                print("\n".join(f"  {c:<7} {h}" for c, h in COMMANDS.items()), file=err, flush=True)
            else:
                print(f"(unknown command {cmd}; commands: {' '.join(COMMANDS)})", file=err, flush=True)
            continue
        t0 = time.perf_counter()
        try:
            _, stats = session.ask(text, write)
        except KeyboardInterrupt:
            out.write("\n")
            out.flush()
            print("(answer stopped; the turn is dropped)", file=err, flush=True)
            continue
        except SprinterError as e:
            print(f"chat: {type(e).__name__}: {e}", file=err, flush=True)
            continue
        # NOTE: the answer's newline is flushed to stdout before the stats go to stderr, so on a
        # terminal (or a shared pipe) the stats line never lands inside the answer.
        out.write("\n")
        out.flush()
        if show_stats:
            print(format_stats(stats, time.perf_counter() - t0), file=err, flush=True)
