"""Loads the compiled core, sprinter_ext._C, and reports how it was built.

Importing this module fails with an ImportError that says how to rebuild when
_C is missing (e.g. a source checkout that was never built) or was built
against another torch.
"""

from __future__ import annotations

import importlib.util
import platform

import torch  # loads libtorch / libtorch_python, which _C links against

__all__ = ["build_info", "philox4x32", "philox_uniform", "philox_uniform_batched"]

_REBUILD = (
    "Rebuild it from the repository root with the README's command:\n"
    '    pip install --no-build-isolation -e ".[dev]"\n'
    "(with the same Python and torch you run sprinter_ext with)."
)

try:
    from . import _C
except ImportError as exc:  # missing module, or a .so that does not load
    raise ImportError(
        f"sprinter_ext's compiled extension sprinter_ext._C could not be imported ({exc}). "
        f"It is built from csrc/ when the package is installed; it is missing or was built "
        f"for another Python/torch. {_REBUILD}"
    ) from exc


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


_compiled_torch = _C.build_info()["torch_version"]
if _major_minor(_compiled_torch) != _major_minor(torch.__version__):
    raise ImportError(
        f"sprinter_ext._C was compiled against torch {_compiled_torch} but torch "
        f"{torch.__version__} is installed; C++ extensions only work with the torch they "
        f"were built for. {_REBUILD}"
    )

philox4x32 = _C.philox4x32
philox_uniform = _C.philox_uniform
philox_uniform_batched = _C.philox_uniform_batched


def _triton() -> tuple[bool, str | None]:
    if importlib.util.find_spec("triton") is None:
        return False, None
    try:
        import triton
    except Exception:  # installed but broken (wrong platform, missing driver bits...)
        return False, None
    return True, getattr(triton, "__version__", None)


def build_info() -> dict:
    """How sprinter_ext was built, and what it runs on.

    The compiled module's facts (torch_version it was compiled against,
    with_cuda, cuda_version, compiler, cxx_standard, build_type,
    pybind11_version) plus runtime_torch_version, python_version,
    triton_available (triton imports), triton_version (or None) and
    native_file (path of the loaded _C).
    """
    info = dict(_C.build_info())
    info["runtime_torch_version"] = torch.__version__
    info["python_version"] = platform.python_version()
    info["triton_available"], info["triton_version"] = _triton()
    info["native_file"] = _C.__file__
    return info
