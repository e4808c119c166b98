"""The two fused ops of a speculative-decoding round, one public entry point each.

- :func:`draft_sample`: draft side, per draft token. From a draft logits row and
  the draft's last hidden state: apply the sampling settings, race-sample the token,
  compute q(token) and the features of q, run the verifier MLP.
- :func:`verify_tokens`: target side, per verification. For every drafted position
  the acceptance test (``mode="sd"``: speculative sampling; ``mode="race"``: ERSD's
  shared race), the recovered token after the first rejection, or the bonus token
  when every draft token is accepted; fixed-shape outputs, no host synchronisation.

Terms (as in vLLM's rejection sampler): *accepted* tokens are draft tokens the
target keeps; the *recovered* token replaces the first rejected one; the *bonus*
token follows when all n draft tokens are accepted. A round commits
``num_accepted + 1`` tokens.

Layout: one module per op, its dispatcher and its torch backend side by side
(``_draft_sample.py``, ``_verify_tokens.py``; private, so that the names ``ops.draft_sample``
and ``ops.verify_tokens`` are the functions, never a module), the Triton kernels beside them in
:mod:`sprinter_ext.kernels`, the checks and the backend choice they share in
``_common.py``.

Backends: ``"torch"`` (the plain-PyTorch statement in each op's module: the only spec of
its rule, run by the reference engine; built from
:func:`sprinter_ext.sampling.probs`, :mod:`sprinter_ext._rng` and the
:class:`~sprinter_ext.verifier.model.Verifier`), ``"cpu"`` (C++ in csrc/ops/ops_cpu.cpp,
``sprinter_ext._C``), ``"triton"`` (kernels/draft_sample.py, kernels/verify_tokens.py;
CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), ``"cuda"`` (CUDA C++ in
csrc/ops/cuda/ops_cuda.cu, ``sprinter_ext._C`` built against a CUDA torch; CUDA tensors).
``"auto"`` picks cuda for CUDA tensors when ``sprinter_ext._C`` has the CUDA ops, else
triton, and cpu for CPU tensors. All backends give the same tokens, counts and accept
flags (up to ties caused by float rounding, e.g. two race scores within an ulp) and
probabilities/scores equal to float32 rounding.

NOTE: the triton and cuda backends never synchronise with the host. Where the torch
and cpu backends raise NonFiniteLogitsError, they return a flagged row instead
(draft: token -1, q_token 0, score 0, accept False; verify: num_accepted -1 and a row
of -1); the caller checks for it when it reads the results anyway.
"""

from __future__ import annotations

from ._common import BACKENDS
from ._common import _feature_codes, _has_cuda_ops, _verifier_layers  # noqa: F401  (decoding.py's)
from ._draft_sample import DraftSample, draft_sample
from ._verify_tokens import VerifyResult, verify_tokens

__all__ = ["DraftSample", "VerifyResult", "draft_sample", "verify_tokens", "BACKENDS"]
