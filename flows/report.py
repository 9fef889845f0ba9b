"""``collapse-monitor report``: the trend report of a dataset, from MLflow, written to a folder and logged as
the artifacts of a ``report`` run in the dataset's experiment."""

from __future__ import annotations

from pathlib import Path

from monitors.adapters import html_report as report
from monitors.adapters.gx_rules import load_rules
from monitors.adapters.tracking import MlflowTracker
from monitors.config import Settings
from monitors.core.errors import UserError
from monitors.core.schema import Tag


def run_url_for(tracking_uri: str, ui_url: str):
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui_url.rstrip("/")
    return lambda row: f"{base}/#/experiments/{row['experiment_id']}/runs/{row['run_id']}"


def build_report(tracker: MlflowTracker, settings: Settings, dataset: str, out: Path, run_url) -> tuple[Path, str, int]:
    """Render the report into ``out`` and log it; returns (page, report run id, checks shown)."""
    runs = list(reversed(tracker.history(dataset, None)))  # oldest first
    if not runs:
        raise UserError(f"dataset {dataset!r} has no checks yet in MLflow: nothing to report")
    latest: dict[str, dict] = {}
    for row in tracker.history(None, None, kind="probe"):  # newest first: the first of a version wins
        key = f"{row['tags'].get('collapse.model')}/{row['tags'].get('collapse.model_version')}"
        latest.setdefault(key, row)
    probes: dict[str, list[dict]] = {}
    for row in latest.values():
        probes.setdefault(row["tags"].get(Tag.MODEL, "?"), []).append(row)
    rules = list(load_rules(settings.rules_path).rules)
    filters = tracker.history(dataset, None, kind="filter")  # newest first
    page = report.render(dataset, runs, rules, probes, run_url, out, filters)
    run_id = tracker.log_report(dataset, out, f"Trend report of {len(runs)} checks and {len(latest)} probed model "
                                              f"versions")
    return page, run_id, len(runs)
