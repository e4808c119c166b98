"""Train a draft head on the target's own continuations (resumable, offline).

Library function :func:`train_head`; the CLI is ``python -m sprinter_ext train-head``
(:mod:`sprinter_ext.cli.train_head`).

Data: JSON-lines records of :mod:`.head_data` (prompt + the target's continuation). Per
batch the target runs once (teacher forcing) and gives the features of the feature layers
and its distribution at every position; nothing but token ids is kept between batches.

Loss: at unroll step j (the (j+1)-th draft of a round), the soft cross-entropy of the head's
draft-vocabulary distribution against the target's distribution (forward KL up to a
constant; SD acceptance is 1 - TV), weighted 0.8**j, on completion positions only.

Resumable: DIR/checkpoint.safetensors (weights, optimizer moments, step, RNG seed position)
is written every --save-every steps and at the end; rerunning the same command continues.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .head import DraftHead, HeadCache, HeadConfig


def read_records(path) -> list[dict]:
    """The records of a JSON-lines file; a last line still being written by a generation
    running alongside (no newline yet) is left for the next read."""
    text = Path(path).read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    return [json.loads(l) for l in lines if l.strip()]


def choose_vocab(records: list[dict], size: int, always=(), texts=(), tokenizer=None) -> torch.Tensor:
    """The `size` most frequent tokens (ties by id), sorted by id: the target's completions
    count 4x, their prompts and the training corpus `texts` once; `always` is always kept."""
    cnt = Counter()
    for r in records:
        for _ in range(4):
            cnt.update(r["completion"])
        cnt.update(r["prompt"])
    for t in texts:
        cnt.update(tokenizer.encode(t, add_special_tokens=False))
    for t in always:
        cnt[t] += 10**9
    keep = [t for t, _ in sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]
    return torch.tensor(sorted(keep), dtype=torch.int64)


def init_from_target(head: DraftHead, target) -> None:
    """Start near the target: lm_head = target head rows, norm = final norm, fc picks the
    last feature layer, the midlayer's feature half = the target's last layer."""
    c = head.config
    m = target.model
    H = c.hidden_size
    with torch.no_grad():
        W = target.get_output_embeddings().weight
        head.lm_head.weight.copy_(W[head.d2t])
        head.norm.weight.copy_(m.norm.weight)
        head.fc.weight.zero_()
        head.fc.weight[:, (len(c.feature_layers) - 1) * H:].copy_(torch.eye(H))
        last = m.layers[-1]
        a, ta = head.midlayer.self_attn, last.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            w = getattr(a, name).weight
            w.mul_(0.1)
            w[:, H:].copy_(getattr(ta, name).weight)
        a.o_proj.weight.copy_(ta.o_proj.weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(head.midlayer.mlp, name).weight.copy_(getattr(last.mlp, name).weight)
        head.midlayer.hidden_norm.weight.copy_(last.input_layernorm.weight)
        head.midlayer.post_attention_layernorm.weight.copy_(last.post_attention_layernorm.weight)


@torch.no_grad()
def teacher(target, ids: torch.Tensor, layers, d2t: torch.Tensor, rows: torch.Tensor | None = None):
    """Target features [B, T, m*H], distribution over the draft vocab [B, T, Vd], argmax [B, T]
    and the probability mass outside the draft vocab [B, T].

    `rows` ([B, T] bool, optional): the positions whose distribution is wanted; the LM head
    and the softmax run on those only (the others are 0, argmax -1), which saves most of the
    LM head's work when only completions are trained on."""
    out = target.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
    feats = torch.cat([out.hidden_states[l] for l in layers], -1).float()
    if rows is None:
        rows = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    logits = target.get_output_embeddings()(out.last_hidden_state[rows]).float()
    p = torch.softmax(logits, -1)[:, d2t]
    pd = torch.zeros((*ids.shape, d2t.numel()), dtype=torch.float32, device=ids.device)
    pd[rows] = p
    am = torch.full_like(ids, -1)
    am[rows] = logits.argmax(-1)
    outside = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    outside[rows] = (1 - p.sum(-1)).clamp(min=0)
    return feats, pd, am, outside


def make_batch(records: list[dict], max_len: int):
    seqs = [(r["prompt"] + r["completion"])[:max_len] for r in records]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    valid = torch.zeros(len(seqs), T, dtype=torch.bool)  # input position p is trained on
    for b, (s, r) in enumerate(zip(seqs, records)):
        ids[b, : len(s)] = torch.tensor(s)
        lo = max(len(r["prompt"]) - 1, 0)
        valid[b, lo: len(s) - 1] = True  # p in [n_prompt-1, len-2]
    return ids, valid


