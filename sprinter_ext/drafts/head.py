"""EAGLE-3-style draft head: one decoder layer that drafts from the target's own features.

Terms (EAGLE-3, arXiv 2503.01840; the tensor names follow its public checkpoint layout so
heads trained with the public tooling load here, see :mod:`.eagle3`):

* **feature layers** ``L = (l_1, ..., l_m)``: the head reads the target's residual stream
  *entering* each layer ``l_i`` (Hugging Face ``hidden_states[l_i]``), concatenated
  ``[m*H]``; ``fc`` maps it to ``H``. EAGLE-3 uses a low, a middle and a high layer.
* **input at position p**: the pair (feature ``f_p``, token ``x_{p+1}``). ``f_p`` is the
  target's fused feature at p when the target has run there, otherwise the head's own output
  ``g_{p-1}`` from the step before (its prediction of that feature); ``x_{p+1}`` is embedded
  with the target's (frozen) embedding. The output ``g_p`` (before the final norm) predicts
  ``x_{p+2}`` through ``norm`` and a restricted-vocabulary ``lm_head``.
* **midlayer**: ``x = [input_layernorm(emb), hidden_norm(f)]`` (``2H``) feeds q/k/v of a
  Llama attention (rotary positions = p, its own KV cache); the residual is ``f``; then the
  Llama MLP with its own residual.
* **draft vocabulary**: ``d2t[d]`` is the target id of draft id ``d`` (stored absolute here;
  EAGLE-3 files store the offset ``t - d``, converted on load).

Training-time test (EAGLE-3): the head is unrolled over draft steps in training; at step j
the query at p sees the keys of step 0 at positions <= p-j (made from target features) and
the key of step i at position p-j+i for 1 <= i <= j, exactly what its KV cache holds when it
drafts the (j+1)-th token at inference. :func:`DraftHead.unrolled` implements that mask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class HeadConfig:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    feature_layers: tuple[int, ...]
    draft_vocab_size: int
    target_vocab_size: int
    target_layers: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self):
        object.__setattr__(self, "feature_layers", tuple(int(x) for x in self.feature_layers))
        if not self.feature_layers:
            raise InvalidArgumentError("feature_layers is empty: name at least one target layer")
        for l in self.feature_layers:
            if not 0 <= l < self.target_layers:
                raise InvalidArgumentError(
                    f"feature layer {l} is beyond the target's depth ({self.target_layers} layers): "
                    f"use indices in [0, {self.target_layers - 1}] (the residual stream entering that layer)")
        if self.head_dim < 2 or self.head_dim % 2:
            raise InvalidArgumentError(
                f"head_dim {self.head_dim} cannot carry rotary positions: it must be even (pairs of dimensions rotate)")
        if self.num_heads % self.num_kv_heads:
            raise InvalidArgumentError(
                f"{self.num_heads} attention heads cannot share {self.num_kv_heads} key/value heads: "
                "num_heads must be a multiple of num_kv_heads")
        if not 1 <= self.draft_vocab_size <= self.target_vocab_size:
            raise InvalidArgumentError(
                f"draft vocabulary of {self.draft_vocab_size} tokens for a target vocabulary of "
                f"{self.target_vocab_size}: it must be between 1 and the target's size")

    # what code written for Hugging Face configs reads (verifier identity, repr)
    model_type = "draft_head"
    num_hidden_layers = 1

    @property
    def vocab_size(self) -> int:
        """Logits come back over the target's vocabulary (-inf outside the draft's)."""
        return self.target_vocab_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_layers"] = list(self.feature_layers)
        return d

    @classmethod
    def for_target(cls, config, feature_layers, draft_vocab_size: int) -> "HeadConfig":
        """The head's shape from a Hugging Face Llama-style target config."""
        rope = getattr(config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        nh = config.num_attention_heads
        return cls(
            hidden_size=config.hidden_size, num_heads=nh,
            num_kv_heads=getattr(config, "num_key_value_heads", nh) or nh,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // nh,
            intermediate_size=config.intermediate_size, feature_layers=tuple(feature_layers),
            draft_vocab_size=draft_vocab_size, target_vocab_size=config.vocab_size,
            target_layers=config.num_hidden_layers, rms_norm_eps=float(config.rms_norm_eps),
            rope_theta=float(theta))


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class _Attention(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        h2 = 2 * c.hidden_size
        self.q_proj = nn.Linear(h2, c.num_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(h2, c.num_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(h2, c.num_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=False)


class _MLP(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _MidLayer(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.hidden_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = _Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = _MLP(c)


def rope_tables(pos: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [..., T, 1, head_dim] of the rotary angles at positions pos [..., T]."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim))
    ang = pos.to(torch.float32)[..., None] * inv  # [..., T, hd/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[..., None, :].to(dtype)
    sin = torch.cat([ang.sin(), ang.sin()], -1)[..., None, :].to(dtype)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama's rotate-half rotary embedding of x [..., T, nh, hd] with :func:`rope_tables`."""
    hd = x.shape[-1]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding (Llama's rotate-half form). x [..., T, nh, hd], pos [..., T]."""
    return apply_rope(x, *rope_tables(pos, x.shape[-1], theta, x.dtype))


class DraftHead(nn.Module):
    """The head's weights and its two forwards: :meth:`unrolled` (training) and :meth:`step`."""

    def __init__(self, config: HeadConfig, d2t: torch.Tensor | None = None, *, seed: int = 0):
        super().__init__()
        c = self.config = config
        # NOTE: built on the meta device and initialised from a local generator: nn.Linear's
        # own reset_parameters would draw from (and advance) torch's global RNG.
        with torch.device("meta"):
            self.fc = nn.Linear(len(c.feature_layers) * c.hidden_size, c.hidden_size, bias=False)
            self.midlayer = _MidLayer(c)
            self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
            self.lm_head = nn.Linear(c.hidden_size, c.draft_vocab_size, bias=False)
        self.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in sorted(self.named_parameters()):
                if name.endswith("norm.weight") or "layernorm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1])))
        if d2t is None:
            d2t = torch.arange(c.draft_vocab_size)
        self.register_buffer("d2t", check_vocab_map(d2t, c), persistent=True)

    # -- pieces -------------------------------------------------------------------------
    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """[..., m*H] target features -> [..., H]."""
        return self.fc(features)

    def _qkv(self, feat: torch.Tensor, emb: torch.Tensor, pos: torch.Tensor):
        c, a = self.config, self.midlayer.self_attn
        x = torch.cat([self.midlayer.input_layernorm(emb), self.midlayer.hidden_norm(feat)], -1)
        shp = x.shape[:-1]
        q = _rope(a.q_proj(x).view(*shp, c.num_heads, c.head_dim), pos, c.rope_theta)
        k = _rope(a.k_proj(x).view(*shp, c.num_kv_heads, c.head_dim), pos, c.rope_theta)
        v = a.v_proj(x).view(*shp, c.num_kv_heads, c.head_dim)
        return q, k, v

    def _finish(self, feat: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        m = self.midlayer
        h = feat + m.self_attn.o_proj(attn)
        return h + m.mlp(m.post_attention_layernorm(h))

    def logits(self, g: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits of the head's outputs g [..., H]."""
        return self.lm_head(self.norm(g))

    # -- what SPRINTER's verifier reads -------------------------------------------------
    @property
    def verifier_input_size(self) -> int:
        """Width of :meth:`verifier_state`: the hidden size + 2 confidence columns."""
        return self.config.hidden_size + 2

    def verifier_state(self, g: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """[norm(g), max_i p_i, -sum_i p_i log p_i] [..., H + 2] for outputs g, with p the
        softmax of the head's RAW logits (temperature 1, no top-k / top-p): the head's own
        confidence, the same at every sampling temperature. (The verifier's q features are
        of the processed q, one-hot at temperature 0; these columns are not.)"""
        if logits is None:
            logits = self.logits(g)
        lp = torch.log_softmax(logits.float(), -1)
        p = lp.exp()
        conf = torch.stack([p.amax(-1), -(p * lp).sum(-1)], -1)
        return torch.cat([self.norm(g).float(), conf], -1).to(g.dtype)

    # -- training: all positions, unrolled over draft steps ------------------------------
    def unrolled(self, fused: torch.Tensor, emb: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """Outputs g^j [B, T, H] for j < steps, with the inference-exact attention mask.

        fused [B, T, H]: fc(target features) at positions 0..T-1; emb [B, T, H]: embedding of
        x_{p+1} for the input at p. g^j at p is the head's (j+1)-th draft from a round whose
        last target feature is at p-j; valid for p >= j.
        """
        c = self.config
        B, T, _ = fused.shape
        pos = torch.arange(T, device=fused.device).expand(B, T)
        rep = c.num_heads // c.num_kv_heads
        scale = 1.0 / math.sqrt(c.head_dim)
        outs: list[torch.Tensor] = []
        keys: list[tuple[torch.Tensor, torch.Tensor]] = []
        feat = fused
        idx = torch.arange(T, device=fused.device)
        for j in range(steps):
            if j > 0:  # own feature: the previous step's output one position back
                feat = torch.cat([torch.zeros_like(outs[-1][:, :1]), outs[-1][:, :-1]], 1)
            q, k, v = self._qkv(feat, emb, pos)
            keys.append((k, v))
            q = q.transpose(1, 2)  # [B, nh, T, hd]
            k0 = keys[0][0].repeat_interleave(rep, 2).transpose(1, 2)
            v0 = keys[0][1].repeat_interleave(rep, 2).transpose(1, 2)
            s0 = (q @ k0.transpose(-1, -2)) * scale  # [B, nh, T, T]
            allowed = idx[None, :] <= (idx[:, None] - j)
            s0 = s0.masked_fill(~allowed, float("-inf"))
            diag_s, diag_v = [], []
            for i in range(1, j + 1):  # key of step i at position p-j+i
                ki = keys[i][0].repeat_interleave(rep, 2).transpose(1, 2)
                vi = keys[i][1].repeat_interleave(rep, 2).transpose(1, 2)
                sh = j - i
                if sh:
                    ki = torch.cat([torch.zeros_like(ki[:, :, :sh]), ki[:, :, :-sh]], 2)
                    vi = torch.cat([torch.zeros_like(vi[:, :, :sh]), vi[:, :, :-sh]], 2)
                diag_s.append((q * ki).sum(-1, keepdim=True) * scale)
                diag_v.append(vi)
            s = torch.cat([s0] + diag_s, -1)
            # rows p < j see only zero-padded diagonal keys: finite, and never trained on
            p = torch.softmax(s.float(), -1).to(q.dtype)
            out = p[..., :T] @ v0
            for i, vi in enumerate(diag_v):
                out = out + p[..., T + i:T + i + 1] * vi
            attn = out.transpose(1, 2).reshape(B, T, c.num_heads * c.head_dim)
            outs.append(self._finish(feat, attn))
        return outs

    # -- inference: a few new positions against the KV cache -----------------------------
    def step(self, feat: torch.Tensor, emb: torch.Tensor, pos: torch.Tensor, cache: "HeadCache") -> torch.Tensor:
        """Run positions pos [n] (inputs feat [n, H] already fused, emb [n, H]) causally after
        the cache's entries; appends their keys/values. Returns g [n, H]."""
        c = self.config
        q, k, v = self._qkv(feat, emb, pos)  # [n, nh|nkv, hd]
        kk, vv = cache.append(k, v)
        rep = c.num_heads // c.num_kv_heads
        kk = kk.repeat_interleave(rep, 1).transpose(0, 1)  # [nh, L, hd]
        vv = vv.repeat_interleave(rep, 1).transpose(0, 1)
        qq = q.transpose(0, 1)  # [nh, n, hd]
        L, n = kk.shape[1], q.shape[0]
        mask = torch.arange(L, device=q.device)[None, :] <= (L - n + torch.arange(n, device=q.device))[:, None]
        attn = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
        return self._finish(feat, attn.transpose(0, 1).reshape(n, -1))


class HeadCache:
    """The head's KV cache for one sequence: keys/values [len, nkv, hd], truncatable."""

    def __init__(self, config: HeadConfig, dtype=torch.float32, device="cpu"):
        self.k = torch.empty(0, config.num_kv_heads, config.head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)

    def __len__(self) -> int:
        return self.k.shape[0]

    def append(self, k: torch.Tensor, v: torch.Tensor):
        self.k = torch.cat([self.k, k.to(self.k.dtype)])
        self.v = torch.cat([self.v, v.to(self.v.dtype)])
        return self.k, self.v

    def truncate(self, n: int) -> None:
        self.k, self.v = self.k[:n], self.v[:n]


def check_vocab_map(d2t: torch.Tensor, c: HeadConfig) -> torch.Tensor:
    """The draft->target id map as int64 [draft_vocab], checked: in range and no repeats."""
    if not isinstance(d2t, torch.Tensor) or d2t.dtype.is_floating_point or d2t.dim() != 1:
        raise InvalidArgumentError("the draft->target vocabulary map must be a 1-D integer tensor")
    if d2t.numel() != c.draft_vocab_size:
        raise InvalidArgumentError(
            f"the vocabulary map has {d2t.numel()} entries for a draft vocabulary of {c.draft_vocab_size}")
    d2t = d2t.to(torch.int64)
    if d2t.numel() and (int(d2t.min()) < 0 or int(d2t.max()) >= c.target_vocab_size):
        raise InvalidArgumentError(
            f"the vocabulary map points outside the target's vocabulary [0, {c.target_vocab_size}): "
            f"range [{int(d2t.min())}, {int(d2t.max())}]")
    if torch.unique(d2t).numel() != d2t.numel():
        raise InvalidArgumentError("the vocabulary map sends two draft ids to the same target id")
    return d2t
