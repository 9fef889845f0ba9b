"""The filter's speed, memory and accuracy (issue 15): ``collapse-monitor filter`` on 100 k and 1 M documents.

**Data.** Distinct documents of 20-200 words (not one paragraph repeated): human ones are sentences drawn from
Austen paragraphs, machine ones the same from the demo's bigram generator's text; 70 % human. Their reference is
1,500 documents made the same way from other Austen sentences.

**Speed.** (a) The fast stage alone: its scorer (trained as the command trains it) over every document, in
two processes, from texts in memory: docs/s. (b) The whole command (``--lm-budget 0``: reading, the same checks
as ``check``, training, scoring, writing the three files, the MLflow run), wall seconds, in a fresh process;
peak RSS is the largest single process's (the command or one of its shard workers: ``RUSAGE_CHILDREN``).

**Accuracy**, on labelled text held out of everything the filter was built and tuned on: 4,000 Austen paragraphs
(human) and the machine-written Austen-domain continuations shipped in ``monitors/data`` (SmolLM2-135M, two
temperatures; Qwen2.5-Coder-0.5B, a generator family used nowhere else in this project), mixed into one batch
and filtered at ``--max-human-loss`` 0.05 and 0.02, with the fast stage alone and with the LM stage. The
human loss is the share of the 4,000 human paragraphs flagged (its 95 % interval is about +-0.007).

    PYTHONPATH=. .venv/bin/python benchmarks/filter_throughput.py [--sizes 100000 1000000] [--no-lm] [--speed-only | --accuracy-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
def _cli(state: Path, *argv: str, lm: bool) -> tuple[float, int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLLAPSE_MONITOR_LM__ENABLED": "true" if lm else "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("MLFLOW_TRACKING_URI", None)
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run([sys.executable, '-m', 'flows.cli', *sys.argv[1:]], capture_output=True, text=True); "
            "w = time.perf_counter() - t; r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
            "print(w, r, p.returncode); print(p.stdout, end=''); sys.stderr.write(p.stderr)")
    out = subprocess.run([sys.executable, "-c", code, "--state-dir", str(state), *argv],
                         capture_output=True, text=True, env=env, cwd=state.parent)
    head, _, rest = out.stdout.partition("\n")
    wall, rss, rc = head.split()
    if int(rc) != 0:
        raise SystemExit(f"filter failed ({rc}): {out.stderr[-3000:]}")
    return float(wall), int(rss), json.loads(rest.strip().splitlines()[-1]), out.stderr


def _write(path: Path, rows) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def _fast_stage_rate(train, cal_sample, docs: list[str]) -> float:
    """docs/s of the fast stage over ``docs`` in two processes (texts in memory; what the shards' scoring costs)."""
    from concurrent.futures import ProcessPoolExecutor

    from monitors.core import textfilter as tf
    from monitors.core.profile import stable_hash

    scorer = tf.train_fast(train, cal_sample)
    half = len(docs) // 2
    chunks = [docs[:half], docs[half:]]
    hashes = [[stable_hash(f"{i}-{j}") for j in range(len(c))] for i, c in enumerate(chunks)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(scorer.score, [c[:100] for c in chunks], [h[:100] for h in hashes]))  # workers up
        t = time.perf_counter()
        list(pool.map(scorer.score, chunks, hashes))
        return len(docs) / (time.perf_counter() - t)


def accuracy(tmp: Path, state: Path, reference: list[str], test_human: list[str], env_lm: bool) -> None:
    """Human loss and recall per generator on held-out labelled text (see the module docstring)."""
    from monitors.demo.corpus import detector_set

    _write(tmp / "ref.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(reference)])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "--state-dir", str(state), "reference", "build", "--input",
                    str(tmp / "ref.jsonl"), "--dataset", "bench"], check=True, capture_output=True, cwd=tmp,
                   env={**os.environ, "PYTHONPATH": str(REPO), "COLLAPSE_MONITOR_LM__ENABLED": str(env_lm).lower()})
    print(f"reference: 1,500 Austen paragraphs ({time.perf_counter() - t:.0f} s, LM {'on' if env_lm else 'off'})", flush=True)

    machine = [r for r in detector_set() if r["label"] == "synthetic" and r.get("domain") == "austen"]
    with gzip.open(REPO / "monitors/data/heldout_family.jsonl.gz", "rt", encoding="utf-8") as fh:
        machine += [r for r in map(json.loads, fh) if r.get("domain") == "austen"]
    rows = ([{"id": f"h{i}", "text": t, "label": "human", "generator": "human"} for i, t in enumerate(test_human)]
            + [{"id": f"m{i}", "text": r["text"], "label": "synthetic", "generator": r["generator"]}
               for i, r in enumerate(machine)])
    random.Random(1).shuffle(rows)
    acc = _write(tmp / "labelled.jsonl", rows)
    by_gen = Counter(r["generator"] for r in rows)
    print(f"\naccuracy batch: {by_gen['human']} human paragraphs + "
          + ", ".join(f"{n} {g}" for g, n in sorted(by_gen.items()) if g != "human"), flush=True)
    print(f"{'max loss':>8} {'LM stage':>9} {'human loss':>10} " + " ".join(f"{g[:20]:>20}" for g in sorted(by_gen) if g != "human")
          + f" {'share before/after (true before)':>34}")
    true_share = 1 - by_gen["human"] / len(rows)
    for loss in (0.05, 0.02):
        for budget in ([0, 400] if env_lm else [0]):
            out = tmp / f"acc-{loss}-{budget}"
            _, _, res, _ = _cli(state, "filter", "--input", str(acc), "--out", str(out), "--dataset", "bench",
                                "--max-human-loss", str(loss), "--lm-budget", str(budget), "--json", lm=env_lm)
            flagged = Counter(json.loads(x)["generator"] for x in (out / "flagged.jsonl").open(encoding="utf-8"))
            rates = {g: flagged[g] / n for g, n in by_gen.items()}
            sb, sa = res["share_before"]["estimate"], res["share_after"]["estimate"]
            print(f"{loss:>8} {('budget ' + str(budget)) if budget else 'off':>9} {rates['human']:>10.4f} "
                  + " ".join(f"{rates[g]:>20.3f}" for g in sorted(by_gen) if g != "human")
                  + f" {sb if sb is None else round(sb, 3)!s:>12} / {sa if sa is None else round(sa, 3)!s:<8} ({true_share:.3f})",
                  flush=True)


