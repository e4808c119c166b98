"""The command line and the README/CI contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # subprocesses that import torch (and the default pair): 10-16 s here
def test_bench_cli_on_the_tiny_pair(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sprinter_ext", "bench", "--pair", "tiny", "--prompts", "2",
         "--max-new-tokens", "6", "--threads", "1", "--out", str(tmp_path)],  # fmt: skip
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "ms/token" in out.stdout and "hf_assisted" in out.stdout
    result = json.loads((tmp_path / "methods_tiny.json").read_text())
    names = {(r["method"], r["engine"]) for r in result["rows"]}
    ours = {(m, e) for m in ("ar", "sd", "ersd", "sprinter") for e in ("native", "reference")}
    assert names == ours | {("ssd", "fused"), ("hf_ar", "hf"), ("hf_assisted", "hf")}  # ssd: no native loop
    ar = next(r for r in result["rows"] if r["method"] == "ar" and r["engine"] == "native")
    assert ar["speedup_vs_ar"] == 1.0 and ar["target_calls_per_token"] == 1.0
    assert {"environment", "config", "command"} <= set(result)


def test_bench_results_names_keep_settings_apart():
    from sprinter_ext.cli.bench import results_name

    assert results_name("default", "default", "float32", "written", 0.0) == "methods_default.json"  # the defaults
    assert results_name("default", "head", "float32", "written", 0.0) == "methods_default_head.json"
    assert results_name("default", "standalone", "float32", "raw", 1.0) == "methods_default_standalone_raw_t1.json"
    assert results_name("default", "both", "float32", "chat", 0.0) == "methods_default_both_chat.json"
    assert results_name("default", "head+ngram", "bfloat16", "grounded", 0.7) == (
        "methods_default_head_ngram_bfloat16_grounded_t0.7.json")
    assert results_name("tiny", "standalone", "float32", "raw", 0.0) == "methods_tiny.json"
    names = {results_name("default", d, "float32", p, t) for d in ("standalone", "head", "both")
             for p in ("raw", "chat") for t in (0.0, 1.0)}  # fmt: skip
    assert len(names) == 12


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sprinter_ext", *args], capture_output=True, text=True, **kw)


@pytest.mark.slow  # subprocesses that import torch (and the default pair): 10-16 s here
def test_info_version_and_usage():
    out = _cli("info", check=True)
    assert json.loads(out.stdout)["torch_version"]
    assert json.loads(_cli("info", "--indent", "0", check=True).stdout)["torch_version"]
    help_ = _cli("info", "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("usage: python -m sprinter_ext info")
    bogus = _cli("info", "--bogus")
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr
    bad = _cli("frobnicate")
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
    import sprinter_ext

    assert _cli("--version", check=True).stdout.strip() == f"sprinter_ext {sprinter_ext.__version__}"
    top = _cli(check=True).stdout
    assert all(cmd in top for cmd in ("generate", "bench", "sprinter-sweep", "train-verifier", "train-draft", "serve",
                                      "info"))  # fmt: skip
    draft_help = _cli("train-draft", "--help")
    assert draft_help.returncode == 0 and draft_help.stdout.startswith("usage: python -m sprinter_ext train-draft")


def test_ci_runs_exactly_the_readme_commands():
    """The README's first two commands are the contract; .ci/run must run exactly them."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert commands[0] in ci_lines and commands[1] in ci_lines, (commands[:2], ci_lines)
    assert "pip install" in commands[0] and "python -m sprinter_ext bench" in commands[0]
    assert "pytest" in commands[1]


