"""The demo's last part: the synthetic share from human text alone, with the local LM and no detector.

A reference is built from shipped human paragraphs (Python documentation and Austen); then two batches
go through the real ``check_incoming_data`` flow with no detector registered for the dataset: one of
human paragraphs only, one with 40 % SmolLM2-135M text of the same two domains. The share comes from
the LM's scores against the reference (method ``mpe-bbe``); nothing labelled as machine text is used.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from flows.check import check_incoming_data
from flows.reference import build_reference_flow
from monitors.adapters.runtime import Runtime
from monitors.config import Settings
from monitors.core.results import CheckResult
from monitors.demo.corpus import detector_set

DATASET = "demo-share"
BATCH = 250


def run_share_demo(settings: Settings, runtime: Runtime, work: Path, write_jsonl: Callable,
                   progress: Callable[[str], None]) -> list[tuple[float, CheckResult]]:
    # no detector for this dataset: the share must come from the reference alone
    settings = settings.model_copy(update={
        "detector": settings.detector.model_copy(update={"model_uri": "models:/collapse-demo-no-detector@none"})})
    rows = detector_set()
    random.Random(21).shuffle(rows)
    human = [r for r in rows if r["label"] == "human"]
    machine = [r for r in rows if r["generator"] == "smollm2-t0.8"]
    ref_file = work / "share" / "reference.jsonl"
    write_jsonl(ref_file, [{"id": r["id"], "text": r["text"], "created_at": "2020-01-01"} for r in human[:900]])
    ref_run, ref, _ = build_reference_flow(str(ref_file), DATASET, settings, runtime)
    if ref.lm is None:
        progress("the local LM is unavailable or off (lm.enabled): skipped the share from human text alone")
        return []
    progress(f"built reference {DATASET!r} from 900 human paragraphs; the local LM scored "
             f"{len(ref.lm.features)} of them (MLflow run {ref_run})")
    out = []
    batches = {0.0: (human[900:900 + BATCH], []), 0.4: (human[1150:1150 + 150], machine[:100])}
    for i, (share, (hum, mac)) in enumerate(batches.items()):
        batch = [{"id": r["id"], "text": r["text"], "created_at": "2021-01-01"} for r in hum + mac]
        random.Random(i).shuffle(batch)
        path = work / "share" / f"share-{i}.jsonl"
        write_jsonl(path, batch)
        result = check_incoming_data(str(path), DATASET, settings, runtime, batch_name=path.name)
        s = result.share
        progress(f"{path.name}: true synthetic share {share:.2f}, estimated from the reference alone "
                 + (f"{s.estimate:.2f} [{s.low:.2f}-{s.high:.2f}] ({s.method})" if s.estimate is not None
                    else f"n/a ({s.note})"))
        out.append((share, result))
    return out
