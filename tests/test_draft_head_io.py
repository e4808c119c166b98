"""Draft-head files: save/load round trip with the target's identity, the public EAGLE-3
checkpoint layout, and named errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import sprinter_ext
from sprinter_ext.drafts.head import DraftHead, HeadConfig
from sprinter_ext.drafts.io import HeadTargetError, load_eagle3, load_head, save_head
from sprinter_ext.errors import InvalidArgumentError, ModelFileError
from sprinter_ext.models.tiny import tiny_model


def _head(target, layers=(1, 2), vocab=None, seed=0):
    vocab = vocab if vocab is not None else list(range(0, target.config.vocab_size, 3))
    cfg = HeadConfig.for_target(target.config, layers, len(vocab))
    h = DraftHead(cfg, torch.tensor(vocab))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in h.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return h.eval()


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", vocab=64, layers=3, hidden=32, seed=3)


def test_round_trip_gives_the_same_tokens(target, tmp_path):
    head = _head(target)
    path = tmp_path / "head.safetensors"
    save_head(head, path, target=target, training={"data": "test"}, metrics={"accept": 0.5}, command="pytest",
              dtype=torch.float32)
    back = load_head(path, target)
    for (k, a), (k2, b) in zip(sorted(head.state_dict().items()), sorted(back.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k
    assert back.header["metrics"] == {"accept": 0.5} and back.header["command"] == "pytest"
    kw = dict(method="sd", k=3, max_new_tokens=20, temperature=0, eos_token_id=None)
    a = sprinter_ext.generate(sprinter_ext.load_pair(head, target), [1, 2, 3], **kw)
    b = sprinter_ext.generate(sprinter_ext.load_pair(path, target), [1, 2, 3], **kw)
    assert a.tokens == b.tokens and a.stats["accepted_tokens"] == b.stats["accepted_tokens"]


def test_head_for_another_target_is_refused(target, tmp_path):
    path = tmp_path / "head.safetensors"
    save_head(_head(target), path, target=target)
    other = tiny_model("llama", vocab=64, layers=3, hidden=32, seed=4)  # same shape, other weights
    with pytest.raises(HeadTargetError, match="trained for target"):
        load_head(path, other)
    with pytest.raises(HeadTargetError):
        sprinter_ext.load_pair(path, other)
    wider = tiny_model("llama", vocab=64, layers=2, hidden=32, seed=3)
    with pytest.raises(HeadTargetError):
        sprinter_ext.load_pair(_head(target), wider)


def _write_eagle3(d, head: DraftHead, target, *, aux_ids=None, with_embed=False, pickle_only=False):
    c = head.config
    d.mkdir()
    conf = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads, "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
            "vocab_size": c.target_vocab_size, "draft_vocab_size": c.draft_vocab_size, "num_hidden_layers": 1,
            "tie_word_embeddings": False}
    if aux_ids is not None:
        conf["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": aux_ids, "use_aux_hidden_state": True}
    (d / "config.json").write_text(json.dumps(conf))
    t = {k: v.contiguous() for k, v in head.state_dict().items() if k != "d2t"}
    t["d2t"] = (head.d2t - torch.arange(c.draft_vocab_size)).contiguous()  # EAGLE-3 stores offsets
    t2d = torch.zeros(c.target_vocab_size, dtype=torch.bool)
    t2d[head.d2t] = True
    t["t2d"] = t2d
    if with_embed:
        t["embed_tokens.weight"] = target.get_input_embeddings().weight.detach().clone()
    if pickle_only:
        torch.save(t, d / "pytorch_model.bin")
    else:
        save_file(t, str(d / "model.safetensors"))


def test_eagle3_layout_loads_and_drafts_the_same(target, tmp_path):
    head = _head(target, layers=(1, 2))
    _write_eagle3(tmp_path / "eagle", head, target, aux_ids=[0, 1], with_embed=True)
    back = load_eagle3(tmp_path / "eagle", target)
    assert back.config.feature_layers == (1, 2)  # output of layer i = input of layer i + 1
    assert torch.equal(back.d2t, head.d2t)
    kw = dict(method="sd", k=3, max_new_tokens=20, seed=1, eos_token_id=None)
    a = sprinter_ext.generate(sprinter_ext.load_pair(head, target), [1, 2, 3], **kw)
    b = sprinter_ext.generate(sprinter_ext.load_pair(tmp_path / "eagle", target), [1, 2, 3], **kw)
    assert a.tokens == b.tokens and a.stats["accepted_tokens"] == b.stats["accepted_tokens"]


def test_eagle3_default_layers_and_errors(tmp_path):
    deep = tiny_model("llama", vocab=64, layers=8, hidden=32, seed=3)
    head = _head(deep, layers=(2, 4, 5))  # the public default for 8 layers: (2, L//2, L-3)
    _write_eagle3(tmp_path / "e1", head, deep)
    assert load_eagle3(tmp_path / "e1", deep).config.feature_layers == (2, 4, 5)
    _write_eagle3(tmp_path / "e2", head, deep, pickle_only=True)
    with pytest.raises(ModelFileError, match="pickled"):
        load_eagle3(tmp_path / "e2", deep)
    _write_eagle3(tmp_path / "e3", head, deep, aux_ids=[1, 3, 11])
    with pytest.raises(InvalidArgumentError, match="beyond the target's depth"):
        load_eagle3(tmp_path / "e3", deep)
    other = tiny_model("llama", vocab=80, layers=8, hidden=32, seed=3)
    with pytest.raises(HeadTargetError):
        load_eagle3(tmp_path / "e1", other)


def test_vocabulary_map_out_of_range(target, tmp_path):
    head = _head(target, layers=(1, 2))
    _write_eagle3(tmp_path / "e", head, target)
    t = load_file(str(tmp_path / "e" / "model.safetensors"))
    t["d2t"] = t["d2t"] + 1000
    save_file(t, str(tmp_path / "e" / "model.safetensors"))
    with pytest.raises(InvalidArgumentError, match="outside the target's vocabulary"):
        load_eagle3(tmp_path / "e", target)
