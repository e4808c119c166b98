"""The compiled core sprinter_ext._C: that it is built, and what it says about the build."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sprinter_ext import _C, _native

REPO = Path(__file__).resolve().parents[1]
C_KEYS = {"torch_version", "with_cuda", "cuda_version", "compiler", "cxx_standard", "build_type"}


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def test_c_is_a_compiled_extension_module():
    assert _C.__file__.endswith(".so"), _C.__file__
    assert any(_C.__file__.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
    assert isinstance(_C.__loader__, importlib.machinery.ExtensionFileLoader)
    assert Path(_C.__file__).parent.name == "sprinter_ext"


def test_c_build_info_keys_and_values():
    info = _C.build_info()
    assert isinstance(info, dict)
    assert C_KEYS <= info.keys()
    assert _major_minor(info["torch_version"]) == _major_minor(torch.__version__)
    assert isinstance(info["with_cuda"], bool)
    assert info["with_cuda"] == (torch.version.cuda is not None)
    if torch.cuda.is_available():
        assert info["with_cuda"]
    if info["with_cuda"]:
        assert isinstance(info["cuda_version"], str) and info["cuda_version"][0].isdigit()
    else:
        assert info["cuda_version"] is None
    assert isinstance(info["compiler"], str) and info["compiler"] not in ("", "unknown")
    assert info["compiler"].split()[-1][0].isdigit(), info["compiler"]  # "GNU 12.2.0"
    assert isinstance(info["cxx_standard"], int) and info["cxx_standard"] >= 17
    assert info["build_type"] in ("Release", "Debug", "RelWithDebInfo", "MinSizeRel")


def test_native_build_info_adds_runtime_facts():
    info = _native.build_info()
    assert C_KEYS <= info.keys()
    assert info["runtime_torch_version"] == torch.__version__
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(info["triton_available"], bool)
    assert info["triton_available"] == (info["triton_version"] is not None)
    assert info["native_file"] == _C.__file__


def test_sources_are_in_the_tree():
    assert (REPO / "csrc" / "ops" / "cuda" / "philox_cuda.cu").is_file()
    assert (REPO / "csrc" / "common" / "philox.h").is_file()
    assert (REPO / "csrc" / "bindings.cpp").is_file()
    assert (REPO / "CMakeLists.txt").is_file()


def test_csrc_is_one_folder_per_subsystem():
    """csrc/ holds the module entry and one folder per subsystem; CMake builds every source."""
    csrc = REPO / "csrc"
    assert sorted(p.name for p in csrc.iterdir()) == ["bindings.cpp", "common", "drafts", "engine", "model", "ops"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    for src in csrc.rglob("*"):
        if src.suffix in (".cpp", ".cu"):
            assert src.relative_to(REPO).as_posix() in cmake, src


def test_triton_kernels_install_from_the_top_level_kernels_folder():
    """kernels/ (top level) is mapped to sprinter_ext.kernels, so every install has the kernels."""
    import sprinter_ext.kernels as kernels

    assert Path(kernels.__file__).resolve().parent == REPO / "kernels"
    assert isinstance(kernels.HAS_TRITON, bool)
    setup_py = (REPO / "setup.py").read_text()
    assert '"sprinter_ext.kernels": "kernels"' in setup_py
    assert "recursive-include kernels *.py" in (REPO / "MANIFEST.in").read_text()
    # every kernel module is importable by its installed name
    names = sorted(p.stem for p in (REPO / "kernels").glob("*.py") if p.stem != "__init__")
    assert names == ["_sampling", "draft_sample", "rng", "verify_tokens"]


def test_missing_extension_gives_rebuild_instructions(tmp_path):
    # A package that has _native.py but no compiled _C, as in an unbuilt checkout
    # (another name, so that the editable install's finder cannot supply _C).
    pkg = tmp_path / "unbuilt_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "sprinter_ext" / "_native.py", pkg / "_native.py")
    code = textwrap.dedent(
        """
        try:
            import unbuilt_pkg._native
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without _C")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "sprinter_ext._C could not be imported" in proc.stdout
    assert "pip install --no-build-isolation" in proc.stdout
