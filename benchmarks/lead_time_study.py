"""Which batch signal tells an untruncated ``replace`` lineage at generation 2 from ``accumulate`` at 1-10?

The ``text`` simulator's lineage (:func:`monitors.demo.simulate.text_lineage`: a word bigram model fitted on
1,000 Austen paragraphs, refit on 1,000 of its own documents per generation) without the Prefect flow: each
generation's 300-document batch is measured directly with the pure indicator functions against a human
reference cut like the flow's (1,500 paragraphs; tail types from its 70 % core, baseline from its 30 %
held-out part), and next to it independent 300-document batches of *other* human paragraphs, for the
false-alarm side. Per seed, policy and generation it prints

* ``cov``: rare-word coverage ratio (``tail.rare_coverage.ratio``, the critical rule reads it < 0.60);
* ``hapax``: the share of words seen once in the batch's first 10,000 tokens (Gambetta et al. 2024);
* ``sbleu``: Self-BLEU-4 on 100 documents (Guo et al. 2023);
* ``d1_10k``, ``d2_10k`` / ``d2_15k`` / ``d2_20k``, ``d3_10k``, ``d2_1k``: distinct words / bigrams / trigrams
  rarefied to that many tokens (``d2_1k`` is ``tail.distinct_2``, ``d2_15k`` is ``tail.distinct_2_wide``);
* the same against the dataset's *first* check (``d...``: value minus the generation-1 value), since collapse
  is a trend across retrains and generation 1 (the first fit, on human data) is the same under every policy.

    PYTHONPATH=. .venv/bin/python benchmarks/lead_time_study.py [--seeds 0 1 2] [--generations 10] [--humans 40]

Then the separation summary: for each signal, replace at generation 2 (per seed) against the worst of
accumulate over generations 1-10, as a level, against the first check and (ratios ``r``/``p``) against the
first / previous check, with the spread of independent human batches; and last the per-generation step of
``d2_15k`` against the previous check, the signal check's critical ``diversity_step_drop`` reads.
5 seeds, 40 human batches each: about 4 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitors.core import collapse_sim as cs  # noqa: E402
from monitors.core.indicators import ngram_counts, rare_coverage, rarefied_distinct, tail_types  # noqa: E402
from monitors.core.profile import stable_hash  # noqa: E402
from monitors.core.text import words  # noqa: E402
from monitors.demo.corpus import austen_paragraphs  # noqa: E402
from monitors.demo.simulate import text_lineage  # noqa: E402

BATCH, TRAIN, REFERENCE = 300, 1000, 1500
COVERAGE_TOKENS, HAPAX_WINDOW, SELF_BLEU_DOCS, RAREFY = 5000, 10_000, 100, 10_000
POLICIES = ("replace", "mix:0.1", "accumulate")
SIGNALS = ("cov", "hapax", "sbleu", "d1_10k", "d2_10k", "d2_15k", "d2_20k", "d3_10k", "d2_1k")


def measure(texts: list[str], tail: frozenset[str], seed: int = 0) -> dict[str, float]:
    toks = [words(t) for t in texts]
    uni, bi, tri = ngram_counts(toks)
    flat = [w for d in toks for w in d]
    sample = random.Random(seed).sample(toks, min(SELF_BLEU_DOCS, len(toks)))
    return {"cov": rare_coverage(uni, tail, COVERAGE_TOKENS), "hapax": cs.hapax_share(flat, HAPAX_WINDOW),
            "sbleu": cs.self_bleu(sample), "d1_10k": rarefied_distinct(uni, RAREFY),
            "d2_10k": rarefied_distinct(bi, RAREFY), "d2_15k": rarefied_distinct(bi, 15_000), "d2_20k": rarefied_distinct(bi, 2 * RAREFY), "d3_10k": rarefied_distinct(tri, RAREFY),
            "d2_1k": rarefied_distinct(bi, 1000)}


def setup(seed: int):
    """The simulator's split: reference (1,500), training (1,000), and the rest for independent human batches."""
    paragraphs = austen_paragraphs()
    random.Random(seed).shuffle(paragraphs)
    reference = paragraphs[:REFERENCE]
    human = [p["text"] for p in paragraphs[REFERENCE:REFERENCE + TRAIN]]
    rest = [p["text"] for p in paragraphs[REFERENCE + TRAIN:]]
    core = [p["text"] for p in reference if stable_hash(p["id"]) % 1000 >= 300]
    holdout = [p["text"] for p in reference if stable_hash(p["id"]) % 1000 < 300]
    tail = tail_types(ngram_counts([words(t) for t in core])[0], 0.8)
    baseline = measure(holdout, tail)
    return human, rest, tail, baseline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--humans", type=int, default=40, help="independent human batches per seed")
    ap.add_argument("--batch", type=int, default=BATCH, help="documents per checked batch")
    ap.add_argument("--source-shift", action="store_true",
                    help="only the false-alarm side of a change of source: 300-paragraph human batches of one novel "
                         "against batches of all six, on the indicator diversity_step_drop reads")
    args = ap.parse_args()
    if args.source_shift:
        source_shift(args.batch)
        return 0
    started = time.monotonic()
    rows: list[dict] = []  # seed, policy, gen, signals (and d-signals)
    for seed in args.seeds:
        human, rest, tail, baseline = setup(seed)
        rng = random.Random(1000 + seed)
        for k in range(args.humans):
            m = measure(rng.sample(rest, args.batch), tail, k)
            m["cov"] /= baseline["cov"]
            rows.append({"seed": seed, "policy": "human", "gen": k, **m})
        for label in POLICIES:
            pol = cs.parse_policy(label)
            first = prev = None
            for t, model, sample in text_lineage(human, args.generations, pol.name, pol.human_share, seed=seed):
                m = measure(sample[:args.batch], tail, seed)
                m["cov"] /= baseline["cov"]
                first, prev = first or dict(m), prev or dict(m)
                rows.append({"seed": seed, "policy": label, "gen": t, "types": model.types_, **m,
                             **{f"d{k}": m[k] - first[k] for k in SIGNALS},
                             **{f"r{k}": m[k] / first[k] for k in SIGNALS},
                             **{f"p{k}": m[k] / prev[k] for k in SIGNALS}})
                prev = dict(m)
        print(f"[{time.monotonic() - started:5.0f}s] seed {seed} done", file=sys.stderr, flush=True)
    report(rows, args)
    step_table(rows, args)
    return 0


