"""The Triton kernels compile for a real GPU (sm_90) even on a CPU-only machine.

The other ops tests run the kernels under TRITON_INTERPRET=1, whose semantics are
looser than the compiler's (e.g. loop-carried types); this compiles them to cubin
ahead of time in a subprocess without the interpreter. Skips where triton's NVIDIA
backend (ptxas) is unavailable.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from sprinter_ext.kernels import draft_sample as ds, verify_tokens as vt

    def compile(fn, types, const):
        sig = dict(types, **{k: "constexpr" for k in const})
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32))

    ints = {"V": "i32", "k0": "u32", "k1": "i32", "temperature": "fp32", "top_k": "i32", "top_p": "fp32"}
    compile(ds._draft_sample_kernel, dict(
        logits_ptr="*bf16", hidden_ptr="*fp32", pos_ptr="*i64", wpack_ptr="*fp32", meta_ptr="*i64",
        token_ptr="*i64", probs_ptr="*fp32", qtok_ptr="*fp32", score_ptr="*fp32", D="i32", stream="i32", **ints),
        dict(GREEDY=False, USE_K=True, USE_P=True, NUM_LAYERS=2, F0=0, F1=1, F2=2, MAX_W=64, BLOCK=1024,
             BLOCK_D=128))
    compile(vt._position_kernel, dict(
        logits_ptr="*fp16", q_ptr="*fp32", x_ptr="*i64", start_ptr="*i64", acc_ptr="*i32", cand_ptr="*i64",
        n="i32", **ints), dict(SD=True, GREEDY=False, USE_K=True, USE_P=True, BLOCK=1024))
    compile(vt._commit_kernel, dict(acc_ptr="*i32", cand_ptr="*i64", x_ptr="*i64", tokens_ptr="*i64",
                                    num_ptr="*i64", n="i32"), dict(BLOCK_N=8))
    print("compiled")
    """
)


def _nvidia_backend() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    return os.path.exists(ptxas)


@pytest.mark.skipif(not _nvidia_backend(), reason="triton's NVIDIA backend (ptxas) is not installed")
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-4000:]
