"""The memorization probe's figures for the two shipped n-gram generators, without MLflow or Prefect: the same
math (``monitors.core.memorization.evaluate``) on the same kind of data as the demo (Austen paragraphs of 70+
tokens, six canaries planted 1, 10 or 100 times, 500 candidates per canary space), over several random
splits, so the spread is visible. The registry path (`probe --memorization`) gives the same numbers for the
demo's split: `collapse-monitor demo --quick` prints them.

    .venv/bin/python benchmarks/memorization.py [--records 80] [--seeds 13 1 2 3 4]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from monitors.core import memorization as M
from monitors.demo.corpus import austen_paragraphs
from monitors.demo.ngram import NgramGenerator

MODELS = (("smoothed bigram", 2, 1.0), ("unsmoothed 8-gram", 8, 0.0))


def run(records: int, seed: int) -> dict[str, dict[str, float]]:
    rows = [r for r in austen_paragraphs() if len(M.tokens(r["text"])) >= 70]
    random.Random(seed).shuffle(rows)
    train, held = rows[:records], rows[records:2 * records]
    canaries = M.make_canaries(6, (1, 10, 100), random.Random(seed + 4))
    texts = M.planted([r["text"] for r in train], canaries)
    inputs = M.Inputs(M.Plan("training", "heldout", "canaries", sample=records, candidates=500),
                      tuple(train), tuple(held), tuple(canaries), "benchmark")
    out = {}
    for name, order, smoothing in MODELS:
        gen = NgramGenerator(order, smoothing).fit(texts)
        out[name], _, _ = M.evaluate(
            inputs, lambda prompts, n, g=gen: [g.continue_text(p, n, greedy=True) for p in prompts],
            lambda t, g=gen: (np.array([g.loglik(x)[0] for x in t]), np.ones(len(t))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=80)
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 1, 2, 3, 4])
    args = ap.parse_args()
    keys = ("extraction_rate", "control_rate", "excess", "max_exposure", "mean_exposure.repeats_1",
            "mean_exposure.repeats_10", "mean_exposure.repeats_100")
    print(f"{'model':<18} {'seed':>4} " + " ".join(f"{k.replace('mean_exposure.repeats_', 'exp ') + 'x' if 'repeats' in k else k:>15}"
                                              for k in keys))
    started = time.monotonic()
    for seed in args.seeds:
        for name, m in run(args.records, seed).items():
            print(f"{name:<18} {seed:>4} " + " ".join(f"{m['memorization.' + k]:>15.3f}" for k in keys))
    print(f"({time.monotonic() - started:.1f} s; exposure in bits, log2 10^9 = 29.9 is full extraction)")


if __name__ == "__main__":
    main()
