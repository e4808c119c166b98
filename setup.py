"""Build script of sprinter_ext: hands the compiled part (sprinter_ext._C) to CMake.

Metadata and dependencies live in pyproject.toml; this file only says what
the packages are and how the extension is built. Build with the torch that is
already installed (so no build isolation):

    pip install --no-build-isolation -e ".[dev]"    # editable, .so into sprinter_ext/
    pip install --no-build-isolation .              # regular install

Environment knobs:
    MAX_JOBS          parallel compile jobs (default: number of CPUs)
    CMAKE_BUILD_TYPE  Release (default), Debug, RelWithDebInfo or MinSizeRel
    SPRINTER_WITH_CUDA  force 0/1 (default: 1 iff torch.version.cuda is not None)
    CMAKE_ARGS        extra arguments for the CMake configure step
    TORCH_CUDA_ARCH_LIST  GPU architectures, as for any torch extension
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
BUILD_TYPES = ("Release", "Debug", "RelWithDebInfo", "MinSizeRel")


class CMakeExtension(Extension):
    """An extension whose sources are built by the CMakeLists.txt in `cmake_lists_dir`."""

    def __init__(self, name: str, cmake_lists_dir: str | os.PathLike = ".") -> None:
        super().__init__(name, sources=[])
        self.cmake_lists_dir = str(Path(cmake_lists_dir).resolve())


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "on", "true", "yes"):
        return True
    if value.lower() in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name} must be 0/1 (or on/off, true/false), got {value!r}")


def _max_jobs() -> int:
    value = os.environ.get("MAX_JOBS")
    if value is None or value == "":
        return os.cpu_count() or 1
    try:
        jobs = int(value)
    except ValueError:
        raise ValueError(f"MAX_JOBS must be a positive integer, got {value!r}") from None
    if jobs < 1:
        raise ValueError(f"MAX_JOBS must be a positive integer, got {value!r}")
    return jobs


def _tool(name: str, module: str, attr: str) -> str:
    """Path of the `name` executable: PATH first, then the pip package `module`."""
    found = shutil.which(name)
    if found:
        return found
    try:
        mod = __import__(module)
        candidate = Path(getattr(mod, attr)) / name
        if candidate.exists():
            return str(candidate)
    except (ImportError, AttributeError):
        pass
    raise RuntimeError(
        f"building sprinter_ext needs `{name}`; install it (pip install {module}) and retry "
        "with `pip install --no-build-isolation ...`"
    )


class CMakeBuild(build_ext):
    """build_ext that configures and builds CMake extensions with Ninja."""

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        try:
            import pybind11
            import torch
            import torch.utils
        except ImportError as exc:
            raise RuntimeError(
                "sprinter_ext compiles against the installed torch and pybind11: install them "
                "first, then build with `pip install --no-build-isolation ...` "
                f"({exc})"
            ) from exc

        build_type = os.environ.get("CMAKE_BUILD_TYPE") or ("Debug" if self.debug else "Release")
        if build_type not in BUILD_TYPES:
            raise ValueError(f"CMAKE_BUILD_TYPE must be one of {BUILD_TYPES}, got {build_type!r}")
        with_cuda = _env_flag("SPRINTER_WITH_CUDA")
        if with_cuda is None:
            with_cuda = torch.version.cuda is not None

        # get_ext_fullpath is where setuptools expects the module (build_lib for a
        # regular build; editable installs copy it from there into sprinter_ext/).
        ext_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        ext_path.parent.mkdir(parents=True, exist_ok=True)
        stem = ext.name.rpartition(".")[2]
        if not ext_path.name.startswith(stem):
            raise RuntimeError(f"unexpected extension file name {ext_path.name} for {ext.name}")
        suffix = ext_path.name[len(stem):]

        # A stable build directory (not setuptools' temp dir, which editable installs
        # throw away) so that re-installs only recompile what changed.
        tag = f"{sysconfig.get_platform()}-cp{sys.version_info[0]}{sys.version_info[1]}"
        torch_tag = torch.__version__.replace("+", "_")
        build_dir = ROOT / "build" / f"cmake.{tag}-torch{torch_tag}-{build_type}"
        build_dir.mkdir(parents=True, exist_ok=True)

        cmake = _tool("cmake", "cmake", "CMAKE_BIN_DIR")
        ninja = _tool("ninja", "ninja", "BIN_DIR")
        configure = [
            cmake,
            "-S", ext.cmake_lists_dir,
            "-B", str(build_dir),
            "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DSPRINTER_WITH_CUDA={'ON' if with_cuda else 'OFF'}",
            f"-DSPRINTER_OUTPUT_DIR={ext_path.parent}",
            f"-DSPRINTER_EXT_SUFFIX={suffix}",
        ]
        configure += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        build = [cmake, "--build", str(build_dir), "--target", stem, "-j", str(_max_jobs())]
        if self.verbose:
            build.append("--verbose")

        print("sprinter_ext:", shlex.join(configure), flush=True)
        subprocess.run(configure, check=True, cwd=ROOT)
        print("sprinter_ext:", shlex.join(build), flush=True)
        subprocess.run(build, check=True, cwd=ROOT)
        if not ext_path.exists():
            raise RuntimeError(f"CMake finished but {ext_path} was not produced; see the log above")


# kernels/ (top level: the Triton kernels) is installed as the subpackage sprinter_ext.kernels
packages = find_packages(include=["sprinter_ext", "sprinter_ext.*"]) + ["sprinter_ext.kernels"]

setup(
    packages=sorted(set(packages)),
    package_dir={"sprinter_ext.kernels": "kernels"},
    package_data={"sprinter_ext.models": ["data/*.safetensors", "data/*.json"]},
    ext_modules=[CMakeExtension("sprinter_ext._C", cmake_lists_dir=ROOT)],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
