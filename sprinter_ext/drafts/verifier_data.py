"""SPRINTER verifier examples for a draft head (:func:`sprinter_ext.verifier.collect` on a head pair).

A head's hidden state at draft position j of a round depends on the j own features it fed
itself since the last target feature, so the examples come from the head's training-time-test
forward (:meth:`DraftHead.unrolled`) over a teacher pass of the target: for every text
position p and every draft position j < ``steps``, the head's verifier state (normed output
and raw confidence, :meth:`DraftHead.verifier_state`: what the verifier scores at run time,
drafts/runner.py) after a round whose last target feature is at p - j,
its processed distribution q over the target's vocabulary (``-inf`` outside the head's
vocabulary, as the runner gives it), the proposed token x (race with DRAFT noise at its
absolute position, or argmax q for the ``greedy`` rule) and the target's processed p at the
same position. Labels follow :mod:`sprinter_ext.verifier.labels`.

``starts[i]``: the first token of text i that is a continuation (the prompt before it is
context only; examples are drafts of tokens ``starts[i]`` .. end).
"""

from __future__ import annotations

import torch

from .. import _rng
from ..sampling import SamplingSettings, probs

__all__ = ["collect_head"]



@torch.inference_mode()
def collect_head(pair, encoded: list[list[int]], *, label: str, settings: list[SamplingSettings], seed: int,
                 steps: int = 5, starts: list[int] | None = None, batch_size: int = 8, progress: bool = True):
    """VerifierData for each of `settings`, concatenated in that order (one teacher pass per batch)."""
    from tqdm.auto import tqdm

    from ..verifier.labels import VerifierData, release_freed_heap
    from ..verifier.model import FEATURES, q_features

    head, target = pair.draft, pair.target
    layers = head.config.feature_layers
    d2t = head.d2t.to(pair.device)
    emb_table = target.get_input_embeddings()
    V = pair.vocab_size
    starts = [1] * len(encoded) if starts is None else [max(int(s), 1) for s in starts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    acc = [([], [], [], []) for _ in settings]
    temps = ",".join(f"{s.temperature:g}" for s in settings)
    for b in tqdm(range(0, len(order), batch_size), desc=f"head labels ({label}, T={temps})", disable=not progress):
        idx = [i for i in order[b:b + batch_size] if len(encoded[i]) >= 3 and starts[i] < len(encoded[i])]
        if not idx:
            continue
        width = max(len(encoded[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long, device=pair.device)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, :len(encoded[i])] = 1
        out = target(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        feats = torch.cat([out.hidden_states[l] for l in layers], -1).to(head.fc.weight.dtype)
        emb = emb_table(ids).to(feats.dtype)
        emb = torch.cat([emb[:, 1:], torch.zeros_like(emb[:, :1])], 1)  # input p: (f_p, x_{p+1})
        outs = head.unrolled(head.fuse(feats), emb, steps)
        for r, i in enumerate(idx):
            n = len(encoded[i])
            # every draft position of this text at once: one [N, V] tensor per row instead of
            # one per (row, draft position), which fragmented the heap (glibc keeps ~20 MB
            # chunks in its arena: 24 GB of RSS at 270 texts, measured)
            gs, inputs = [], []
            for j, g in enumerate(outs):
                # input p (p >= j) drafts the token at p + 2; continuation tokens only
                lo, hi = max(j, starts[i] - 2), n - 2  # hi: the last input whose drafted token is in the text
                if lo <= hi:
                    gs.append(g[r, lo:hi + 1])
                    inputs.append(torch.arange(lo, hi + 1, device=pair.device))
            if not gs:
                continue
            gp, at = torch.cat(gs), torch.cat(inputs)
            logits = head.logits(gp).float()
            full = torch.full((gp.shape[0], V), float("-inf"), device=pair.device)
            full[:, d2t] = logits
            hidden = head.verifier_state(gp, logits).float().cpu()
            t_logits = out.logits[r, at + 1].float()
            pos = at + 2
            for (hs, fs, ls, ts), st in zip(acc, settings):
                q, p = probs(full, st), probs(t_logits, st)
                if label == "greedy":
                    x = q.argmax(-1)
                    y = (x == p.argmax(-1)).float()
                else:
                    # a race over a one-hot q is its argmax: skip the noise at temperature 0
                    x = q.argmax(-1) if st.greedy else _rng.race(q, seed, pos, _rng.Stream.DRAFT)
                    px, qx = p.gather(-1, x[:, None])[:, 0], q.gather(-1, x[:, None])[:, 0]
                    if label == "certain":
                        y = (qx <= px).float()
                    else:
                        u = _rng.uniform(seed, pos, _rng.Stream.COIN, 1)[:, 0]
                        y = (u * qx < px).float()
                hs.append(hidden)
                fs.append(q_features(q, x, FEATURES).cpu())
                ls.append(y.cpu())
                ts.append(torch.full((gp.shape[0],), i, dtype=torch.long))
                del q, p
            del full, t_logits, logits
        del out, feats, emb, outs
        release_freed_heap()
    if not acc[0][2]:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("no text has a continuation of 2 or more tokens: nothing to learn from")
    cat = lambda k: torch.cat([t for a in acc for t in a[k]])  # noqa: E731
    return VerifierData(cat(0), cat(1), cat(2), cat(3), label)