def speed(args, tmp: Path, state: Path, test_human: list[str], pool_human: list[str], gen_train: list[str]) -> None:
    """Docs/s of the fast stage and of the whole command, peak RSS (see the module docstring)."""
    from monitors.core.profile import stable_hash
    from monitors.demo.corpus import distinct_documents, sentences
    from monitors.demo.simulate import recursive_generations

    # -- speed and memory ----------------------------------------------------------------------------------------
    gen = recursive_generations(gen_train[:400], 1, 3000, seed=5)[-1]
    machine_sent = sentences(gen.sample(3000, random.Random(5)))
    # the speed runs' documents are built from sentences of 5,000 Austen paragraphs; so is their reference, from
    # the same sentences (a reference and a batch of one source, as in use)
    human_sent = sentences(test_human + pool_human)
    speed_ref = distinct_documents(human_sent, 1500, random.Random(2))
    _write(tmp / "speed-ref.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(speed_ref)])
    subprocess.run([sys.executable, "-m", "flows.cli", "--state-dir", str(state), "reference", "build", "--input",
                    str(tmp / "speed-ref.jsonl"), "--dataset", "speed"], check=True, capture_output=True, cwd=tmp,
                   env={**os.environ, "PYTHONPATH": str(REPO), "COLLAPSE_MONITOR_LM__ENABLED": "false"})
    print(f"\n{'docs':>9} {'fast stage docs/s':>18} {'command wall s':>15} {'command docs/s':>15} {'peak RSS MB':>12} "
          f"{'kept':>8} {'flagged':>8} {'human loss':>10} {'recall':>7}")
    for n in args.sizes:
        rng = random.Random(n)
        path = tmp / f"batch-{n}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(n):
                human = rng.random() < 0.7
                text = distinct_documents(human_sent if human else machine_sent, 1, rng)[0]
                fh.write(json.dumps({"id": f"{'h' if human else 'm'}{i}", "text": text}) + "\n")
        texts = [json.loads(x)["text"] for x in path.open(encoding="utf-8")]
        assert len(set(texts)) > 0.99 * n, "documents must be distinct"
        rate = _fast_stage_rate([(stable_hash(x), x) for x in speed_ref], [(stable_hash(f"s{i}"), x) for i, x in enumerate(texts[:2000])], texts)
        del texts
        wall, rss_kb, res, _ = _cli(state, "filter", "--input", str(path), "--out", str(tmp / f"out-{n}"), "--dataset",
                                    "speed", "--lm-budget", "0", "--json", lm=False)
        flagged = Counter(line[8] for line in (tmp / f"out-{n}" / "flagged.jsonl").open(encoding="utf-8"))  # {"id": "h..
        humans = sum(1 for line in path.open(encoding="utf-8") if line[8] == "h")
        print(f"{n:>9} {rate:>18.0f} {wall:>15.1f} {n / wall:>15.0f} {rss_kb / 1024:>12.0f} {res['kept']:>8} "
              f"{res['flagged']:>8} {flagged['h'] / humans:>10.4f} {flagged['m'] / (n - humans):>7.3f}", flush=True)
        path.unlink()
        for p in (tmp / f"out-{n}").iterdir():
            p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--no-lm", action="store_true", help="skip the accuracy runs with the LM stage")
    ap.add_argument("--speed-only", action="store_true", help="skip the accuracy runs")
    ap.add_argument("--accuracy-only", action="store_true", help="skip the speed runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from monitors.demo.corpus import austen_paragraphs

    paras = [p["text"] for p in austen_paragraphs()]
    random.Random(7).shuffle(paras)
    reference, test_human, pool_human, gen_train = paras[:1500], paras[1500:5500], paras[5500:6500], paras[6500:]
    tmp = Path(tempfile.mkdtemp(prefix="cm-filter-bench-"))
    state = tmp / "state"
    env_lm = not args.no_lm
    if not args.speed_only:
        accuracy(tmp, state, reference, test_human, env_lm)

    if not args.accuracy_only:
        speed(args, tmp, state, test_human, pool_human, gen_train)
    print(f"\n(2 cores; {time.strftime('%Y-%m-%d')}; folder {tmp}{'' if args.keep else ', removed'})")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
