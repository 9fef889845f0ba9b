"""The synthetic share from a human reference alone: accuracy, coverage, the MAE-vs-time curve, scorer speed.

Run through ``benchmarks/share_accuracy.py --scenario reference`` (see its docstring for the command). What
it does, per split:

* Human text: 500 Python-documentation and 500 Austen paragraphs of the shipped labelled set
  (``monitors/data/detector_set.jsonl.gz``); 500 of them (half of each domain) play the reference's held-out
  documents, the other 500 the human part of test batches. The reference's embedding and clusters are fitted
  on other human paragraphs of the set, as ``reference build`` fits them on the reference's core.
* Machine text, by how far it is from anything this method was built or tuned on:
  - *SmolLM2 t=0.8* (the local LM's own text, the setting the design choices were made on: the curvature
    statistic, the token budget, the sample size);
  - *SmolLM2 t=1.3* (a decoding setting held back from every choice);
  - *Qwen2.5-Coder-0.5B* (``monitors/data/heldout_family.jsonl.gz``: another model family, tokenizer and
    training corpus, held out of everything);
  - *word bigram model* (fitted on human paragraphs: a generator with no neural LM at all).
* Batches of ``--lm-size`` documents (what a check scores, ``lm.sample_size``) at true shares 0, 0.1, .., 1,
  ``--batches`` per share, estimated exactly as ``check`` does (:func:`monitors.core.mixture.estimate_from_reference`
  with the reference re-weighted to the batch's clusters).
* Human-only batches from one sub-domain (all Python docs, all Austen): the topic-shift trap.

Every text is scored once by the real local LM (SmolLM2-135M, :class:`monitors.adapters.lmscore.LMScorer`) and cached
by content, so the first run costs the scoring (a few minutes) and later runs seconds. Then the scorer's own
speed is measured in a child process on texts no cache holds (tokens/s, load time, peak RSS), and the
MAE-vs-time curve is printed: MAE on SmolLM2 t=0.8 batches at each sample size next to the time a check
spends scoring that many documents.
"""

from __future__ import annotations

import json
import gzip
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PREVALENCES = [round(p, 1) for p in np.linspace(0, 1, 11)]
CURVE_SIZES = (50, 100, 150, 250, 400)


def _select(rows, gen: str, per: int, rng) -> list[dict]:
    """The same per-domain draw the research scoring used (so its cached scores are hits)."""
    out = []
    for dom in ("python-doc", "austen"):
        pool = [r for r in rows if r["generator"] == gen and r["domain"] == dom]
        out += [pool[i] for i in rng.permutation(len(pool))[:per]]
    return out


def load_pools(scorer, progress=print) -> dict:
    from monitors.demo.corpus import detector_set
    from monitors.core.embedding import HashedEmbedding
    from monitors.demo.simulate import BigramGenerator

    rows = detector_set()
    rng = np.random.default_rng(0)
    human = _select(rows, "human", 500, rng)
    t08 = _select(rows, "smollm2-t0.8", 250, rng)
    t13 = _select(rows, "smollm2-t1.3", 200, rng)
    chosen = {r["id"] for r in human}
    others = [r["text"] for r in rows if r["label"] == "human" and r["id"] not in chosen]
    embedding = HashedEmbedding(32, 12).fit(others[:1000])
    bigram = BigramGenerator().fit(others).sample(300, random.Random(5))
    heldout_path = REPO / "monitors" / "data" / "heldout_family.jsonl.gz"
    qwen = [json.loads(ln)["text"] for ln in gzip.open(heldout_path, "rt")] if heldout_path.exists() else []

    def scored(texts: list[str], label: str) -> dict:
        started = time.monotonic()
        feats = scorer.score(texts)
        progress(f"{label}: {len(texts)} texts, {scorer.last['scored']} scored now, {scorer.last['cached']} cached "
                 f"({time.monotonic() - started:.0f} s)")
        return {"score": feats[:, 3], "clusters": embedding.assign(embedding.transform(texts)),
                "domain": None}

    pools = {"human": scored([r["text"] for r in human], "human")}
    pools["human"]["domain"] = np.array([r["domain"] for r in human])
    pools["SmolLM2 t=0.8 (tuned on)"] = scored([r["text"] for r in t08], "SmolLM2 t=0.8")
    pools["SmolLM2 t=1.3 (held out)"] = scored([r["text"] for r in t13], "SmolLM2 t=1.3")
    if qwen:
        pools["Qwen2.5-Coder-0.5B (held-out family)"] = scored(qwen, "Qwen2.5-Coder-0.5B")
    pools["word bigram model (held out)"] = scored(bigram, "word bigram")
    return pools


