"""Triton kernels of the fused ops (the ``"triton"`` backend of :mod:`sprinter_ext.ops`).

Modules here import triton at import time; import them only where triton is
available (Linux). ``HAS_TRITON`` says whether it is installed.

- :mod:`sprinter_ext.kernels.rng` -- the Philox randomness contract
  (twin of ``sprinter_ext._rng`` and ``csrc/common/philox.h``).
- :mod:`sprinter_ext.kernels.draft_sample`, :mod:`sprinter_ext.kernels.verify_tokens`
  -- the fused ops behind :mod:`sprinter_ext.ops` (shared pieces in ``_sampling``).

On a machine without a GPU, set ``TRITON_INTERPRET=1`` *before* importing a
kernel module to run the kernels on CPU tensors with Triton's interpreter.
"""

import importlib.util

HAS_TRITON = importlib.util.find_spec("triton") is not None

__all__ = ["HAS_TRITON"]
