"""Hostile arguments get named errors before anything runs (issue 14, cases 2, 5 and 6).

Case 2: temperatures outside float32's comfortable range are refused by the one rule
(sprinter_ext.sampling.SamplingSettings) every engine and binding uses, and inside it
the engines agree. Case 5: the low-severity list. Case 6: the private _C bindings check
their scalars with the same named errors.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from ops_cases import BACKENDS, gen

import sprinter_ext
from sprinter_ext import ops
from sprinter_ext._generation import native_generation
from sprinter_ext.decoding import _native_available
from sprinter_ext.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ModelFileError,
    NonFiniteLogitsError,
    SprinterError,
)
from sprinter_ext.models.tiny import tiny_model, tiny_pair
from sprinter_ext.sampling import TEMPERATURE_MAX, TEMPERATURE_MIN, SamplingSettings

needs_c = pytest.mark.skipif(not _native_available(), reason="the compiled extension is not built")


@pytest.fixture(scope="module")
def pair():
    draft, target = tiny_pair("llama", vocab=64, draft_scale=0.5)
    return sprinter_ext.load_pair(draft, target)


# -- case 2: temperature --------------------------------------------------------------

OUT_OF_RANGE = [1e-39, 1e-5, TEMPERATURE_MIN * 0.999, TEMPERATURE_MAX * 1.001, 1e39, 1e300, math.inf, math.nan, -1e-4]


@pytest.mark.parametrize("t", OUT_OF_RANGE)
def test_temperature_outside_the_range_is_refused_everywhere(pair, t):
    with pytest.raises(InvalidArgumentError, match="temperature"):
        SamplingSettings(temperature=t)
    for engine in ("reference", "fused", "native") if _native_available() else ("reference",):
        with pytest.raises(InvalidArgumentError, match="temperature"):
            sprinter_ext.Decoder(pair, "sd", temperature=t, engine=engine)
    logits, hidden, pos = torch.randn(2, 9), torch.zeros(2, 4), torch.tensor([1, 2])
    for backend in ("torch", "cpu") if _native_available() else ("torch",):
        with pytest.raises(InvalidArgumentError, match="temperature"):
            ops.draft_sample(logits, hidden, pos, seed=0, temperature=t, backend=backend)


@pytest.mark.parametrize("t", [0.0, TEMPERATURE_MIN, 0.37, TEMPERATURE_MAX])
def test_temperature_accepted_at_the_bounds(t):
    assert SamplingSettings(temperature=t).temperature == t


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("t", [TEMPERATURE_MIN, TEMPERATURE_MAX])
@pytest.mark.parametrize("seed", [0, 5])
def test_backends_agree_at_the_bounds_with_masked_tokens(backend, t, seed):
    """-inf logits (a restricted draft head) stay probability 0 at t = TEMPERATURE_MAX (no
    -inf / inf = NaN), and t = TEMPERATURE_MIN is near-greedy on every backend."""
    logits = torch.randn(3, 41, generator=gen(seed)) * 3
    logits[:, ::3] = -math.inf
    hidden, pos = torch.zeros(3, 4), torch.tensor([3, 8, 13])
    want = ops.draft_sample(logits, hidden, pos, seed=seed, temperature=t, backend="torch")
    got = ops.draft_sample(logits, hidden, pos, seed=seed, temperature=t, backend=backend)
    assert not torch.isnan(want.probs).any() and bool((want.probs[:, ::3] == 0).all())
    assert torch.equal(got.token, want.token)
    torch.testing.assert_close(got.probs, want.probs, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_c)])
def test_scaled_overflow_raises_on_every_backend(backend):
    """Finite logits / a small temperature that overflow float32: NonFiniteLogitsError on the
    reference too (it used to output token 0 with no error)."""
    logits = torch.tensor([[0.0, 1e35, -3.0]])
    with pytest.raises(NonFiniteLogitsError):
        ops.draft_sample(logits, torch.zeros(1, 2), torch.tensor([0]), seed=0, temperature=TEMPERATURE_MIN,
                         backend=backend)


@needs_c
@pytest.mark.parametrize("t", [TEMPERATURE_MIN, TEMPERATURE_MAX])
@pytest.mark.parametrize("method", ["ar", "sd", "ersd"])
def test_engines_agree_at_the_bounds(pair, t, method):
    runs = {
        e: sprinter_ext.Decoder(pair, method, k=3, temperature=t, engine=e, eos_token_id=None, max_length=64)
        .generate([1, 2, 3], max_new_tokens=10, seed=4).tokens
        for e in ("reference", "fused", "native")
    }
    assert runs["reference"] == runs["fused"] == runs["native"], runs


# -- case 5: the low-severity list ----------------------------------------------------


def test_cuda_device_on_a_cpu_build_fails_before_loading(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    def boom(*a, **k):
        raise AssertionError("load_pair loaded a model before checking the device")

    monkeypatch.setattr("sprinter_ext.models.default_pair.load_default_target", boom)
    with pytest.raises(InvalidArgumentError, match="CUDA"):
        sprinter_ext.load_pair(device="cuda")
    with pytest.raises(InvalidArgumentError, match="CUDA"):
        sprinter_ext.load_pair(tiny_model("llama"), tiny_model("llama", seed=1), device="cuda:0")


@pytest.mark.parametrize("top_k", [2**63, 2**64, 10**30])
def test_top_k_beyond_int64_is_a_named_error(pair, top_k):
    with pytest.raises(InvalidArgumentError, match="top_k"):
        sprinter_ext.Decoder(pair, "sd", top_k=top_k)
    with pytest.raises(InvalidArgumentError, match="top_k"):
        ops.draft_sample(torch.randn(1, 5), torch.zeros(1, 2), torch.tensor([0]), seed=0, top_k=top_k)


@pytest.mark.parametrize("prompt", [b"\x01\x02\x03", bytearray(b"\x01\x02"), memoryview(b"\x01")])
def test_bytes_prompt_is_a_named_error(pair, prompt):
    dec = sprinter_ext.Decoder(pair, "ar", engine="reference")
    with pytest.raises(ArgumentTypeError, match="bytes"):
        dec.generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("eos", [5.0, [5.0], "5", [1, "x"], True, [True]])
def test_bad_eos_is_a_clear_error(pair, eos):
    with pytest.raises(ArgumentTypeError, match="eos_token_id"):
        sprinter_ext.Decoder(pair, "ar", eos_token_id=eos)


@pytest.mark.parametrize("eos", [np.int64(5), [np.int32(5)], torch.tensor(5), (5,)])
def test_numpy_and_tensor_ints_are_accepted_as_eos(pair, eos):
    dec = sprinter_ext.Decoder(pair, "ar", engine="reference", eos_token_id=eos)
    assert dec._eos == frozenset({5})


def test_gguf_with_a_huge_tensor_count_is_a_named_error(tmp_path):
    pytest.importorskip("gguf")
    path = tmp_path / "hostile.gguf"
    # magic, version 3, tensor_count 2**62, kv_count 0: nothing else follows
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0))
    with pytest.raises(ModelFileError, match="GGUF"):
        sprinter_ext.load_pair(str(path), str(path))


def test_pickle_checkpoint_is_refused_unopened(tmp_path, monkeypatch):
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle: it must never be opened")
    with pytest.raises(ModelFileError, match="pickle"):
        sprinter_ext.load_pair(str(tmp_path), str(tmp_path))


def test_a_non_causal_model_says_so(tmp_path):
    from transformers import T5Config

    T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8).save_pretrained(tmp_path)
    with pytest.raises(InvalidArgumentError, match="not a causal language model") as info:
        sprinter_ext.load_pair(str(tmp_path), str(tmp_path))
    assert "not found offline" not in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["nan", "negative", "zero row"])
def test_verify_tokens_refuses_bad_draft_probs(backend, bad):
    B, n, V = 2, 3, 11
    target = torch.randn(B, n + 1, V, generator=gen(1))
    q = torch.softmax(torch.randn(B, n, V, generator=gen(2)), -1)
    if bad == "nan":
        q[1, 2, 4] = math.nan
    elif bad == "negative":
        q[0, 1, 3] = -0.1
    else:
        q[1, 0] = 0.0
    tokens = torch.randint(0, V, (B, n), generator=gen(3))
    with pytest.raises(InvalidArgumentError, match="draft_probs"):
        ops.verify_tokens(target, q, tokens, torch.tensor([4, 9]), seed=0, backend=backend)


# -- case 6: the private _C bindings ----------------------------------------------------

BAD_SETTINGS = [
    (dict(top_p=0.0), InvalidArgumentError),
    (dict(top_p=math.nan), InvalidArgumentError),
    (dict(temperature=math.nan), InvalidArgumentError),
    (dict(temperature=-1.0), InvalidArgumentError),
    (dict(temperature=1e-39), InvalidArgumentError),
    (dict(top_k=-1), InvalidArgumentError),
    (dict(top_k=2**63), InvalidArgumentError),
    (dict(top_k=1.5), ArgumentTypeError),
    (dict(temperature="1"), ArgumentTypeError),
    (dict(seed=-1), ValueError),
    (dict(seed=2**64), ValueError),
]


def _c():
    from sprinter_ext import _native

    return _native._C


def _draft_args(**over):
    a = dict(logits=torch.randn(2, 7), hidden=torch.zeros(2, 3), position=torch.tensor([1, 2]), seed=0, stream=0,
             temperature=1.0, top_k=0, top_p=1.0, weights=[], biases=[], features=[])  # fmt: skip
    a.update(over)
    return a


def _verify_args(**over):
    a = dict(target_logits=torch.randn(1, 3, 7), draft_probs=torch.full((1, 2, 7), 1 / 7),
             draft_tokens=torch.tensor([[1, 2]]), start_position=torch.tensor([4]), seed=0, temperature=1.0,
             top_k=0, top_p=1.0, sd=True)  # fmt: skip
    a.update(over)
    return a


def _fused_bindings():
    C = _c()
    out = [("draft", C.draft_sample_cpu), ("verify", C.verify_tokens_cpu)]
    if C.build_info()["with_cuda"]:
        out += [("draft", C.draft_sample_cuda), ("verify", C.verify_tokens_cuda)]
    return out


@needs_c
@pytest.mark.parametrize("over,err", BAD_SETTINGS, ids=lambda x: str(x))
def test_fused_op_bindings_check_their_scalars(over, err):
    dev = "cpu"
    for kind, fn in _fused_bindings():
        if "cuda" in fn.__name__:
            dev = "cuda"
        make = _draft_args if kind == "draft" else _verify_args
        args = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in make(**over).items()}
        with pytest.raises(err):
            fn(**args)


@needs_c
def test_fused_op_bindings_check_their_tensors():
    C = _c()
    with pytest.raises(ValueError, match="hidden"):
        C.draft_sample_cpu(**_draft_args(hidden=torch.zeros(2, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="position"):
        C.draft_sample_cpu(**_draft_args(position=torch.tensor([1])))
    with pytest.raises(ValueError, match="verifier layer 0"):
        C.draft_sample_cpu(**_draft_args(weights=[torch.zeros(1, 4)], biases=[torch.zeros(1)]))
    with pytest.raises(ValueError, match="draft_tokens"):
        C.verify_tokens_cpu(**_verify_args(draft_tokens=torch.tensor([[1, 2, 3]])))
    with pytest.raises(ValueError, match="draft_probs"):
        C.verify_tokens_cpu(**_verify_args(draft_probs=torch.zeros(1, 2, 6)))


def _generation_args(pair, **over):
    from sprinter_ext.models import native

    a = dict(target=native.native_runner(pair.target, 32), draft=native.native_runner(pair.draft, 32),
             method="sd", k=3, temperature=1.0, top_k=0, top_p=1.0, eos=[], verifier_weights=[],
             verifier_biases=[], verifier_features=[], threshold=0.0, max_run=1, verify_all=False,
             prompt=[1, 2, 3], seed=0, max_new_tokens=4)  # fmt: skip
    a.update(over)
    return a


BAD_GENERATION = BAD_SETTINGS + [
    (dict(k=0), InvalidArgumentError),
    (dict(k=2**63), InvalidArgumentError),
    (dict(max_run=0), InvalidArgumentError),
    (dict(max_new_tokens=-1), InvalidArgumentError),
    (dict(threshold=math.nan), InvalidArgumentError),
    (dict(threshold="0.5"), ArgumentTypeError),
    (dict(method="nope"), InvalidArgumentError),
    (dict(eos=[-3]), InvalidArgumentError),
    (dict(prompt=[1, -2]), InvalidArgumentError),
    (dict(prompt=[]), InvalidArgumentError),
    (dict(verifier_weights=[torch.zeros(4, 3), torch.zeros(2, 5)], verifier_biases=[torch.zeros(4), torch.zeros(2)]),
     InvalidArgumentError),
    (dict(verifier_weights=[torch.zeros(2, 3)], verifier_biases=[torch.zeros(2)]), InvalidArgumentError),
    (dict(verifier_weights=[torch.zeros(1, 3)], verifier_biases=[torch.zeros(1, 1)]), InvalidArgumentError),
    (dict(verifier_features=[0, 0]), InvalidArgumentError),
    (dict(verifier_features=[3]), InvalidArgumentError),
]


@needs_c
@pytest.mark.parametrize("over,err", BAD_GENERATION, ids=lambda x: str(x))
def test_generation_binding_checks_every_argument(pair, over, err):
    args = _generation_args(pair, **over)
    with pytest.raises(err) as info:
        native_generation(**args)
    if err is not ValueError:
        assert isinstance(info.value, SprinterError)
    assert args["target"].length == 0  # nothing ran


@needs_c
def test_generation_binding_accepts_good_arguments(pair):
    g = native_generation(**_generation_args(pair, verifier_weights=[torch.zeros(1, 34)],
                                           verifier_biases=[torch.zeros(1)], verifier_features=[0, 2]))  # fmt: skip
    assert len(g.run()) == 4
