"""Open ``check_failed`` / ``probe_failed`` alerts, remembered as files under ``<state dir>/alerts/``.

A failed run logs nothing to MLflow (MLflow may be what failed), so its alert lives here until the scope's
next successful run resolves it. Reading needs neither Prefect nor MLflow: ``alerts list`` shows them cheaply.
On a full disk, when the JSON cannot be written, an empty ``.unsaved`` marker (a name costs no data block)
still says that an alert is open.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from monitors.adapters.files import atomic_write_json, describe
from monitors.core import alerting

_KEYS = ("fingerprint", "rule", "severity", "dataset", "summary", "status", "since")


class FailureStore:
    def __init__(self, state_path: Path):
        self.folder = Path(state_path) / "alerts"

    def path(self, scope: str, rule: str) -> Path:
        return self.folder / f"{rule}-{alerting.fingerprint(rule, scope)}.json"

    @staticmethod
    def _marker(path: Path) -> Path:
        return path.with_suffix(".unsaved")

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """An open failure alert as remembered; {} when its file is unreadable (a crash or a full disk cut it)."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def since(self, scope: str, rule: str) -> float | None:
        """When the scope's open alert of this rule began, if one is open and readable."""
        return self.read(self.path(scope, rule)).get("since")

    def remember(self, scope: str, rule: str, note: dict[str, Any]) -> bool:
        """Keep the open alert; False when not even its marker could be written (the page must then say so).
        Raises nothing: a full disk must not stop the page that follows."""
        path = self.path(scope, rule)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, note)
            self._marker(path).unlink(missing_ok=True)
            return True
        except OSError as err:
            logging.getLogger(__name__).error("could not remember the open %s alert in %s: %s", rule, path, describe(err))
            try:
                self._marker(path).touch()
                return True
            except OSError:
                return False

    def forget(self, scope: str, rule: str) -> dict[str, Any] | None:
        """Close the scope's open alert of this rule: what was remembered ({} if unreadable), None if none was open."""
        path = self.path(scope, rule)
        marker = self._marker(path)
        if not path.exists() and not marker.exists():
            return None
        old = self.read(path)
        path.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        return old

    def open(self) -> list[dict[str, Any]]:
        """The open alerts of this state directory, as alert states (``failure`` set)."""
        out = []
        for path in sorted(self.folder.glob("*_failed-*.json")):
            note = self.read(path)
            if all(k in note for k in _KEYS):  # else cut short by a crash: the scope's next run resolves it
                out.append({k: note[k] for k in _KEYS} | {"breaches": None, "failure": True})
        for marker in sorted(self.folder.glob("*_failed-*.unsaved")):
            if marker.with_suffix(".json").exists():
                continue
            rule, fp = marker.stem.rsplit("-", 1)
            out.append({"fingerprint": fp, "rule": rule, "severity": "critical", "dataset": "?", "status": "firing",
                        "since": marker.stat().st_mtime, "breaches": None, "failure": True,
                        "summary": "a run failed and its details could not be saved (the disk was full); see the page "
                                   "on-call got"})
        return out
