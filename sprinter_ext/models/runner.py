"""A batch-1 runner over any Hugging Face causal LM with a static KV cache.

:class:`ModelRunner` implements both runner protocols of :mod:`sprinter_ext.runners`
(``Runner``, the interface of csrc/engine/runner.h, and ``SnapshotRunner``, its optional
snapshot/restore capability):

    runner.prefill(ids)       reset the cache, run the prompt -> (logits [V], hidden [D]) of its last position
    runner.step(token)        one token -> (logits [V], hidden [D])
    runner.extend(tokens)     n tokens -> (logits [n, V], hidden [n, D]), one forward
    runner.truncate(length)   roll the cache back to its first `length` tokens
    runner.length             tokens currently in the cache
    runner.scrub()            zero every cache slot, length 0 (after a failed generation: see below)
    runner.snapshot(start, end) / runner.restore(start, snap)
                              copy KV entries [start, end) out / back in (methods/ssd.py keeps
                              several speculated continuations of one prefix this way)

The cache is a transformers ``StaticCache`` allocated once for ``max_len``
tokens; every forward writes at explicit ``cache_position``s and attends through
an explicit additive mask over the whole cache, so rollback is free (entries past
``length`` are masked and later overwritten) and shapes stay static for CUDA graph
capture (transformers' per-layer write counter is moved with it, see
``_set_length``). NOTE: the mask must be a float 4-D mask: with a 2-D mask or none,
transformers' SDPA/eager paths align the causal mask to the start of the cache
and attend to stale entries after a rollback (tests/test_runner.py checks this).

"Hidden" is what the LM head sees: the base model's final (normed) hidden state.
Logits come back as float32 whatever the model dtype.

NOTE (scrub): a forward that produced NaN/inf has written NaN keys/values; the
additive mask multiplies masked slots' values by 0 and 0 * NaN = NaN, so after a
rollback they still poison every later forward. The engines call ``scrub()``
(the same method as csrc/engine/runner.h's ``Runner::scrub``) whenever a generation fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ArgumentTypeError, CacheOverflowError, InvalidArgumentError

__all__ = ["ModelRunner"]

DEFAULT_MAX_LEN = 2048


def position_limit(model) -> int | None:
    """The most positions `model` supports (max_position_embeddings / n_positions), if it says."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def resolve_max_len(model, max_len: int | None) -> int:
    """The cache size a runner of `model` gets for `max_len` (None: min(2048, the model's limit))."""
    limit = position_limit(model)
    if max_len is None:
        max_len = min(DEFAULT_MAX_LEN, limit) if limit else DEFAULT_MAX_LEN
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise InvalidArgumentError(f"max_len must be an int >= 2, got {max_len!r}")
    if limit and max_len > limit:
        raise InvalidArgumentError(
            f"max_len={max_len} exceeds the model's max_position_embeddings={limit}; pass max_len <= {limit}"
        )
    return max_len


