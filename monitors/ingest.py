"""Read a batch file (JSONL, Parquet, CSV) into records, quarantining what cannot be used.

Nothing a user sent is dropped silently: each unusable record becomes a quarantine entry with the file,
the line (or row), a reason and the record's first bytes, and is counted.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from monitors.config import Columns, IngestSettings
from monitors.errors import InputError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
PROVENANCE = {"human", "synthetic", "unknown"}
SHOWN_BYTES = 500


@dataclass
class Record:
    id: str
    text: str
    source: str | None
    created_at: date | None
    provenance: str | None


@dataclass
class Batch:
    path: str
    records: list[Record] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = FORMATS.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise InputError(f"{path}: unknown batch format {''.join(path.suffixes) or '(no extension)'}; "
                         f"use one of {', '.join(sorted(FORMATS))} (JSONL may be gzipped)")
    return fmt


def _parse_date(value: Any) -> date | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, (int, float)):  # epoch seconds
        return datetime.fromtimestamp(value, tz=timezone.utc).date()
    text = str(value).strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError(f"created_at {text[:40]!r} is not an ISO 8601 date") from None


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None, bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"invalid UTF-8 at byte {exc.start}", raw
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})", raw
                continue
            if not isinstance(obj, dict):
                yield lineno, None, f"a JSON {type(obj).__name__}, not an object", raw
                continue
            yield lineno, obj, None, raw


def _rows_frame(frame: pd.DataFrame) -> Iterator[tuple[int, dict | None, str | None, bytes]]:
    for rowno, obj in enumerate(frame.to_dict("records"), start=1):
        obj = {k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in obj.items()}
        yield rowno, obj, None, json.dumps(obj, default=str).encode("utf-8")


def read_batch(path: str | Path, columns: Columns, settings: IngestSettings) -> Batch:
    """Read one batch file. Raises :class:`InputError` only when the file itself cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such batch file")
    fmt = _format(path)
    try:
        if fmt == "jsonl":
            rows = _rows_jsonl(path)
        elif fmt == "parquet":
            rows = _rows_frame(pd.read_parquet(path))
        else:
            rows = _rows_frame(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))
        return _validate(path, rows, columns, settings)
    except (OSError, ValueError) as exc:  # unreadable container: the whole file is at fault
        raise InputError(f"{path}: cannot be read as {fmt}: {exc}") from None


def _validate(path: Path, rows, columns: Columns, settings: IngestSettings) -> Batch:
    batch = Batch(path=str(path))
    seen: set[str] = set()

    def quarantine(lineno: int, reason: str, raw: bytes) -> None:
        shown = raw[:SHOWN_BYTES].decode("utf-8", errors="replace")
        batch.quarantine.append({"file": str(path), "line": lineno, "reason": reason, "record": shown,
                                 "truncated": len(raw) > SHOWN_BYTES})

    for lineno, obj, problem, raw in rows:
        if problem:
            quarantine(lineno, problem, raw)
            continue
        text = obj.get(columns.text)
        if text is None:
            quarantine(lineno, f"missing text (column {columns.text!r})", raw)
            continue
        if not isinstance(text, str):
            quarantine(lineno, f"text is a {type(text).__name__}, not a string", raw)
            continue
        if not text.strip():
            quarantine(lineno, "empty text", raw)
            continue
        if len(text) > settings.max_text_chars:
            quarantine(lineno, f"text has {len(text)} characters, over ingest.max_text_chars={settings.max_text_chars}", raw)
            continue
        raw_id = obj.get(columns.id)
        doc_id = f"{path.name}:{lineno}" if raw_id is None else str(raw_id)
        if doc_id in seen:
            quarantine(lineno, f"duplicate id {doc_id[:80]!r}", raw)
            continue
        try:
            created = _parse_date(obj.get(columns.created_at))
        except (ValueError, OverflowError, OSError) as exc:
            quarantine(lineno, str(exc), raw)
            continue
        provenance = obj.get(columns.provenance)
        if provenance is not None and provenance not in PROVENANCE:
            quarantine(lineno, f"provenance {str(provenance)[:40]!r} is not one of {sorted(PROVENANCE)}", raw)
            continue
        seen.add(doc_id)
        source = obj.get(columns.source)
        batch.records.append(Record(doc_id, text, None if source is None else str(source), created, provenance))
    return batch

