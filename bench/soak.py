"""Soak: long-lived Decoders under a mixed stream of hostile and normal requests.

    python bench/soak.py [--minutes 30] [--pair default|tiny] [--seed 0] [--out bench/results/soak.json]

One Decoder per method (ar, sd, ersd, sprinter, ssd; engine "auto") is held for the whole
run on the default pair. Each request is drawn (by a seeded random.Random, no global RNG)
from these kinds:

- normal: a held-out prompt, a random seed and length; its tokens are compared with a
  fresh Decoder's for the same arguments (a poisoned or drifting Decoder shows up here);
- bad_argument: a hostile prompt / max_new_tokens / seed for the held Decoder, or hostile
  settings for a new one; a named error (SprinterError) is expected;
- nan_model: one embedding row of both models set to NaN in place (the runners share the
  modules' tensors), a prompt that reads it: NonFiniteLogitsError expected; then restored;
- early_close: a stream() closed after a few tokens;
- concurrent: a second call while another thread is generating: DecoderBusyError expected.

Reported: requests served per kind, errors by type (expected or not), wrong outputs, RSS
over time (a PNG next to the JSON). Goal: zero wrong outputs, zero unexpected errors, RSS flat.
This is a benchmark script, not a CI test.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import torch


import sprinter_ext
from sprinter_ext.cli.bench import environment
from sprinter_ext.data import heldout_prompts
from sprinter_ext.decoding import DecoderBusyError
from sprinter_ext.errors import NonFiniteLogitsError, SprinterError
from sprinter_ext.methods import METHODS as _REGISTRY

METHODS = tuple(_REGISTRY)  # every registered method
KINDS = {"normal": 0.5, "bad_argument": 0.2, "nan_model": 0.1, "early_close": 0.1, "concurrent": 0.1}
MAX_LENGTH = 160  # cache slots per Decoder: prompt (<= 32) + new tokens (<= 24) + lookahead
DECODER_KW = dict(k=4, temperature=1.0, top_k=0, top_p=1.0)


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_decoder(pair, method):
    return sprinter_ext.Decoder(pair, method, max_length=MAX_LENGTH, **DECODER_KW)


class Soak:
    def __init__(self, pair, seed: int):
        self.pair = pair
        self.rng = random.Random(seed)
        self.prompts = heldout_prompts(pair, 16, 24, seed=seed)
        self.decoders = {m: make_decoder(pair, m) for m in METHODS}
        self.served = collections.Counter()  # (kind, method) -> requests
        self.errors = collections.Counter()  # (kind, error type, expected?) -> count
        self.wrong: list[dict] = []  # normal requests whose tokens differ from a fresh Decoder's
        self.unexpected: list[str] = []

    # -- request kinds ---------------------------------------------------------------

    def normal(self, method: str) -> None:
        prompt = self.rng.choice(self.prompts)[: self.rng.randint(4, 24)]
        n, seed = self.rng.randint(1, 12), self.rng.randrange(2**32)
        got = self.decoders[method].generate(prompt, max_new_tokens=n, seed=seed).tokens
        want = make_decoder(self.pair, method).generate(prompt, max_new_tokens=n, seed=seed).tokens
        if got != want:
            self.wrong.append(dict(method=method, prompt=prompt, n=n, seed=seed, got=got, want=want))

    def bad_argument(self, method: str) -> None:
        dec, v = self.decoders[method], self.pair.vocab_size
        cases = [
            lambda: dec.generate(b"\x01\x02", max_new_tokens=2),
            lambda: dec.generate([v + 5], max_new_tokens=2),
            lambda: dec.generate([], max_new_tokens=2),
            lambda: dec.generate([1, 2], max_new_tokens=-1),
            lambda: dec.generate([1, 2], max_new_tokens=2, seed=-1),
            lambda: dec.generate([1, 2], max_new_tokens=2.5),
            lambda: dec.generate([1] * MAX_LENGTH, max_new_tokens=4),  # CacheOverflowError
            lambda: list(dec.stream([1, 2], max_new_tokens=2, seed=2**64)),
            lambda: sprinter_ext.Decoder(self.pair, method, temperature=float("nan")),
            lambda: sprinter_ext.Decoder(self.pair, method, temperature=1e39),
            lambda: sprinter_ext.Decoder(self.pair, method, top_k=2**63),
            lambda: sprinter_ext.Decoder(self.pair, method, top_p=0.0),
            lambda: sprinter_ext.Decoder(self.pair, method, eos_token_id=5.0),
        ]
        try:
            self.rng.choice(cases)()
        except SprinterError as e:
            self.errors[("bad_argument", type(e).__name__, True)] += 1
            return
        self.unexpected.append(f"bad_argument on {method}: no error")

    def nan_model(self, method: str) -> None:
        rows = {id(w): w for w in (m.get_input_embeddings().weight for m in (self.pair.target, self.pair.draft))}
        bad = self.rng.randrange(self.pair.vocab_size)
        saved = {k: w[bad].clone() for k, w in rows.items()}
        prompt = self.rng.choice(self.prompts)[:8] + [bad, 3]
        try:
            with torch.no_grad():
                for w in rows.values():
                    w[bad] = float("nan")
            self.decoders[method].generate(prompt, max_new_tokens=6, seed=self.rng.randrange(2**32))
            self.unexpected.append(f"nan_model on {method}: no error")
        except NonFiniteLogitsError:
            self.errors[("nan_model", "NonFiniteLogitsError", True)] += 1
        finally:
            with torch.no_grad():
                for k, w in rows.items():
                    w[bad] = saved[k]

    def early_close(self, method: str) -> None:
        it = self.decoders[method].stream(self.rng.choice(self.prompts), max_new_tokens=16, seed=self.rng.randrange(99))
        for _ in range(self.rng.randint(0, 3)):
            next(it, None)
        it.close()

    def concurrent(self, method: str) -> None:
        dec = self.decoders[method]
        done = threading.Event()
        errors = []

        def work():
            try:
                dec.generate(self.prompts[0], max_new_tokens=24, seed=1)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            done.set()

        t = threading.Thread(target=work)
        t.start()
        while not dec._lock.locked() and not done.is_set():
            time.sleep(0.0005)
        try:
            dec.generate([1, 2, 3], max_new_tokens=2)
            refused = False
        except DecoderBusyError:
            refused = True
        t.join()
        if errors:
            self.unexpected.append(f"concurrent on {method}: the first caller failed: {errors[0]!r}")
        if refused:
            self.errors[("concurrent", "DecoderBusyError", True)] += 1
        elif not done.is_set() or dec._lock.locked():
            self.unexpected.append(f"concurrent on {method}: a second caller was not refused")
        # (if the first call finished before the second started, nothing was concurrent)

    # -- driver ------------------------------------------------------------------------

    def run(self, seconds: float) -> list[tuple[float, float, int]]:
        kinds, weights = zip(*KINDS.items())
        t0 = time.perf_counter()
        samples = [(0.0, rss_mib(), 0)]
        n = 0
        while time.perf_counter() - t0 < seconds:
            kind, method = self.rng.choices(kinds, weights)[0], self.rng.choice(METHODS)
            try:
                getattr(self, kind)(method)
            except Exception as e:  # noqa: BLE001 - every unexpected error is a finding
                self.errors[(kind, type(e).__name__, False)] += 1
                self.unexpected.append(f"{kind} on {method}: {type(e).__name__}: {e}"[:300])
            self.served[(kind, method)] += 1
            n += 1
            samples.append((time.perf_counter() - t0, rss_mib(), n))
        return samples


def plot(samples, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([s[0] / 60 for s in samples], [s[1] for s in samples], marker=".", ms=3, lw=1)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--pair", choices=["default", "tiny"], default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--out", default="bench/results/soak.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.pair == "default":
        pair = sprinter_ext.load_pair(draft="standalone")  # nan_model poisons both models' embedding rows
    else:
        from sprinter_ext.models.tiny import tiny_pair
        from sprinter_ext.verifier import Verifier

        pair = sprinter_ext.load_pair(*tiny_pair("llama", vocab=128, draft_scale=0.5))
        pair.verifier = Verifier(pair.draft.config.hidden_size, hidden=(8,))
    soak = Soak(pair, args.seed)
    rss0 = rss_mib()
    samples = soak.run(args.minutes * 60)
    served = collections.Counter()
    for (kind, _), c in soak.served.items():
        served[kind] += c
    warm = [s[1] for s in samples if s[0] >= min(60.0, samples[-1][0] / 4)]  # after a warm-up
    result = dict(
        command="python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        environment=environment(),
        pair=args.pair, minutes=args.minutes, seed=args.seed, methods=list(METHODS), kinds=KINDS,
        decoder=dict(DECODER_KW, max_length=MAX_LENGTH),
        requests=sum(served.values()), served=dict(served),
        served_by_method={m: sum(c for (_, mm), c in soak.served.items() if mm == m) for m in METHODS},
        errors=[dict(kind=k, error=e, expected=x, count=c) for (k, e, x), c in sorted(soak.errors.items())],
        wrong_outputs=len(soak.wrong), wrong_examples=soak.wrong[:5],
        unexpected=len(soak.unexpected), unexpected_examples=soak.unexpected[:10],
        rss_mib=dict(start=round(rss0, 1), end=round(samples[-1][1], 1),
                     warm_min=round(min(warm), 1) if warm else None, warm_max=round(max(warm), 1) if warm else None),
        rss_samples=[[round(t, 2), round(r, 1), n] for t, r, n in samples],
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    png = out.with_suffix(".png")
    plot(samples, png, f"soak: {result['requests']} requests on the {args.pair} pair, {args.minutes:g} min")

    print(f"{'kind':<14}{'served':>8}")
    for kind in KINDS:
        print(f"{kind:<14}{served.get(kind, 0):>8}")
    print(f"{'total':<14}{result['requests']:>8}\n")
    print(f"{'kind':<14}{'error':<24}{'expected':>9}{'count':>7}")
    for e in result["errors"]:
        print(f"{e['kind']:<14}{e['error']:<24}{str(e['expected']):>9}{e['count']:>7}")
    r = result["rss_mib"]
    print(f"\nwrong outputs: {result['wrong_outputs']}   unexpected: {result['unexpected']}")
    print(f"RSS MiB: start {r['start']}, after warm-up {r['warm_min']}..{r['warm_max']}, end {r['end']}")
    for u in soak.unexpected[:10]:
        print("  unexpected:", u)
    print(f"wrote {out} and {png}")
    return 0 if not soak.wrong and not soak.unexpected else 1


if __name__ == "__main__":
    raise SystemExit(main())
