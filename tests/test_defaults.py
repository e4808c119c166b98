"""One set of defaults (sprinter_ext/_defaults.py) read by the API, the CLI and the server,
and listed in the README's "Defaults" table."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import sprinter_ext
from sprinter_ext import _defaults as D
from sprinter_ext.cli.generate import build_parser as generate_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _sig(fn):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()}


def test_api_cli_and_server_share_the_defaults():
    from sprinter_ext.serve.cli import build_parser as serve_parser
    from sprinter_ext.serve.protocol import parse_chat

    gen, dec = _sig(sprinter_ext.generate), _sig(sprinter_ext.Decoder.__init__)
    for name, value in (("method", D.METHOD), ("temperature", D.TEMPERATURE), ("top_k", D.TOP_K),
                        ("top_p", D.TOP_P), ("k", D.K)):  # fmt: skip
        assert gen[name] == dec[name] == value, name
    assert gen["max_new_tokens"] == _sig(sprinter_ext.Decoder.generate)["max_new_tokens"] == D.MAX_NEW_TOKENS
    assert gen["chat"] is D.CHAT and gen["seed"] == D.SEED
    cli = generate_parser().parse_args(["Hi"])
    assert (cli.method, cli.temperature, cli.top_k, cli.top_p, cli.k, cli.max_new_tokens, cli.seed, cli.threads) == (
        D.METHOD, D.TEMPERATURE, D.TOP_K, D.TOP_P, D.K, D.MAX_NEW_TOKENS, D.SEED, D.THREADS)
    assert serve_parser().parse_args([]).default_max_tokens == D.MAX_NEW_TOKENS
    assert serve_parser().parse_args([]).threads == D.THREADS
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, "m")
    assert req.sampling == {"temperature": D.TEMPERATURE, "top_p": D.TOP_P, "top_k": D.TOP_K, "min_p": D.MIN_P,
                            "repetition_penalty": D.REPETITION_PENALTY, "presence_penalty": D.PRESENCE_PENALTY,
                            "frequency_penalty": D.FREQUENCY_PENALTY}  # fmt: skip


def test_measuring_commands_pin_their_threads():
    from sprinter_ext.cli.bench import build_parser as bench_parser

    assert bench_parser().parse_args([]).threads == D.BENCH_THREADS == 1


def test_readme_table_lists_every_default():
    table = README.split("### Defaults", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)`(?: / `[a-z_]+`)? \| `?([^`|]+)`?", table, flags=re.M))
    assert rows["temperature"].startswith(str(int(D.TEMPERATURE))) and rows["k"].strip('"') == str(D.K)
    assert rows["max_new_tokens"] == str(D.MAX_NEW_TOKENS) and rows["method"] == D.METHOD
    assert rows["seed"] == str(D.SEED) and rows["min_p"] == str(D.MIN_P)
    assert {"chat", "threads", "top_k"} <= set(rows)


def test_a_plain_question_gets_an_answer_out_of_the_box(default_pair):
    res = sprinter_ext.generate(default_pair, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in res.text
