"""backend="cuda" (csrc/ops/cuda/ops_cuda.cu) against the torch reference, on a GPU.

The reference runs on CPU copies of the inputs; the cuda backend on CUDA tensors.
Tokens and counts must be equal, probabilities and scores close. Skipped without a
GPU or without a CUDA build of sprinter_ext._C (the same kernels run under a CPU
emulation in tests/test_cuda_emulation.py). The backend-selection tests at the end
run everywhere.
"""

from __future__ import annotations

import pytest
import torch
from cuda_cases import DRAFT_CASES, VERIFY_CASES, case_id, draft_inputs, verify_inputs
from ops_cases import assert_close, make_verifier

from sprinter_ext import ops
from sprinter_ext._rng import Stream
from sprinter_ext.ops import _common

CUDA_OK = torch.cuda.is_available() and _common._has_cuda_ops()
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason="needs a GPU and sprinter_ext._C built with CUDA")


def _draft(backend, logits, hidden, position, seed, settings, verifier, stream=Stream.DRAFT):
    t, k, p = settings
    return ops.draft_sample(logits, hidden, position, seed=seed, temperature=t, top_k=k, top_p=p, stream=stream,
                            verifier=verifier, backend=backend)  # fmt: skip


def _verify(backend, logits, q, x, start, seed, settings, mode):
    t, k, p = settings
    return ops.verify_tokens(logits, q, x, start, seed=seed, temperature=t, top_k=k, top_p=p, mode=mode,
                             backend=backend)  # fmt: skip


def _cuda(*ts):
    return [t.cuda() for t in ts]


@needs_cuda
@pytest.mark.parametrize("case", DRAFT_CASES, ids=case_id)
def test_draft_matches_reference(case):
    B, V, D, dtype, settings, vspec, seed = case
    logits, hidden, position = draft_inputs(B, V, D, dtype, seed)
    verifier = make_verifier(D, *vspec, seed=seed % 1000) if vspec else None
    want = _draft("torch", logits, hidden, position, seed, settings, verifier)
    v_gpu = make_verifier(D, *vspec, seed=seed % 1000).cuda() if vspec else None
    got = _draft("cuda", *_cuda(logits, hidden, position), seed, settings, v_gpu)
    assert got.probs.is_cuda and got.probs.dtype == torch.float32 and got.probs.shape == (B, V)
    assert torch.equal(got.token.cpu(), want.token), (got.token, want.token)
    assert torch.equal(got.probs.cpu() > 0, want.probs > 0), "kept sets differ"
    assert_close("probs", got.probs.cpu(), want.probs, atol=2e-6, rtol=1e-4)
    assert_close("q_token", got.q_token.cpu(), want.q_token, atol=2e-6, rtol=1e-4)
    if verifier is None:
        assert got.score is None and got.accept is None
    else:
        assert_close("score", got.score.cpu(), want.score, atol=1e-5, rtol=1e-4)
        assert torch.equal(got.accept.cpu(), want.accept)


@needs_cuda
@pytest.mark.parametrize("settings", [(1.0, 10, 1.0), (1.0, 0, 0.5), (0.5, 7, 0.6), (1.0, 300, 0.7)])
def test_draft_ties_at_the_cut_follow_the_rank_rule(settings):
    logits = torch.randint(0, 4, (3, 5000), generator=torch.Generator().manual_seed(8)).float()
    hidden, pos = torch.zeros(3, 8), torch.tensor([1, 2, 3])
    want = _draft("torch", logits, hidden, pos, 1, settings, None)
    got = _draft("cuda", *_cuda(logits, hidden, pos), 1, settings, None)
    assert torch.equal(got.probs.cpu() > 0, want.probs > 0)
    assert torch.equal(got.token.cpu(), want.token)


@needs_cuda
@pytest.mark.parametrize("case", VERIFY_CASES, ids=case_id)
def test_verify_matches_reference(case):
    B, n, V, dtype, qdtype, settings, mode, kind, seed = case
    logits, q, x, start = verify_inputs(B, n, V, dtype, qdtype, settings, kind, seed)
    want = _verify("torch", logits, q, x, start, seed, settings, mode)
    got = _verify("cuda", *_cuda(logits, q, x, start), seed, settings, mode)
    assert torch.equal(got.num_accepted.cpu(), want.num_accepted), (got.num_accepted, want.num_accepted)
    assert torch.equal(got.tokens.cpu(), want.tokens), (got.tokens, want.tokens)


@needs_cuda
def test_non_finite_rows_are_flagged_without_a_sync():
    logits = torch.randn(3, 100)
    logits[1, 5] = float("nan")
    logits[2, 9] = float("inf")
    v = make_verifier(8).cuda()
    out = _draft("cuda", *_cuda(logits, torch.randn(3, 8), torch.arange(3)), 0, (1.0, 0, 1.0), v)
    assert out.token.tolist()[1:] == [-1, -1] and out.token[0].item() >= 0
    assert out.score[1:].tolist() == [0.0, 0.0] and not out.accept[1:].any()
    tl = torch.randn(2, 3, 50)
    tl[1, 2, 7] = float("nan")
    res = _verify("cuda", *_cuda(tl, torch.softmax(torch.randn(2, 2, 50), -1), torch.randint(0, 50, (2, 2)),
                                 torch.arange(2)), 0, (1.0, 0, 1.0), "sd")  # fmt: skip
    assert res.num_accepted[1].item() == -1 and (res.tokens[1] == -1).all() and res.num_accepted[0].item() >= 0


@needs_cuda
def test_deterministic_and_graph_capturable():
    logits, hidden, pos = _cuda(*draft_inputs(1, 49152, 64, torch.bfloat16, 3))
    v = make_verifier(64).cuda()
    first = _draft("cuda", logits, hidden, pos, 7, (0.8, 50, 0.9), v)
    again = _draft("cuda", logits, hidden, pos, 7, (0.8, 50, 0.9), v)
    assert torch.equal(first.probs, again.probs) and torch.equal(first.score, again.score)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (caches the packed verifier) outside the capture
        _draft("cuda", logits, hidden, pos, 7, (0.8, 50, 0.9), v)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _draft("cuda", logits, hidden, pos, 7, (0.8, 50, 0.9), v)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.token, first.token) and torch.equal(captured.probs, first.probs)


# ---------------------------------------------------------- backend choice ----
def test_auto_prefers_cuda_ops_when_built(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(_common, "_has_cuda_ops", lambda: True)
    assert _common._backend("auto", cuda) == "cuda"
    assert _common._backend("auto", torch.device("cpu")) == "cpu"
    monkeypatch.setattr(_common, "_has_cuda_ops", lambda: False)
    assert _common._backend("auto", cuda) == "triton"
    with pytest.raises(ValueError, match="built against a CUDA torch"):
        _common._backend("cuda", cuda)


def test_cuda_backend_needs_cuda_tensors():
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        ops.verify_tokens(torch.randn(1, 2, 5), torch.rand(1, 1, 5), torch.tensor([[1]]), torch.tensor([0]), seed=0,
                          backend="cuda")  # fmt: skip
