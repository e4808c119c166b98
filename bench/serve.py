"""Time to first token and tokens/s through the server vs in-process, on the default pair.

    python bench/serve.py [--methods ar sd] [--prompts 4] [--max-tokens 64] [--threads 1]
                          [--out bench/results/serve_default.json]

Starts ``python -m sprinter_ext.serve`` (the default pair, pool of 1, ``--threads``) in a
subprocess on a free 127.0.0.1 port and drives it with the official ``openai`` client;
the same chat prompts run in this process with the same thread count. Greedy
(temperature 0), interleaved per prompt and method, so every path sees the same machine
load. Paths:

- ``generate``: one ``sprinter_ext.generate(...)`` call (builds its Decoder each time);
  tokens/s = new tokens / wall time (no first-token time: it returns at the end);
- ``stream``: a warm ``Decoder.stream(text=True)``: time to the first text piece, tokens/s;
- ``server-stream``: ``chat.completions.create(stream=True)``: time to the first content
  chunk, tokens/s (usage.completion_tokens / wall time);
- ``server``: the non-streaming call, tokens/s.

Per method and path: median time to first token (ms) and tokens/s over prompts, their
ratios to in-process, and whether the server's text equals ``generate()``'s. Writes
JSON (command, machine, versions, load average, per-prompt rows) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import sprinter_ext
from sprinter_ext.cli.bench import cpu_name, environment

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "Give me three tips for sleeping better.",
    "What causes the seasons on Earth?",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "Name four planets of the solar system.",
]
PATHS = ("generate", "stream", "server-stream", "server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, threads: int, max_length: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "sprinter_ext.serve", "--port", str(port), "--threads", str(threads),
           "--max-length", str(max_length), "--log-level", "warning", "--model-name", "default"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300.0) -> float:
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise RuntimeError("the server did not become ready")


def run_inprocess(pair, dec, msgs, n: int) -> dict:
    t0 = time.perf_counter()
    res = sprinter_ext.generate(pair, msgs, chat=True, method=dec.method, temperature=0, max_new_tokens=n)
    gen_s = time.perf_counter() - t0
    t0, first, pieces, stats = time.perf_counter(), None, [], {}
    for piece in dec.stream(msgs, chat=True, max_new_tokens=n, stats=stats, text=True):
        first = first if first is not None else time.perf_counter() - t0
        pieces.append(piece)
    stream_s = time.perf_counter() - t0
    k = len(res.tokens)
    return {"text": res.text, "tokens": k,
            "generate": {"ttft_s": None, "tokens_per_s": k / gen_s, "wall_s": gen_s},
            "stream": {"ttft_s": first, "tokens_per_s": stats["new_tokens"] / stream_s, "wall_s": stream_s,
                       "same_text": "".join(pieces) == res.text}}  # fmt: skip


def run_server(client, method: str, msgs, n: int) -> dict:
    t0, first, pieces, usage = time.perf_counter(), None, [], None
    for c in client.chat.completions.create(model="default", messages=msgs, temperature=0, max_tokens=n, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"method": method}):
        if c.usage is not None:
            usage = c.usage
        if c.choices and c.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - t0
            pieces.append(c.choices[0].delta.content)
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = client.chat.completions.create(model="default", messages=msgs, temperature=0, max_tokens=n,
                                       extra_body={"method": method})  # fmt: skip
    s = time.perf_counter() - t0
    return {"text": r.choices[0].message.content, "stream_text": "".join(pieces),
            "server-stream": {"ttft_s": first, "tokens_per_s": usage.completion_tokens / stream_s, "wall_s": stream_s},
            "server": {"ttft_s": None, "tokens_per_s": r.usage.completion_tokens / s, "wall_s": s}}  # fmt: skip


def summarize(rows: list[dict], methods: list[str]) -> list[dict]:
    out = []
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        for p in PATHS:
            ttft = [r[p]["ttft_s"] * 1e3 for r in rs if r[p]["ttft_s"] is not None]
            out.append({"method": m, "path": p, "ttft_ms": med(ttft), "tokens_per_s": med([r[p]["tokens_per_s"] for r in rs]),
                        "same_text": all(r["same_text"] for r in rs)})  # fmt: skip
        base = {x["path"]: x for x in out if x["method"] == m}
        for x in out:
            if x["method"] == m:
                x["tps_vs_generate"] = x["tokens_per_s"] / base["generate"]["tokens_per_s"]
                s, t = base["stream"]["ttft_ms"], x["ttft_ms"]
                x["ttft_vs_stream"] = t / s if (t is not None and s) else None
    return out


def table(summary: list[dict]) -> str:
    head = ["method", "path", "TTFT ms", "TTFT vs stream", "tokens/s", "vs generate()", "text = generate()"]
    f = lambda v, fmt: "-" if v is None else fmt.format(v)  # noqa: E731
    body = [[s["method"], s["path"], f(s["ttft_ms"], "{:.0f}"), f(s["ttft_vs_stream"], "{:.2f}x"),
             f(s["tokens_per_s"], "{:.1f}"), f(s["tps_vs_generate"], "{:.2f}x"), str(s["same_text"])]
            for s in summary]  # fmt: skip
    w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(n) for c, n in zip(cells, w)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (n + 2) for n in w) + "|", *map(line, body)])


def plot(summary: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(PATHS)
    for i, p in enumerate(PATHS):
        xs = [j + i * width for j in range(len(methods))]
        by = {s["method"]: s for s in summary if s["path"] == p}
        a.bar(xs, [by[m]["ttft_ms"] or 0 for m in methods], width, label=p)
        b.bar(xs, [by[m]["tokens_per_s"] for m in methods], width, label=p)
    for ax, title in ((a, "time to first token (ms, median)"), (b, "tokens/s (median)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(methods))], methods)
        ax.set_title(title)
    b.legend(fontsize=8)
    fig.suptitle("sprinter_ext serve vs in-process, default pair, greedy, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["ar", "sd"], help="methods to measure")
    ap.add_argument("--prompts", type=int, default=4, help=f"chat prompts (at most {len(QUESTIONS)})")
    ap.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server")
    ap.add_argument("--max-length", type=int, default=512, help="KV cache of the server's and the warm Decoders")
    ap.add_argument("--out", default="bench/results/serve_default.json", help="JSON path, relative to the repo (PNG beside it)")
    args = ap.parse_args(argv)
    import openai

    torch.set_num_threads(args.threads)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, args.threads, args.max_length)
    try:
        pair = sprinter_ext.load_pair()
        ready_s = wait_ready(proc, url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        decs = {m: sprinter_ext.Decoder(pair, m, temperature=0, max_length=args.max_length) for m in args.methods}
        warm = [{"role": "user", "content": "Hello!"}]
        for m in args.methods:  # warm both sides (first-call allocations, Decoder builds)
            run_inprocess(pair, decs[m], warm, 4)
            run_server(client, m, warm, 4)
        rows = []
        for q in QUESTIONS[: args.prompts]:
            msgs = [{"role": "user", "content": q}]
            for m in args.methods:
                a = run_inprocess(pair, decs[m], msgs, args.max_tokens)
                b = run_server(client, m, msgs, args.max_tokens)
                same = b["text"] == a["text"] and b["stream_text"] == a["text"] and a["stream"]["same_text"]
                rows.append({"prompt": q, "method": m, "tokens": a["tokens"], "same_text": same,
                             **{p: a[p] for p in ("generate", "stream")},
                             **{p: b[p] for p in ("server-stream", "server")}})  # fmt: skip
                print(f"{m:9s} {q[:40]:40s} tokens {a['tokens']:3d} same {same}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    summary = summarize(rows, args.methods)
    print(table(summary))
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python bench/serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment() | {"cpu_name": cpu_name(), "loadavg": os.getloadavg()},
        "config": vars(args) | {"server_ready_s": ready_s, "pool_size": 1, "temperature": 0},
        "summary": summary,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=1))
    plot(summary, args.methods, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
