"""sprinter_ext.ops.verify_tokens: backends against the torch reference (the spec that the
reference engine's methods/sd.py and methods/ersd.py run), and the reference against
hand-computed one-hot/greedy cases and, statistically, the target's distribution."""

from __future__ import annotations

import pytest
import torch
from ops_cases import BACKENDS, TRITON_OK, gen
from stats_helpers import ALPHA, g_test_pvalue

from sprinter_ext import ops
from sprinter_ext._rng import Stream
from sprinter_ext.errors import NonFiniteLogitsError
from sprinter_ext.ops._common import _race_rows
from sprinter_ext.sampling import SamplingSettings, probs

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _inputs(B, n, V, dtype, settings, kind, seed):
    """Target logits [B, n+1, V], draft q [B, n, V] and draft tokens x [B, n] drawn from q.

    kind: "rand" (independent p and q: early rejections), "same" (q = p: everything
    accepted), "near" (q a mixture of p and noise: some acceptances).
    """
    g = gen(seed)
    logits = torch.randn(B, n + 1, V, generator=g) * 3
    p = probs(logits[:, :n], SamplingSettings(*settings))
    noise = torch.softmax(torch.randn(B, n, V, generator=g) * 3, dim=-1)
    q = {"rand": noise, "same": p, "near": 0.7 * p + 0.3 * noise}[kind]
    x = torch.multinomial(q.reshape(-1, V), 1, generator=g).view(B, n)
    start = torch.randint(0, 4096, (B,), generator=g)
    return logits.to(dtype), q.to(dtype), x, start


def _verify(backend, logits, q, x, start, settings, mode, seed):
    t, k, p = settings
    return ops.verify_tokens(logits, q, x, start, seed=seed, temperature=t, top_k=k, top_p=p, mode=mode,
                             backend=backend)  # fmt: skip


# (B, n, V, dtype, settings, mode, kind, seed): a covering subset (interpreted Triton
# costs ~0.3 s per position with top-k/top-p).
CASES = [
    (3, 4, 111, F32, (1.0, 0, 1.0), "sd", "near", 0),
    (1, 7, 1000, BF16, (0.8, 0, 1.0), "sd", "same", 1),
    (3, 1, 49152, F16, (1.0, 0, 1.0), "sd", "rand", 2),
    (1, 1, 50257, F32, (0.7, 40, 0.9), "sd", "near", 3),
    (1, 4, 111, BF16, (1.0, 5, 0.8), "sd", "near", 4),
    (3, 7, 1000, F32, (0.0, 0, 1.0), "sd", "near", 5),
    (3, 4, 111, F32, (1.0, 0, 1.0), "race", "near", 6),
    (1, 4, 50257, BF16, (1.0, 0, 1.0), "race", "same", 7),
    (1, 1, 1000, F16, (0.9, 20, 0.95), "race", "near", 2**64 - 1),
    (3, 7, 111, F32, (0.0, 0, 1.0), "race", "near", 8),
]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-n{c[1]}-V{c[2]}-{str(c[3])[6:]}-{c[4]}-{c[5]}-{c[6]}")
def test_backends_match_reference(backend, case):
    B, n, V, dtype, settings, mode, kind, seed = case
    logits, q, x, start = _inputs(B, n, V, dtype, settings, kind, seed)
    want = _verify("torch", logits, q, x, start, settings, mode, seed)
    got = _verify(backend, logits, q, x, start, settings, mode, seed)
    assert got.tokens.shape == (B, n + 1) and got.tokens.dtype == torch.int64
    assert torch.equal(got.num_accepted, want.num_accepted), (got.num_accepted, want.num_accepted)
    assert torch.equal(got.tokens, want.tokens), (got.tokens, want.tokens)


