"""Errors name the real mistake (issue: first contact, round 2): every named error lives in
sprinter_ext.errors, a half-given pair says what is missing, unknown options are told apart
from options of another method, and loading prints no third-party progress bar."""

from __future__ import annotations

import importlib

import pytest

import sprinter_ext
from sprinter_ext import errors
from sprinter_ext.models.tiny import tiny_model


@pytest.fixture(scope="module")
def pair():
    return sprinter_ext.load_pair(tiny_model("llama", vocab=64, seed=1), tiny_model("llama", vocab=64, seed=2))


@pytest.mark.parametrize("old,name", [
    ("sprinter_ext.verifier.io", "VerifierFileError"), ("sprinter_ext.verifier.io", "VerifierMismatchError"),
    ("sprinter_ext.verifier", "VerifierMismatchError"), ("sprinter_ext.decoding", "DecoderBusyError"),
    ("sprinter_ext", "DecoderBusyError"), ("sprinter_ext.drafts.io", "HeadTargetError"),
    ("sprinter_ext.prompts", "ChatTemplateWarning"),
])  # fmt: skip
def test_every_named_error_lives_in_errors_and_old_paths_still_work(old, name):
    assert getattr(importlib.import_module(old), name) is getattr(errors, name)
    assert name in errors.__all__


def test_every_error_class_in_the_package_is_in_errors():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, (errors.SprinterError, Warning)), name


def test_unknown_draft_kind_is_named():
    with pytest.raises(errors.InvalidArgumentError, match=r"unknown draft 'foo': one of \['head', 'standalone'"):
        sprinter_ext.load_pair("foo")


@pytest.mark.parametrize("args,role", [(("/nonexistent/draft",), "draft"), ((None, "/nope"), "target")])
def test_missing_path_is_named_with_its_role(args, role):
    with pytest.raises(errors.ModelNotFoundError, match=f"{role} path '/n[a-z/]*' does not exist"):
        sprinter_ext.load_pair(*args)


def test_a_built_model_alone_says_which_half_is_missing():
    with pytest.raises(errors.InvalidArgumentError, match="draft model was given without a target"):
        sprinter_ext.load_pair(tiny_model("llama", vocab=64))
    with pytest.raises(errors.InvalidArgumentError, match="target model was given without a draft"):
        sprinter_ext.load_pair(None, tiny_model("llama", vocab=64))


@pytest.mark.parametrize("kw,hint", [(dict(do_sample=True), "temperature"), (dict(foo=1), r"Valid keywords: \[")])
def test_unknown_option_is_named_unknown_with_the_valid_ones(pair, kw, hint):
    with pytest.raises(errors.UnknownOptionError, match=f"unknown option '{next(iter(kw))}'.*{hint}") as e:
        sprinter_ext.generate(pair, [1, 2, 3], max_new_tokens=2, **kw)
    assert "max_new_tokens" in str(e.value) and "max_run" in str(e.value)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


def test_an_option_of_another_method_names_that_method(pair):
    with pytest.raises(TypeError, match="method 'sd' takes no options \\('max_run' is an option of sprinter\\)") as e:
        sprinter_ext.generate(pair, [1, 2, 3], max_new_tokens=2, method="sd", max_run=3)
    assert not isinstance(e.value, errors.UnknownOptionError)
    with pytest.raises(TypeError, match="'budget' is an option of ssd.*its options: \\['max_run'"):
        sprinter_ext.Decoder(pair, "sprinter", verifier=None, budget=2)


def test_verifier_load_of_a_missing_file_is_named(tmp_path):
    with pytest.raises(errors.VerifierNotFoundError, match="verifier file .* does not exist") as e:
        sprinter_ext.Verifier.load(tmp_path / "none.safetensors")
    assert isinstance(e.value, FileNotFoundError)


def test_loading_a_model_prints_no_progress_bar(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    tiny_model("llama", vocab=64, seed=3).save_pretrained(tmp_path / "m")
    capfd.readouterr()
    was = hf_logging.is_progress_bar_enabled()
    sprinter_ext.load_pair(tmp_path / "m", tmp_path / "m")
    err = capfd.readouterr().err
    assert "Loading" not in err and "%|" not in err, err
    assert hf_logging.is_progress_bar_enabled() == was  # restored
