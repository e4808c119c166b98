"""load_pair: accepted inputs and every refusal, each with a named error."""

from __future__ import annotations

import pytest
import torch

import sprinter_ext
from sprinter_ext.errors import ChecksumError, ModelNotFoundError, VocabularyMismatchError
from sprinter_ext.models.tiny import tiny_model


def test_models_given_as_objects():
    d, t = tiny_model("gpt2", vocab=100, seed=1), tiny_model("gpt2", vocab=100, seed=2)
    pair = sprinter_ext.load_pair(d, t)
    assert pair.draft is d and pair.target is t and pair.tokenizer is None
    assert pair.vocab_size == 100 and pair.device == torch.device("cpu")


def test_vocab_mismatch():
    with pytest.raises(VocabularyMismatchError, match="vocabulary"):
        sprinter_ext.load_pair(tiny_model("llama", vocab=100), tiny_model("llama", vocab=101))


def test_only_one_model_given():
    with pytest.raises(ValueError, match="draft model was given without a target: pass target="):
        sprinter_ext.load_pair(draft=tiny_model("llama", vocab=100))


@pytest.mark.parametrize("device", ["gpu0", "tpu"])
def test_bad_device_string(device):
    m = tiny_model("llama", vocab=100)
    with pytest.raises(ValueError, match="device"):
        sprinter_ext.load_pair(m, m, device=device)


def test_bad_dtype():
    m = tiny_model("llama", vocab=100)
    with pytest.raises(ValueError, match="dtype"):
        sprinter_ext.load_pair(m, m, dtype="float8")
    with pytest.raises(TypeError, match="dtype"):
        sprinter_ext.load_pair(m, m, dtype=3)
    with pytest.raises(ValueError, match="dtype"):
        sprinter_ext.load_pair(m, m, dtype="bf16")  # the models are float32: refuse, don't convert


def test_models_on_another_device_than_asked():
    m = tiny_model("llama", vocab=100)
    with pytest.raises(ValueError, match="device"):
        sprinter_ext.load_pair(m, m, device="meta")


def test_draft_target_dtypes_differ():
    with pytest.raises(ValueError, match="dtype"):
        sprinter_ext.load_pair(tiny_model("llama", vocab=100, dtype=torch.bfloat16), tiny_model("llama", vocab=100))


def test_non_causal_model_refused():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))  # fmt: skip
    m = tiny_model("llama", vocab=100)
    with pytest.raises(ValueError, match="not a causal language model"):
        sprinter_ext.load_pair(bert, m)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        sprinter_ext.load_pair(object(), m)


def test_unknown_id_offline_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline"):
        sprinter_ext.load_pair("no-such-org/no-such-model-xyz", "no-such-org/no-such-model-xyz")
    with pytest.raises(ModelNotFoundError):
        sprinter_ext.load_pair(str(tmp_path / "missing"), str(tmp_path / "missing"))


def test_gguf_checksum_and_missing_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ChecksumError, match="sha256"):
        sprinter_ext.load_pair(str(bad), str(bad), sha256={"draft": "0" * 64, "target": "0" * 64})
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        sprinter_ext.load_pair(str(tmp_path / "x.gguf"), str(tmp_path / "x.gguf"))
    with pytest.raises(ValueError, match="sha256 keys"):
        sprinter_ext.load_pair(str(bad), str(bad), sha256={"drafter": "0"})


def test_local_directory_round_trip(tmp_path):
    t = tiny_model("gpt2", vocab=100, seed=3)
    t.save_pretrained(tmp_path / "t")
    pair = sprinter_ext.load_pair(str(tmp_path / "t"), str(tmp_path / "t"))
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(pair.target(ids).logits, t(ids).logits)