def step_table(rows: list[dict], args, key: str = "d2_15k", threshold: float = 0.965) -> None:
    """The signal check uses (``trend.tail.distinct_2_wide.vs_previous``, the critical ``diversity_step_drop``):
    per seed and policy, each generation's distinct bigrams per 15,000 over the previous generation's."""
    print(f"\n{key} over the previous check (what diversity_step_drop reads; it fires under {threshold}), "
          f"generations 2-{args.generations}:")
    for seed in args.seeds:
        hum = _finite(r[key] for r in rows if r["seed"] == seed and r["policy"] == "human")
        noise = 2 ** 0.5 * statistics.stdev(hum) / statistics.mean(hum)
        print(f"  seed {seed} (two independent human batches: ratio sd {noise:.3f}; "
              f"{threshold} is {(1 - threshold) / noise:.1f} sd below 1)")
        for label in POLICIES:
            steps = [r["p" + key] for r in rows if r["seed"] == seed and r["policy"] == label and r["gen"] >= 2]
            fired = [r["gen"] for r in rows if r["seed"] == seed and r["policy"] == label and r["gen"] >= 2
                     and r["p" + key] < threshold]
            print(f"    {label:<10} " + " ".join(f"{v:.3f}" for v in steps)
                  + f"   fires at {fired[0] if fired else 'never'} ({len(fired)} of {len(steps)})")