@pytest.mark.skipif(not TRITON_OK, reason="triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("mode, settings", [("sd", (1.0, 10, 0.9)), ("race", (0.8, 0, 1.0))])
def test_triton_rows_spanning_many_tiles(monkeypatch, mode, settings):
    """64-wide tiles (see test_ops_draft.py): the carries across tiles of a row."""
    from sprinter_ext.kernels import _sampling

    monkeypatch.setattr(_sampling, "BLOCK_OVERRIDE", 64)
    for kind in ("near", "same"):
        logits, q, x, start = _inputs(1, 1, 300, F32, settings, kind, 31)
        want = _verify("torch", logits, q, x, start, settings, mode, 31)
        got = _verify("triton", logits, q, x, start, settings, mode, 31)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.num_accepted, want.num_accepted)


def _first_token_pvalue(tokens: torch.Tensor, p: torch.Tensor) -> float:
    """G-test p-value of the tokens [N] against the distribution p [V] (exact when p is one-hot)."""
    counts = torch.bincount(tokens, minlength=p.numel()).double()
    if int((p > 0).sum()) == 1:  # greedy: the one possible token, or not
        return 1.0 if float(counts[p == 0].sum()) == 0.0 else 0.0
    return g_test_pvalue(counts, p.double())


@pytest.mark.parametrize("mode", ["sd", "race"])
@pytest.mark.parametrize("settings", [(1.0, 0, 1.0), (0.8, 20, 0.9), (0.0, 0, 1.0)])
def test_torch_reference_commits_the_targets_distribution(mode, settings):
    """The torch backend (the spec the reference engine runs) against the rule's defining property,
    not against another statement of it: whatever q the draft samples from, the first committed
    token follows the target's p (SD: accept with min(1, p/q), else the residual; ERSD: the
    target's own race winner). The drafts themselves (accept everything: the planted bug) must
    fail the same test."""
    B, n, V, seed = 4000, 2, 50, 13
    g = gen(seed)
    logits = (torch.randn(n + 1, V, generator=g) * 2).expand(B, n + 1, V).contiguous()  # one p for every row
    q = torch.softmax(torch.randn(n, V, generator=g) * 2, dim=-1).expand(B, n, V).contiguous()  # q != p
    start = torch.arange(B) * (n + 1)  # disjoint positions: independent noise per row
    pos = start[:, None] + torch.arange(n)
    x = _race_rows(q, seed, pos, Stream.DRAFT if mode == "sd" else Stream.TARGET)  # [B, n] the draft's races
    out = _verify("torch", logits, q, x, start, settings, mode, seed)
    p0 = probs(logits[0, 0], SamplingSettings(*settings))
    assert _first_token_pvalue(out.tokens[:, 0], p0) > ALPHA, f"{mode} {settings}: not the target's distribution"
    assert _first_token_pvalue(x[:, 0], p0) < ALPHA, "the drafts passed as the target's: the test has no power"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["sd", "race"])
def test_identical_p_and_q_accept_everything(backend, mode):
    B, n, V = 2, 4, 111
    logits, q, x, start = _inputs(B, n, V, F32, (1.0, 0, 1.0), "same", 21)
    if mode == "race":  # ERSD accepts x_i iff it is the target's own race winner
        pos = start[:, None] + torch.arange(n)
        x = torch.stack([_race_rows(q[b], 21, pos[b], Stream.TARGET) for b in range(B)])
    out = _verify(backend, logits, q, x, start, (1.0, 0, 1.0), mode, 21)
    assert out.num_accepted.tolist() == [n, n]
    assert torch.equal(out.tokens[:, :n], x)
    assert (out.tokens[:, n] >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["sd", "race"])
