"""README.md's Python snippets, run as written (in order, in one namespace), so the README
and the public API cannot drift: a name the README shows that the package lacks fails here.

They use the embedded default pair, so the test is ``slow``. Names a snippet leaves to the
reader (``texts``, ``logits``, ``prompt``, ...) are bound first by :data:`GIVEN`, to
values of the shapes and types the README describes. The OpenAI-client snippet talks to a
running server: it is compiled, not run (tests/test_serve.py runs the server's API).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

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


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippets_and_every_given_matches_one():
    blocks = snippets()
    assert len(blocks) >= 5
    for key in (*GIVEN, *NOT_RUN):
        assert sum(key in b for b in blocks) == 1, f"{key!r} should mark exactly one README snippet"


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets write files (my_verifier.safetensors)
    namespace: dict = {"__name__": "readme"}
    for i, code in enumerate(snippets()):
        compiled = compile(code, f"README.md python snippet {i}", "exec")
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