def head_losses(head: DraftHead, target, ids, valid, layers, steps: int, decay: float = 0.8):
    need = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], 1)  # the label of input p is at p+1
    feats, pd, am, outside = teacher(target, ids, layers, head.d2t, rows=need)
    emb_all = target.get_input_embeddings()(ids).detach().float()
    emb = torch.cat([emb_all[:, 1:], torch.zeros_like(emb_all[:, :1])], 1)  # x_{p+1} at p
    fused = head.fuse(feats)
    outs = head.unrolled(fused, emb, steps)
    # label for input p is the target's distribution at p+1
    lab = torch.cat([pd[:, 1:], torch.zeros_like(pd[:, :1])], 1)
    lab_am = torch.cat([am[:, 1:], am[:, :1]], 1)
    lab_out = torch.cat([outside[:, 1:], outside[:, :1]], 1)
    total = 0.0
    stats = []
    for j, g in enumerate(outs):
        m = valid.clone()
        m[:, :j] = False
        if not bool(m.any()):
            break
        logq = torch.log_softmax(head.logits(g[m]).float(), -1)
        ce = -(lab[m] * logq).sum(-1).mean()
        total = total + (decay ** j) * ce
        with torch.no_grad():
            q = logq.exp()
            tv = 0.5 * ((lab[m] - q).abs().sum(-1) + lab_out[m])
            agree = (head.d2t[logq.argmax(-1)] == lab_am[m]).float()
            stats.append({"ce": float(ce), "accept": float((1 - tv).mean()), "greedy": float(agree.mean())})
    return total, stats


@torch.no_grad()
def tokens_per_call(head: DraftHead, target, record: dict, k: int, layers) -> tuple[int, int, list[int]]:
    """Greedy SD with this head on one greedy record, simulated from one teacher pass:
    (new tokens, target calls, accepted count per draft position)."""
    ids = torch.tensor(record["prompt"] + record["completion"])[None]
    feats, _, am, _ = teacher(target, ids, layers, head.d2t)
    fused = head.fuse(feats[0])
    E = target.get_input_embeddings()
    x = ids[0]
    T = x.numel()
    m = len(record["prompt"])  # x_m: the first new token, from the prefill
    cache = HeadCache(head.config)
    done = 0  # cache entries made from target features
    new, calls = 1, 1
    per = [0] * k
    while m < T - 1:
        pos = torch.arange(done, m)
        g = head.step(fused[done:m], E(x[done + 1:m + 1]), pos, cache)[-1:]
        done = m
        a = 0
        for j in range(k):
            if m + j + 1 >= T:
                break
            d = int(head.d2t[head.logits(g).argmax(-1)])
            if d != int(am[0, m + j]):
                break
            a += 1
            per[j] += 1
            g = head.step(g, E(torch.tensor([d])), torch.tensor([m + j]), cache)
        cache.truncate(done)
        step = min(a + 1, T - 1 - m)
        m += step
        new += step
        calls += 1
    return new, calls, per


