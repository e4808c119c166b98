"""A Decoder survives NonFiniteLogitsError (issue 14, case 1).

A generation that hits NaN logits has already written NaN keys/values into the
static KV caches; masked attention multiplies them by zero (0 * NaN = NaN), so
without a scrub every later call of that Decoder fails too. The repair is one
mechanism behind the runner protocol (``runner.scrub()``, csrc/engine/runner.h), called
by the Decoder whenever a generation fails; this checks it on every method x engine
x runner against a fresh Decoder's tokens.
"""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext._generation import native_generation
from sprinter_ext.decoding import METHODS, NATIVE_METHODS, SNAPSHOT_METHODS, _native_available
from sprinter_ext.errors import InvalidArgumentError, NonFiniteLogitsError
from sprinter_ext.models.tiny import tiny_pair
from sprinter_ext.verifier import Verifier

CASES = [
    (m, e, r)
    for m in METHODS
    for e in ("reference", "fused", "native")
    for r in ("python", "native")
    if not (e == "native" and m not in NATIVE_METHODS) and not (m in SNAPSHOT_METHODS and r == "native")
]


@pytest.fixture(scope="module")
def llama_pair():
    draft, target = tiny_pair("llama", vocab=96, draft_scale=0.5)
    return sprinter_ext.load_pair(draft, target)


def _options(pair, method):
    if method != "sprinter":
        return {}
    hidden = pair.draft.config.get_text_config().hidden_size
    return dict(verifier=Verifier(hidden, hidden=(8,)), threshold=0.5)


@pytest.mark.parametrize("method,engine,runner", CASES)
def test_decoder_survives_nan_logits(llama_pair, method, engine, runner):
    if (engine != "reference" or runner == "native") and not _native_available():
        pytest.skip("the compiled extension is not built")
    pair = llama_pair
    kw = dict(k=3, engine=engine, runner=runner, eos_token_id=None, max_length=64, **_options(pair, method))
    dec = sprinter_ext.Decoder(pair, method, **kw)
    bad = 7
    # Poison one embedding row in both models (whichever reads it first writes NaN K/V);
    # the native runner shares the modules' tensors, so it sees the edit too.
    rows = [m.get_input_embeddings().weight for m in (pair.target, pair.draft)]
    saved = [w[bad].clone() for w in rows]
    try:
        with torch.no_grad():
            for w in rows:
                w[bad] = float("nan")
        with pytest.raises(NonFiniteLogitsError):
            dec.generate([3, 4, bad, 5], max_new_tokens=8, seed=1)
    finally:
        with torch.no_grad():
            for w, s in zip(rows, saved):
                w[bad] = s
    got = dec.generate([9, 10, 11], max_new_tokens=8, seed=2).tokens
    want = sprinter_ext.Decoder(pair, method, **kw).generate([9, 10, 11], max_new_tokens=8, seed=2).tokens
    assert got == want


def test_ssd_on_the_native_runner_is_a_named_error(llama_pair):
    """ssd snapshots KV entries, which NativeModel does not implement: refused up front
    (it used to fail mid-generation with AttributeError)."""
    if not _native_available():
        pytest.skip("the compiled extension is not built")
    with pytest.raises(InvalidArgumentError, match="snapshot"):
        sprinter_ext.Decoder(llama_pair, "ssd", runner="native")


@pytest.mark.parametrize("runner", ["python", "native"])
def test_scrub_zeroes_the_cache(llama_pair, runner):
    """runner.scrub(): every slot zero, length 0, and the next prefill matches a fresh runner's."""
    from sprinter_ext.models import native
    from sprinter_ext.models.runner import ModelRunner

    if runner == "native" and not _native_available():
        pytest.skip("the compiled extension is not built")
    make = ModelRunner if runner == "python" else native.native_runner
    r = make(llama_pair.target, 32)
    r.prefill([1, 2, 3, 4])
    r.scrub()
    assert r.length == 0
    fresh = make(llama_pair.target, 32)
    a, b = r.prefill([5, 6]), fresh.prefill([5, 6])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("runner", ["python", "native"])
def test_the_native_loop_scrubs_its_runners(llama_pair, runner):
    """A caller of the private _C.Generation is protected too: the C++ loop scrubs both
    runners (Runner::scrub) when a round fails, without the Decoder's help."""
    if not _native_available():
        pytest.skip("the compiled extension is not built")
    from sprinter_ext import _native
    from sprinter_ext.models import native
    from sprinter_ext.models.runner import ModelRunner

    C = _native._C
    make = (lambda m: C.PyRunner(ModelRunner(m, 48))) if runner == "python" else (lambda m: native.native_runner(m, 48))
    t, d = make(llama_pair.target), make(llama_pair.draft)
    common = dict(method="sd", k=3, temperature=1.0, top_k=0, top_p=1.0, eos=[], verifier_weights=[],
                  verifier_biases=[], verifier_features=[], threshold=0.0, max_run=1, verify_all=False,
                  seed=5, max_new_tokens=9)  # fmt: skip
    rows = [m.get_input_embeddings().weight for m in (llama_pair.target, llama_pair.draft)]
    saved = [w[7].clone() for w in rows]
    try:
        with torch.no_grad():
            for w in rows:
                w[7] = float("nan")
        with pytest.raises(NonFiniteLogitsError):
            native_generation(t, d, prompt=[3, 4, 7, 5], **common).run()
    finally:
        with torch.no_grad():
            for w, s in zip(rows, saved):
                w[7] = s
    got = native_generation(t, d, prompt=[9, 10, 11], **common).run()
    want = native_generation(make(llama_pair.target), make(llama_pair.draft), prompt=[9, 10, 11], **common).run()
    assert got == want
