"""Probe-set files: read rows (JSONL, optionally gzipped, CSV or Parquet), write them, load and check a probe set."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from monitors.core.errors import InputError
from monitors.adapters.files import atomic_writer
from monitors.core import memorization
from monitors.core.probes import SLICES, ProbeSet, _text_of


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL (optionally .gz), CSV or Parquet file; a bad line raises naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if name.endswith((".csv", ".csv.gz")):
                return list(csv.DictReader(fh))
            rows = []
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}, line {n}: a JSON object is expected, not {type(row).__name__}")
                rows.append(row)
            return rows
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None


def write_jsonl(rows: Iterable[dict[str, Any]], out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out) as fh:  # a full disk leaves no half-written probe set
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def load_probe_set(path: str | Path, kind: str) -> ProbeSet:
    """Read and check a probe set; every problem names the file and record."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise InputError(f"probe set {path} is empty; build one with `collapse-monitor probes build`")
    for n, row in enumerate(rows, 1):
        where = f"probe set {path}, record {n}"
        _text_of(row, where, "text")
        if row.get("slice") not in SLICES:
            raise InputError(f"{where}: slice {row.get('slice')!r} is not one of {SLICES}")
        if kind == "classifier" and row.get("label") in (None, ""):
            raise InputError(f"{where}: no 'label'; a classifier is probed on labelled examples")
    present = {r["slice"] for r in rows}
    if not {"head", "tail"} <= present:
        raise InputError(f"probe set {path} needs head and tail examples (has {sorted(present)}): the tail is "
                         f"compared with the head")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ProbeSet(str(path), digest, tuple(rows))


def load_memorization(plan: memorization.Plan) -> memorization.Inputs:
    """Read the memorization probe's files (training records, held-out records, canaries) and digest them with
    the settings: results are compared across model versions only on the same digest."""
    plan.check()
    parts: list[str | bytes] = [json.dumps(plan.settings(), sort_keys=True)]
    read = {}
    for what, path in (("training", plan.training), ("heldout", plan.heldout), ("canaries", plan.canaries)):
        if path is None:
            parts.append(f"no {what}")
            continue
        rows = read_rows(path)
        if what != "canaries" and not any(isinstance(r.get("text"), str) and r["text"].strip() for r in rows):
            raise InputError(f"{what} records {path}: no 'text' to probe with")
        read[what] = rows
        parts.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    canaries = memorization.parse_canaries(read["canaries"], str(plan.canaries)) if "canaries" in read else None
    return memorization.Inputs(plan, tuple(read["training"]), tuple(read["heldout"]) if "heldout" in read else None,
                               tuple(canaries) if canaries else None, memorization.digest(parts))
