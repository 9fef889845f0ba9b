"""Throughput of the full check: ingest -> indicators -> drift -> MLflow log, on N documents of 20-200 words.

Each N runs in a fresh subprocess (so peak RSS is that run's own), through the real ``check_incoming_data``
flow (ephemeral Prefect API, SQLite MLflow store in a temporary folder), after a warm-up check that pays
Prefect's one-time start. Documents are distinct, 20-200 words each, made of random Austen sentences
(``monitors.demo.corpus.distinct_documents``), written to one JSONL file first (not timed). No detector is registered: the synthetic share is issue 4's and runs on the
sample anyway. Prints the median of --repeats runs, docs/s, and peak RSS of the main process and of its
largest child process (a shard worker, or Prefect's ephemeral API server, which is the larger here). ``--evidently`` also times Evidently's TextEvals + drift alone on 100 k documents.

    .venv/bin/python benchmarks/check_throughput.py --docs 100000 1000000 --repeats 3 --evidently
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _sentences() -> list[str]:
    from monitors.demo.corpus import austen_paragraphs, sentences

    return sentences([p["text"] for p in austen_paragraphs()])


def _documents(n: int, rng: random.Random) -> list[str]:
    from monitors.demo.corpus import distinct_documents

    return distinct_documents(_sentences(), n, rng)


def write_batch(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n, 100_000):
            for i, text in enumerate(_documents(min(100_000, n - start), rng), start=start):
                fh.write(json.dumps({"id": f"doc-{seed}-{i}", "text": text, "created_at": "2023-03-01"}) + "\n")


def one(n: int, workdir: Path, batch: Path) -> dict:
    """Runs in its own process: reference, warm-up, then the timed check."""
    from flows.check import check_incoming_data
    from flows.reference import build_reference_flow
    from monitors.config import Settings
    from monitors.adapters.runtime import prepare

    settings = Settings(state_dir=workdir / "state", dataset="bench")
    rt = prepare(settings)
    ref = workdir / "reference.jsonl"
    write_batch(ref, 3000, seed=1)
    build_reference_flow(str(ref), "bench", settings, rt)
    small = workdir / "warmup.jsonl"
    write_batch(small, 500, seed=2)
    check_incoming_data(str(small), "bench", settings, rt, batch_name="warmup")
    started = time.perf_counter()
    result = check_incoming_data(str(batch), "bench", settings, rt, batch_name=batch.name)
    seconds = time.perf_counter() - started
    assert result.records == n, (result.records, n)
    return {"seconds": seconds, "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def evidently_alone(n: int) -> float:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import TextLength, WordCount
    from evidently.presets import DataDriftPreset, TextEvals

    rng = random.Random(4)
    cur = pd.DataFrame({"text": _documents(n, rng)})
    ref = pd.DataFrame({"text": _documents(n, rng)})
    started = time.perf_counter()
    dd = DataDefinition(text_columns=["text"])
    descs = [TextLength("text", alias="length"), WordCount("text", alias="words")]
    cur_ds, ref_ds = (Dataset.from_pandas(f, data_definition=dd, descriptors=descs) for f in (cur, ref))
    Report([TextEvals(), DataDriftPreset()]).run(current_data=cur_ds, reference_data=ref_ds)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--evidently", action="store_true", help="also time Evidently TextEvals + drift alone on 100 k docs")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.workdir), Path(args.batch))))
        return
    print(f"{'docs':>9} {'median s':>9} {'docs/s':>9} {'RSS main MB':>12} {'RSS children MB':>16}  (median of {args.repeats}; "
          f"{os.cpu_count()} CPUs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        for n in args.docs:
            batch = Path(tmp) / f"batch-{n}.jsonl"
            write_batch(batch, n, seed=3)
            runs = []
            for r in range(args.repeats):
                work = Path(tmp) / f"run-{n}-{r}"
                work.mkdir()
                out = subprocess.run([sys.executable, __file__, "--one", str(n), "--workdir", str(work), "--batch", str(batch)],
                                     capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"run failed:\n{out.stderr[-3000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            med = statistics.median(r["seconds"] for r in runs)
            each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            print(f"{n:>9} {med:>9.2f} {n / med:>9.0f} {max(r['rss_main_mb'] for r in runs):>12.0f} "
                  f"{max(r['rss_worker_mb'] for r in runs):>16.0f}   runs (s): {each}", flush=True)
            batch.unlink()
    if args.evidently:
        times = [evidently_alone(100_000) for _ in range(args.repeats)]
        med = statistics.median(times)
        print(f"Evidently TextEvals + drift alone, 100000 docs vs 100000: median {med:.1f} s ({100_000 / med:.0f} docs/s)", flush=True)


if __name__ == "__main__":
    main()
