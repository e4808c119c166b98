"""sprinter_ext.ops.draft_sample: the C++ and Triton backends against the torch reference."""

from __future__ import annotations

import pytest
import torch
from ops_cases import BACKENDS, TRITON_OK, assert_close, gen, make_verifier
from scipy import stats

from sprinter_ext import ops
from sprinter_ext._rng import Stream
from sprinter_ext.errors import NonFiniteLogitsError
from sprinter_ext.sampling import SamplingSettings, probs

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
ALL3 = ("q_token", "max_q", "entropy")

# A covering subset of V x D x B x dtype x settings x verifier (not the product: the
# interpreted Triton kernel costs ~0.5 s per top-k/top-p row).
# (B, V, D, dtype, (temperature, top_k, top_p), verifier (hidden, features) or None, seed)
CASES = [
    (1, 111, 64, F32, (1.0, 0, 1.0), ((64,), ALL3), 0),
    (3, 1000, 576, BF16, (0.8, 50, 1.0), ((64,), ALL3), 1),
    (3, 111, 768, F16, (1.0, 0, 0.9), ((), ("entropy", "q_token")), 2),
    (1, 49152, 576, F32, (0.7, 50, 0.9), ((64,), ALL3), 3),
    (3, 50257, 64, BF16, (1.0, 0, 1.0), ((32, 16), ("max_q",)), 2**63 + 5),
    (3, 1000, 64, F32, (0.0, 0, 1.0), ((64,), ALL3), 4),
    (3, 1000, 576, F16, (1.3, 1, 1.0), None, 5),
    (1, 50257, 768, F16, (1.0, 0, 0.5), ((64,), ALL3), 6),
    (3, 111, 64, BF16, (0.9, 7, 0.8), ((64,), ("q_token",)), 7),
]


def _inputs(B, V, D, dtype, seed, scale=3.0):
    g = gen(seed)
    logits = (torch.randn(B, V, generator=g) * scale).to(dtype)
    hidden = torch.randn(B, D, generator=g).to(dtype)
    position = torch.randint(0, 4096, (B,), generator=g)
    return logits, hidden, position


def _run(backend, logits, hidden, position, settings, verifier, seed, stream=Stream.DRAFT):
    t, k, p = settings
    return ops.draft_sample(logits, hidden, position, seed=seed, temperature=t, top_k=k, top_p=p,
                            stream=stream, verifier=verifier, backend=backend)  # fmt: skip


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-V{c[1]}-D{c[2]}-{str(c[3])[6:]}-{c[4]}")
def test_backends_match_reference(backend, case):
    B, V, D, dtype, settings, vspec, seed = case
    logits, hidden, position = _inputs(B, V, D, dtype, seed)
    verifier = make_verifier(D, *vspec, seed=seed) if vspec else None
    want = _run("torch", logits, hidden, position, settings, verifier, seed)
    got = _run(backend, logits, hidden, position, settings, verifier, seed)
    assert torch.equal(got.token, want.token), (got.token, want.token)
    assert got.probs.dtype == torch.float32 and got.probs.shape == (B, V)
    assert_close("probs", got.probs, want.probs, atol=2e-6, rtol=1e-4)
    assert torch.equal(got.probs > 0, want.probs > 0), "kept sets differ"
    assert_close("q_token", got.q_token, want.q_token, atol=2e-6, rtol=1e-4)
    if verifier is None:
        assert got.score is None and got.accept is None
    else:
        assert_close("score", got.score, want.score, atol=1e-5, rtol=1e-4)
        assert torch.equal(got.accept, want.accept)
        assert not torch.isnan(got.score).any()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("settings", [(1.0, 10, 1.0), (1.0, 0, 0.5), (0.5, 7, 0.6)])
def test_ties_at_the_cut_follow_the_rank_rule(backend, settings):
    """Logits in {0, 1, 2, 3}: the top-k / top-p cut falls inside a group of equal
    probabilities, which the spec breaks by index (lowest first)."""
    logits = torch.randint(0, 4, (3, 1000), generator=gen(8)).float()
    hidden, pos = torch.zeros(3, 8), torch.tensor([1, 2, 3])
    want = _run("torch", logits, hidden, pos, settings, None, seed=1)
    got = _run(backend, logits, hidden, pos, settings, None, seed=1)
    assert torch.equal(got.probs > 0, want.probs > 0)
    assert torch.equal(got.token, want.token)


