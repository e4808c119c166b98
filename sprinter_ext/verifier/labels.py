"""Verifier training data: run the pair over offline text with teacher forcing.

For every text position t (context = the text's first t tokens), the draft
proposes x_t the way it would while decoding (a race over its processed
distribution q_t with DRAFT noise, or argmax q_t for the `greedy` rule), and the
target gives p_t. Each example is (draft hidden state h_t, q features, label):

- ``certain``: q_t(x) <= p_t(x)  (the SPRINTER reference code's rule: SD would accept x for sure)
- ``sampled``: u < p_t(x) / q_t(x) with u the COIN uniform (the SD coin's actual outcome)
- ``greedy``:  argmax q_t == argmax p_t

Texts are processed in padded batches (right padding, so causal positions are
unaffected) with a tqdm progress bar; ``text_index`` keeps the split by prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import _rng
from ..sampling import SamplingSettings, probs
from .model import FEATURES, q_features
from ..errors import InvalidArgumentError

__all__ = ["LABELS", "VerifierData", "collect"]

LABELS = ("certain", "sampled", "greedy")


@dataclass
class VerifierData:
    hidden: torch.Tensor  # [N, D] float32: the draft's final hidden state
    features: torch.Tensor  # [N, len(FEATURES)] float32, in FEATURES order
    label: torch.Tensor  # [N] float32 in {0, 1}
    text_index: torch.Tensor  # [N] int64: which text each example came from
    rule: str

    def __len__(self) -> int:
        return int(self.label.numel())

    def subset(self, texts: torch.Tensor) -> VerifierData:
        """Examples whose text_index is in `texts`."""
        m = torch.isin(self.text_index, texts)
        return VerifierData(self.hidden[m], self.features[m], self.label[m], self.text_index[m], self.rule)

    def inputs(self, features: Sequence[str]) -> torch.Tensor:
        """[hidden, selected features] -> [N, D + F]."""
        cols = [FEATURES.index(f) for f in features]
        return torch.cat([self.hidden, self.features[:, cols]], dim=-1)


def _encode(pair, texts, max_tokens: int) -> list[list[int]]:
    out = []
    for t in texts:
        if isinstance(t, str):
            if pair.tokenizer is None:
                raise InvalidArgumentError("texts are strings but the pair has no tokenizer: pass token-id sequences")
            ids = pair.tokenizer(t, add_special_tokens=False).input_ids
        else:
            ids = [int(i) for i in t]
        if ids and not all(0 <= i < pair.vocab_size for i in ids):
            raise InvalidArgumentError(f"token ids must be in [0, {pair.vocab_size})")
        out.append(ids[:max_tokens])
    return out


@torch.inference_mode()
def _forward(model, batch: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.base_model(input_ids=batch, attention_mask=mask)
    hidden = out.last_hidden_state
    return model.get_output_embeddings()(hidden).float(), hidden.float()


@torch.inference_mode()
def collect(
    pair,
    texts: Sequence,
    *,
    label: str = "certain",
    settings: SamplingSettings | Sequence[SamplingSettings] = SamplingSettings(),
    seed: int = 0,
    max_tokens: int = 256,
    batch_size: int = 8,
    starts: Sequence[int] | None = None,
    steps: int = 5,
    progress: bool = True,
) -> VerifierData:
    """Labelled examples from every position of every text (see module doc).

    settings : one SamplingSettings, or several: the examples of each, concatenated (one
        verifier for several temperatures, e.g. 0 and 1, sees each one's processed q
        features in training, as it will when decoding).
    starts : per text, the first token that is a continuation (examples draft tokens from
        there on; the text before is context only). None: every token after the first.
    steps : draft heads only (pair.draft_kind == "head"): examples at draft positions
        0 .. steps-1 of a round (drafts/verifier_data.py); a standalone draft LM's hidden
        state does not depend on the position in the round.
    """
    if label not in LABELS:
        raise InvalidArgumentError(f"unknown label rule {label!r}; choose from {LABELS}")
    if not isinstance(texts, Sequence) or isinstance(texts, str) or not texts:
        raise InvalidArgumentError("texts must be a non-empty list of strings or token-id sequences")
    mix = [settings] if isinstance(settings, SamplingSettings) else list(settings)
    if not mix or not all(isinstance(s, SamplingSettings) for s in mix):
        raise InvalidArgumentError("settings must be a SamplingSettings or a non-empty sequence of them")
    if starts is not None:
        starts = list(starts)
        if len(starts) != len(texts) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in starts):
            raise InvalidArgumentError("starts must give one int >= 0 per text")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be an int >= 1, got {steps!r}")
    encoded = _encode(pair, texts, max_tokens)
    if getattr(pair, "draft_kind", "standalone").split("+")[0] == "head":
        from ..drafts.verifier_data import collect_head

        return collect_head(pair, encoded, label=label, settings=mix, seed=seed, steps=steps, starts=starts,
                            batch_size=batch_size, progress=progress)  # fmt: skip
    parts = [_collect_standalone(pair, encoded, label, s, seed, batch_size, starts, progress) for s in mix]
    if len(parts) == 1:
        return parts[0]
    return VerifierData(*(torch.cat([getattr(d, f) for d in parts]) for f in ("hidden", "features", "label",
                                                                              "text_index")), label)  # fmt: skip


def release_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    A teacher pass frees hundreds of MB in chunks that glibc keeps in its arenas, pinned by
    the small example tensors kept between them; without this the process grew ~60 MB per
    text (OOM-killed at 24 GB after 270 texts, measured) while the examples were 2 MB."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _collect_standalone(pair, encoded, label, settings, seed, batch_size, starts, progress) -> VerifierData:
    from tqdm.auto import tqdm

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    hs, fs, ls, ts = [], [], [], []
    dev = pair.device
    for b in tqdm(range(0, len(order), batch_size), desc=f"labels ({label})", disable=not progress):
        idx = [i for i in order[b : b + batch_size] if len(encoded[i]) >= 2]
        if not idx:
            continue
        width = max(len(encoded[i]) for i in idx)
        batch = torch.zeros(len(idx), width, dtype=torch.long, device=dev)
        mask = torch.zeros_like(batch)
        for r, i in enumerate(idx):
            batch[r, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, : len(encoded[i])] = 1
        d_logits, d_hidden = _forward(pair.draft, batch, mask)
        t_logits, _ = _forward(pair.target, batch, mask)
        for r, i in enumerate(idx):
            n = len(encoded[i])  # positions 0..n-1 each predict the next token
            lo = 0 if starts is None else min(max(starts[i] - 1, 0), n)
            if lo >= n:
                continue
            q = probs(d_logits[r, lo:n], settings)  # [n - lo, V]
            p = probs(t_logits[r, lo:n], settings)
            pos = torch.arange(lo + 1, n + 1, device=dev)  # absolute position of the proposed token
            if label == "greedy":
                x = q.argmax(-1)
                y = (x == p.argmax(-1)).float()
            else:
                x = _rng.race(q, seed, pos, _rng.Stream.DRAFT)
                px, qx = p.gather(-1, x[:, None])[:, 0], q.gather(-1, x[:, None])[:, 0]
                if label == "certain":
                    y = (qx <= px).float()
                else:
                    u = _rng.uniform(seed, pos, _rng.Stream.COIN, 1)[:, 0]
                    y = (u * qx < px).float()
            hs.append(d_hidden[r, lo:n].cpu().clone())  # not a view that keeps the batch's tensor
            fs.append(q_features(q, x, FEATURES).cpu())
            ls.append(y.cpu())
            ts.append(torch.full((n - lo,), i, dtype=torch.long))
        del d_logits, d_hidden, t_logits
        release_freed_heap()
    if not ls:
        raise InvalidArgumentError("no text has 2 or more tokens: nothing to learn from")
    return VerifierData(torch.cat(hs), torch.cat(fs), torch.cat(ls), torch.cat(ts), label)
