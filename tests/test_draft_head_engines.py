"""A draft head (EAGLE-style, sprinter_ext.drafts) in every method and engine: lossless
where the method is exact, the same tokens on every engine, named errors."""

from __future__ import annotations

import pytest
import torch
from stats_helpers import ALPHA, PROMPT, SETTINGS, V, exact_joint, g_test_pvalue, sample_counts

import sprinter_ext
from sprinter_ext.drafts.head import DraftHead, HeadConfig
from sprinter_ext.models.tiny import tiny_model


def random_head(target, layers, vocab_ids, seed: int, scale: float = 0.4) -> DraftHead:
    cfg = HeadConfig.for_target(target.config, layers, len(vocab_ids))
    head = DraftHead(cfg, torch.tensor(vocab_ids))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(head.named_parameters()):
            p.copy_(torch.ones(p.shape) if "norm" in name else torch.randn(p.shape, generator=g) * scale)
    return head.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def small_head_pair():
    target = tiny_model("llama", vocab=V, layers=2, hidden=32, seed=23, scale=0.5)
    head = random_head(target, (0, 1), [0, 1, 2, 3, 5, 6], seed=7)  # tokens 4 and 7: q = 0
    return sprinter_ext.load_pair(head, target)


@pytest.fixture(scope="module")
def head_pair():
    target = tiny_model("llama", vocab=96, layers=3, hidden=32, seed=5)
    head = random_head(target, (0, 2, 1), list(range(0, 96, 2)) + [1, 3], seed=11, scale=0.3)
    return sprinter_ext.load_pair(head, target)


def test_pair_reports_a_head(small_head_pair):
    assert small_head_pair.draft_kind == "head"
    assert "draft head" in repr(small_head_pair)


@pytest.mark.parametrize("method,k,name,engine", [("sd", 2, "t1", "reference"), ("ersd", 2, "t1", "reference"),
                                                  ("sd", 3, "topk_topp", "auto")])
def test_head_drafting_is_lossless(small_head_pair, method, k, name, engine):
    settings = SETTINGS[name]
    counts = sample_counts(small_head_pair, method, settings, k, engine=engine)
    p = g_test_pvalue(counts, exact_joint(small_head_pair.target, settings))
    assert p > ALPHA, f"{method} with a head, k={k} {name}: G-test p={p:.2e}"


PROMPT_LONG = [3, 17, 40, 9, 22]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ersd_with_a_head_equals_ar(head_pair, seed):
    ar = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ar", max_new_tokens=40, seed=seed, eos_token_id=None)
    er = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ersd", k=3, max_new_tokens=40, seed=seed,
                               eos_token_id=None, engine="reference")
    assert er.tokens == ar.tokens


@pytest.mark.parametrize("method", ["sd", "ersd", "sprinter"])
def test_greedy_with_a_head_equals_greedy_ar(head_pair, method):
    ar = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ar", max_new_tokens=40, temperature=0, eos_token_id=None)
    opts = {"verify": "all", "verifier": _verifier(head_pair)} if method == "sprinter" else {}
    out = sprinter_ext.generate(head_pair, PROMPT_LONG, method=method, k=4, max_new_tokens=40, temperature=0,
                                eos_token_id=None, engine="reference", **opts)
    assert out.tokens == ar.tokens


def _verifier(pair):
    from sprinter_ext.verifier import Verifier

    return Verifier(pair.draft.verifier_input_size, hidden=(), threshold=2.0).requires_grad_(False)


@pytest.mark.parametrize("method", ["sd", "ersd", "sprinter"])
@pytest.mark.parametrize("engine", ["fused", "native"])
def test_engines_agree_with_a_head(head_pair, method, engine):
    opts = {"verifier": _verifier(head_pair), "threshold": 0.5} if method == "sprinter" else {}
    kw = dict(k=3, max_new_tokens=36, seed=4, eos_token_id=None, **opts)
    ref = sprinter_ext.generate(head_pair, PROMPT_LONG, method=method, engine="reference", **kw)
    got = sprinter_ext.generate(head_pair, PROMPT_LONG, method=method, engine=engine, **kw)
    assert got.tokens == ref.tokens
    assert got.stats["target_calls"] == ref.stats["target_calls"]


@pytest.mark.parametrize("method", ["sd", "ersd", "sprinter"])
def test_native_target_runner_feeds_the_head(head_pair, method):
    """The C++ NativeModel records the head's features (set_feature_layers): same tokens and
    counts as the python runner, on the native engine and the reference one."""
    opts = {"verifier": _verifier(head_pair), "threshold": 0.5} if method == "sprinter" else {}
    kw = dict(k=3, max_new_tokens=36, seed=4, eos_token_id=None, **opts)
    ref = sprinter_ext.generate(head_pair, PROMPT_LONG, method=method, engine="reference", runner="python", **kw)
    for engine in ("reference", "native"):
        got = sprinter_ext.generate(head_pair, PROMPT_LONG, method=method, engine=engine, runner="native", **kw)
        assert got.stats["runner"] == "native"
        assert got.tokens == ref.tokens, engine
        assert got.stats["target_calls"] == ref.stats["target_calls"]