def _save(path: Path, head: DraftHead, opt, meta: dict) -> None:
    tensors = {f"head.{k}": v.contiguous() for k, v in head.state_dict().items()}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            st = opt.state.get(p)
            if st:
                tensors[f"opt.{gi}.{pi}.exp_avg"] = st["exp_avg"].contiguous()
                tensors[f"opt.{gi}.{pi}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                meta.setdefault("opt_step", {})[f"{gi}.{pi}"] = float(st["step"])
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def _load(path: Path, head: DraftHead, opt) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    t = load_file(str(path))
    head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            key = f"opt.{gi}.{pi}"
            if f"{key}.exp_avg" in t:
                opt.state[p] = {"step": torch.tensor(meta["opt_step"][f"{gi}.{pi}"]),
                                "exp_avg": t[f"{key}.exp_avg"], "exp_avg_sq": t[f"{key}.exp_avg_sq"]}
    return meta


def evaluate(head, target, held: list[dict], layers, steps, k: int = 5, max_len: int = 320, n: int = 24) -> dict:
    head.eval()
    with torch.no_grad():
        sts = []
        for i in range(0, min(n, len(held)), 8):
            ids, valid = make_batch(held[i:i + 8], max_len)
            _, st = head_losses(head, target, ids, valid, layers, steps)
            sts.append(st)
        per_step = [{key: sum(s[j][key] for s in sts) / len(sts) for key in sts[0][j]} for j in range(len(sts[0]))]
        greedy = [r for r in held[:n * 2] if r["temperature"] == 0.0][: n // 2]
        new = calls = 0
        for r in greedy:
            a, b, _ = tokens_per_call(head, target, r, k, layers)
            new += a
            calls += b
    head.train()
    return {"per_step": per_step, "tokens_per_call": new / max(calls, 1)}


def train_head(target, tokenizer, data, heldout, work, *, minutes: float = 60, layers=(2, 15, 27),
               vocab: int = 8192, steps: int = 5, batch: int = 8, max_len: int = 320, lr: float = 5e-4,
               total_steps: int = 3000, save_every: int = 25, eval_every: int = 100, seed: int = 20261202,
               teacher_dtype=torch.float32, settings: dict | None = None, init=None) -> dict:
    """Train (or resume training) a head for `target` on the records in the JSON-lines file
    `data`, evaluating on `heldout`; checkpoints in `work`. Stops after `minutes` or at
    `total_steps`. `init`: a head file to start from when `work` has no checkpoint yet (its
    layers and vocabulary are kept; the optimizer starts afresh). Returns the checkpoint's
    metadata (step, config, eval log)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    target.eval().requires_grad_(False)
    if teacher_dtype == target.dtype:
        trainer_target = target
    else:
        import copy

        trainer_target = copy.deepcopy(target).to(teacher_dtype)
    layers = tuple(int(x) for x in layers)
    recs = [r for r in read_records(data) if r["completion"]]
    held = read_records(heldout)
    ck = work / "checkpoint.safetensors"
    start_head = None
    if ck.exists():
        from safetensors import safe_open

        with safe_open(str(ck), "pt") as f:
            d2t = f.get_tensor("head.d2t")
    elif init is not None:
        from .io import load_head

        start_head = load_head(init, target)
        d2t, layers = start_head.d2t, start_head.config.feature_layers
    else:
        from ..data import train_texts

        d2t = choose_vocab(recs, vocab, always=[tokenizer.eos_token_id], texts=train_texts(), tokenizer=tokenizer)
    cfg = HeadConfig.for_target(target.config, layers, d2t.numel())
    head = DraftHead(cfg, d2t)
    opt = torch.optim.AdamW(list(head.parameters()), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    if ck.exists():
        meta = _load(ck, head, opt)
        print(f"resumed at step {meta['step']}")
    else:
        if start_head is not None:
            head.load_state_dict(start_head.state_dict())
        else:
            init_from_target(head, target)
        meta = {"step": 0, "config": cfg.to_dict(), "args": dict(settings or {}), "log": []}
    step = meta["step"]
    start = time.time()
    bar = tqdm(desc="head training", unit="step", initial=step, total=total_steps)
    while time.time() - start < minutes * 60 and step < total_steps:
        if step % 10 == 0:  # the data file may still be growing (train-head --phase data alongside)
            recs = [r for r in read_records(data) if r["completion"]]
        rng = random.Random(seed * 7919 + step)  # the batch is a function of the step
        ids, valid = make_batch(rng.sample(recs, batch), max_len)
        cur = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        for g in opt.param_groups:
            g["lr"] = cur
        loss, st = head_losses(head, trainer_target, ids, valid, layers, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        opt.step()
        step += 1
        meta["step"] = step
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc0=f"{st[0]['accept']:.2f}",
                        g0=f"{st[0]['greedy']:.2f}", acc_last=f"{st[-1]['accept']:.2f}")
        if step % eval_every == 0:
            ev = evaluate(head, target, held, layers, steps)
            ev["step"] = step
            meta["log"].append(ev)
            print(json.dumps(ev), flush=True)
        if step % save_every == 0:
            _save(ck, head, opt, meta)
    _save(ck, head, opt, meta)
    bar.close()
    return meta


def export_head(checkpoint, out, target, *, command: str = "", extra: dict | None = None) -> DraftHead:
    """Write the head of a training checkpoint as a head file (:func:`.io.save_head`)."""
    from safetensors import safe_open

    from .io import save_head

    with safe_open(str(checkpoint), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    t = load_file(str(checkpoint))
    cfg = HeadConfig(**meta["config"])
    head = DraftHead(cfg, t["head.d2t"])
    head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    last = meta["log"][-1] if meta.get("log") else {}
    args = meta.get("args", {})
    save_head(head, out, target=target, command=command,
              training={"steps": meta["step"], "data": "target continuations of offline prompts "
                        "(sprinter_ext.drafts.head_data, train split of sprinter_ext.data)",
                        "args": args, **(extra or {})},
              metrics={"heldout_eval": last})
    return head.eval()