def test_sprinter_sweep_on_the_tiny_pair(tmp_path, make_tiny_pair, token_texts):
    import torch

    from sprinter_ext.cli.bench import environment
    from sprinter_ext.cli.sprinter_sweep import plot, rouge_l, sweep, target_nll
    from sprinter_ext.verifier import train_verifier

    pair = make_tiny_pair("llama", vocab=200)
    target = pair.target
    pair.verifier = train_verifier(pair, token_texts(200, 10, 30), epochs=2, progress=False)
    result = sweep(pair, thresholds=(1.01, 0.0), prompts=2, prompt_tokens=8, max_new_tokens=6, max_run=4,
                   progress=False)  # fmt: skip
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"ar", "sd", "sprinter@1.01", "sprinter@0"}
    assert rows["ar"]["rouge_l_vs_greedy_target"] == 1.0  # greedy AR against itself
    assert rows["sd"]["speedup_vs_sd"] == 1.0 and rows["sd"]["nll_vs_sd_pct"] == 0.0
    assert rows["sprinter@0"]["mean_run_length"] == 4.0  # never flags: max_run drafts per round
    result["environment"] = environment()
    plot(result, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert rouge_l([5, 6, 7], [5, 6, 7]) == 1.0 and rouge_l([1, 2], [3, 4]) == 0.0
    nll = target_nll(pair, [1, 2, 3], [4, 5])
    with torch.no_grad():
        logp = torch.log_softmax(target(torch.tensor([[1, 2, 3, 4, 5]])).logits[0], -1)
    assert abs(nll - float(-(logp[2, 4] + logp[3, 5]) / 2)) < 1e-5


def _parsers():
    from sprinter_ext import __main__ as cli
    from sprinter_ext.cli import bench, generate, sprinter_sweep, train_verifier

    return {"generate": generate.build_parser(), "bench": bench.build_parser(),
            "sprinter-sweep": sprinter_sweep.build_parser(), "train-verifier": train_verifier.build_parser(),
            "info": cli.info_parser()}  # fmt: skip


def test_every_option_has_help_and_a_shown_default():
    import argparse

    for name, ap in _parsers().items():
        text = ap.format_help()
        assert "``" not in text and ":func:" not in text, f"{name}: raw RST in --help"
        for action in ap._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            shown = ap._get_formatter()._get_help_string(action)
            if action.option_strings and not action.required:
                assert "(default:" in shown, f"{name} {action.option_strings}: no default shown"


def test_threads_option_parses_and_rejects():
    from sprinter_ext._threads import available_cpus

    ap = _parsers()["generate"]
    assert ap.parse_args(["q"]).threads is None
    assert ap.parse_args(["q", "--threads", "3"]).threads == 3
    assert ap.parse_args(["q", "--threads", "all"]).threads == available_cpus()
    bad = _cli("generate", "q", "--threads", "-1")
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_serve_without_the_server_module_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("sprinter_ext.serve") is not None:
        pytest.skip("the server module is installed; its own tests cover serve")
    out = _cli("serve")
    assert out.returncode == 2 and "serve: not available" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow  # subprocesses that import torch (and the default pair): 10-16 s here
def test_generate_cli_streams_text_and_prints_stats():
    """The default pair, greedy: the README's CLI example answers the question."""
    out = _cli("generate", "What is the capital of France?", "--method", "sd", "--max-new-tokens", "16",
               timeout=600, check=True)  # fmt: skip
    assert "Paris" in out.stdout
    stats = out.stderr.strip().splitlines()[-1]
    assert re.search(r"\d+ tokens in [\d.]+ s \([\d.]+ tokens/s\) \| acceptance \d+/\d+ = [\d.]+ \| target calls", stats)
    js = json.loads(_cli("generate", "What is the capital of France?", "--method", "ar", "--max-new-tokens", "16",
                         "--json", "--quiet", timeout=600, check=True).stdout)  # fmt: skip
    assert js["text"].strip() == out.stdout.strip()  # greedy sd == greedy ar, streamed == whole
    assert js["stats"]["new_tokens"] == len(js["tokens"])


def test_bench_writes_to_the_user_results_dir_by_default(monkeypatch, tmp_path):
    from sprinter_ext.cli import bench

    monkeypatch.setenv("SPRINTER_EXT_CACHE", str(tmp_path))
    assert bench.default_out() == tmp_path / "results"
    assert bench.build_parser().parse_args([]).out is None  # so main() picks default_out()
    assert bench.REPO_RESULTS == ROOT / "bench" / "results"
    with pytest.raises(SystemExit, match="not both"):
        bench.main(["--out", str(tmp_path), "--update-repo-results"])
    assert "ssd" in bench.ALL_METHODS
    assert bench.build_parser().parse_args([]).draft is None  # main(): the head on the default pair
    with pytest.raises(SystemExit, match="needs --pair default"):
        bench.main(["--pair", "tiny", "--draft", "head", "--out", str(tmp_path)])