@pytest.mark.skipif(not TRITON_OK, reason="triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("settings", [(1.0, 10, 1.0), (0.7, 0, 0.6), (0.0, 0, 1.0), (1.0, 0, 1.0)])
def test_triton_rows_spanning_many_tiles(monkeypatch, settings):
    """The interpreter normally takes a whole row as one tile; force 64-wide tiles so the
    carries across tiles (tie ranks at the cuts, the running race winner, the first
    argmax) are exercised as on a GPU."""
    from sprinter_ext.kernels import _sampling

    monkeypatch.setattr(_sampling, "BLOCK_OVERRIDE", 64)
    logits = torch.randint(0, 4, (2, 1000), generator=gen(9)).float()  # ties across tiles
    logits[1] = torch.randn(1000, generator=gen(10))
    hidden, pos = torch.randn(2, 64, generator=gen(11)), torch.tensor([7, 8])
    verifier = make_verifier(64, seed=3)
    want = _run("torch", logits, hidden, pos, settings, verifier, seed=2)
    got = _run("triton", logits, hidden, pos, settings, verifier, seed=2)
    assert torch.equal(got.token, want.token)
    assert torch.equal(got.probs > 0, want.probs > 0)
    assert_close("probs", got.probs, want.probs, atol=2e-6, rtol=1e-4)
    assert_close("score", got.score, want.score, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_dtype_may_differ_from_logits(backend):
    logits, hidden, pos = _inputs(3, 111, 64, BF16, seed=12)
    verifier = make_verifier(64, seed=12)
    want = _run("torch", logits, hidden.float(), pos, (1.0, 0, 1.0), verifier, 12)
    got = _run(backend, logits, hidden.float(), pos, (1.0, 0, 1.0), verifier, 12)
    assert torch.equal(got.token, want.token)
    assert_close("score", got.score, want.score, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_rows_are_exact(backend):
    V, D = 111, 64
    verifier = make_verifier(D, seed=1)
    logits = torch.full((3, V), float("-inf"))
    logits[0, 17] = 0.0  # one-hot: only token 17 can be drawn
    logits[1] = torch.randn(V, generator=gen(1))
    logits[2] = torch.randn(V, generator=gen(2))
    hidden = torch.randn(3, D, generator=gen(3))
    pos = torch.tensor([0, 1, 2])
    out = _run(backend, logits, hidden, pos, (1.0, 1, 1.0), verifier, seed=9)  # top_k = 1
    assert out.token.tolist() == [17, int(logits[1].argmax()), int(logits[2].argmax())]
    assert torch.equal(out.probs, torch.nn.functional.one_hot(out.token, V).float())
    assert out.q_token.tolist() == [1.0, 1.0, 1.0]
    greedy = _run(backend, logits[1:], hidden[1:], pos[1:], (0.0, 0, 1.0), verifier, seed=9)
    assert greedy.token.tolist() == out.token[1:].tolist()
    ref = verifier.score(hidden, out.probs, out.token)
    assert_close("one-hot score", out.score, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_tokens_and_streams_differ(backend):
    logits, hidden, pos = _inputs(3, 1000, 64, F32, seed=11, scale=0.1)
    a = _run(backend, logits, hidden, pos, (1.0, 0, 1.0), None, seed=5)
    b = _run(backend, logits, hidden, pos, (1.0, 0, 1.0), None, seed=5)
    c = _run(backend, logits, hidden, pos, (1.0, 0, 1.0), None, seed=5, stream=Stream.TARGET)
    assert torch.equal(a.token, b.token)
    assert not torch.equal(a.token, c.token)  # near-uniform q over 1000 tokens: 3 collisions ~ 1e-9


def test_race_frequencies_follow_q():
    """Statistical check of the C++ race: 20000 positions, chi-square against q."""
    V, N = 8, 20000
    row = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, float("-inf"), 1.5, 0.2]])
    settings = SamplingSettings(0.9, top_k=6, top_p=0.95)
    q = probs(row, settings)[0]
    out = ops.draft_sample(row.expand(N, V).contiguous(), torch.zeros(N, 1), torch.arange(N), seed=3,
                           temperature=0.9, top_k=6, top_p=0.95, backend="cpu")  # fmt: skip
    counts = torch.bincount(out.token, minlength=V).double()
    support = q > 0
    assert counts[~support].sum() == 0
    expected = q[support].double() / q[support].double().sum() * counts.sum()
    _, pvalue = stats.chisquare(counts[support].numpy(), expected.numpy())
    assert pvalue > 1e-4


# ----------------------------------------------------------------- errors ----
def _ok():
    return torch.randn(2, 111, generator=gen(0)), torch.randn(2, 64, generator=gen(1)), torch.tensor([3, 4])


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda l, h, p: (l[0], h, p), ValueError, r"logits must be a 2-D tensor \[B, V\]"),
        (lambda l, h, p: (l.double(), h, p), TypeError, "logits must have dtype float32, float16, bfloat16"),
        (lambda l, h, p: (l, h[:1], p), ValueError, r"hidden \[B, D\] has size 1 in dim 0 \(B\)"),
        (lambda l, h, p: (l, h.to("meta"), p), ValueError, "hidden must be on the logits' device"),
        (lambda l, h, p: (l, h, p.int()), TypeError, "position must have dtype int64"),
        (lambda l, h, p: (l, h, p[:, None]), ValueError, r"position must be a 1-D tensor \[B\]"),
        (lambda l, h, p: (l.t().contiguous().t()[:, :2], h, p), ValueError, r"logits must be contiguous"),
        (lambda l, h, p: (l, h.t().contiguous().t(), p), ValueError, "hidden must be contiguous"),
        (lambda l, h, p: ([[0.0]], h, p), TypeError, "logits must be a torch.Tensor"),
    ],
)
def test_bad_tensors_raise_named_errors(mutate, exc, match):
    logits, hidden, pos = mutate(*_ok())
    with pytest.raises(exc, match=match):
        ops.draft_sample(logits, hidden, pos, seed=0, backend="cpu")