def simulate(pools: dict, args, sizes=None) -> dict[str, list[dict]]:
    from monitors.core.mixture import estimate_from_reference

    human = pools["human"]
    h_ok = np.isfinite(human["score"])
    results: dict[str, list[dict]] = {}
    n_b = args.lm_size
    for split in range(args.splits):
        rng = np.random.default_rng(100 + split)
        idx = np.flatnonzero(h_ok)
        perm = rng.permutation(idx)
        # half of each domain for the reference, the rest for batches
        ref = np.concatenate([perm[human["domain"][perm] == d][:250] for d in ("python-doc", "austen")])
        test = np.setdiff1d(idx, ref)
        ref_s, ref_c = human["score"][ref], human["clusters"][ref]

        def estimate(scores, clusters, seed):
            return estimate_from_reference(scores, ref_s, batch_clusters=clusters, human_clusters=ref_c,
                                           clusters=12, replicates=args.replicates, seed=seed,
                                           reweight=getattr(args, "reweight", False))

        for name, pool in pools.items():
            if name == "human":
                continue
            ok = np.flatnonzero(np.isfinite(pool["score"]))
            for size in (sizes or [n_b]):
                key = name if sizes is None else (name, size)
                for p in PREVALENCES:
                    for b in range(args.batches):
                        k = int(round(p * size))
                        mi = rng.choice(ok, k, replace=k > len(ok))
                        hi = rng.choice(test, size - k, replace=False)
                        e = estimate(np.r_[pool["score"][mi], human["score"][hi]],
                                     np.r_[pool["clusters"][mi], human["clusters"][hi]], b)
                        truth = k / size
                        results.setdefault(key, []).append(
                            {"p": p, "err": abs(e.estimate - truth), "bias": e.estimate - truth,
                             "cover": e.low <= truth <= e.high, "width": e.high - e.low, "oor": e.out_of_range})
        if sizes is None:
            for dom in ("python-doc", "austen"):
                pool_idx = test[human["domain"][test] == dom]
                for b in range(args.batches):
                    hi = rng.choice(pool_idx, min(n_b, int(0.6 * len(pool_idx))), replace=False)
                    e = estimate(human["score"][hi], human["clusters"][hi], b)
                    results.setdefault(f"human only: {dom}", []).append(
                        {"p": 0.0, "err": e.estimate, "bias": e.estimate, "cover": e.low <= 0 <= e.high,
                         "width": e.high - e.low, "oor": e.out_of_range})
    return results


def _m(rows, key):
    return statistics.fmean(float(r[key]) for r in rows)


def report(results: dict[str, list[dict]], args) -> None:
    print(f"\n# Reference only (no labelled machine text): batches of {args.lm_size} LM-scored documents, "
          f"{args.batches} per share per split, {args.splits} split(s), reference of 500 held-out human documents")
    for name, rows in results.items():
        if name.startswith("human only"):
            continue
        print(f"\n## {name}")
        print(f"{'true p':>6} | {'MAE':>6} | {'bias':>7} | {'cover':>6} | {'width':>6} | {'flagged':>7}")
        for p in PREVALENCES:
            sel = [r for r in rows if r["p"] == p]
            print(f"{p:>6.1f} | {_m(sel, 'err'):>6.3f} | {_m(sel, 'bias'):>+7.3f} | {_m(sel, 'cover'):>6.0%} | "
                  f"{_m(sel, 'width'):>6.3f} | {_m(sel, 'oor'):>7.0%}")
        print(f"{'all':>6} | {_m(rows, 'err'):>6.3f} | {_m(rows, 'bias'):>+7.3f} | {_m(rows, 'cover'):>6.0%} | "
              f"{_m(rows, 'width'):>6.3f} | {_m(rows, 'oor'):>7.0%}")
    print("\n## Human-only batches from one sub-domain (the reference holds both): the estimate should be ~0")
    print(f"{'batches':>28} | {'mean estimate':>13} | {'cover 0':>7} | {'width':>6} | {'flagged':>7}")
    for name, rows in results.items():
        if name.startswith("human only"):
            print(f"{name:>28} | {_m(rows, 'err'):>13.3f} | {_m(rows, 'cover'):>7.0%} | {_m(rows, 'width'):>6.3f} | "
                  f"{_m(rows, 'oor'):>7.0%}")
    print("\nSummary (targets: MAE <= 0.03 on SmolLM2, <= 0.05 on held-out generators, coverage >= 90 %, "
          "human-only mean <= 0.03)")
    for name, rows in results.items():
        print(f"  {name}: MAE {_m(rows, 'err'):.3f}, coverage {_m(rows, 'cover'):.0%}, width {_m(rows, 'width'):.3f}")


