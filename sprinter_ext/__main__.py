"""Command line: ``python -m sprinter_ext COMMAND [options]`` (``--help`` on any command).

The commands live in :mod:`sprinter_ext.cli` (the server's in :mod:`sprinter_ext.serve`);
this module only routes argv to them, importing the chosen one alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# command -> (module, function, one-line help); each main(argv) -> int owns its options.
COMMANDS = {
    "generate": ("sprinter_ext.cli.generate", "main", "generate from a prompt: text streamed to stdout, stats to stderr"),
    "chat": ("sprinter_ext.cli.chat", "main", "chat in the terminal: multi-turn, streamed, /reset, /stats, /exit"),
    "bench": ("sprinter_ext.cli.bench", "main", "compare the decoding methods (and Hugging Face baselines) on held-out prompts"),
    "sprinter-sweep": ("sprinter_ext.cli.sprinter_sweep", "main", "SPRINTER's speed/fidelity frontier over verifier thresholds"),
    "train-verifier": ("sprinter_ext.cli.train_verifier", "main", "train a SPRINTER verifier for the default pair"),
    "train-draft": ("sprinter_ext.cli.train_draft", "main", "train the default pair's draft (about an hour on one core)"),
    "train-head": ("sprinter_ext.cli.train_head", "main", "train the default pair's draft head (resumable, offline)"),
    "serve": ("sprinter_ext.serve.cli", "main", "an OpenAI-compatible HTTP server (needs the [serve] extra)"),
    "info": ("sprinter_ext.__main__", "info_main", "print build information as JSON (torch, CUDA, compiler, triton)"),
}


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    ap = argparse.ArgumentParser(
        prog="python -m sprinter_ext",
        description="Fast batch-1 speculative decoding for PyTorch causal LMs.",
        epilog=f"commands:\n{listing}\n\n'python -m sprinter_ext COMMAND --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"sprinter_ext {_version()}")
    ap.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    return ap


def info_parser() -> argparse.ArgumentParser:
    from .cli._common import make_parser

    ap = make_parser("info", "Print what this build of sprinter_ext has (torch, CUDA, compiler, triton) as JSON.")
    ap.add_argument("--indent", type=int, default=2, help="JSON indentation; 0 = one line")
    return ap


def info_main(argv: list[str]) -> int:
    args = info_parser().parse_args(argv)
    from . import build_info

    print(json.dumps(build_info(), indent=args.indent or None))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_help()
        return 0
    if argv[0] in COMMANDS:  # route before parsing: the command parses its own options
        cmd, rest = argv[0], argv[1:]
    else:
        args = build_parser().parse_args(argv)  # --help, --version, an unknown command: exits here
        cmd, rest = args.command, args.args
    module, func, _ = COMMANDS[cmd]
    try:
        entry = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if cmd != "serve" or not (e.name or "").startswith(("sprinter_ext.serve", "fastapi", "uvicorn", "starlette")):
            raise
        if (e.name or "").startswith("sprinter_ext"):
            why = "this install has no server module (sprinter_ext.serve.cli)"
        else:
            why = f"the server's dependency {e.name!r} is missing; install the extra: pip install -e \".[serve]\""
        print(f"python -m sprinter_ext serve: not available: {why}", file=sys.stderr)
        return 2
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