def cache_keyword(module) -> str:
    """The forward keyword that takes the KV cache: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated, removal announced for 5.40) or ``past_key_values``
    (older releases and models that were not renamed)."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C-implemented forward
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class ModelRunner:
    """Static-KV-cache runner for one ``PreTrainedModel`` (batch 1)."""

    def __init__(self, model, max_len: int | None = None):
        from transformers import StaticCache

        config = model.config
        max_len = resolve_max_len(model, max_len)
        self.model = model
        self.config = config
        self.max_len = max_len
        self.device = model.device
        self.dtype = model.dtype
        self.vocab_size = int(config.vocab_size)
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        if self._head is None:
            raise InvalidArgumentError(f"{type(model).__name__} has no LM head (get_output_embeddings() is None)")
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self._cache_kw = cache_keyword(self._base)
        self._cache = StaticCache(config=config, max_cache_len=max_len)
        self._positions = torch.arange(max_len, device=self.device)
        self._neg = torch.finfo(self.dtype).min
        self.length = 0
        self.hidden_size = None  # known after the first forward

    # -- protocol -----------------------------------------------------------------

    def prefill(self, ids: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Reset and run `ids`; returns (logits [V], hidden [D]) of the last position, None if empty."""
        self._set_length(0)
        ids = self._as_ids(ids)
        if ids.numel() == 0:
            return None
        logits, hidden = self._forward(ids, last_only=True)
        return logits[-1], hidden[-1]

    def step(self, token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token; returns (logits [V], hidden [D]) for the next position."""
        logits, hidden = self._forward(self._as_ids([token]), last_only=False)
        return logits[0], hidden[0]

    def extend(self, tokens: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed n >= 1 tokens in one forward; returns (logits [n, V], hidden [n, D])."""
        ids = self._as_ids(tokens)
        if ids.numel() == 0:
            raise InvalidArgumentError("extend() needs at least one token")
        return self._forward(ids, last_only=False)

    def truncate(self, length: int) -> None:
        """Keep the first `length` cached tokens (rollback); later entries are masked."""
        if isinstance(length, bool) or not isinstance(length, int):
            raise ArgumentTypeError(f"length must be an int, got {type(length).__name__}")
        if not 0 <= length <= self.length:
            raise InvalidArgumentError(f"cannot truncate to {length}: the cache holds {self.length} tokens")
        self._set_length(length)

    @torch.inference_mode()
    def scrub(self) -> None:
        """Zero every cached key and value (in place) and set the length to 0."""
        for layer in self._cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.keys.zero_()
                layer.values.zero_()
        self._set_length(0)

    @torch.inference_mode()
    def snapshot(self, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the cached keys and values of positions [start, end), one pair per layer.

        Each tensor is ``[1, heads, end - start, head_dim]`` (a clone: later forwards do not
        change it). ``0 <= start <= end <= length``.
        """
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ArgumentTypeError(f"{name} must be an int, got {type(v).__name__}")
        if not 0 <= start <= end <= self.length:
            raise InvalidArgumentError(f"cannot snapshot [{start}, {end}): the cache holds {self.length} tokens")
        return [(layer.keys[:, :, start:end].clone(), layer.values[:, :, start:end].clone())
                for layer in self._layers()]  # fmt: skip

    def restore(self, start: int, snap: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write a :meth:`snapshot` back at positions [start, start + n); the cache then holds
        exactly start + n tokens (later entries are dropped, as by :meth:`truncate`).

        The restored entries are bitwise the snapshot's, so the next forward sees the same
        cache as the one that followed the snapshotted computation. ``0 <= start <= length``.
        """
        if isinstance(start, bool) or not isinstance(start, int):
            raise ArgumentTypeError(f"start must be an int, got {type(start).__name__}")
        layers = self._layers()
        if not isinstance(snap, list) or len(snap) != len(layers):
            raise InvalidArgumentError(f"snap must be a snapshot of this runner ({len(layers)} layers)")
        n = snap[0][0].shape[2] if snap else 0
        if not 0 <= start <= self.length or start + n > self.max_len:
            raise InvalidArgumentError(
                f"cannot restore {n} entries at {start}: the cache holds {self.length} of {self.max_len} tokens"
            )
        with torch.inference_mode():
            for layer, (k, v) in zip(layers, snap):
                layer.keys[:, :, start : start + n].copy_(k)
                layer.values[:, :, start : start + n].copy_(v)
        self._set_length(start + n)

    # -- internals ------------------------------------------------------------------

    def _layers(self):
        layers = self._cache.layers
        if not all(getattr(layer, "is_initialized", False) for layer in layers):
            raise RuntimeError("the KV cache is empty: prefill() the runner before snapshot/restore")
        return layers

    def _set_length(self, length: int) -> None:
        # NOTE: transformers' StaticLayer writes new keys/values at its own
        # `cumulative_length` counter (not at cache_position), so a rollback must
        # move that counter too; fill_ keeps its address static for graph capture.
        if length != self.length:
            for layer in self._cache.layers:
                layer.cumulative_length.fill_(length)
        self.length = length

    def _as_ids(self, ids) -> torch.Tensor:
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1)
        return t

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, *, last_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.numel()
        start = self.length
        if start + n > self.max_len:
            raise CacheOverflowError(
                f"{start + n} tokens do not fit the static KV cache of {self.max_len}; "
                "use a shorter prompt, fewer new tokens, or a larger max_length"
            )
        cache_position = self._positions[start : start + n]  # [n]
        allowed = self._positions[None, :] <= cache_position[:, None]  # [n, max_len]
        mask = torch.zeros((1, 1, n, self.max_len), dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, self._neg)
        out = self._base(
            input_ids=ids[None],
            **{self._cache_kw: self._cache},
            cache_position=cache_position,
            position_ids=cache_position[None],
            attention_mask=mask,
            use_cache=True,
        )
        hidden = out.last_hidden_state[0]  # [n, D]
        self.length = start + n
        if last_only:
            hidden = hidden[-1:]
        logits = self._head(hidden)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        if self.hidden_size is None:
            self.hidden_size = hidden.shape[-1]
        return logits.float(), hidden
