"""The CUDA sources compile, on a machine without a GPU or a CUDA build of torch.

- csrc/ops/cuda/*.cu with nvcc to sm_90 objects, with the half/bfloat16 operator macros
  torch puts on extension builds;
- csrc/ops/cuda/ops_cuda_torch.cpp, csrc/ops/ops_py.cpp (the bindings of the ops), the
  native loop and the CUDA-graph runner with SPRINTER_WITH_CUDA=1, a
  g++ syntax check against torch's C10 CUDA headers (a CUDA build of torch links them
  for real; CMakeLists.txt).

Skips when nvcc, g++ or the CUDA headers are missing. What the kernels compute is
checked by tests/test_cuda_emulation.py here and tests/test_ops_cuda.py on a GPU.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cuda_toolchain import REPO, cuda_include, nvcc, python_includes, torch_includes

# as torch.utils.cpp_extension passes them to nvcc (COMMON_NVCC_FLAGS)
TORCH_NVCC_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                      "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]  # fmt: skip
GXX_FLAGS = ["-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Wno-unused-parameter", "-DSPRINTER_WITH_CUDA=1"]

needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc (the CUDA toolkit) is not installed")
needs_gxx = pytest.mark.skipif(
    shutil.which("g++") is None or cuda_include() is None, reason="needs g++ and the CUDA toolkit headers"
)


def _run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stderr[-6000:]}"
    return out.stderr


@needs_nvcc
@pytest.mark.parametrize("source", ["ops_cuda.cu", "philox_cuda.cu"])
def test_cu_sources_compile_for_sm90(tmp_path, source):
    cmd = [nvcc(), "-std=c++17", "-O3", "-arch=sm_90", *TORCH_NVCC_DEFINES, "-Xptxas", "-warn-spills",
           "-I", "csrc", "-c", f"csrc/ops/cuda/{source}", "-o", str(tmp_path / "out.o")]  # fmt: skip
    err = _run(cmd)
    assert "warning" not in err.lower(), err[-6000:]  # spills included
    assert (tmp_path / "out.o").stat().st_size > 0


@needs_gxx
@pytest.mark.parametrize(
    "source",
    ["ops/cuda/ops_cuda_torch.cpp", "ops/ops_py.cpp", "bindings.cpp", "engine/engine.cpp", "model/cuda/graph_model.cpp",
     "model/native_model_py.cpp"],
)
def test_torch_side_sources_parse_with_cuda(tmp_path, source):
    """Everything compiled only with SPRINTER_WITH_CUDA: the ops' wrapper, the bindings, the
    native loop's CUDA dispatch, and the CUDA-graph runner."""
    extra = python_includes() if source in ("ops/ops_py.cpp", "bindings.cpp", "model/native_model_py.cpp") else []
    cmd = ["g++", *GXX_FLAGS, *torch_includes(tmp_path), "-isystem", str(cuda_include()), *extra,
           "-I", "csrc", f"csrc/{source}"]  # fmt: skip
    err = _run(cmd)
    assert "warning" not in err, err[-6000:]


def test_cuda_sources_are_built_by_cmake():
    cmake = (REPO / "CMakeLists.txt").read_text()
    for src in ("csrc/ops/cuda/ops_cuda.cu", "csrc/ops/cuda/ops_cuda_torch.cpp", "csrc/ops/cuda/philox_cuda.cu",
                "csrc/model/cuda/graph_model.cpp"):
        assert src in cmake
    assert "use_fast_math" not in cmake  # the kernels rely on IEEE division and precise expf/logf
