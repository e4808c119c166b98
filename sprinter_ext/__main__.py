"""Command line: ``python -m sprinter_ext {bench,info}``."""

from __future__ import annotations

import json
import sys

USAGE = """usage: python -m sprinter_ext COMMAND [options]

commands:
  bench            compare the decoding methods (and Hugging Face baselines) on held-out prompts
  sprinter-sweep   SPRINTER's speed/fidelity frontier over verifier thresholds (JSON + PNG)
  train-verifier   train a SPRINTER verifier for the default pair (see --help)
  info             print build information (torch, CUDA, compiler, triton)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if cmd == "train-verifier":
        from .verifier.cli import main as train_main

        return train_main(rest)
    if cmd == "sprinter-sweep":
        from .bench_sprinter import main as sweep_main

        return sweep_main(rest)
    if cmd == "info":
        from . import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
