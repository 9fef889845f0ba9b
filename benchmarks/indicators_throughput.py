"""Throughput of the indicator core: profile N documents in shards, merge, finalize.

Prints docs/s and peak RSS for each N, median of --repeats runs. Documents are Austen paragraphs
(20-200 words) under fresh ids, so the text is real and the vocabulary realistic. Run:

    .venv/bin/python benchmarks/indicators_throughput.py --docs 10000 100000 --repeats 3

This is the single-process baseline for the check's hot path (tokenising and counting in Python);
the scale-out target (1 M documents in 60 s on 2 cores) belongs to the ingest/indicator issue.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from datetime import date

from monitors.config import IndicatorSettings
from monitors.corpus import austen_paragraphs
from monitors.indicators import compute_indicators, tail_types
from monitors.profile import TextProfile, profile_documents


def run(texts: list[str], n: int, shard: int, settings: IndicatorSettings, tail) -> float:
    rng = random.Random(n)
    started = time.perf_counter()
    merged = TextProfile(sample_size=settings.sample_size)
    for lo in range(0, n, shard):
        size = min(shard, n - lo)
        part = profile_documents([f"d{lo + i}" for i in range(size)], [rng.choice(texts) for _ in range(size)],
                                 [None] * size, cutoff=date(2024, 1, 1), sample_size=settings.sample_size)
        merged = merged.merge(part)
    compute_indicators(merged, settings, tail)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--shard", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    settings = IndicatorSettings()
    texts = [p["text"] for p in austen_paragraphs()]
    tail = tail_types(profile_documents([str(i) for i in range(len(texts))], texts, [None] * len(texts),
                                        cutoff=date(2024, 1, 1), sample_size=10).ngrams[0], settings.head_mass)
    print(f"{'docs':>9} {'median s':>9} {'docs/s':>9} {'peak RSS MB':>12}  (runs: {args.repeats})")
    for n in args.docs:
        times = [run(texts, n, args.shard, settings, tail) for _ in range(args.repeats)]
        med = statistics.median(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>9} {med:>9.2f} {n / med:>9.0f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
