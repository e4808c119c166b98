"""A draft head behind the runner protocol, fed by the target runner's features.

The engines drive a draft through the runner protocol (``prefill``/``step``/``extend``/
``truncate``/``length``/``scrub``/``snapshot``/``restore``, see
:mod:`sprinter_ext.models.runner`); :class:`HeadRunner` implements it for a
:class:`~.head.DraftHead`, so every method runs with a head without knowing it is one.

Where the features come from (no extra target work): the target runner records, for every
position it has run, the residual streams entering the head's feature layers
(:class:`FeatureTap`, filled by the target's own verification forwards). The head's input
at position p is (f_p, x_{p+1}) with

* f_p = fc(target features at p) when the target has run position p with the same tokens
  (p < ``tap.length``; the tap is rolled back with the target, so what it holds is always a
  prefix of the committed sequence),
* otherwise the head's own output at p-1 (its prediction of that feature).

Entries made from own features are provisional: as soon as the target has run those
positions (after a verification) the next feed recomputes them from the target's features,
as EAGLE does at the start of each round. Logits are over the target's vocabulary with
``-inf`` outside the head's draft vocabulary; the hidden state is the head's normed output
with its raw confidence (max probability, entropy; :meth:`DraftHead.verifier_state`): what
SPRINTER's verifier scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ArgumentTypeError, CacheOverflowError, InvalidArgumentError
from .head import DraftHead, apply_rope, rope_tables


class FeatureTap:
    """Per-position target features [max_len, m*H], valid for the first ``length`` positions."""

    def __init__(self, layers: Sequence[int], width: int, max_len: int, dtype=torch.float32, device="cpu"):
        self.layers = tuple(layers)
        self.buf = torch.zeros(max_len, width, dtype=dtype, device=device)
        self.length = 0

    def write(self, start: int, hidden_states) -> None:
        """Record the feature layers of one forward (Hugging Face ``hidden_states`` tuple, [1, n, H] each)."""
        feats = torch.cat([hidden_states[l][0] for l in self.layers], -1)
        self.buf[start:start + feats.shape[0]].copy_(feats)
        self.length = start + feats.shape[0]

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ArgumentTypeError(f"{name} must be an int, got {type(v).__name__}")
    return v


class HeadRunner:
    """Runner-protocol wrapper of a draft head that reads the target's :class:`FeatureTap`.

    ``fast``: False runs the head's own (eager) modules, the reference; True its packed CPU
    path (:class:`_PackedHead`, float tolerance); None picks True where that path runs.
    :func:`head_runner_factory` passes True exactly when the target runs native."""

    def __init__(self, head: DraftHead, embedding: torch.Tensor, tap: FeatureTap, vocab_size: int,
                 max_len: int, *, fast: bool | None = False):
        c = head.config
        if tap.layers != c.feature_layers:
            raise InvalidArgumentError(
                f"the target records layers {tap.layers} but the head reads {c.feature_layers}")
        self.head = head.eval()
        self.config = c
        self.embedding = embedding  # the target's input embedding [V, H] (frozen, shared)
        self.tap = tap
        self.vocab_size = int(vocab_size)
        self.max_len = int(max_len)
        p = next(head.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.hidden_size = head.verifier_input_size  # the hidden state it returns (verifier input)
        H = c.hidden_size
        self._tokens = torch.zeros(self.max_len, dtype=torch.long)
        self._g = torch.zeros(self.max_len, H, dtype=self.dtype, device=self.device)  # outputs per input
        self._k = torch.zeros(self.max_len, c.num_kv_heads, c.head_dim, dtype=self.dtype, device=self.device)
        self._v = torch.zeros_like(self._k)
        self.length = 0  # tokens fed
        self._entries = 0  # inputs processed (<= length - 1)
        self._from_target = 0  # leading inputs made from the target's features
        fast = resolve_fast_head(head, fast)
        self._proj = _PackedHead(head, self.max_len) if fast else _EagerHead(head)  # what _run calls
        self.fast = fast

    # -- protocol -----------------------------------------------------------------------
    def prefill(self, ids):
        self.length = self._entries = self._from_target = 0
        ids = list(torch.as_tensor(ids, dtype=torch.long).reshape(-1).tolist())
        if not ids:
            return None
        logits, hidden = self._feed(ids, last_only=True)
        return logits[0], hidden[0]

    def step(self, token: int):
        logits, hidden = self._feed([int(token)])
        return logits[0], hidden[0]

    def extend(self, tokens):
        tokens = list(torch.as_tensor(tokens, dtype=torch.long).reshape(-1).tolist())
        if not tokens:
            raise InvalidArgumentError("extend() needs at least one token")
        return self._feed(tokens)

    def truncate(self, length: int) -> None:
        _check_int("length", length)
        if not 0 <= length <= self.length:
            raise InvalidArgumentError(f"cannot truncate to {length}: the head holds {self.length} tokens")
        self.length = length
        self._entries = min(self._entries, max(length - 1, 0))
        self._from_target = min(self._from_target, self._entries)

    def scrub(self) -> None:
        for t in (self._g, self._k, self._v):
            t.zero_()
        self.length = self._entries = self._from_target = 0

    def snapshot(self, start: int, end: int):
        """Tokens [start, end) and the head's entries for them (inputs start-1 .. end-2), as a
        list of ``[1, h, n, d]`` tensor pairs like the model runners' (methods/ssd.py slices
        them along dim 2): keys/values, outputs, and tokens with their 'from target' flags."""
        _check_int("start", start), _check_int("end", end)
        if not 1 <= start <= end <= self.length:
            raise InvalidArgumentError(f"cannot snapshot [{start}, {end}): the head holds {self.length} tokens")
        e0, e1 = start - 1, end - 1
        made = min(e1, self._entries)
        flags = torch.zeros(end - start, dtype=torch.long)
        flags[: max(made - e0, 0)] = 1  # entries that exist
        flags[: max(min(self._from_target, e1) - e0, 0)] = 2  # ... and were made from target features
        four = lambda t: t[None, None] if t.dim() == 2 else t.transpose(0, 1)[None]  # noqa: E731
        return [(four(self._k[e0:e1]).clone(), four(self._v[e0:e1]).clone()),
                (four(self._g[e0:e1]).clone(), four(self._g[e0:e1]).clone()),
                (self._tokens[start:end].clone()[None, None, :, None], flags[None, None, :, None])]

    def restore(self, start: int, snap) -> None:
        """Write a :meth:`snapshot` (or a prefix of one along dim 2) back at `start`."""
        _check_int("start", start)
        if not isinstance(snap, list) or len(snap) != 3 or not 1 <= start <= self.length:
            raise InvalidArgumentError("snap must be a snapshot of this head runner, restored at 1 <= start <= length")
        (k, v), (g, _), (tok, flags) = snap
        n = tok.shape[2]
        e0 = start - 1
        self._k[e0:e0 + n] = k[0].transpose(0, 1)
        self._v[e0:e0 + n] = v[0].transpose(0, 1)
        self._g[e0:e0 + n] = g[0, 0]
        self._tokens[start:start + n] = tok[0, 0, :, 0]
        fl = flags[0, 0, :, 0]
        self.length = start + n
        self._entries = e0 + int((fl > 0).sum())
        if self._from_target >= e0:
            self._from_target = e0 + int((fl == 2).sum())
        self._from_target = min(self._from_target, self._entries)

    # -- internals ------------------------------------------------------------------------
    @torch.inference_mode()
    def _feed(self, tokens: list[int], last_only: bool = False):
        """(logits, hidden) for each fed token, or for the last one only (`last_only`: prefill)."""
        n = len(tokens)
        if self.length + n > self.max_len:
            raise CacheOverflowError(f"{self.length + n} tokens do not fit the head's cache of {self.max_len}")
        first_out = self.length - 1  # input whose output predicts the token after the first fed one
        self._tokens[self.length:self.length + n] = torch.tensor(tokens)
        self.length += n
        need = self.length - 1  # inputs 0..length-2
        # inputs the target has run since: recompute them (and everything after) from its features
        avail = min(self.tap.length, need)
        redo = self._from_target if avail > self._from_target else self._entries
        start = min(redo, self._entries)
        if start < avail:
            self._run(start, avail, from_target=True)
            self._from_target = avail
            start = avail
        for p in range(start, need):  # own features, one position at a time
            self._run(p, p + 1, from_target=False)
        self._entries = need
        lo = max(first_out, 0)
        g = self._g[lo:need]
        if first_out < 0:  # a one-token prompt: nothing to predict from yet but the embedding
            g = torch.cat([torch.zeros_like(self._g[:1]), g])
        if last_only:
            g = g[-1:]
        logits = self._proj.logits(g).float()
        full = torch.full((g.shape[0], self.vocab_size), float("-inf"), device=self.device)
        full[:, self.head.d2t] = logits
        return full, self.head.verifier_state(g, logits)

    def _run(self, lo: int, hi: int, *, from_target: bool) -> None:
        """Run inputs lo..hi-1 (positions) causally after the entries before lo."""
        P = self._proj
        if from_target:
            feat = P.fc(self.tap.buf[lo:hi].to(self.dtype))
        else:
            feat = self._g[lo - 1:lo] if lo > 0 else torch.zeros_like(self._g[:1])
        emb = self.embedding[self._tokens[lo + 1:hi + 1].to(self.embedding.device)].to(self.dtype)
        q, k, v = P.qkv(feat, emb, lo, hi)
        self._k[lo:hi], self._v[lo:hi] = k, v
        self._g[lo:hi] = P.finish(feat, P.attend(q, self._k[:hi], self._v[:hi], lo))


class _EagerHead:
    """The head's decode-time forward through its own modules: the reference (the ops of
    :meth:`DraftHead.step`). Same interface as :class:`_PackedHead`."""

    def __init__(self, head: DraftHead):
        self.head, self.c = head, head.config

    def fc(self, features):
        return self.head.fuse(features)

    def qkv(self, feat, emb, lo, hi):
        return self.head._qkv(feat, emb, torch.arange(lo, hi, device=feat.device))

    def attend(self, q, k, v, lo):
        """Causal attention of queries q [n, nh, hd] at positions lo.. over keys and values
        [L, nkv, hd], the keys repeated per query head."""
        n, L, rep = q.shape[0], k.shape[0], self.c.num_heads // self.c.num_kv_heads
        kk = k.repeat_interleave(rep, 1).transpose(0, 1)  # [nh, L, hd]
        vv = v.repeat_interleave(rep, 1).transpose(0, 1)
        mask = torch.arange(L, device=q.device)[None, :] <= torch.arange(lo, lo + n, device=q.device)[:, None]
        attn = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1), kk, vv, attn_mask=mask)
        return attn.transpose(0, 1).reshape(n, -1)

    def finish(self, feat, attn):
        return self.head._finish(feat, attn)

    def logits(self, g):
        return self.head.logits(g)


def fast_head_reason(head: DraftHead) -> str | None:
    """Why the packed CPU path (:class:`_PackedHead`) cannot run `head`, or None when it can."""
    from ..models.native import resolve_fast

    p = next(head.parameters())
    if not resolve_fast(None, p.device, p.dtype):  # the packed kernels' rule, as for the target
        return f"the packed path needs a float32 or bfloat16 head on the CPU, got {p.dtype} on {p.device}"
    try:
        from .. import _native  # noqa: F401  (the compiled extension, with a rebuild hint)
    except ImportError as exc:
        return f"the compiled extension is missing ({exc})"
    return None


def resolve_fast_head(head: DraftHead, fast) -> bool:
    """``fast`` checked: None -> whether the packed path can run `head`; True where it cannot is
    a named error."""
    if fast is None:
        return fast_head_reason(head) is None
    if not isinstance(fast, bool):
        raise ArgumentTypeError(f"fast must be a bool or None, got {type(fast).__name__}")
    if fast and (why := fast_head_reason(head)):
        raise InvalidArgumentError(f"fast=True cannot run this head: {why}; use fast=False")
    return fast


class _PackedHead:
    """The head's decode-time forward on the CPU with csrc/model/linear_cpu.h's PackedLinear.

    The same math as :class:`DraftHead` (``_qkv``, ``_finish``, ``logits``), within float
    tolerance, not bits: q/k/v are one packed projection (as are gate/up), each weight is
    streamed once per forward whatever its row count (ATen's eager linear re-reads or
    repacks it at small n), and the rotary angles come from a table made once. What the
    runner's fast mode runs (``HeadRunner(fast=True)``); the eager path stays the reference.
    """

    def __init__(self, head: DraftHead, max_len: int):
        from .._native import _C

        c, m = head.config, head.midlayer
        a = m.self_attn
        w = lambda *ts: torch.cat([t.weight.detach() for t in ts]).contiguous()  # noqa: E731
        self.c = c
        self.fc_ = _C.PackedLinear(w(head.fc), None)
        self.qkv_ = _C.PackedLinear(w(a.q_proj, a.k_proj, a.v_proj), None)
        self.o_ = _C.PackedLinear(w(a.o_proj), None)
        self.gate_up_ = _C.PackedLinear(w(m.mlp.gate_proj, m.mlp.up_proj), None)
        self.down_ = _C.PackedLinear(w(m.mlp.down_proj), None)
        self.lm_head_ = _C.PackedLinear(w(head.lm_head), None)
        self.split = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim)
        # the head's own RMSNorm modules (torch's fused rms_norm measured slower here)
        self.in_norm, self.hid_norm, self.post_norm, self.out_norm = (
            m.input_layernorm, m.hidden_norm, m.post_attention_layernorm, head.norm)
        self.cos, self.sin = rope_tables(torch.arange(max_len), c.head_dim, c.rope_theta,
                                         a.q_proj.weight.dtype)  # [max_len, 1, hd], made once

    def fc(self, features):
        return self.fc_.forward(features)

    def qkv(self, feat, emb, lo, hi):
        c = self.c
        x = torch.cat([self.in_norm(emb), self.hid_norm(feat)], -1)
        q, k, v = self.qkv_.forward(x).split(self.split, -1)
        n = hi - lo
        cos, sin = self.cos[lo:hi], self.sin[lo:hi]
        q = apply_rope(q.view(n, c.num_heads, c.head_dim), cos, sin)
        k = apply_rope(k.view(n, c.num_kv_heads, c.head_dim), cos, sin)
        return q, k, v.view(n, c.num_kv_heads, c.head_dim)

    def attend(self, q, k, v, lo):
        """Causal grouped-query attention of queries q [n, nh, hd] at positions lo.. over keys
        and values [L, nkv, hd]: the rep = nh / nkv query heads of a KV head are rows of one
        attention (no repeated keys); one query sees every key, so it needs no mask."""
        c = self.c
        n, L, nkv = q.shape[0], k.shape[0], c.num_kv_heads
        rep = c.num_heads // nkv
        qq = q.view(n, nkv, rep, c.head_dim).permute(1, 2, 0, 3).reshape(nkv, rep * n, c.head_dim)
        mask = None
        if n > 1:
            mask = (torch.arange(L)[None, :] <= torch.arange(lo, lo + n)[:, None]).repeat(rep, 1)
        o = torch.nn.functional.scaled_dot_product_attention(  # 4-D: ATen's fused CPU kernel
            qq[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask)
        return o.view(nkv, rep, n, c.head_dim).permute(2, 0, 1, 3).reshape(n, c.num_heads * c.head_dim)

    def finish(self, feat, attn):
        h = feat + self.o_.forward(attn)
        gate, up = self.gate_up_.forward(self.post_norm(h)).chunk(2, -1)
        return h + self.down_.forward(torch.nn.functional.silu(gate) * up)

    def logits(self, g):
        return self.lm_head_.forward(self.out_norm(g))


class NativeTap:
    """The FeatureTap view of a C++ NativeModel's feature buffer (``set_feature_layers``):
    rows [0, runner.length) are valid, so rollback needs nothing more."""

    def __init__(self, runner):
        self.runner = runner
        self.layers = tuple(runner.feature_layers)
        self.buf = runner.features

    @property
    def length(self) -> int:
        return self.runner.length


def native_head_runner(head: DraftHead, embedding: torch.Tensor, target, vocab_size: int, max_len: int,
                       *, fast: bool | None = None):
    """The C++ twin of ``HeadRunner(head, embedding, NativeTap(target), ...)``: ``_C.HeadModel``
    (csrc/model/head_model.h), reading `target`'s (a ``_C.NativeModel``) feature tap. Same
    protocol; the native loop runs it without the GIL. ``fast`` (None: where it can) is the
    packed CPU path, bitwise equal to HeadRunner(fast=True); False runs at::linear."""
    from .._native import _C

    c = head.config
    if not isinstance(target, _C.NativeModel):
        raise ArgumentTypeError(f"target must be a _C.NativeModel, got {type(target).__name__}")
    if tuple(target.feature_layers) != c.feature_layers:
        raise InvalidArgumentError(
            f"the target records layers {tuple(target.feature_layers)} but the head reads {c.feature_layers}")
    fast = resolve_fast_head(head, fast)
    p = next(head.parameters())
    cos, sin = rope_tables(torch.arange(int(max_len)), c.head_dim, c.rope_theta, p.dtype)  # as _PackedHead's
    tensors = {name: t.detach() for name, t in head.state_dict().items()}
    tensors.update({"embed": embedding.detach(), "rope.cos": cos.to(p.device), "rope.sin": sin.to(p.device)})
    config = dict(hidden_size=c.hidden_size, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                  head_dim=c.head_dim, intermediate_size=c.intermediate_size, vocab_size=int(vocab_size),
                  max_len=int(max_len), norm_eps=float(c.rms_norm_eps), feature_layers=list(c.feature_layers),
                  fast=fast)
    return _C.HeadModel(target, config, tensors)


def head_embedding(head: DraftHead, target) -> torch.Tensor:
    """The token embedding a head reads: its own (an EAGLE-3 checkpoint may carry one) or the
    target's input embedding (shared, frozen)."""
    emb = getattr(head, "embedding", None)
    return (emb if emb is not None else target.get_input_embeddings().weight).detach()


