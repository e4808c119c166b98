"""The randomness contract: Philox4x32-10 known answers, bit-exact uniforms, fair races."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from sprinter_ext import _rng

M32 = 0xFFFFFFFF

# Random123 known-answer vectors for philox4x32_10: (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_py(ctr, key):
    """Philox4x32-10 on Python ints: an independent statement of the algorithm."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


@pytest.mark.parametrize("ctr,key,out", KAT)
def test_philox_known_answers(ctr, key, out):
    got = _rng.philox4x32(*[torch.tensor(c) for c in ctr], *key)
    assert tuple(int(x) for x in got) == out
    assert philox_py(ctr, key) == out


@pytest.mark.parametrize("seed", [0, 1, 2**32 + 5, 2**64 - 1])
@pytest.mark.parametrize("position,stream", [(0, 0), (17, 1), (2**31, 2), (2**32 - 1, 3)])
def test_uniform_matches_python_reference(seed, position, stream):
    n = 13
    u = _rng.uniform(seed, position, stream, n)
    key = (seed & M32, seed >> 32)
    want = []
    for i in range(n):
        word = philox_py((i >> 2, position, stream, 0), key)[i & 3]
        want.append(((word >> 9) + 0.5) * 2.0**-23)
    assert u.dtype == torch.float32
    assert u.tolist() == want  # bit-exact: every value is a float32-representable dyadic
    assert _rng.uniform_torch(seed, position, stream, n).tolist() == want


def test_uniform_extremes_stay_inside_the_open_interval():
    # the largest and smallest words must not round to 1.0 or 0.0 in float32
    top = (((2**32 - 1) >> 9) + 0.5) * 2.0**-23
    assert torch.tensor(top, dtype=torch.float32).item() == top < 1.0
    assert torch.tensor(0.5 * 2.0**-23, dtype=torch.float32).item() > 0.0


def test_dispatch_equals_the_torch_spec():
    for pos in (7, torch.tensor(7), torch.tensor([0, 7, 2**31 + 3])):
        assert torch.equal(_rng.uniform(5, pos, 2, 333), _rng.uniform_torch(5, pos, 2, 333))


def test_uniform_shapes_and_range():
    u = _rng.uniform(3, torch.tensor([4, 5, 6]), 1, 1001)
    assert u.shape == (3, 1001)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert torch.equal(u[1], _rng.uniform(3, 5, 1, 1001))
    # streams, positions and seeds give different numbers
    assert not torch.equal(_rng.uniform(3, 5, 2, 64), _rng.uniform(3, 5, 1, 64))
    assert not torch.equal(_rng.uniform(4, 5, 1, 64), _rng.uniform(3, 5, 1, 64))


def test_uniform_is_uniform():
    u = _rng.uniform(11, torch.arange(50), 0, 1000).flatten().double()
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True, "1"])
def test_bad_seed(bad):
    with pytest.raises((ValueError, TypeError), match="seed"):
        _rng.uniform(bad, 0, 0, 4)


def test_race_samples_the_weights():
    w = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0, 1.0])  # unnormalised
    n = 6000
    winners = _rng.race(w.expand(n, -1), seed=5, position=torch.arange(n), stream=_rng.Stream.TARGET)
    counts = torch.bincount(winners, minlength=6).double()
    assert counts[1] == 0 and counts[4] == 0  # zero weight never wins
    expected = w.double() / w.sum() * n
    keep = expected > 0
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3


def test_race_one_hot_and_determinism():
    w = torch.zeros(50)
    w[37] = 1.0
    assert int(_rng.race(w, 0, 3, 1)) == 37
    w = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert int(_rng.race(w, 9, 7, 1)) == int(_rng.race(w * 3.0, 9, 7, 1))  # scale-free
    assert math.isfinite(float(_rng.exponential(1, 2, 3, 10).sum()))
