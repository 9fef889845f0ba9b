"""Accuracy of the synthetic-share estimate: mean absolute error and 95 %-interval coverage, two scenarios.

``--scenario reference`` (no labelled machine text; the default path of ``check``): the share from a human
reference alone, scored by the local LM (:mod:`benchmarks.share_reference` says what is drawn and held out),
then the scorer's speed (tokens/s, load time, peak RSS, in a child process on uncached texts) and the
MAE-vs-time curve that the default ``lm.sample_size`` was chosen from.

``--scenario trained`` (a detector trained on labelled text). On the shipped labelled set
(``monitors/data/detector_set.jsonl.gz``: Python documentation and Austen paragraphs vs SmolLM2-135M-Instruct
output), for each of ``--splits`` random splits:

1. 65 % of the human texts and of the machine texts decoded at temperature 0.8 train a detector with
   :func:`monitors.core.detector.train_detector` (which itself holds 40 % of that out as its validation set and
   chooses the estimator there); the other 35 % are the test pool, never seen by the detector.
2. For true prevalences 0, 0.1, ..., 1.0, ``--batches`` batches of ``--size`` documents are drawn from the
   test pool (without replacement within a batch), and the share is estimated exactly as ``check`` does
   (:func:`monitors.core.quantify.estimate_share`, 1000 bootstrap replicates).
3. The same on machine text the detector was not trained on: SmolLM2 at temperature 1.3 (a decoding setting
   held back), a word bigram model fitted on human text (another generator altogether), and Qwen2.5-Coder-0.5B
   (``monitors/data/heldout_family.jsonl.gz``, another model family, held out of everything).

Prints, per prevalence, the MAE of plain classify-and-count (``cc``) and of each corrected estimator, the
coverage of the estimator's interval, and how often the out-of-range warning fired; then one summary line
per scenario.

    .venv/bin/python benchmarks/share_accuracy.py --scenario reference --splits 2 --batches 10 --replicates 300
    .venv/bin/python benchmarks/share_accuracy.py --scenario trained --splits 1 --batches 5   # a quick look
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitors.demo.corpus import detector_set  # noqa: E402
from monitors.core.detector import train_detector  # noqa: E402
from monitors.core.quantify import CORRECTED, estimate_share  # noqa: E402
from monitors.demo.simulate import BigramGenerator  # noqa: E402

PREVALENCES = [round(p, 1) for p in np.linspace(0, 1, 11)]


def run_split(rows, split: int, args) -> dict[str, list[dict]]:
    rng = random.Random(1000 + split)
    human = [r["text"] for r in rows if r["label"] == "human"]
    machine = [r["text"] for r in rows if r["generator"] == "smollm2-t0.8"]
    unseen = [r["text"] for r in rows if r["generator"] == "smollm2-t1.3"]
    rng.shuffle(human), rng.shuffle(machine)
    cut_h, cut_m = int(0.65 * len(human)), int(0.65 * len(machine))
    started = time.monotonic()
    det = train_detector(human[:cut_h], machine[:cut_m], seed=split, stylometry=args.stylometry)
    print(f"split {split}: detector trained in {time.monotonic() - started:.0f} s on {cut_h} human + {cut_m} machine "
          f"texts; held-out ROC AUC {det.roc_auc:.4f}, TPR {det.validation.tpr:.3f}, FPR {det.validation.fpr:.3f}, "
          f"ECE {det.ece:.3f}; chosen estimator {det.method} (validation MAE "
          + ", ".join(f"{m} {v:.4f}" for m, v in det.selection_mae.items()) + ")", file=sys.stderr, flush=True)
    test_h = det.scores(human[cut_h:])
    pools = {
        "in-domain (SmolLM2 t=0.8)": (det.scores(machine[cut_m:]), False),
        "unseen decoding (SmolLM2 t=1.3)": (det.scores(unseen), True),
        "unseen generator (word bigram model)": (
            det.scores(BigramGenerator().fit(human[:cut_h]).sample(args.size, rng)), False),
    }
    qwen = _heldout_family()
    if qwen:
        pools["held-out family (Qwen2.5-Coder-0.5B)"] = (det.scores(qwen), True)
    out: dict[str, list[dict]] = {}
    nrng = np.random.default_rng(split)
    for scenario, (syn, replace) in pools.items():
        rows_out = []
        for p in PREVALENCES:
            for b in range(args.batches):
                k = int(round(p * args.size))
                s = np.concatenate([nrng.choice(syn, k, replace=replace or k > len(syn)),
                                    nrng.choice(test_h, args.size - k, replace=False)])
                truth = k / args.size
                row = {"p": p, "cc_err": None}
                for method in CORRECTED:
                    e = estimate_share(s, det.validation, method=method, replicates=args.replicates,
                                       seed=b, fit_replicates=100 if method != det.method else 200)
                    row[f"{method}_err"] = abs(e.estimate - truth)
                    row[f"{method}_cover"] = e.low <= truth <= e.high
                    row[f"{method}_width"] = e.high - e.low
                    row[f"{method}_oor"] = e.out_of_range
                    row["cc_err"] = abs(e.by_method["cc"] - truth)
                row["chosen"] = det.method
                for key in ("err", "cover", "width", "oor"):
                    row[f"chosen_{key}"] = row[f"{det.method}_{key}"]
                rows_out.append(row)
        out[scenario] = rows_out
    return out


def _heldout_family() -> list[str]:
    import gzip
    import json

    path = Path(__file__).resolve().parent.parent / "monitors" / "data" / "heldout_family.jsonl.gz"
    return [json.loads(line)["text"] for line in gzip.open(path, "rt")] if path.exists() else []


def _mean(rows, key):
    return statistics.fmean(float(r[key]) for r in rows)


def report(results: dict[str, list[dict]], args) -> None:
    cols = [*CORRECTED, "chosen"]

    def line(label, sel):
        return (f"{label:>6} | {_mean(sel, 'cc_err'):>7.4f} | "
                + " | ".join(f"{_mean(sel, f'{m}_err'):>8.4f}" for m in cols)
                + f" | {_mean(sel, 'chosen_cover'):>6.0%} | {_mean(sel, 'chosen_width'):>6.3f}"
                + f" | {_mean(sel, 'chosen_oor'):>12.0%}")

    for scenario, rows in results.items():
        print(f"\n## {scenario}: batches of {args.size}, {args.batches} per prevalence per split, {args.splits} split(s)")
        print(f"{'true p':>6} | {'MAE cc':>7} | " + " | ".join(f"{'MAE ' + m:>8}" for m in CORRECTED)
              + f" | {'MAE chosen':>8} | {'cover':>6} | {'width':>6} | {'out-of-range':>12}")
        for p in PREVALENCES:
            print(line(f"{p:.1f}", [r for r in rows if r["p"] == p]))
        print(line("all", rows))
        per_method = ", ".join(f"{m} {_mean(rows, f'{m}_cover'):.0%}" for m in CORRECTED)
        print(f"coverage of each estimator's interval: {per_method}")
    print("\nchosen: the estimator each split's detector chose on its validation set; cover, width and "
          "out-of-range are the chosen estimator's (an out-of-range interval is [0, 1]).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("reference", "trained", "both"), default="both",
                    help="reference: the share from a human reference alone (local LM); trained: a trained detector")
    ap.add_argument("--splits", type=int, default=2)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--size", type=int, default=500, help="batch size of the trained scenario")
    ap.add_argument("--lm-size", type=int, default=400, help="LM-scored documents per batch (lm.sample_size)")
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--stylometry", action="store_true", help="add the stylometric features to the detector")
    ap.add_argument("--reweight", action="store_true", help="reference scenario: re-weight the reference to the "
                    "batch's topic clusters (lm.topic_weights)")
    ap.add_argument("--no-speed", action="store_true", help="reference scenario: skip the scorer speed and the curve")
    args = ap.parse_args()
    if args.scenario in ("reference", "both"):
        from benchmarks import share_reference

        share_reference.run(args)
    if args.scenario in ("trained", "both"):
        trained_main(args)


def trained_main(args) -> None:
    rows = detector_set()
    merged: dict[str, list[dict]] = {}
    started = time.monotonic()
    for split in range(args.splits):
        for scenario, r in run_split(rows, split, args).items():
            merged.setdefault(scenario, []).extend(r)
    report(merged, args)
    print(f"\n({time.monotonic() - started:.0f} s; chosen estimator per split: "
          f"{sorted({r['chosen'] for rows in merged.values() for r in rows})})")


if __name__ == "__main__":
    main()