def test_native_feature_tap_matches_hidden_states(head_pair):
    from sprinter_ext.models.native import native_runner

    target = head_pair.target
    r = native_runner(target, 64)
    with pytest.raises(ValueError, match="beyond the target's depth"):
        r.set_feature_layers([0, 3])  # 3 layers: indices 0..2
    r.set_feature_layers([0, 2, 1])
    r.prefill(PROMPT_LONG)
    r.extend([4, 5])
    r.truncate(4)
    r.extend([6])
    ids = torch.tensor([PROMPT_LONG[:4] + [6]])
    hs = target(ids, output_hidden_states=True).hidden_states
    want = torch.cat([hs[0][0], hs[2][0], hs[1][0]], -1)
    torch.testing.assert_close(r.features[: r.length], want, rtol=1e-4, atol=1e-4)


def test_ssd_on_the_native_runner_is_refused_with_a_head(head_pair):
    with pytest.raises(sprinter_ext.errors.InvalidArgumentError, match="snapshots"):
        sprinter_ext.Decoder(head_pair, "ssd", runner="native", engine="reference")


@pytest.mark.parametrize("method,opts", [("sprinter", {"threshold": 2.0}), ("sprinter", {"verify": "all", "threshold": 0.5}),
                                         ("ssd", {})])
def test_head_sprinter_and_ssd_lossless(small_head_pair, method, opts):
    settings = SETTINGS["t1"]
    if method == "sprinter":
        opts = dict(opts, verifier=_verifier(small_head_pair))
    counts = sample_counts(small_head_pair, method, settings, 2, engine="reference", **opts)
    p = g_test_pvalue(counts, exact_joint(small_head_pair.target, settings))
    assert p > ALPHA, f"{method} {opts} with a head: G-test p={p:.2e}"


def test_ssd_with_a_head_same_seed_same_tokens(head_pair):
    kw = dict(k=3, max_new_tokens=30, seed=9, eos_token_id=None, engine="reference")
    a = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ssd", **kw)
    b = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ssd", **kw)
    ar = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ar", max_new_tokens=30, temperature=0, eos_token_id=None)
    g = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ssd", k=3, max_new_tokens=30, temperature=0,
                              eos_token_id=None, engine="reference")
    assert a.tokens == b.tokens
    assert g.tokens == ar.tokens
    with pytest.raises(sprinter_ext.errors.InvalidArgumentError, match="threaded=False"):
        sprinter_ext.Decoder(head_pair, "ssd", engine="fused", threaded=True)
    with pytest.raises(sprinter_ext.errors.InvalidArgumentError, match="threaded=False"):
        sprinter_ext.Decoder(head_pair, "ssd", engine="reference", threaded=True)
    # engine="fused" threads a standalone draft by default; a head's draft runs inline there
    assert sprinter_ext.Decoder(head_pair, "ssd", engine="fused")._options["threaded"] is False
    f = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ssd", **dict(kw, engine="fused"), threaded=False)
    d = sprinter_ext.generate(head_pair, PROMPT_LONG, method="ssd", **dict(kw, engine="fused"))
    assert f.tokens == a.tokens == d.tokens


def test_flops_count_a_head_as_one_decoder_layer(head_pair):
    """sprinter-sweep's FLOPs column on a head pair (it once failed on the head's config)."""
    from sprinter_ext.flops import attention_width, generation_flops, matmul_params

    head = head_pair.draft
    c = head.config
    assert attention_width(head) == (1, c.num_heads * c.head_dim)
    assert matmul_params(head) == sum(m.weight.numel() for m in head.modules() if isinstance(m, torch.nn.Linear))
    out = sprinter_ext.generate(head_pair, PROMPT_LONG, method="sd", k=3, max_new_tokens=12, seed=0, eos_token_id=None,
                                engine="reference")
    s = out.stats
    assert s["draft_fed"] > 0
    total = generation_flops(head_pair, s)
    target_only = 2 * matmul_params(head_pair.target) * s["target_fed"]
    assert total > target_only + 2 * matmul_params(head) * s["draft_fed"]  # + attention of both


def test_bench_runs_ssd_with_a_head_unthreaded(head_pair):
    """bench --draft head/both once died on ssd (threaded by default on the fused engine, which
    a head refuses): the benchmark runs a head's ssd unthreaded, with sd's tokens at C=1."""
    from sprinter_ext.cli.bench import run_bench

    res = run_bench(head_pair, methods=("sd", "ssd"), prompts=2, prompt_tokens=9, max_new_tokens=6, k=3,
                    temperature=0.0, hf=False, engines=("native",), progress=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"sd", "ssd"} and rows["ssd"]["engine"] == "fused"
    assert rows["ssd"]["target_calls_per_token"] == rows["sd"]["target_calls_per_token"]
