"""The transformers API this library calls: the non-deprecated cache keyword, and the version
range pyproject.toml declares (the native runner's bitwise equality is tested on it)."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from sprinter_ext.models.runner import ModelRunner, cache_keyword
from sprinter_ext.models.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_installed_transformers_is_inside_the_declared_range():
    import transformers

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "transformers"]
    upper = [s for s in req.specifier if s.operator in ("<", "<=")]
    assert upper, "transformers needs an upper bound (the native runner copies its forward)"
    assert req.specifier.contains(transformers.__version__), (transformers.__version__, str(req.specifier))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_runner_uses_the_current_cache_keyword(family):
    import transformers
    from packaging.version import Version

    model = tiny_model(family, vocab=61)
    kw = cache_keyword(model.base_model)
    if Version(transformers.__version__) >= Version("5.24"):
        assert kw == "cache"
    runner = ModelRunner(model, max_len=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # past_key_values is deprecated
        warnings.simplefilter("error", DeprecationWarning)
        runner.prefill([1, 2, 3])
        logits, _ = runner.step(4)
    assert logits.shape == (61,) and torch.isfinite(logits).all()


def test_cache_keyword_of_an_old_style_forward():
    class Old(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, **kwargs):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids, cache=None, **kwargs):
            return input_ids

    assert cache_keyword(Old()) == "past_key_values" and cache_keyword(New()) == "cache"


def test_missing_model_error_says_what_was_looked_for(tmp_path, monkeypatch):
    import sprinter_ext
    from sprinter_ext.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        sprinter_ext.load_pair("no-such-org/no-such-model-xyz", "no-such-org/no-such-model-xyz")
    text = str(info.value)
    assert "huggingface.co" not in text and "connect" not in text and "internet" not in text
    assert "no cached hub copy" in text and "hf download no-such-org/no-such-model-xyz" in text
    missing = tmp_path / "missing"
    with pytest.raises(ModelNotFoundError) as info:
        sprinter_ext.load_pair(str(missing), str(missing))
    text = str(info.value)
    assert f"no directory {str(missing)!r}" in text and "hf download" not in text and "Repo id" not in text
    with pytest.raises(ModelNotFoundError, match="exists but does not hold a loadable"):
        sprinter_ext.load_pair(str(tmp_path), str(tmp_path))  # a directory without a model
