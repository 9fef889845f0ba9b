"""The run history: filters and the CSV form of `collapse-monitor history`. Pure: rows in, rows out."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone
from typing import Any

from monitors.core.numbers import parse_duration
from monitors.core.results import KEY_INDICATORS
from monitors.core.rules import SEVERITIES
from monitors.core.schema import Tag, is_alert_tag

STATES = ("pending", "firing", "resolved")


def since_ms(text: str, now: float | None = None) -> int:
    """Epoch milliseconds of ``--since``: a duration back from now (``7d``, ``12h``) or an ISO date/time (UTC)."""
    now = time.time() if now is None else now
    try:
        return int((now - parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is neither a duration (7d, 12h, 30m) nor an ISO date (2026-11-01, "
                         f"2026-11-01T06:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def select(rows: list[dict[str, Any]], *, since: int | None = None, severity: str | None = None,
           state: str | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """Rows (newest first) started at or after ``since`` (ms), whose firing alerts reach ``severity``, that have
    an alert in ``state``; at most ``last`` of them."""
    out = []
    for row in rows:
        if since is not None and row["started"] < since:
            continue
        if severity is not None and (row["max_severity"] not in SEVERITIES
                                     or SEVERITIES.index(row["max_severity"]) < SEVERITIES.index(severity)):
            continue
        if state is not None and state not in row.get("alert_states", {}).values():
            continue
        out.append(row)
    return out[:last] if last else out


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per run: identity, the key indicators, the alerts by state."""
    buf = io.StringIO()
    cols = ["started_utc", "dataset", "batch", "sequence", "run_id", "max_severity", *KEY_INDICATORS,
            "firing", "pending", "resolved"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        states = row.get("alert_states", {})
        w.writerow([
            datetime.fromtimestamp(row["started"] / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            row["dataset"], row["batch"], row.get("sequence", ""), row["run_id"], row["max_severity"],
            *[("" if row["metrics"].get(k) is None else f"{row['metrics'][k]:.6g}") for k in KEY_INDICATORS],
            *[" ".join(sorted(r for r, s in states.items() if s == st)) for st in ("firing", "pending", "resolved")],
        ])
    return buf.getvalue()


def history_row(run_id: str, experiment_id: str, started: int, status: str, metrics: dict[str, float],
                tags: dict[str, str]) -> dict[str, Any]:
    """One run as a flat history row (what ``history --json`` prints and the report reads)."""
    states = {k.removeprefix(Tag.ALERT): v for k, v in tags.items() if is_alert_tag(k)}
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "dataset": tags.get(Tag.DATASET),
        "batch": tags.get(Tag.BATCH),
        "sequence": int(tags.get(Tag.SEQUENCE, "-1")),
        "started": started,
        "status": status,
        "metrics": dict(metrics),
        "alert_states": states,
        "alerts": sorted(k for k, v in states.items() if v == "firing"),
        "max_severity": tags.get(Tag.MAX_SEVERITY, "none"),
        "description": tags.get(Tag.NOTE, ""),
        "tags": {k: v for k, v in tags.items() if k.startswith("collapse.") and "." not in k[len("collapse."):]},
    }
