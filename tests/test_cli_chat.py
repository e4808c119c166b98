"""``python -m sprinter_ext chat``: multi-turn through the chat template, streamed, /reset,
/stats, /exit; driven in-process with piped stdin and as a subprocess under a
pseudo-terminal (the way a person uses it), on a tiny random Llama pair saved with the
default pair's real tokenizer (so the chat template and the text are real).
"""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sprinter_ext
from sprinter_ext.cli.chat import ChatSession
from sprinter_ext.cli.chat import main as chat_main
from sprinter_ext.models.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 49152
STATS = re.compile(r"^\d+ tokens in [\d.]+ s .*runner$", re.M)


def _tokenizer():
    from transformers import AutoTokenizer

    from sprinter_ext.models.default_pair import _target_cache_path

    path = _target_cache_path()
    if (path / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(path))
    return sprinter_ext.load_pair().tokenizer  # converts the embedded GGUF once


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(draft_dir, target_dir): tiny random Llamas, the target's with the real tokenizer."""
    root = tmp_path_factory.mktemp("chat_pair")
    tok = _tokenizer()
    for name, layers, seed in (("draft", 1, 3), ("target", 2, 0)):
        tiny_model("llama", vocab=VOCAB, layers=layers, seed=seed, scale=2.0).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return str(root / "draft"), str(root / "target")


@pytest.fixture(scope="module")
def pair(dirs):
    return sprinter_ext.load_pair(*dirs)


def _answer(pair, messages, n=8):
    return sprinter_ext.generate(pair, messages, temperature=0, max_new_tokens=n).text


def test_session_is_multi_turn_through_the_template_and_resets(pair):
    s = ChatSession(sprinter_ext.Decoder(pair, "sd"), max_new_tokens=8, system="Be brief.")
    shown: list[str] = []
    a1, stats = s.ask("Hello", shown.append)
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert a1 == _answer(pair, turn1) == "".join(shown) and len(shown) >= 2  # streamed in pieces
    assert stats["new_tokens"] >= 1 and stats["finish_reason"] in ("eos", "length")
    a2, _ = s.ask("And then?", lambda _: None)
    turn2 = turn1 + [{"role": "assistant", "content": a1}, {"role": "user", "content": "And then?"}]
    assert a2 == _answer(pair, turn2)  # the second turn saw the first
    assert s.messages == turn2 + [{"role": "assistant", "content": a2}]
    s.reset()
    assert s.messages == turn1[:1]
    assert s.ask("Hello", lambda _: None)[0] == a1


def test_session_refuses_a_conversation_that_fills_the_cache(pair):
    s = ChatSession(sprinter_ext.Decoder(pair, "ar", max_length=64), max_new_tokens=8)
    with pytest.raises(sprinter_ext.errors.CacheOverflowError, match="/reset"):
        s.ask("word " * 80, lambda _: None)
    assert s.messages == []  # nothing was added


def test_piped_chat_answers_on_stdout_stats_on_stderr(dirs, pair, monkeypatch, capsys):
    lines = "Hello\n/stats\n/bogus\n\nHello\n/reset\n/help\nHello\n/exit\nnever read\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert chat_main(["--draft", dirs[0], "--target", dirs[1], "--max-new-tokens", "8", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    a1 = _answer(pair, [{"role": "user", "content": "Hello"}])
    a2 = _answer(pair, [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": a1},
                        {"role": "user", "content": "Hello"}])  # fmt: skip
    assert out == f"{a1}\n{a2}\n{a1}\n"  # no prompt on a pipe; turn 3 follows the /reset
    assert len(STATS.findall(err)) == 2, err  # /stats on for turns 2 and 3 only
    assert "(stats on)" in err and "unknown command /bogus" in err and "(conversation reset)" in err
    assert "/exit" in err and "tokens in" not in out


def test_chat_refuses_bad_arguments(dirs, capsys):
    with pytest.raises(SystemExit):
        chat_main(["--method", "nope"])
    assert chat_main(["--draft", "foo"]) == 1 and "unknown draft" in capsys.readouterr().err.lower()


def _expect(fd: int, buf: list[str], pattern: str, timeout: float = 120.0) -> str:
    """Read the pty until the (ANSI-stripped, \\r\\n-normalised) output matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", "".join(buf)).replace("\r\n", "\n").replace("\r", "")
        if re.search(pattern, text, re.S):
            return text
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} in the chat's output:\n{text}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the chat ended before {pattern!r}:\n{text}")
            buf.append(chunk.decode("utf-8", "replace"))


@pytest.mark.slow  # a subprocess that imports torch and transformers: ~10 s here
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_chat_under_a_pseudo_terminal(dirs, pair):
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TERM": "dumb"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "sprinter_ext", "chat", "--draft", dirs[0], "--target", dirs[1],
         "--max-new-tokens", "8", "--threads", "1", "--stats"],  # fmt: skip
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    buf: list[str] = []
    try:
        _expect(master, buf, r"/help for commands.*>>> $")
        a1 = _answer(pair, [{"role": "user", "content": "Hello"}])
        os.write(master, b"Hello\n")
        text = _expect(master, buf, r"tokens in [^\n]*\n>>> $")
        # The answer, its newline, then the stats on a line of their own, then the prompt.
        assert re.search(re.escape(a1) + r"\n\d+ tokens in [^\n]*runner\n>>> $", text), text
        os.write(master, b"/stats\n")
        _expect(master, buf, r"\(stats off\)\n>>> $")
        a2 = _answer(pair, [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": a1},
                            {"role": "user", "content": "Again"}])  # fmt: skip
        os.write(master, b"Again\n")
        text = _expect(master, buf, re.escape(a2) + r"\n>>> $")
        assert len(STATS.findall(text)) == 1  # stats off for the second answer
        os.write(master, b"/reset\n")
        _expect(master, buf, r"\(conversation reset\)\n>>> $")
        os.write(master, b"/exit\n")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
