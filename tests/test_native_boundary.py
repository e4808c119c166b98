"""The typed Python/C++ boundary: every constant and struct defined once in C++ and bound,
and the Python side (which must also run without a build) checked against the binding.

- SamplingSettings and GenerationConfig: the dataclasses have the bound structs' fields;
- Stream, the seed-to-key split and the non-finite message: Python and the Triton
  kernels' plain-int constants equal the bound values;
- the native method list: the C++ loop's and the Python side's agree;
- the runner protocol: sprinter_ext.runners matches csrc/engine/runner.h by name, with
  snapshot/restore as the declared optional capability, and every runner satisfies it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from sprinter_ext import _rng, runners, sampling
from sprinter_ext._generation import GenerationConfig, native_generation
from sprinter_ext.decoding import _native_available
from sprinter_ext.errors import ArgumentTypeError, InvalidArgumentError
from sprinter_ext.methods import NATIVE_METHODS
from sprinter_ext.models.runner import ModelRunner
from sprinter_ext.sampling import KERNEL_FIELDS, SamplingSettings

pytestmark = pytest.mark.skipif(not _native_available(), reason="the compiled extension is not built")
REPO = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2**32 - 1, 2**32, 0x0123456789ABCDEF, 2**64 - 1]


@pytest.fixture(scope="module")
def C():
    from sprinter_ext import _native

    return _native._C


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_sampling_settings_fields_match_the_binding(C):
    # the kernels' part of the settings (min_p and the penalties are applied before the kernels)
    assert _names(SamplingSettings)[: len(KERNEL_FIELDS)] == list(KERNEL_FIELDS) == list(C.SamplingSettings.fields)
    n = SamplingSettings(0.7, 5, 0.9).to_native()
    assert isinstance(n, C.SamplingSettings)
    # float32, as every engine computes
    assert (n.temperature, n.top_k, n.top_p) == (torch.tensor(0.7).item(), 5, torch.tensor(0.9).item())
    d = C.SamplingSettings()
    assert (d.temperature, d.top_k, d.top_p) == (1.0, 0, 1.0)


@pytest.mark.parametrize(
    "kw,err",
    [(dict(temperature=float("nan")), InvalidArgumentError), (dict(top_k=-1), InvalidArgumentError),
     (dict(top_p=0.0), InvalidArgumentError), (dict(top_k=1.5), ArgumentTypeError)],
)  # fmt: skip
def test_bound_settings_use_the_python_rule(C, kw, err):
    with pytest.raises(err):
        C.SamplingSettings(**kw)
    with pytest.raises(err):
        SamplingSettings(**kw)


def test_generation_config_fields_match_the_binding(C):
    assert _names(GenerationConfig) == list(C.GenerationConfig.fields)
    cfg = GenerationConfig(method="sd", k=3, sampling=SamplingSettings(0.0), eos=[2], prompt=[1, 5], seed=2**40,
                           max_new_tokens=7).to_native()  # fmt: skip
    assert isinstance(cfg, C.GenerationConfig)
    assert (cfg.method, cfg.k, cfg.eos, cfg.prompt, cfg.seed, cfg.max_new_tokens) == ("sd", 3, [2], [1, 5], 2**40, 7)
    assert cfg.sampling.temperature == 0.0 and not cfg.verify_all and cfg.verifier_weights == []
    with pytest.raises(InvalidArgumentError, match="runs ar, sd, ersd and sprinter"):
        GenerationConfig(method="beam", k=1, sampling=SamplingSettings(), prompt=[1]).to_native()
    with pytest.raises(TypeError):  # positional arguments are gone: every field by name
        C.GenerationConfig("ar", 1)


def test_generation_takes_runners_and_one_config(C, tiny):
    cfg = GenerationConfig(method="sd", k=2, sampling=SamplingSettings(), prompt=[3, 1, 4], seed=9, max_new_tokens=6)
    a = C.Generation(C.PyRunner(ModelRunner(tiny.target, 32)), C.PyRunner(ModelRunner(tiny.draft, 32)),
                     cfg.to_native()).run()  # fmt: skip
    b = native_generation(C.PyRunner(ModelRunner(tiny.target, 32)), C.PyRunner(ModelRunner(tiny.draft, 32)),
                          method="sd", k=2, temperature=1.0, top_k=0, top_p=1.0, eos=[], verifier_weights=[],
                          verifier_biases=[], verifier_features=[], threshold=0.0, max_run=1, verify_all=False,
                          prompt=[3, 1, 4], seed=9, max_new_tokens=6)  # fmt: skip
    assert len(a) == 6 and a == b.run()


def test_stream_is_the_bound_enum(C):
    assert {s.name: s.value for s in _rng.Stream} == {name: int(v) for name, v in C.Stream.__members__.items()}


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_constants_equal_the_bound_values(C):
    from sprinter_ext.kernels import _sampling, verify_tokens

    assert verify_tokens._COIN.value == int(C.Stream.COIN)
    assert verify_tokens._TARGET.value == int(C.Stream.TARGET)
    assert verify_tokens._RESIDUAL.value == int(C.Stream.RESIDUAL)
    for seed in SEEDS:
        assert _sampling.seed_words(seed) == C.seed_key(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_key_is_the_bound_split(C, seed):
    assert _rng.seed_key(seed) == C.seed_key(seed) == (seed & 0xFFFFFFFF, seed >> 32)


@pytest.mark.parametrize("seed,err", [(-1, InvalidArgumentError), (2**64, InvalidArgumentError),
                                      (True, ArgumentTypeError), (1.0, ArgumentTypeError)])  # fmt: skip
def test_seed_key_errors_are_named_on_both_sides(C, seed, err):
    with pytest.raises(err):
        C.seed_key(seed)
    with pytest.raises(err):
        _rng.seed_key(seed)


def test_non_finite_message_is_the_bound_one(C):
    assert sampling.NONFINITE_MESSAGE == C.NONFINITE_MESSAGE


def test_native_method_list_is_the_loops(C):
    """The registry (sprinter_ext.methods, native=True records) and engine.h kMethodNames agree."""
    assert tuple(C.native_methods()) == tuple(NATIVE_METHODS)


def _protocol_members(proto) -> set[str]:
    own = {n for n in vars(proto) if not n.startswith("_")}
    return own | {n for base in proto.__mro__[1:] if base.__dict__.get("_is_protocol") for n in vars(base)
                  if not n.startswith("_")}  # fmt: skip


def test_runner_protocol_matches_runner_h(C):
    assert runners.RUNNER_PROTOCOL == tuple(C.RUNNER_PROTOCOL)
    assert runners.SNAPSHOT_PROTOCOL == tuple(C.SNAPSHOT_PROTOCOL)
    assert _protocol_members(runners.Runner) == set(runners.RUNNER_PROTOCOL)
    assert _protocol_members(runners.SnapshotRunner) == set(runners.RUNNER_PROTOCOL + runners.SNAPSHOT_PROTOCOL)


def test_every_runner_satisfies_the_protocol(C, tiny):
    from sprinter_ext.models import native

    py = ModelRunner(tiny.target, 32)
    nat = native.native_runner(tiny.target, 32)
    wrapped_py, wrapped_nat = C.PyRunner(py), C.PyRunner(nat)
    for r in (py, nat, wrapped_py, wrapped_nat):
        assert isinstance(r, runners.Runner), type(r).__name__
    assert isinstance(py, runners.SnapshotRunner) and runners.supports_snapshot(py)
    assert not isinstance(nat, runners.SnapshotRunner) and nat.supports_snapshot is False
    assert wrapped_py.supports_snapshot is True and wrapped_nat.supports_snapshot is False
    assert not runners.supports_snapshot(nat) and not runners.supports_snapshot(wrapped_nat)
    assert wrapped_py.runner_name == "ModelRunner" and nat.runner_name == "NativeModel"
    # a PyRunner forwards the protocol to the object it wraps
    wrapped_py.prefill([1, 2, 3])
    logits, hidden = wrapped_py.step(4)
    assert wrapped_py.length == py.length == 4 and logits.shape == (tiny.target.config.vocab_size,)
    wrapped_py.truncate(2)
    assert py.length == 2


def test_graph_model_has_the_protocol(C):
    if hasattr(C, "GraphModel"):  # CUDA builds
        assert issubclass(C.GraphModel, C.Runner)
        assert all(hasattr(C.GraphModel, n) for n in runners.RUNNER_PROTOCOL)
        assert not hasattr(C.GraphModel, "snapshot")
        return
    # CPU builds have no GraphModel: its binding is the same protocol template as NativeModel's
    src = (REPO / "csrc" / "model" / "native_model_py.cpp").read_text()
    assert "def_runner_protocol<GraphModel>(graph" in src and "def_runner_protocol<NativeModel>(native" in src
    assert "std::string name() const override { return \"GraphModel\"; }" in \
        (REPO / "csrc" / "model" / "cuda" / "graph_model.h").read_text()  # fmt: skip


def test_a_runner_without_snapshot_is_refused_by_name(C, tiny):
    from sprinter_ext.models import native

    nat = native.native_runner(tiny.target, 32)
    with pytest.raises(InvalidArgumentError, match="method='ssd' needs a runner with snapshot/restore.*NativeModel"):
        runners.require_snapshot(nat, "method='ssd'")
    with pytest.raises(InvalidArgumentError, match="PyRunner"):
        runners.require_snapshot(C.PyRunner(nat), "method='ssd'")
    runners.require_snapshot(ModelRunner(tiny.target, 32), "method='ssd'")  # has it: no error
