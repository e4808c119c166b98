"""Where the CUDA toolkit and torch's headers are, for the tests that compile CUDA
sources without a GPU (tests/test_cuda_compile.py, tests/test_cuda_emulation.py)."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import torch.utils.cpp_extension

REPO = Path(__file__).resolve().parents[1]


def nvcc() -> str | None:
    return shutil.which("nvcc")


def cuda_include() -> Path | None:
    """The CUDA toolkit's include directory (holding cuda_runtime_api.h), or None."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    exe = nvcc()
    if exe:
        roots.append(str(Path(exe).resolve().parent.parent))
    roots.append("/usr/local/cuda")
    for root in filter(None, roots):
        inc = Path(root) / "include"
        if (inc / "cuda_runtime_api.h").is_file() and (inc / "cuda_fp16.h").is_file():
            return inc
    return None


def torch_includes(shim_dir: Path) -> list[str]:
    """torch's include dirs as -isystem flags, plus a shim for c10/cuda/impl/cuda_cmake_macros.h.

    NOTE: a CPU wheel of torch ships the C10/ATen CUDA headers but not this one
    generated header (a CUDA build writes it with C10_CUDA_BUILD_SHARED_LIBS defined).
    The shim, written only when the header is missing, is what a CUDA build would hold;
    it serves syntax checks only, nothing is linked.
    """
    paths = list(torch.utils.cpp_extension.include_paths())
    if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for p in paths):
        header = shim_dir / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
        header.parent.mkdir(parents=True, exist_ok=True)
        header.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        paths.append(str(shim_dir))
    return [flag for p in paths for flag in ("-isystem", p)]


def python_includes() -> list[str]:
    """pybind11's and Python's include dirs as -isystem flags (for the binding sources, e.g. csrc/ops/ops_py.cpp)."""
    import pybind11

    return ["-isystem", pybind11.get_include(), "-isystem", sysconfig.get_paths()["include"]]