def head_runner_factory(pair, runner: str = "python", *, built: bool = False):
    """make(role, max_len) for a pair whose draft is a head: the target's runner records the
    head's feature layers (python: ModelRunner; native: the C++ NativeModel's feature tap,
    CPU and CUDA eager), the head reads them: python: the eager HeadRunner; native: the C++
    HeadModel (:func:`native_head_runner`). Roles must be made target first.

    runner "auto" takes the native target when the extension is built and supports it."""
    from ..models import native
    from ..models.runner import ModelRunner

    head = pair._draft
    made: dict = {}
    if runner not in ("python", "native", "auto"):
        raise InvalidArgumentError(f"unknown runner {runner!r}")
    # NOTE: the lazy default target's stand-in is built into a transformers model only when
    # the python runner needs one
    reason = native.unsupported_reason(pair._view("target")) if built else "the extension is not built"
    if runner == "native" and reason:
        raise InvalidArgumentError(f"runner='native' cannot run this target: {reason}; use runner='python'")
    use_native = runner != "python" and not reason

    def make(role: str, max_len):
        target = pair._view("target") if use_native else pair._model("target")
        if role == "target":
            if use_native:  # the C++ head reads the NativeModel's tap itself
                r = pair.native_runner("target", max_len)
                r.set_feature_layers(list(head.config.feature_layers))
            else:
                r = ModelRunner(target, max_len, feature_layers=head.config.feature_layers)
                made["tap"] = r.tap
            made["target"] = r
            return r
        t = made.get("target")
        if t is None:
            raise RuntimeError("the target runner must be made before the head's")
        emb = head_embedding(head, target)
        # a native target gets the C++ head (csrc/model/head_model.h: packed on the CPU, bitwise
        # HeadRunner(fast=True), within tolerance of the eager head like the native target's fast
        # path); the python runner is the reference and keeps the eager head
        V = int(target.config.vocab_size)
        if use_native:
            return native_head_runner(head, emb, t, V, t.max_len)
        return HeadRunner(head, emb, made["tap"], V, t.max_len, fast=False)

    return make
