"""The CUDA kernels of csrc/ops/cuda/ops_cuda.cu, run on the CPU under an emulation of
the CUDA execution model (tests/cuda_emu/emu.h: a thread per CUDA thread, barriers
for __syncthreads and the warp intrinsics), against the torch reference.

This machine class has no GPU, so this is what checks the kernels' logic: the cut
and tie rules, the race, the verifier MLP, the commit rule, and that every barrier
is reached by the whole block (a divergent one deadlocks: the run times out).
Blocks of 64 threads (2 warps) instead of 1024, so rows span many tiles. It does
not check CUDA's own expf/logf (glibc's are used), nor speed; tests/test_ops_cuda.py
runs the real kernels where a GPU is present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cuda_cases import DRAFT_CASES, VERIFY_CASES, case_id, draft_inputs, verify_inputs
from cuda_toolchain import REPO, cuda_include
from ops_cases import assert_close, make_verifier

from sprinter_ext import ops
from sprinter_ext._rng import Stream
from sprinter_ext.ops._common import _race_rows
from sprinter_ext.sampling import SamplingSettings, probs
from sprinter_ext.verifier.model import FEATURES

THREADS = int(os.environ.get("SPRINTER_EMU_THREADS", "64"))  # a multiple of 32; the GPU uses 1024
_DTYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> Path:
    gxx, inc = shutil.which("g++"), cuda_include()
    if gxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA toolkit headers (cuda_fp16.h) to build the emulation")
    exe = tmp_path_factory.mktemp("emu") / "emu"
    cmd = [gxx, "-std=c++20", "-O2", "-pthread", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
           "-DSPRINTER_CUDA_EMULATION", f"-DSPRINTER_CUDA_THREADS={THREADS}", "-I", str(REPO / "csrc"),
           "-I", str(inc), str(REPO / "tests" / "cuda_emu" / "emu_main.cpp"), "-o", str(exe)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "warning" not in out.stderr, out.stderr[-4000:]
    return exe


def _dump(t: torch.Tensor, path: Path) -> None:
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    t.numpy().tofile(path)


def _load(path: Path, dtype, shape) -> torch.Tensor:
    np_dtype = {torch.int64: np.int64, torch.float32: np.float32, torch.int8: np.int8}[dtype]
    return torch.from_numpy(np.fromfile(path, dtype=np_dtype).reshape(shape))


def _run(exe: Path, cmd: str, d: Path) -> None:
    out = subprocess.run([str(exe), cmd, str(d)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]


def emu_draft(exe, d: Path, logits, hidden, position, seed, settings, verifier, stream=Stream.DRAFT):
    """(token, probs, q_token, score, status) of the emulated draft_sample_kernel."""
    B, V = logits.shape
    D = hidden.shape[1]
    t, k, p = settings
    layers = [(w.detach().float(), b.detach().float()) for w, b in verifier.layers] if verifier else []
    codes = [FEATURES.index(f) for f in verifier.features] if verifier else []
    meta = [B, V, D, _DTYPE[logits.dtype], seed, int(stream), repr(float(t)), k, repr(float(p)), len(layers),
            len(codes), *(codes + [0] * (3 - len(codes)))]  # fmt: skip
    for i, (w, b) in enumerate(layers):
        meta += [w.shape[0], w.shape[1]]
        _dump(w, d / f"w{i}.bin")
        _dump(b, d / f"b{i}.bin")
    (d / "meta.txt").write_text(" ".join(map(str, meta)))
    _dump(logits, d / "logits.bin")
    _dump(hidden.float(), d / "hidden.bin")
    _dump(position, d / "position.bin")
    _run(exe, "draft", d)
    return (_load(d / "token.bin", torch.int64, (B,)), _load(d / "probs.bin", torch.float32, (B, V)),
            _load(d / "q_token.bin", torch.float32, (B,)), _load(d / "score.bin", torch.float32, (B,)),
            _load(d / "status.bin", torch.int8, (B,)))  # fmt: skip


def emu_verify(exe, d: Path, logits, q, x, start, seed, settings, mode):
    """(tokens, num_accepted, status) of the emulated verify kernels."""
    B, n1, V = logits.shape
    t, k, p = settings
    meta = [B, n1 - 1, V, _DTYPE[logits.dtype], _DTYPE[q.dtype], seed, repr(float(t)), k, repr(float(p)),
            int(mode == "sd")]  # fmt: skip
    (d / "meta.txt").write_text(" ".join(map(str, meta)))
    _dump(logits, d / "logits.bin")
    _dump(q, d / "q.bin")
    _dump(x, d / "x.bin")
    _dump(start, d / "start.bin")
    _run(exe, "verify", d)
    return (_load(d / "tokens.bin", torch.int64, (B, n1)), _load(d / "num.bin", torch.int64, (B,)),
            _load(d / "status.bin", torch.int8, (B,)))  # fmt: skip


@pytest.mark.parametrize("case", DRAFT_CASES, ids=case_id)
def test_draft_kernel_matches_reference(emu, tmp_path, case):
    B, V, D, dtype, settings, vspec, seed = case
    logits, hidden, position = draft_inputs(B, V, D, dtype, seed)
    verifier = make_verifier(D, *vspec, seed=seed % 1000) if vspec else None
    t, k, p = settings
    want = ops.draft_sample(logits, hidden, position, seed=seed, temperature=t, top_k=k, top_p=p,
                            verifier=verifier, backend="torch")  # fmt: skip
    token, probs, q_token, score, status = emu_draft(emu, tmp_path, logits, hidden, position, seed, settings, verifier)
    assert torch.equal(status, torch.zeros(B, dtype=torch.int8))
    assert torch.equal(token, want.token), (token, want.token)
    assert torch.equal(probs > 0, want.probs > 0), "kept sets differ"
    assert_close("probs", probs, want.probs, atol=2e-6, rtol=1e-4)
    assert_close("q_token", q_token, want.q_token, atol=2e-6, rtol=1e-4)
    if verifier is None:
        assert torch.equal(score, torch.zeros(B))
    else:
        assert_close("score", score, want.score, atol=1e-5, rtol=1e-4)
        assert torch.equal(score >= verifier.threshold, want.accept)


@pytest.mark.parametrize("settings", [(1.0, 10, 1.0), (1.0, 0, 0.5), (0.5, 7, 0.6), (1.0, 300, 0.7)])
def test_draft_ties_at_the_cut_follow_the_rank_rule(emu, tmp_path, settings):
    """Logits in {0, 1, 2, 3}: the cuts fall inside groups of equal probabilities
    that span many tiles of the block; the spec keeps the lowest indices first."""
    logits = torch.randint(0, 4, (3, 1000), generator=torch.Generator().manual_seed(8)).float()
    hidden, pos = torch.zeros(3, 8), torch.tensor([1, 2, 3])
    t, k, p = settings
    want = ops.draft_sample(logits, hidden, pos, seed=1, temperature=t, top_k=k, top_p=p, backend="torch")
    token, probs, *_ = emu_draft(emu, tmp_path, logits, hidden, pos, 1, settings, None)
    assert torch.equal(probs > 0, want.probs > 0)
    assert torch.equal(token, want.token)


def test_draft_streams_and_degenerate_rows(emu, tmp_path):
    """A one-hot row, a row with -inf entries, greedy ties (first argmax), and the stream."""
    logits = torch.full((3, 300), -float("inf"))
    logits[0, 217] = 2.0
    logits[1, ::3] = torch.linspace(0, 1, 100)
    logits[2] = 1.0  # greedy: ties in every thread of the block; the first index wins
    hidden, pos = torch.zeros(3, 8), torch.tensor([5, 6, 7])
    for stream in (Stream.DRAFT, Stream.TARGET):
        for settings in [(1.0, 0, 1.0), (0.0, 0, 1.0), (1.0, 2, 0.5)]:
            t, k, p = settings
            want = ops.draft_sample(logits, hidden, pos, seed=3, temperature=t, top_k=k, top_p=p, stream=stream,
                                    backend="torch")  # fmt: skip
            token, probs, q_token, *_ = emu_draft(emu, tmp_path, logits, hidden, pos, 3, settings, None, stream)
            assert torch.equal(token, want.token), (stream, settings)
            assert_close("probs", probs, want.probs, atol=2e-6, rtol=1e-4)


def test_draft_non_finite_rows_are_flagged(emu, tmp_path):
    logits = torch.randn(4, 100)
    logits[1, 5] = float("nan")
    logits[2, 9] = float("inf")
    logits[3] = -float("inf")
    v = make_verifier(8)
    token, probs, q_token, score, status = emu_draft(emu, tmp_path, logits, torch.randn(4, 8), torch.arange(4), 0,
                                                     (1.0, 0, 1.0), v)  # fmt: skip
    assert status.tolist() == [0, 1, 1, 1]
    assert token[0].item() >= 0 and token[1:].tolist() == [-1, -1, -1]
    assert q_token[1:].tolist() == [0.0, 0.0, 0.0] and score[1:].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(probs[1:], torch.zeros(3, 100))


def test_draft_nan_hidden_scores_zero(emu, tmp_path):
    hidden = torch.randn(2, 8)
    hidden[1, 3] = float("nan")
    *_, score, status = emu_draft(emu, tmp_path, torch.randn(2, 30), hidden, torch.arange(2), 0, (1.0, 0, 1.0),
                                  make_verifier(8, hidden=(4,)))  # fmt: skip
    assert status.tolist() == [0, 0] and score[1].item() == 0.0 and score[0].item() > 0.0


@pytest.mark.parametrize("case", VERIFY_CASES, ids=case_id)
def test_verify_kernels_match_reference(emu, tmp_path, case):
    B, n, V, dtype, qdtype, settings, mode, kind, seed = case
    logits, q, x, start = verify_inputs(B, n, V, dtype, qdtype, settings, kind, seed)
    t, k, p = settings
    want = ops.verify_tokens(logits, q, x, start, seed=seed, temperature=t, top_k=k, top_p=p, mode=mode,
                             backend="torch")  # fmt: skip
    tokens, num, status = emu_verify(emu, tmp_path, logits, q, x, start, seed, settings, mode)
    assert torch.equal(status, torch.zeros(B, dtype=torch.int8))
    assert torch.equal(num, want.num_accepted), (num, want.num_accepted)
    assert torch.equal(tokens, want.tokens), (tokens, want.tokens)


@pytest.mark.parametrize("mode", ["sd", "race"])
def test_verify_extremes(emu, tmp_path, mode):
    """q = p accepts everything (bonus from TARGET noise); disjoint p and q reject the
    first token; out-of-range draft tokens count as rejected."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 300, generator=g) * 3
    q = probs(logits[:, :3], SamplingSettings())
    x = torch.stack([_race_rows(q[b], 9, torch.arange(3) + 10 * b, Stream.TARGET) for b in range(2)])
    start = torch.tensor([0, 10])
    want = ops.verify_tokens(logits, q, x, start, seed=9, mode=mode, backend="torch")
    tokens, num, _ = emu_verify(emu, tmp_path, logits, q, x, start, 9, (1.0, 0, 1.0), mode)
    assert torch.equal(tokens, want.tokens) and torch.equal(num, want.num_accepted)
    bad_x = x.clone()
    bad_x[0, 0], bad_x[1, 1] = -5, 300
    tokens, num, _ = emu_verify(emu, tmp_path, logits, q, bad_x, start, 9, (1.0, 0, 1.0), mode)
    assert num.tolist() == [0, 1]
    assert tokens[0, 1:].tolist() == [-1, -1, -1] and tokens[1, 2:].tolist() == [-1, -1]