def test_disjoint_p_and_q_reject_the_first_token(backend, mode):
    B, n, V = 2, 3, 111
    logits = torch.full((B, n + 1, V), float("-inf"))
    logits[..., :50] = torch.randn(B, n + 1, 50, generator=gen(1))  # p lives on tokens < 50
    q = torch.zeros(B, n, V)
    q[..., 50:] = 1.0 / (V - 50)  # q lives on tokens >= 50
    x = torch.full((B, n), 60)
    out = _verify(backend, logits, q, x, torch.tensor([5, 9]), (1.0, 0, 1.0), mode, 3)
    assert out.num_accepted.tolist() == [0, 0]
    assert ((out.tokens[:, 0] >= 0) & (out.tokens[:, 0] < 50)).all()
    assert (out.tokens[:, 1:] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_target_accepts_its_argmax(backend):
    B, n, V = 2, 4, 111
    logits = torch.randn(B, n + 1, V, generator=gen(2))
    best = logits.argmax(-1)  # [B, n + 1]
    x = best[:, :n].clone()
    x[1, 2] = (x[1, 2] + 1) % V  # row 1 leaves the greedy path at position 2
    q = torch.nn.functional.one_hot(x, V).float()  # a greedy draft's q
    for mode in ("sd", "race"):
        out = _verify(backend, logits, q, x, torch.tensor([0, 0]), (0.0, 0, 1.0), mode, 0)
        assert out.num_accepted.tolist() == [n, 2]
        assert out.tokens[0].tolist() == best[0].tolist()
        assert out.tokens[1].tolist() == best[1, :3].tolist() + [-1, -1]


# ----------------------------------------------------------------- errors ----
def _ok(n=2, V=111):
    logits, q, x, start = _inputs(2, n, V, F32, (1.0, 0, 1.0), "near", 0)
    return logits, q, x, start


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda l, q, x, s: (l[0], q, x, s), ValueError, r"target_logits must be a 3-D tensor \[B, n \+ 1, V\]"),
        (lambda l, q, x, s: (l.double(), q, x, s), TypeError, "target_logits must have dtype"),
        (lambda l, q, x, s: (l, q[:, :1], x, s), ValueError, r"draft_probs \[B, n, V\] has size 1 in dim 1 \(n\)"),
        (lambda l, q, x, s: (l, q[..., :50].contiguous(), x, s), ValueError, r"has size 50 in dim 2 \(V\)"),
        (lambda l, q, x, s: (l, q, x.int(), s), TypeError, "draft_tokens must have dtype int64"),
        (lambda l, q, x, s: (l, q, x[:1], s), ValueError, r"draft_tokens \[B, n\] has size 1 in dim 0 \(B\)"),
        (lambda l, q, x, s: (l, q, x, s[:, None]), ValueError, r"start_position must be a 1-D tensor"),
        (lambda l, q, x, s: (l, q.to("meta"), x, s), ValueError, "draft_probs must be on the logits' device"),
        (lambda l, q, x, s: (l.transpose(0, 1).contiguous().transpose(0, 1), q, x, s), ValueError,
         "target_logits must be contiguous"),
        (lambda l, q, x, s: (l, q, x + 1000, s), ValueError, r"draft_tokens must be token ids in \[0, V\)"),
    ],
)
def test_bad_tensors_raise_named_errors(mutate, exc, match):
    args = mutate(*_ok())
    with pytest.raises(exc, match=match):
        ops.verify_tokens(*args, seed=0, backend="cpu")


def test_bad_arguments_raise_named_errors():
    args = _ok()
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.verify_tokens(*args, seed=0, mode="greedy")
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        ops.verify_tokens(*args, seed=0, top_k=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        ops.verify_tokens(*args, seed=1.5)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_non_finite_logits_raise(backend):
    logits, q, x, start = _ok()
    logits[0, -1, 3] = float("nan")  # even past the first rejection
    with pytest.raises(NonFiniteLogitsError):
        ops.verify_tokens(logits, q, x, start, seed=0, backend=backend)


@pytest.mark.skipif(not TRITON_OK, reason="triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy sees nan
def test_non_finite_logits_flag_the_row_in_triton():
    logits, q, x, start = _ok()
    logits[0, -1, 3] = float("nan")
    out = ops.verify_tokens(logits, q, x, start, seed=0, backend="triton")
    assert out.num_accepted[0].item() == -1 and (out.tokens[0] == -1).all()
    assert out.num_accepted[1].item() >= 0
