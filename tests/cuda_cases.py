"""Cases of the CUDA fused ops, shared by tests/test_ops_cuda.py (on a GPU) and
tests/test_cuda_emulation.py (the same kernels under a CPU emulation): odd
vocabulary sizes (1, 7, 1000, 49152), B = 1 and 3, top-k/top-p combinations,
temperatures 0 and 1 (and others), several seeds, with and without a verifier."""

from __future__ import annotations

import torch

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
ALL3 = ("q_token", "max_q", "entropy")

# (B, V, D, logits dtype, (temperature, top_k, top_p), verifier (hidden, features) or None, seed)
DRAFT_CASES = [
    (1, 1, 8, F32, (1.0, 0, 1.0), ((16,), ALL3), 0),
    (3, 1, 8, BF16, (0.0, 0, 1.0), None, 1),
    (3, 7, 16, F32, (1.0, 3, 1.0), ((), ("entropy",)), 2),
    (1, 7, 16, F16, (1.0, 0, 0.6), ((8, 4), ("max_q", "q_token")), 3),
    (3, 7, 16, F32, (0.0, 0, 1.0), ((16,), ALL3), 4),
    (3, 1000, 64, F32, (1.0, 0, 1.0), ((64,), ALL3), 5),
    (1, 1000, 64, BF16, (0.8, 50, 0.9), ((64,), ("q_token",)), 6),
    (3, 1000, 64, F16, (1.0, 1, 1.0), None, 7),
    (3, 1000, 64, F32, (1.0, 999, 1.0), None, 8),
    (1, 1000, 32, F32, (1.3, 0, 0.3), ((), ALL3), 2**63 + 5),
    (1, 49152, 576, F32, (1.0, 50, 0.9), ((64,), ALL3), 9),
    (1, 49152, 576, BF16, (1.0, 0, 1.0), None, 10),
    (3, 49152, 64, F16, (0.0, 0, 1.0), ((32,), ALL3), 11),
    (1, 49152, 64, F32, (0.7, 0, 0.95), ((), ()), 2**64 - 1),
]

# (B, n, V, logits dtype, draft-probs dtype, (temperature, top_k, top_p), mode, kind, seed);
# kind: "rand" (independent p and q: early rejections), "same" (q = p: all accepted),
# "near" (q a mixture of p and noise: some acceptances)
VERIFY_CASES = [
    (1, 0, 1, F32, F32, (1.0, 0, 1.0), "sd", "near", 0),
    (3, 2, 1, F32, F32, (1.0, 0, 1.0), "sd", "same", 1),
    (3, 0, 7, BF16, F32, (1.0, 3, 1.0), "race", "near", 2),
    (3, 4, 7, F32, F32, (1.0, 0, 1.0), "sd", "near", 3),
    (1, 3, 7, F16, BF16, (0.0, 0, 1.0), "sd", "rand", 4),
    (3, 4, 7, F32, F16, (1.0, 2, 0.7), "race", "near", 5),
    (3, 4, 1000, F32, F32, (1.0, 0, 1.0), "sd", "near", 6),
    (1, 5, 1000, BF16, BF16, (0.8, 40, 0.9), "sd", "near", 7),
    (3, 3, 1000, F32, F32, (0.0, 0, 1.0), "race", "near", 8),
    (3, 4, 1000, F16, F32, (1.0, 0, 1.0), "sd", "same", 9),
    (1, 2, 49152, F32, F32, (1.0, 50, 0.9), "sd", "near", 10),
    (1, 2, 49152, BF16, F32, (1.0, 0, 1.0), "race", "same", 2**64 - 1),
    (1, 1, 49152, F32, F32, (0.0, 0, 1.0), "sd", "rand", 11),
]


def case_id(case) -> str:
    return "-".join(map(str, case)).replace("torch.", "").replace(" ", "").replace("'", "")


def draft_inputs(B, V, D, dtype, seed, scale=3.0):
    """logits [B, V] (dtype), hidden [B, D] float32, position [B] int64, from seed."""
    g = torch.Generator().manual_seed(seed % 2**63)
    logits = (torch.randn(B, V, generator=g) * scale).to(dtype)
    hidden = torch.randn(B, D, generator=g)
    position = torch.randint(0, 2**40, (B,), generator=g)
    return logits, hidden, position


def verify_inputs(B, n, V, dtype, qdtype, settings, kind, seed):
    """target logits [B, n+1, V], draft q [B, n, V], draft tokens x [B, n] drawn from q, start [B]."""
    from sprinter_ext.sampling import SamplingSettings, probs

    g = torch.Generator().manual_seed(seed % 2**63)
    logits = (torch.randn(B, n + 1, V, generator=g) * 3).to(dtype)
    p = probs(logits[:, :n].float(), SamplingSettings(*settings))
    noise = torch.softmax(torch.randn(B, n, V, generator=g) * 3, dim=-1)
    q = {"rand": noise, "same": p, "near": 0.7 * p + 0.3 * noise}[kind].to(qdtype)
    if n > 0:
        x = torch.multinomial(q.float().reshape(-1, V), 1, generator=g).view(B, n)
    else:
        x = torch.zeros(B, 0, dtype=torch.int64)
    start = torch.randint(0, 2**40, (B,), generator=g)
    return logits, q, x, start
