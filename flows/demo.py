"""``collapse-monitor demo``: the whole job on embedded defaults, on a simulated collapsing data stream,
then model lineages audited on long-tail probes (:mod:`flows.demo_probes`).

A human reference is built from Austen's novels; then batches arrive in which text from a recursively
retrained generator (generation g is fitted on generation g-1's output) replaces more and more of the
human text. Each batch goes through the real ``check_incoming_data`` flow and becomes an MLflow run.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from flows.check import check_incoming_data
from flows.demo_probes import run_probe_demo
from flows.demo_share import run_share_demo
from flows.reference import build_reference_flow
from monitors.adapters.files import atomic_writer
from monitors.adapters.runtime import Runtime
from monitors.adapters.tracking import open_tracker
from monitors.config import Settings
from monitors.core.detector import data_hash, train_detector
from monitors.core.results import CheckResult, ProbeResult
from monitors.demo.corpus import austen_paragraphs
from monitors.demo.simulate import recursive_generations

DATASET = "demo"
DETECTOR = "collapse-demo-detector"  # never the production detector's name: the demo must not replace it


@dataclass(frozen=True)
class Plan:
    shares: tuple[float, ...]  # true synthetic share of each batch
    batch_docs: int
    reference_docs: int = 3000
    generator_docs: int = 1500
    detector_docs: int = 600
    refit_docs: int = 300


FULL = Plan(shares=(0.0, 0.0, 0.1, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9), batch_docs=300)
QUICK = Plan(shares=(0.0, 0.15, 0.4, 0.65, 0.9), batch_docs=200)


def _progress(msg: str, started: float) -> None:
    print(f"[{time.monotonic() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)


def _write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")


def _dated(rng: random.Random, start: date, end: date) -> str:
    return (start + timedelta(days=rng.randrange((end - start).days))).isoformat()


def run_demo(settings: Settings, runtime: Runtime, quick: bool = False
             ) -> tuple[list[tuple[float, CheckResult]], dict[tuple[str, str], list[ProbeResult]],
                        list[tuple[float, CheckResult]]]:
    """The stream's checks, the probed lineages, and (full demo only) the share from human text alone."""
    plan = QUICK if quick else FULL
    started = time.monotonic()
    rng = random.Random(7)
    work = settings.state_path / "demo"
    user_settings = settings
    # The stream's share comes from the demo detector, so its reference needs no LM scores (a minute saved);
    # the last part shows the share without a detector.
    settings = settings.model_copy(update={
        "detector": settings.detector.model_copy(update={"model_uri": f"models:/{DETECTOR}@production"}),
        "lm": settings.lm.model_copy(update={"enabled": False})})

    paragraphs = austen_paragraphs()
    rng.shuffle(paragraphs)
    cut = [plan.reference_docs, plan.generator_docs, plan.detector_docs]
    reference, gen_train, det_human = (paragraphs[sum(cut[:i]):sum(cut[:i + 1])] for i in range(3))
    pool = paragraphs[sum(cut):]
    _progress(f"loaded {len(paragraphs)} human paragraphs (Jane Austen's novels, public domain)", started)

    ref_file = work / "reference.jsonl"
    _write_jsonl(ref_file, [{"id": p["id"], "text": p["text"], "source": p["book"],
                             "created_at": _dated(rng, date(2015, 1, 1), date(2023, 6, 1))} for p in reference])
    ref_run, _, _ = build_reference_flow(str(ref_file), DATASET, settings, runtime)
    _progress(f"built the human reference from {len(reference)} paragraphs (MLflow run {ref_run})", started)

    generations = recursive_generations([p["text"] for p in gen_train], len(plan.shares), plan.refit_docs, seed=11)
    _progress(f"trained a bigram generator and retrained it recursively on its own output, {len(plan.shares)} generations", started)

    human_texts = [p["text"] for p in det_human]
    synthetic_texts = generations[1].sample(len(human_texts), rng)
    detector = train_detector(human_texts, synthetic_texts, seed=0)
    tracker = open_tracker(runtime)
    version = tracker.register_detector(
        detector, scope=DATASET, name=DETECTOR, alias="production",
        data={"human": "austen-demo-split", "synthetic": "bigram-generation-1",
              "human_sha256": data_hash(human_texts), "synthetic_sha256": data_hash(synthetic_texts)})
    m = detector.metrics()
    _progress(f"registered detector {DETECTOR} v{version}: held-out ROC AUC {m['roc_auc']:.3f}, "
              f"TPR {m['tpr']:.3f}, FPR {m['fpr']:.3f}, quantifier {detector.method}", started)

    results = []
    next_human = 0
    for i, share in enumerate(plan.shares):
        n_syn = round(share * plan.batch_docs)
        humans = pool[next_human:next_human + plan.batch_docs - n_syn]
        next_human += len(humans)
        rows = [{"id": p["id"], "text": p["text"], "source": p["book"],
                 "created_at": _dated(rng, date(2016, 1, 1), date(2023, 12, 1))} for p in humans]
        model = generations[min(i, len(generations) - 1)]
        rows += [{"id": f"gen{i}-{j:05d}", "text": t, "source": "web-scrape",
                  "created_at": _dated(rng, date(2024, 2, 1), date(2026, 11, 1))}
                 for j, t in enumerate(model.sample(n_syn, rng))]
        # Some sources declare what they are: those records are counted exactly, not estimated.
        for row in rows:
            if rng.random() < 0.15:
                row["provenance"] = "synthetic" if row["source"] == "web-scrape" else "human"
        rng.shuffle(rows)
        # Real streams carry broken records; the first batch shows that they are quarantined, not lost.
        junk = ['{"id": "broken-1", "text": "this line was cut in ha', json.dumps({"id": "empty-1", "text": "  "})] if i == 1 else []
        path = work / "batches" / f"batch-{i:02d}.jsonl"
        _write_jsonl(path, rows, junk)
        result = check_incoming_data(str(path), DATASET, settings, runtime, batch_name=path.name)
        firing = ", ".join(a.rule for a in result.alerts if a.status == "firing") or "none"
        _progress(f"batch {i + 1}/{len(plan.shares)}: true synthetic share {share:.2f}, alerts: {firing}", started)
        results.append((share, result))
    probed = run_probe_demo(settings, runtime, [p["text"] for p in reference], work,
                            lambda msg: _progress(msg, started), quick=quick)
    shared = [] if quick else run_share_demo(user_settings, runtime, work, _write_jsonl,
                                             lambda msg: _progress(msg, started))
    return results, probed, shared