def throughput_child(n: int) -> None:
    """Run in a child process: the scorer's load time, tokens/s and peak RSS on texts no cache holds."""
    import resource
    import uuid

    from monitors.demo.corpus import detector_set
    from monitors.adapters.lmscore import LMScorer, ScorerConfig, cache_dir

    texts = [r["text"] for r in detector_set() if r["label"] == "human"][-n:]
    nonce = uuid.uuid4().hex[:8]
    texts = [f"{t} {nonce}" for t in texts]  # unseen by any cache
    started = time.monotonic()
    scorer = LMScorer(ScorerConfig(), converted_dir=cache_dir(None) / "models")
    scorer._load()
    load = time.monotonic() - started
    scorer.score(texts)
    last = scorer.last
    print(json.dumps({"load_s": load, "texts": n, "tokens": last["tokens"], "seconds": last["seconds"],
                      "tokens_per_s": last["tokens"] / last["seconds"], "dtype": scorer.dtype,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure_throughput(runs: int = 3, n: int = 160) -> list[dict]:
    out = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, __file__, "--throughput-child", str(n)], capture_output=True, text=True,
                             cwd=REPO, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def run(args) -> None:
    from monitors.adapters.lmscore import LMScorer, ScoreCache, ScorerConfig, cache_dir

    folder = cache_dir(None)
    scorer = LMScorer(ScorerConfig(), cache=ScoreCache(folder / "lm-scores.sqlite"), converted_dir=folder / "models",
                      progress=lambda done, total: print(f"\rscoring: {done}/{total}", end="", file=sys.stderr))
    started = time.monotonic()
    pools = load_pools(scorer, progress=lambda m: print(m, file=sys.stderr, flush=True))
    results = simulate(pools, args)
    report(results, args)
    if args.no_speed:
        return
    speed = measure_throughput()
    med = {k: statistics.median(r[k] for r in speed) for k in ("load_s", "tokens_per_s", "peak_rss_mb")}
    tok_per_doc = statistics.median(r["tokens"] / r["texts"] for r in speed)
    print(f"\n# Scorer ({speed[0]['dtype']}, token budget 128, every core), median of {len(speed)} runs in a child "
          f"process on {speed[0]['texts']} uncached texts: {med['tokens_per_s']:.0f} tokens/s, "
          f"load {med['load_s']:.1f} s, peak RSS {med['peak_rss_mb']:.0f} MB "
          "(runs: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in speed) + " tokens/s)")
    curve = simulate({"human": pools["human"], "SmolLM2 t=0.8": pools["SmolLM2 t=0.8 (tuned on)"]}, args,
                     sizes=CURVE_SIZES)
    print(f"\n# MAE vs time (SmolLM2 t=0.8 batches; time = load + documents x {tok_per_doc:.0f} tokens / "
          f"{med['tokens_per_s']:.0f} tokens/s, uncached)")
    print(f"{'documents':>9} | {'MAE':>6} | {'cover':>6} | {'width':>6} | {'seconds':>7}")
    for (_, size), rows in curve.items():
        secs = med["load_s"] + size * tok_per_doc / med["tokens_per_s"]
        print(f"{size:>9} | {_m(rows, 'err'):>6.3f} | {_m(rows, 'cover'):>6.0%} | {_m(rows, 'width'):>6.3f} | {secs:>7.1f}")
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--throughput-child":
    sys.path.insert(0, str(REPO))
    throughput_child(int(sys.argv[2]))