def test_bad_arguments_raise_named_errors():
    logits, hidden, pos = _ok()
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.draft_sample(logits, hidden, pos, seed=0, backend="gpu")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        ops.draft_sample(logits, hidden, pos, seed=0, backend="cuda")
    with pytest.raises(ValueError, match="seed must be in"):
        ops.draft_sample(logits, hidden, pos, seed=-1)
    with pytest.raises(ValueError, match="top_p must be in"):
        ops.draft_sample(logits, hidden, pos, seed=0, top_p=0.0)
    with pytest.raises(TypeError, match="stream must be a Stream"):
        ops.draft_sample(logits, hidden, pos, seed=0, stream="draft")
    with pytest.raises(ValueError, match="input_size=576"):
        ops.draft_sample(logits, hidden, pos, seed=0, verifier=make_verifier(576))
    with pytest.raises(TypeError, match="verifier must be"):
        ops.draft_sample(logits, hidden, pos, seed=0, verifier=object())


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_non_finite_logits_raise(backend):
    logits, hidden, pos = _ok()
    logits[1, 5] = float("nan")
    with pytest.raises(NonFiniteLogitsError):
        ops.draft_sample(logits, hidden, pos, seed=0, backend=backend)


@pytest.mark.skipif(not TRITON_OK, reason="triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy sees inf - inf
def test_non_finite_logits_flag_the_row_in_triton():
    logits, hidden, pos = _ok()
    logits[1, 5] = float("inf")
    out = ops.draft_sample(logits, hidden, pos, seed=0, verifier=make_verifier(64), backend="triton")
    assert out.token[1].item() == -1 and out.token[0].item() >= 0
    assert out.score[1].item() == 0.0 and not out.accept[1].item()
