"""bench/head_learning_curve.py's arithmetic: the log-linear fit, the steps a goal takes on it,
and the --head FILE[:STEPS] argument (the evaluation itself is train_head.evaluate, tested in
test_train_head.py; the script runs on the real pair only)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "head_learning_curve.py"


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("head_learning_curve", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_recovers_a_log_linear_curve_and_extrapolates(lc):
    steps = [50, 200, 910, 1270]
    a, b = lc.fit_log2(steps, [0.4 + 0.15 * math.log2(s) for s in steps])
    assert a == pytest.approx(0.4) and b == pytest.approx(0.15)
    need = lc.steps_to(3.0, (a, b))
    assert 0.4 + 0.15 * math.log2(need) == pytest.approx(3.0)
    assert lc.steps_to(3.0, (2.0, -0.1)) is None  # falling: never
    assert lc.steps_to(3.0, (2.0, 0.0)) is None  # flat: never
    assert lc.fit_log2([100, 100], [1.0, 2.0]) is None  # one distinct x: no line


def test_head_argument(lc):
    assert lc.parse_head("a/b.safetensors:1270") == (Path("a/b.safetensors"), 1270)
    assert lc.parse_head("a/b.safetensors") == (Path("a/b.safetensors"), None)
    assert lc.parse_head("c:/x/h.safetensors") == (Path("c:/x/h.safetensors"), None)