def source_shift(batch: int, replicates: int = 6) -> None:
    """A human batch from a narrower source than the previous one also has fewer distinct bigrams: Austen's
    novels one at a time against the six mixed (the step diversity_step_drop would see on such a change)."""
    from collections import defaultdict

    by: dict[str, list[str]] = defaultdict(list)
    for p in austen_paragraphs():
        by[p["book"]].append(p["text"])
    by["all six, mixed"] = [t for texts in list(by.values()) for t in texts]
    rng = random.Random(0)
    means = {}
    for book, texts in by.items():
        vals = _finite(rarefied_distinct(ngram_counts([words(t) for t in rng.sample(texts, batch)])[1], 15_000)
                       for _ in range(replicates))
        means[book] = statistics.mean(vals)
    mixed = means["all six, mixed"]
    print(f"distinct bigrams per 15,000 of {batch}-paragraph human batches ({replicates} each), and the step from a "
          f"mixed batch to one of a single novel:")
    for book, m in means.items():
        print(f"  {book:<18} {m:.3f}   step from mixed {m / mixed:.3f}{'  < 0.965: fires' if m / mixed < 0.965 else ''}")


def _finite(values) -> list[float]:
    return [float(v) for v in values if v == v]


def report(rows: list[dict], args) -> None:
    print(f"batches of {args.batch} documents; seeds {args.seeds}; {args.humans} independent human batches per seed")
    for seed in args.seeds:
        hum = [r for r in rows if r["seed"] == seed and r["policy"] == "human"]
        print(f"\nseed {seed}: human batches mean (sd): " + ", ".join(
            f"{k} {statistics.mean(_finite(r[k] for r in hum)):.4f} ({statistics.stdev(_finite(r[k] for r in hum)):.4f})" for k in SIGNALS))
        print(f"  {'policy':<10} {'gen':>3} {'types':>5} " + " ".join(f"{k:>7}" for k in SIGNALS) + "   "
              + " ".join(f"{'d' + k:>8}" for k in SIGNALS))
        for r in rows:
            if r["seed"] == seed and r["policy"] != "human":
                print(f"  {r['policy']:<10} {r['gen']:>3} {r['types']:>5} " + " ".join(f"{r[k]:>7.4f}" for k in SIGNALS)
                      + "   " + " ".join(f"{r['d' + k]:>+8.4f}" for k in SIGNALS))
    print("\nseparation: replace at generation 2 against accumulate at generations 1-10 (and human batches);"
          "\nsign: + means the signal falls with collapse (cov, hapax, d1, d2), - rises (sbleu); gap in human sds:")
    falls = {k: -1 if k == "sbleu" else 1 for k in SIGNALS}
    for k in SIGNALS:
        for kind in ("level", "vs first"):
            key = k if kind == "level" else "d" + k
            gaps = []
            for seed in args.seeds:
                sd = statistics.stdev(_finite(r[k] for r in rows if r["seed"] == seed and r["policy"] == "human"))
                sd *= 1 if kind == "level" else 2 ** 0.5  # a difference of two batches
                rep = next(r[key] for r in rows if r["seed"] == seed and r["policy"] == "replace" and r["gen"] == 2)
                acc = [r[key] for r in rows if r["seed"] == seed and r["policy"] == "accumulate"]
                worst = min(acc, key=lambda v: falls[k] * v)
                gaps.append((rep, worst, falls[k] * (worst - rep) / sd))
            print(f"  {key:<10} {kind:<8} " + "  ".join(f"seed {s}: rep2 {g[0]:+.4f} acc worst {g[1]:+.4f} gap {g[2]:+5.1f} sd"
                                                      for s, g in zip(args.seeds, gaps)))

    print("\nas ratios (the form a rule reads): value / the dataset's first check (r) and / its previous check (p);"
          "\nhuman: the spread of the ratio of two independent human batches (sd of a ratio = sqrt(2) sd / mean):")
    for k in SIGNALS:
        for kind in ("r", "p"):
            cells = []
            for seed in args.seeds:
                hum = _finite(r[k] for r in rows if r["seed"] == seed and r["policy"] == "human")
                noise = 2 ** 0.5 * statistics.stdev(hum) / statistics.mean(hum)
                rep = next(r[kind + k] for r in rows if r["seed"] == seed and r["policy"] == "replace" and r["gen"] == 2)
                acc = [r[kind + k] for r in rows if r["seed"] == seed and r["policy"] == "accumulate"]
                worst = min(acc, key=lambda v: falls[k] * v)
                cells.append(f"seed {seed}: rep2 {rep:.3f} acc worst {worst:.3f} human sd {noise:.3f}")
            print(f"  {kind + k:<9} " + "  ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
