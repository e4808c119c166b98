"""``python -m sprinter_ext serve``: the OpenAI-compatible server on uvicorn.

>>> main(["--port", "8000"])        # the default pair on 127.0.0.1:8000   # doctest: +SKIP
"""

from __future__ import annotations

import sys

from .. import _defaults as D

__all__ = ["main", "build_parser"]

_EXTRA_HINT = 'the server needs the [serve] extra: pip install --no-build-isolation -e ".[serve]"'


def build_parser():
    """The ``serve`` parser: every option with its default shown, ``--threads`` as every command's."""
    from ..cli._common import add_threads, make_parser
    from ..methods import METHODS

    p = make_parser(
        "serve",
        "Serve a draft/target pair with the OpenAI API (/v1/chat/completions, /v1/completions,\n"
        "/v1/models, /health, /metrics) over a pool of Decoders. Needs the [serve] extra.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one, printed at start)")
    p.add_argument("--draft", default=None,
                   help="draft model: local dir, .gguf, cached HF id or draft head; 'head' (the default) or "
                        "'standalone' without --target: the embedded pair's")
    p.add_argument("--target", default=None, help="target model (give both --draft and --target, or neither)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the target's)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="model dtype (default: float32)")
    p.add_argument("--device", default="cpu", help="torch device of the models")
    p.add_argument("--method", default="sd", choices=sorted(METHODS), help="method of requests that name none")
    p.add_argument("--engine", default="auto", choices=["auto", "reference", "fused", "native"], help="Decoder engine")
    p.add_argument("--runner", default="auto", choices=["auto", "python", "native"], help="Decoder runner")
    p.add_argument("--pool-size", type=int, default=1,
                   help="generations at once (one Decoder each); more requests wait in a queue. "
                   "On a CPU, 1 gives the lowest latency per request")  # fmt: skip
    p.add_argument("--max-length", type=int, default=None, help="static KV cache per Decoder, tokens (default: min(2048, model limit))")
    p.add_argument("--default-max-tokens", type=int, default=D.MAX_NEW_TOKENS, help="max_tokens of requests that give none")
    p.add_argument("--decoders-per-worker", type=int, default=4, help="Decoders (method/settings) each worker keeps warm")
    p.add_argument("--model-name", default=None, help="the id clients send as `model` (default: the target's name)")
    add_threads(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, load the pair, serve until interrupted; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    kinds = (None, "head", "standalone", "ngram", "suffix", "head+ngram", "head+suffix")  # over the default target
    if (args.draft not in kinds) != (args.target is not None) and args.draft not in ("ngram", "suffix"):
        print("error: give both --draft and --target, or no --target (the embedded default pair; --draft head or "
              "standalone picks its draft)", file=sys.stderr)
        return 2
    for name in ("pool_size", "default_max_tokens", "decoders_per_worker"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        import uvicorn  # noqa: F401

        from . import app  # noqa: F401  (fastapi, prometheus_client)
    except ImportError as e:
        print(f"error: {_EXTRA_HINT} ({e})", file=sys.stderr)
        return 2
    from .._threads import use_threads

    with use_threads(args.threads) as threads:  # every worker's forward runs with it
        return _serve(args, threads)


def _serve(args, threads: int) -> int:
    import uvicorn

    from .. import load_pair
    from ..errors import SprinterError
    from .app import create_app

    try:
        pair = load_pair(args.draft, args.target, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype)
        app = create_app(pair, model_name=args.model_name, pool_size=args.pool_size, method=args.method,
                         engine=args.engine, runner=args.runner, max_length=args.max_length,
                         default_max_tokens=args.default_max_tokens,
                         decoders_per_worker=args.decoders_per_worker)  # fmt: skip
    except (SprinterError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sprinter_ext serve: {app.state.model_name} on http://{args.host}:{args.port} "
          f"(method {args.method}, pool {args.pool_size}, {threads} thread(s))", file=sys.stderr)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
