"""A local spool for check results that could not reach MLflow, replayed by a later run.

A check whose MLflow logging fails (the server went away mid-run) writes everything ``log_check`` needs into
``<state dir>/spool/<id>/``: ``request.json`` (dataset, batch, metrics, params, tags, description) and its
artifacts as files. The next check replays the spool before it reads any state from MLflow, oldest first.
Every check run carries the tag ``collapse.spool_id``, so a replay first looks for a finished run with that
id (the original attempt may have got through after all, or an earlier replay may have): nothing is logged
twice, and a half-logged run from the failed attempt is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from monitors.core.runrecord import RunRecord
from monitors.core.schema import Tag
from monitors.adapters.files import atomic_copy, atomic_write_bytes, atomic_write_text
from monitors.core.numbers import finite_or_none

SPOOL_TAG = Tag.SPOOL_ID


def _nan_safe(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in metrics.items()}


def save(folder: Path, req: RunRecord) -> Path:
    """Write the request under ``folder/<spool_id>`` (atomically: a half-written spool entry is never read).

    When a write fails (a full disk) the half-written entry is removed and the ``OSError`` (naming the file) is
    raised: the caller must then say that the results were not recorded."""
    final = Path(folder) / req.spool_id
    tmp = Path(folder) / f".{req.spool_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "artifacts").mkdir(parents=True)
        kinds = {}
        for i, (name, content) in enumerate(req.artifacts.items()):
            target = tmp / "artifacts" / f"{i:03d}"
            if isinstance(content, Path):
                atomic_copy(content, target)
                kinds[name] = ["file", target.name]
            elif isinstance(content, bytes):
                atomic_write_bytes(target, content)
                kinds[name] = ["bytes", target.name]
            elif isinstance(content, str):
                atomic_write_text(target, content)
                kinds[name] = ["text", target.name]
            else:
                atomic_write_text(target, json.dumps(content))
                kinds[name] = ["json", target.name]
        atomic_write_text(tmp / "request.json", json.dumps({
            "spooled": time.time(), "spool_id": req.spool_id, "dataset": req.dataset, "batch_name": req.batch_name,
            "metrics": _nan_safe(req.metrics), "params": {k: str(v) for k, v in req.params.items()}, "tags": req.tags,
            "description": req.description, "artifacts": kinds, "kind": req.kind, "run_name": req.run_name,
            "started": req.started, "finished": req.finished or time.time()}))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not keep what little it has
        raise
    return final


def load(entry: Path) -> RunRecord:
    raw = json.loads((entry / "request.json").read_text())
    artifacts: dict[str, Any] = {}
    for name, (kind, file) in raw["artifacts"].items():
        path = entry / "artifacts" / file
        artifacts[name] = {"file": lambda p=path: p, "bytes": path.read_bytes, "text": lambda p=path: p.read_text("utf-8"),
                           "json": lambda p=path: json.loads(p.read_text("utf-8"))}[kind]()
    metrics = {k: (float("nan") if v is None else v) for k, v in raw["metrics"].items()}
    return RunRecord(raw["dataset"], raw["batch_name"], metrics, raw["params"], raw["tags"], artifacts,
                      raw["description"], raw["spool_id"], raw.get("kind", "check"), raw.get("run_name", ""),
                      raw.get("started", 0.0), raw.get("finished", 0.0))


def entries(folder: Path) -> list[Path]:
    """Spooled requests, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "request.json").exists()]
    return sorted(found, key=_spooled_at)


def _spooled_at(entry: Path) -> float:
    """When an entry was spooled; 0 (first) for one that cannot be read, so that replaying it fails at once."""
    try:
        return float(json.loads((entry / "request.json").read_text())["spooled"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
