"""The server tests' shared fixtures: a tiny random Llama pair with the default pair's real
tokenizer (vocab 49152), so text, chat templates and multi-byte tokens are real while each
token costs microseconds; `serving(app)` runs an app on a free 127.0.0.1 port in a thread;
one server (pool of 2) per test module that takes the `server` or `client` fixture.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import openai
import pytest
import uvicorn

import sprinter_ext
from sprinter_ext.models.tiny import tiny_model
from sprinter_ext.serve import create_app

MODEL = "tiny-chat"
VOCAB = 49152
NAN_TOKEN = 48999  # its embedding row is NaN in the target: a prompt with it makes NaN logits
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _tokenizer():
    from transformers import AutoTokenizer

    from sprinter_ext.models.default_pair import _target_cache_path

    path = _target_cache_path()
    if (path / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(path))
    return sprinter_ext.load_pair().tokenizer  # converts the embedded GGUF once


@pytest.fixture(scope="module")
def pair():
    import torch

    draft = tiny_model("llama", vocab=VOCAB, layers=1, seed=3, scale=2.0)
    target = tiny_model("llama", vocab=VOCAB, layers=2, seed=0, scale=2.0)
    with torch.no_grad():
        target.get_input_embeddings().weight[NAN_TOKEN] = float("nan")
    return sprinter_ext.load_pair(draft, target, tokenizer=_tokenizer())


@contextlib.contextmanager
def serving(app):
    """Run `app` on a free 127.0.0.1 port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def server(pair):
    app = create_app(pair, model_name=MODEL, pool_size=2, method="sd", default_max_tokens=16)
    with serving(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


