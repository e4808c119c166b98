"""What every subcommand's parser shares: shown defaults, plain-text descriptions, --threads.

NOTE: argparse rather than typer. Each subcommand owns a ``main(argv) -> int`` (the
server's lives in another module and is imported lazily), so the top level only has to
route argv; argparse does that, shows defaults (ArgumentDefaultsHelpFormatter), exits 2
on a bad option, is in the standard library (typer is only a transitive dependency of
transformers and could go away with it) and imports in milliseconds, which matters for
``--help`` and ``--version``.
"""

from __future__ import annotations

import argparse
import re

from .._defaults import BENCH_THREADS
from .._threads import ENV, resolve_threads

__all__ = ["make_parser", "plain", "add_threads", "run_threaded"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to every option's help (not to required ones); descriptions keep their line breaks."""

    def _get_help_string(self, action):
        # NOTE: an option whose default is computed says so as "(None: what it means)";
        # that reads better as "(default: what it means)" than as "(default: None)".
        help_ = action.help or ""
        if action.required or "(default:" in help_:
            return help_
        if "(None:" in help_:
            return help_.replace("(None:", "(default:")
        return super()._get_help_string(action)


def plain(doc: str | None) -> str:
    """A docstring as terminal text: no RST markup (``code``, :func:`x`, ``::``)."""
    text = (doc or "").strip()
    text = re.sub(r"``python -m sprinter_ext [^`]+`` \(see ``--help``\)\.\s*", "", text)  # said by usage
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    text = text.replace("``", "").replace("::", ":")
    return text


def make_parser(prog: str, doc: str | None, **kw) -> argparse.ArgumentParser:
    """An ArgumentParser for ``python -m sprinter_ext <prog>`` described by `doc`, defaults shown."""
    return argparse.ArgumentParser(
        prog=f"python -m sprinter_ext {prog}", description=plain(doc), formatter_class=_Formatter, **kw
    )


def k_arg(value: str):
    """argparse type of -k: draft tokens per round (an int >= 1) or "auto" (the cost model)."""
    if value == "auto":
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"-k takes an int >= 1 or 'auto', got {value!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"-k must be >= 1 or 'auto', got {k}")
    return k


def add_decoding_args(ap: argparse.ArgumentParser, *, max_help: str, seed_help: str) -> None:
    """The decoding options `generate` and `chat` share, with the library's defaults
    (sprinter_ext/_defaults.py): method, max-new-tokens, sampling, seed, -k, engine, runner."""
    from .. import _defaults as D
    from ..methods import METHODS

    ap.add_argument("--method", choices=sorted(METHODS), default=D.METHOD, help="decoding method")
    ap.add_argument("--max-new-tokens", type=int, default=D.MAX_NEW_TOKENS, help=max_help)
    ap.add_argument("--temperature", type=float, default=D.TEMPERATURE, help="sampling temperature; 0 = greedy")
    ap.add_argument("--top-k", type=int, default=D.TOP_K, help="keep the k most likely tokens; 0 = all")
    ap.add_argument("--top-p", type=float, default=D.TOP_P, help="nucleus sampling mass; 1 = all")
    ap.add_argument("--seed", type=int, default=D.SEED, help=seed_help)
    ap.add_argument("-k", type=k_arg, default=D.K,
                    help="draft tokens per round (sd, ersd, ssd), or 'auto': a cost model picks each round's")
    ap.add_argument("--engine", choices=["auto", "reference", "fused", "native"], default="auto",
                    help="what runs the decode loop (see the README's engine table)")  # fmt: skip
    ap.add_argument("--runner", choices=["auto", "python", "native"], default="auto",
                    help="what runs each model's forward")  # fmt: skip


def _threads_arg(value: str) -> int:
    try:
        return resolve_threads(value, source="--threads")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_threads(ap: argparse.ArgumentParser, *, pinned: bool = False) -> None:
    """--threads N|all: torch's intra-op threads for this command (default: $SPRINTER_EXT_THREADS,
    else torch's own count; a measuring command (`pinned`) defaults to BENCH_THREADS)."""
    if pinned:
        default, said = BENCH_THREADS, f"{BENCH_THREADS}, pinned so measurements do not collapse on a shared machine"
    else:
        default, said = None, f"${ENV} if set, else torch's own count (one per physical core)"
    ap.add_argument(
        "--threads",
        type=_threads_arg,
        default=default,
        metavar="N|all",
        help=f"torch intra-op threads for this command; 'all' = every CPU (None: {said})",
    )


def run_threaded(parser: argparse.ArgumentParser, argv, body) -> int:
    """Parse `argv` with `parser`, then run ``body(args)`` under the command's --threads
    (torch's setting is put back afterwards): the shared body of every subcommand's main()."""
    from .._threads import use_threads

    args = parser.parse_args(argv)
    with use_threads(args.threads):
        return body(args)