@pytest.mark.parametrize("settings", [(1.0, 0, 1.0), (0.7, 3, 0.9)])
def test_verify_many_residual_draws(emu, tmp_path, settings):
    """64 rows of independent p and q over 7 tokens: mostly rejections, so the
    residual race max(p - q, 0) decides most rows."""
    logits, q, x, start = verify_inputs(64, 1, 7, torch.float32, torch.float32, settings, "rand", 12)
    t, k, p = settings
    want = ops.verify_tokens(logits, q, x, start, seed=5, temperature=t, top_k=k, top_p=p, backend="torch")
    tokens, num, _ = emu_verify(emu, tmp_path, logits, q, x, start, 5, settings, "sd")
    assert (num == 0).sum() > 20
    assert torch.equal(tokens, want.tokens) and torch.equal(num, want.num_accepted)


def test_verify_zero_residual_recovers_token_zero(emu, tmp_path):
    """q = 2p (not normalised: q >= p whatever the rounding of p) and a drafted token
    outside p's support: rejected (0 * u < 0 fails), and the residual max(p - q, 0)
    is all zero, whose race the spec resolves to index 0."""
    logits = torch.randn(2, 2, 40, generator=torch.Generator().manual_seed(3))
    settings = (1.0, 2, 1.0)
    q = 2 * probs(logits[:, :1], SamplingSettings(*settings))
    x = (q[:, 0] == 0).float().argmax(dim=-1, keepdim=True)  # some token top-k dropped
    want = ops.verify_tokens(logits, q, x, torch.tensor([3, 4]), seed=1, top_k=2, backend="torch")
    tokens, num, _ = emu_verify(emu, tmp_path, logits, q, x, torch.tensor([3, 4]), 1, settings, "sd")
    assert want.tokens[:, 0].tolist() == [0, 0] and want.num_accepted.tolist() == [0, 0]
    assert torch.equal(tokens, want.tokens) and torch.equal(num, want.num_accepted)


def test_verify_non_finite_rows_are_flagged(emu, tmp_path):
    logits = torch.randn(3, 3, 50)
    logits[1, 2, 7] = float("nan")  # after any rejection: still flags the row, as the reference raises
    logits[2, 0] = -float("inf")
    q = torch.softmax(torch.randn(3, 2, 50), -1)
    x = torch.randint(0, 50, (3, 2))
    tokens, num, status = emu_verify(emu, tmp_path, logits, q, x, torch.arange(3), 0, (1.0, 0, 1.0), "sd")
    assert status.tolist() == [0, 1, 1]
    assert num[1:].tolist() == [-1, -1] and (tokens[1:] == -1).all()
    assert num[0].item() >= 0
