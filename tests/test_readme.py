"""The Python snippets of README.md and of docs/*.md, run as written (in order, in one
namespace: the README's first, then each page of :data:`PAGES`), so the docs and the public
API cannot drift: a name a page shows that the package lacks fails here.

They use the embedded default pair, so the test is ``slow``. Names a snippet leaves to the
reader (``texts``, ``logits``, ``prompt``, ...) are bound first by :data:`GIVEN`, to
values of the shapes and types the README describes. The OpenAI-client snippet talks to a
running server: it is compiled, not run (tests/test_serve.py runs the server's API).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The docs pages whose snippets run after the README's (they use its ``pair``), in this order.
PAGES = [README, *(ROOT / "docs" / name for name in ("DRAFTS.md", "CPU.md", "SERVING.md", "BENCHMARKS.md"))]

# What each snippet needs that the README leaves to the reader, keyed by a line of the snippet.
GIVEN = {
    "r = ops.draft_sample(": """
import torch
V, D = pair.vocab_size, pair.verifier.input_size  # the verifier's state: a head's adds 2 confidences
g = torch.Generator().manual_seed(0)
logits, hidden = torch.randn(1, V, generator=g), torch.randn(1, D, generator=g)
position, v = torch.tensor([5]), pair.verifier
target_logits = torch.randn(1, 3, V, generator=g)
draft_probs = torch.softmax(torch.randn(1, 2, V, generator=g), -1)
draft_tokens, start_position = torch.randint(0, V, (1, 2), generator=g), torch.tensor([5])
""",
    "v = sprinter_ext.train_verifier(": """
from sprinter_ext.data import heldout_texts
texts, other_texts = heldout_texts()[:12], heldout_texts()[12:18]
""",
    'method="ssd"': """
prompt = [{"role": "user", "content": "Name three colours."}]
""",
}
NOT_RUN = {"from openai import OpenAI": "needs a running server (python -m sprinter_ext serve)"}


def snippets(page: Path | None = None) -> list[tuple[str, str]]:
    """(``"FILE snippet i"``, code) of one page, or of every page in :data:`PAGES` order."""
    pages = PAGES if page is None else [page]
    return [(f"{p.relative_to(ROOT)} python snippet {i}", code) for p in pages
            for i, code in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S))]  # fmt: skip


def test_readme_has_python_snippets_and_every_given_matches_one():
    assert len(snippets(README)) >= 5
    blocks = [code for _, code in snippets()]
    for key in (*GIVEN, *NOT_RUN):
        assert sum(key in b for b in blocks) == 1, f"{key!r} should mark exactly one snippet of the docs"


def test_every_docs_page_is_run_and_every_relative_link_resolves():
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert {p for p in docs if "```python" in p.read_text()} <= set(PAGES)  # a new page with snippets: add it
    for page in (README, *docs):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an external address
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link {target!r} points at a missing file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.name}: link {target!r}: no such heading in {dest.name}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    heads = re.findall(r"^#+ (.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets write files (my_verifier.safetensors)
    namespace: dict = {"__name__": "readme"}
    for name, code in snippets():
        compiled = compile(code, name, "exec")
        if any(key in code for key in NOT_RUN):
            continue
        for key, setup in GIVEN.items():
            if key in code:
                exec(setup, namespace)  # noqa: S102 - test-local setup code above
        exec(compiled, namespace)  # noqa: S102 - the README's own code
    assert (tmp_path / "my_verifier.safetensors").is_file()
    import sprinter_ext

    assert isinstance(namespace["v"], sprinter_ext.Verifier)
    assert namespace["res"].stats["method"] == "ssd"


@pytest.mark.parametrize("name", ["Verifier", "train_verifier", "load_pair", "generate", "Decoder", "ops", "verifier"])
def test_names_the_readme_and_error_messages_use_exist(name):
    import sprinter_ext

    assert getattr(sprinter_ext, name) is not None and name in sprinter_ext.__all__