def table(results: list[tuple[float, CheckResult]]) -> str:
    """The demo's closing table: truth against estimate, and the collapse indicators with alerts."""
    def f(v, width=5):
        return "n/a".rjust(width) if v is None or v != v else f"{v:.2f}".rjust(width)
    head = (f"{'batch':<14} {'true syn':>8} {'est. syn [95% CI]':>18} {'human':>5} "
            f"{'corpus':>6} {'dist-2':>6} {'rare cov':>8} {'compr.':>6}  alerts (severity)")
    lines = [head, "-" * len(head)]
    for share, r in results:
        s, ind = r.share, r.indicators
        ci = f"{f(s.estimate, 4)} [{f(s.low, 4)}-{f(s.high, 4)}]" if s.estimate is not None else "n/a"
        shown = [a for a in r.alerts if a.status in ("firing", "pending")]
        alerts = ", ".join(f"{a.rule} ({a.severity[0].upper()}{', pending' if a.status == 'pending' else ''})"
                           for a in shown) or "-"
        lines.append(f"{Path(r.batch_file).stem:<14} {share:>8.2f} {ci:>18} {f(ind.get('human.share'))} "
                     f"{f(ind.get('corpus.human_share'), 6)} {f(ind.get('tail.distinct_2.ratio'), 6)} {f(ind.get('tail.rare_coverage.ratio'), 8)} "
                     f"{f(ind.get('mode.compression_ratio.ratio'), 6)}  {alerts}")
    lines.append("human: the batch's estimated human share; corpus: the human share of every batch so far (floor 0.30). "
                 "dist-2, rare cov, compr.: distinct bigrams per window, coverage of the reference's rare words, "
                 "compression ratio; each as a ratio to the human reference (1.00 = like the reference). "
                 "Severity: W warning, C critical; pending: breached, but a warning fires only at its second breaching run.")
    return "\n".join(lines)
