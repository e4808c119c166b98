"""Would a per-round draft length pay on this machine? A replay of recorded sd rounds.

    python bench/draft_policy.py [--draft head|standalone] [--prompts 24] [--max-new-tokens 64]
                                 [--k 6] [--temperatures 0,1] [--costs 1.07,1.20,1.49,1.48,1.40,1.55]

Runs sd at a long k on held-out chat prompts (reference engine, one thread) and records, per
round, the draft's confidence at each drafted position (its max probability and the
probability of the drafted token, both at temperature 1) and how many drafts the target
accepted. Then it replays those rounds under stopping policies: fixed k = 0..K, and "stop
when the next draft token would lower the expected tokens per unit of target cost", with the
confidence as the acceptance estimate (identity, squared, shifted), and an oracle that knows
each round's accepted length. Cost of a round that verifies m drafts: T(m + 1) / T(1) from
``--costs`` (the target's forward over m + 1 tokens vs one, e.g. from bench/draft_length.py)
plus one draft step (``--draft-cost``, of a target step) per drafted token.

The replay keeps each recorded round's start, so it is an approximation: a shorter round
changes where the next one starts. It answers whether the confidence can tell good rounds
from bad ones well enough to beat the best fixed k; it does not time anything.

Prints a table and writes JSON (``--out``, default $SPRINTER_EXT_CACHE/results/draft_policy.json).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from tqdm.auto import tqdm

import sprinter_ext
from sprinter_ext.cli.bench import environment, write_result
from sprinter_ext.data import prompt_set
from sprinter_ext.methods import _session


@contextlib.contextmanager
def recording(rounds: list[dict]):
    """Record (confidences, accepted count) of every sd round run inside the block."""
    propose, check = _session.Session.propose, _session.Session.check

    def propose_rec(self, *a, **kw):
        p = propose(self, *a, **kw)
        self.state["_rows"] = p.rows
        return p

    def check_rec(self, drafts, q, logits, *, offset=0, mode="sd"):
        out = check(self, drafts, q, logits, offset=offset, mode=mode)
        pr = torch.softmax(self.state.pop("_rows").float(), -1)
        rounds.append(dict(accepted=len(out) - 1, conf=pr.max(-1).values.tolist(),
                           q_token=[float(pr[i, t]) for i, t in enumerate(drafts)]))  # fmt: skip
        return out

    _session.Session.propose, _session.Session.check = propose_rec, check_rec
    try:
        yield
    finally:
        _session.Session.propose, _session.Session.check = propose, check


def replay(rounds, policy, cost, draft_cost):
    """(tokens per unit of target-step cost, tokens per round) of `policy` over `rounds`."""
    tokens = spent = 0.0
    for r in rounds:
        m, drafted = policy(r)
        tokens += min(r["accepted"], m) + 1
        spent += cost[m + 1] + drafted * draft_cost
    return tokens / spent, tokens / len(rounds)


def fixed(k):
    return lambda r: (k, k)


def greedy(key, calib, cost, draft_cost, K):
    """Draft one token at a time; keep it while it raises expected tokens per cost."""

    def policy(r):
        expected, p_all, best_m = 1.0, 1.0, 0
        best = expected / (cost[1] + draft_cost)  # the first draft is paid for before deciding
        for j in range(K):
            p_all *= calib(r[key][j])
            expected += p_all
            ratio = expected / (cost[j + 2] + (j + 2 if j + 1 < K else K) * draft_cost)
            if ratio < best:
                break
            best, best_m = ratio, j + 1
        return best_m, min(best_m + 1, K)

    return policy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draft", choices=["head", "standalone"], default="head")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=6, help="drafts per recorded round (the longest policy)")
    ap.add_argument("--temperatures", default="0,1")
    ap.add_argument("--costs", default="1.07,1.20,1.49,1.48,1.40,1.55",
                    help="T(n)/T(1) for n = 2..k+1 (default: bench/results/draft_length_head_avx2.json, "
                         "n = 7 interpolated)")  # fmt: skip
    ap.add_argument("--draft-cost", type=float, default=0.06, help="one draft step / one target step")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    K = args.k
    extra = [float(c) for c in args.costs.split(",")]
    if len(extra) < K:
        raise SystemExit(f"--costs needs {K} values (n = 2..{K + 1}), got {len(extra)}")
    cost = {1: 1.0, **{n + 2: c for n, c in enumerate(extra[:K])}}
    pair = sprinter_ext.load_pair(draft=args.draft)
    prompts = prompt_set(pair, "chat", args.prompts)
    result = dict(environment=environment(), args=vars(args), temperatures={})
    for t in (float(x) for x in args.temperatures.split(",")):
        rounds: list[dict] = []
        dec = sprinter_ext.Decoder(pair, "sd", k=K, temperature=t, engine="reference", eos_token_id=None)
        with recording(rounds):
            for i, p in enumerate(tqdm(prompts, desc=f"T={t:g}")):
                dec.generate(p, max_new_tokens=args.max_new_tokens, seed=i)
        calib = {}
        for key in ("conf", "q_token"):
            hit, seen = [0] * 10, [0] * 10
            for r in rounds:
                for j in range(min(r["accepted"] + 1, K)):
                    b = min(int(r[key][j] * 10), 9)
                    seen[b] += 1
                    hit[b] += j < r["accepted"]
            calib[key] = [dict(n=s, accept=h / s if s else None) for h, s in zip(hit, seen)]
        policies = {f"fixed k={k}": fixed(k) for k in range(K + 1)}
        shapes = {"id": lambda c: c, "sq": lambda c: c * c, "shift": lambda c: max(0.0, (c - 0.2) / 0.8)}
        for key in ("conf", "q_token"):
            for name, f in shapes.items():
                policies[f"confidence {key} {name}"] = greedy(key, f, cost, args.draft_cost, K)
        policies["oracle"] = lambda r: (min(r["accepted"], K),) * 2  # drafts exactly what will be accepted
        rows = {name: dict(zip(("tokens_per_cost", "tokens_per_round"), replay(rounds, pol, cost, args.draft_cost)))
                for name, pol in policies.items()}  # fmt: skip
        result["temperatures"][f"{t:g}"] = dict(rounds=len(rounds), calibration=calib, policies=rows)
        print(f"\nT={t:g}: {len(rounds)} rounds; acceptance by confidence tenth (max prob): "
              + " ".join("-" if c["accept"] is None else f"{c['accept']:.2f}" for c in calib["conf"]))  # fmt: skip
        print(f"{'policy':28s} {'tokens/cost':>11s} {'tokens/round':>12s}")
        for name, row in rows.items():
            print(f"{name:28s} {row['tokens_per_cost']:11.3f} {row['tokens_per_round']:12.2f}")
    write_result(result, args.out, "draft_policy.json")


if __name__ == "__main__":
    main()
