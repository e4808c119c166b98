"""Training of the SPRINTER verifier (held-out metrics: metrics.py; calibration: Verifier.calibrate).

``train_verifier`` splits the texts BY TEXT (validation texts never contribute a
training example), trains with class-weighted BCE (positives weighted by
n_neg / n_pos), folds the input standardisation into the first layer, and records
held-out accuracy, AUC and precision/recall at the threshold in ``verifier.meta``.

False-accept rate (FAR) = P(score >= threshold | label 0): how often a token the
label rule would reject gets accepted unchecked. ``calibrate`` picks the lowest
threshold whose held-out FAR is <= the requested rate (the most accepts allowed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..sampling import SamplingSettings
from ..errors import InvalidArgumentError
from .io import draft_identity
from .labels import LABELS, VerifierData, collect
from .metrics import auc, evaluate, threshold_for_far
from .model import FEATURES, Verifier

__all__ = ["train_verifier", "evaluate", "auc", "threshold_for_far", "split_texts"]

DEFAULT_HIDDEN = (64,)
DEFAULT_FEATURES = FEATURES


def split_texts(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, val) text indices; val has >= 1 text when n >= 2."""
    if not 0.0 < val_fraction < 1.0:
        raise InvalidArgumentError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise InvalidArgumentError("need at least 2 texts to hold some out for validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _fit(verifier: Verifier, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
         seed: int, progress: bool) -> list[float]:  # fmt: skip
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # seeded init (never the global RNG)
        for lin in verifier.linears:
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.copy_(torch.empty_like(lin.weight).uniform_(-bound, bound, generator=gen))
            lin.bias.zero_()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / max(pos, 1.0))
    opt = torch.optim.AdamW(verifier.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in tqdm(range(epochs), desc="train verifier", disable=not progress):
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for b in range(0, len(y), batch_size):
            i = perm[b : b + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                verifier.logit(xs[i]), y[i], pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(i)
        losses.append(total / len(y))
    with torch.no_grad():  # fold the standardisation into the first layer
        first = verifier.linears[0]
        first.bias.sub_((first.weight / std) @ mean)
        first.weight.div_(std)
    return losses


def train_verifier(
    pair,
    texts: Sequence,
    *,
    label: str = "certain",
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    features: Sequence[str] = DEFAULT_FEATURES,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 512,
    seed: int = 0,
    val_fraction: float = 0.2,
    false_accept_rate: float | None = None,
    settings: SamplingSettings | Sequence[SamplingSettings] = SamplingSettings(),
    max_tokens: int = 256,
    data: VerifierData | None = None,
    starts: Sequence[int] | None = None,
    steps: int = 5,
    progress: bool = True,
) -> Verifier:
    """Train a SPRINTER verifier for `pair`'s draft on offline `texts`.

    Parameters
    ----------
    pair : ModelPair
    texts : list of str, or of token-id sequences (for a pair without tokenizer)
    label : "certain", "sampled" or "greedy" (see :mod:`sprinter_ext.verifier.labels`)
    hidden : hidden-layer widths; () is the paper's linear probe
    features : subset of ("q_token", "max_q", "entropy") appended to the hidden state
    val_fraction : share of TEXTS held out; metrics are on them only
    false_accept_rate : if given, calibrate the threshold to it on the held-out texts
        (else the threshold stays 0.5)
    settings : the sampling settings the examples are made with; several (e.g. temperatures
        0 and 1) train one verifier for all of them (:func:`~sprinter_ext.verifier.collect`)
    data : precollected labels for `texts` (skips collection; must use the same rule)
    starts, steps : passed to :func:`~sprinter_ext.verifier.collect` (continuation starts;
        draft positions per round for a draft head)

    Returns
    -------
    Verifier with ``.threshold`` and ``.meta["metrics"]`` (held-out accuracy, AUC,
    precision, recall, false-accept rate at the threshold).
    """
    if label not in LABELS:
        raise InvalidArgumentError(f"unknown label rule {label!r}; choose from {LABELS}")
    for name, v, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise InvalidArgumentError(f"{name} must be an int >= {low}, got {v!r}")
    train_idx, val_idx = split_texts(len(texts), val_fraction, seed)
    if data is None:
        data = collect(pair, texts, label=label, settings=settings, seed=seed, max_tokens=max_tokens,
                       starts=starts, steps=steps, progress=progress)  # fmt: skip
    elif data.rule != label:
        raise InvalidArgumentError(f"data was labelled with {data.rule!r}, not {label!r}")
    train, val = data.subset(train_idx), data.subset(val_idx)
    if len(train) == 0 or len(val) == 0 or train.label.min() == train.label.max():
        raise InvalidArgumentError("the training split needs examples of both labels; give more (or longer) texts")
    verifier = Verifier(data.hidden.shape[1], hidden, features)
    losses = _fit(verifier, train.inputs(verifier.features), train.label, epochs=epochs, lr=lr,
                  batch_size=batch_size, seed=seed, progress=progress)  # fmt: skip
    verifier.eval().requires_grad_(False)
    if false_accept_rate is not None:
        verifier.calibrate(val, false_accept_rate=false_accept_rate)
    verifier.meta.update(
        draft_identity(pair.draft),
        vocab_size=pair.vocab_size,
        label=label,
        temperatures=[float(x.temperature) for x in ([settings] if isinstance(settings, SamplingSettings)
                                                      else settings)],  # fmt: skip
        train_texts=len(train_idx),
        val_texts=len(val_idx),
        train_examples=len(train),
        final_train_loss=losses[-1],
        metrics=evaluate(verifier, val),
    )
    return verifier
