"""pytest-benchmark: the C++ twin (backend="cpu") of the fused ops against the torch
reference (backend="torch"), side by side, at the default pair's shapes (V 49152,
D 576, batch 1), one thread:

    OMP_NUM_THREADS=1 python -m pytest bench/test_ops.py --benchmark-only \
        --benchmark-json bench/results/ops.json

Besides pytest-benchmark's JSON, writes bench/results/ops_summary.json: the median
of each (op, config, backend), the torch/cpu ratio per (op, config), the device,
versions and this command. The goal is ratio >= 3. GPU (triton) timings need a
CUDA machine and are not part of this file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest
import torch

from sprinter_ext import ops
from sprinter_ext._rng import Stream
from sprinter_ext.cli.bench import cpu_name
from sprinter_ext.ops._common import _race_rows
from sprinter_ext.sampling import SamplingSettings, probs
from sprinter_ext.verifier.model import Verifier

THREADS = int(os.environ.get("SPRINTER_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)

V, D, B, N = 49152, 576, 1, 4
COMMAND = ("OMP_NUM_THREADS=1 python -m pytest bench/test_ops.py --benchmark-only "
           "--benchmark-json bench/results/ops.json")  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "t1": SamplingSettings(1.0),
    "topk50_topp0.9": SamplingSettings(0.8, top_k=50, top_p=0.9),
    "topp0.9": SamplingSettings(1.0, top_p=0.9),
}
_MEDIANS: dict[tuple[str, str, str], float] = {}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _verifier():
    v = Verifier(D, hidden=(64,), features=("q_token", "max_q", "entropy"))
    g = _gen(0)
    with torch.no_grad():
        for p in v.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return v


def _record(benchmark, op, config, backend):
    _MEDIANS[(op, config, backend)] = benchmark.stats.stats.median


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("config", list(SETTINGS))
def test_draft_sample(benchmark, config, backend):
    s = SETTINGS[config]
    g = _gen(1)
    logits, hidden = torch.randn(B, V, generator=g) * 3, torch.randn(B, D, generator=g)
    pos, verifier = torch.tensor([100]), _verifier()
    benchmark.group = f"draft_sample-{config}"
    benchmark(ops.draft_sample, logits, hidden, pos, seed=0, temperature=s.temperature, top_k=s.top_k,
              top_p=s.top_p, stream=Stream.DRAFT, verifier=verifier, backend=backend)  # fmt: skip
    _record(benchmark, "draft_sample", config, backend)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("mode", ["sd", "race"])
@pytest.mark.parametrize("config", ["t1", "topk50_topp0.9"])
def test_verify_tokens(benchmark, config, mode, backend):
    """Every draft token accepted (q = p; race: x = the target's winners): the most work,
    since the C++ twin stops at the first rejection and the reference never does."""
    s = SETTINGS[config]
    logits = torch.randn(B, N + 1, V, generator=_gen(2)) * 3
    q = probs(logits[:, :N], s)
    start = torch.tensor([100])
    x = _race_rows(q, 0, start[:, None] + torch.arange(N), Stream.TARGET)  # [B, N]
    kw = dict(seed=0, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, mode=mode)
    out = ops.verify_tokens(logits, q, x, start, backend="torch", **kw)
    assert out.num_accepted.tolist() == [N]
    benchmark.group = f"verify_tokens-{mode}-{config}"
    benchmark(ops.verify_tokens, logits, q, x, start, backend=backend, **kw)
    _record(benchmark, f"verify_tokens-{mode}", config, backend)


def _cpu_name() -> str:
    return cpu_name() or platform.processor() or platform.machine()


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if not _MEDIANS:
        return
    rows = {}
    for (op, config, backend), median in sorted(_MEDIANS.items()):
        rows.setdefault(f"{op}/{config}", {})[f"{backend}_median_s"] = median
    for row in rows.values():
        if "torch_median_s" in row and "cpu_median_s" in row:
            row["ratio_torch_over_cpu"] = row["torch_median_s"] / row["cpu_median_s"]
    summary = {
        "device": _cpu_name(),
        "threads": THREADS,
        "shape": {"V": V, "D": D, "B": B, "n": N},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": COMMAND,
        "argv": sys.argv,
        "goal_ratio": 3.0,
        "results": rows,
        "gpu": "not measured: no GPU on the machine these numbers come from",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ops_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nop/config                              torch ms    cpu ms   ratio")
    for name, row in rows.items():
        t, c = row.get("torch_median_s", float("nan")), row.get("cpu_median_s", float("nan"))
        print(f"{name:<38} {t * 1e3:8.3f} {c * 1e3:9.3f} {t / c:7.2f}")
