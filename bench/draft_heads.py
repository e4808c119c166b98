"""Draft heads vs the standalone draft on the default pair: acceptance, cost and speed.

    python bench/draft_heads.py --head HEAD.safetensors [--prompts 8] [--max-new-tokens 64] [--k 5]

Held-out prompts only (documents the head never trained on, sprinter_ext.data's split):
chat prompts rendered through the target's chat template and raw held-out text.

1. Acceptance per draft position, teacher-forced along the target's own continuations
   (one target pass per prompt): at temperature 0 the share of rounds whose j-th draft
   matches the target's greedy token given that drafts 1..j-1 did; at temperature 1 the
   mean 1 - TV(p, q) of the j-th draft (SD's acceptance probability). The standalone draft
   is fed the true tokens, so its per-position numbers do not depend on depth.
2. Cost: one head step / one target step (NativeModel, the same thread count), medians: the
   C++ head the native engine runs, and its Python spec HeadRunner(fast=True) beside it.
3. End to end (the engines, side by side in one run): ar, sd with the standalone draft and
   sd with the head, temperature 0 and 1: tokens per target call, acceptance, ms/token.

Prints a table and writes JSON under $SPRINTER_EXT_CACHE/results (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import sprinter_ext
from sprinter_ext.cli.bench import environment, write_result
from sprinter_ext.data import heldout_prompts, split_documents
from sprinter_ext.drafts.head_data import build_prompts, generate_batch
from sprinter_ext.drafts.runner import head_runner_factory


@torch.inference_mode()
def continuations(target, prompts, n_new, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in prompts:
        c = generate_batch(target, [tuple(p)], n_new, temperature, g, eos=None)[0]
        out.append((list(p), c))
    return out


@torch.inference_mode()
def per_position(head, target, draft, recs, k, temperature):
    """(head per-position, standalone per-position, head tokens/call, standalone tokens/call)."""
    from sprinter_ext.drafts.train_head import teacher, tokens_per_call

    layers = head.config.feature_layers
    hp, sp = [0.0] * k, [0.0] * k
    hn = [0] * k
    hnew = hcalls = snew = scalls = 0
    for prompt, comp in recs:
        ids = torch.tensor(prompt + comp)[None]
        if temperature == 0:
            new, calls, per = tokens_per_call(head, target, {"prompt": prompt, "completion": comp}, k, layers)
            hnew, hcalls = hnew + new, hcalls + calls
            rounds = calls - 1
            for j in range(k):
                hp[j] += per[j]
                hn[j] += rounds if j == 0 else per[j - 1]
            am = target(ids).logits.argmax(-1)[0]
            dm = draft(ids).logits.argmax(-1)[0]
            m, T = len(prompt), ids.shape[1]
            new, calls = 1, 1
            while m < T - 1:
                a = 0
                while a < k and m + a + 1 < T and int(dm[m + a]) == int(am[m + a]):
                    a += 1
                    sp[a - 1] += 1
                step = min(a + 1, T - 1 - m)
                m, new, calls = m + step, new + step, calls + 1
            snew, scalls = snew + new, scalls + calls
        else:
            feats, pd, _, outside = teacher(target, ids, layers, head.d2t)
            E = target.get_input_embeddings()
            emb = torch.cat([E(ids)[:, 1:], torch.zeros_like(E(ids)[:, :1])], 1)
            outs = head.unrolled(head.fuse(feats), emb, k)
            p_full = torch.softmax(target(ids).logits.float(), -1)[0]
            q_full = torch.softmax(draft(ids).logits.float(), -1)[0]
            lo, T = len(prompt) - 1, ids.shape[1] - 1
            for j, g in enumerate(outs):
                q = torch.softmax(head.logits(g[0]).float(), -1)
                lab = pd[0, 1:]
                rows = slice(max(lo, j), T - 1)
                tv = 0.5 * ((lab[rows] - q[rows]).abs().sum(-1) + outside[0, 1:][rows])
                hp[j] += float((1 - tv).sum())
                hn[j] += tv.numel()
            rows = slice(lo + 1, T)
            sp_tv = 0.5 * (p_full[rows] - q_full[rows]).abs().sum(-1)
            for j in range(k):
                sp[j] += float((1 - sp_tv).sum())
            snew += sp_tv.numel()
    if temperature == 0:
        head_pos = [hp[j] / max(hn[j], 1) for j in range(k)]
        sn = [scalls - len(recs)] + [sp[j] for j in range(k - 1)]
        std_pos = [sp[j] / max(sn[j], 1) for j in range(k)]
        return head_pos, std_pos, hnew / max(hcalls, 1), snew / max(scalls, 1)
    return [hp[j] / max(hn[j], 1) for j in range(k)], [sp[j] / max(snew, 1) for j in range(k)], None, None


def step_cost(head_pair, reps=30, rounds=5):
    """Median seconds of one step of the C++ head (what the native engine runs), of its Python
    spec HeadRunner(fast=True) (same math, bitwise) and of one target step, over `rounds`
    alternating rounds of `reps` steps each."""
    from sprinter_ext.drafts.runner import HeadRunner, NativeTap, head_embedding

    make = head_runner_factory(head_pair, "native", built=True)
    t = make("target", 512)
    h = make("draft", 512)
    head = head_pair._draft
    py = HeadRunner(head, head_embedding(head, head_pair._view("target")), NativeTap(t), t.vocab_size, 512, fast=True)
    ids = list(range(200, 300))
    t.prefill(ids)

    def med(f, n):
        ts = []
        for i in range(n):
            s = time.perf_counter()
            f(i)
            ts.append(time.perf_counter() - s)
        return statistics.median(ts)

    got = {"cpp": [], "python": [], "target": []}
    for _ in range(rounds):
        for name, r in (("python", py), ("cpp", h)):
            r.prefill(ids)
            got[name].append(med(lambda i: r.step(7 + i), reps))
        got["target"].append(med(lambda i: t.step(7 + i), reps // 3))
        t.truncate(len(ids))
    return tuple(statistics.median(got[k]) for k in ("cpp", "python", "target"))


def time_decoder(dec, prompts, n_new, warm_tokens=8) -> dict:
    """One warm-up, then prompt i with seed i: ms/token, tokens per target call and the share
    of drafted tokens accepted (None without drafts), summed over the prompts."""
    dec.generate(prompts[0], max_new_tokens=warm_tokens, seed=0)
    tot = {"new": 0, "calls": 0, "acc": 0, "drafted": 0, "wall": 0.0}
    for i, pr in enumerate(prompts):
        s = dec.generate(pr, max_new_tokens=n_new, seed=i).stats
        tot["new"] += s["new_tokens"]
        tot["calls"] += s["target_calls"]
        tot["acc"] += s.get("accepted_tokens", 0)
        tot["drafted"] += s.get("draft_tokens", 0)
        tot["wall"] += s["wall_s"]
    return {"ms_per_token": 1e3 * tot["wall"] / tot["new"], "tokens_per_call": tot["new"] / tot["calls"],
            "acceptance": tot["acc"] / tot["drafted"] if tot["drafted"] else None}


def end_to_end(pair, head_pair, prompts, n_new, k, temperature):
    rows = {}
    cases = [("ar", pair, "ar"), ("sd standalone", pair, "sd"), ("sd head", head_pair, "sd")]
    for name, p, method in cases:
        dec = sprinter_ext.Decoder(p, method, k=k, temperature=temperature, eos_token_id=None, engine="native",
                                   runner="native")
        rows[name] = time_decoder(dec, prompts, n_new)
    base = rows["ar"]["ms_per_token"]
    for r in rows.values():
        r["x_ar"] = base / r["ms_per_token"]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", required=True)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pair = sprinter_ext.load_pair(draft="standalone")  # the head's baseline: the standalone draft
    head_pair = sprinter_ext.load_pair(args.head, pair.target)
    target, draft, head = pair.target, pair.draft, head_pair.draft
    tok = pair.tokenizer
    _, held = split_documents()
    chat = [list(p.ids) for p in build_prompts(tok, held) if p.chat][: args.prompts]
    raw = heldout_prompts(pair, args.prompts, 48)
    result = {"environment": environment(), "args": vars(args), "head": getattr(head, "header", {}).get("metrics", {}),
              "acceptance": {}, "end_to_end": {}}
    for set_name, prompts in (("chat", chat), ("raw", raw)):
        for temp in (0.0, 1.0):
            recs = continuations(target, prompts, args.max_new_tokens, temp, seed=7)
            hp, sp, htpc, stpc = per_position(head, target, draft, recs, args.k, temp)
            result["acceptance"][f"{set_name} T={temp:g}"] = {"head_per_position": hp, "standalone_per_position": sp,
                                                             "head_tokens_per_call": htpc,
                                                             "standalone_tokens_per_call": stpc}
    th, tp, tt = step_cost(head_pair)
    result["cost"] = {"head_step_ms": th * 1e3, "python_head_step_ms": tp * 1e3, "target_step_ms": tt * 1e3,
                      "ratio": th / tt, "python_ratio": tp / tt}
    for temp in (0.0, 1.0):
        result["end_to_end"][f"chat T={temp:g}"] = end_to_end(pair, head_pair, chat, args.max_new_tokens, args.k, temp)
    print(f"{'set':<12} {'kind':<11} " + " ".join(f"pos{j + 1:<5}" for j in range(args.k)) + " tokens/call")
    for key, v in result["acceptance"].items():
        for kind in ("head", "standalone"):
            tpc = v[f"{kind}_tokens_per_call"]
            print(f"{key:<12} {kind:<11} " + " ".join(f"{x:<8.3f}" for x in v[f"{kind}_per_position"])
                  + (f" {tpc:.2f}" if tpc else ""))
    c = result["cost"]
    print(f"cost: head step {c['head_step_ms']:.2f} ms (C++; Python packed {c['python_head_step_ms']:.2f}) / "
          f"target step {c['target_step_ms']:.2f} ms = {c['ratio']:.3f} ({c['python_ratio']:.3f})")
    print(f"{'case':<12} {'method':<14} {'ms/token':>9} {'x ar':>6} {'tok/call':>9} {'accept':>7}")
    for key, rows in result["end_to_end"].items():
        for name, r in rows.items():
            acc = f"{r['acceptance']:.3f}" if r["acceptance"] is not None else "-"
            print(f"{key:<12} {name:<14} {r['ms_per_token']:9.1f} {r['x_ar']:6.2f} {r['tokens_per_call']:9.2f} {acc:>7}")
    write_result(result, args.out, "draft_heads.json", indent=1)


if __name__ == "__main__":
    main()
