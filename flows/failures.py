"""The open ``check_failed`` / ``probe_failed`` alerts of a state directory: files under ``alerts/``.

Apart from :mod:`flows.tasks` so that ``alerts list`` reads them without importing Prefect."""

from __future__ import annotations

import json
from pathlib import Path

from monitors.config import Settings
from monitors.core import alerting


def _failure_file(settings: Settings, scope: str, rule: str) -> Path:
    return settings.state_path / "alerts" / f"{rule}-{alerting.fingerprint(rule, scope)}.json"


def _read_failure(path: Path) -> dict:
    """An open failure alert as remembered; {} when its file is unreadable (a crash or a full disk cut it)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def open_failures(settings: Settings) -> list[dict]:
    """The open check_failed / probe_failed alerts of this state directory, as alert states (``failure`` set)."""
    keys = ("fingerprint", "rule", "severity", "dataset", "summary", "status", "since")
    out = []
    for path in sorted((settings.state_path / "alerts").glob("*_failed-*.json")):
        note = _read_failure(path)
        if all(k in note for k in keys):  # else cut short by a crash: the dataset's next check resolves it
            out.append({k: note[k] for k in keys} | {"breaches": None, "failure": True})
    return out
