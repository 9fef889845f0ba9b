"""Retention of Evidently's reports (issue 20, item 11): `collapse-monitor gc` deletes the drift reports of
checks older than `indicators.drift_keep_days` (or --keep-days) and keeps the runs, their metrics and alerts."""

import json
import time

from flows.cli import main
from monitors.adapters import runtime
from monitors.config import load_settings
from monitors.core.runrecord import RunRecord
from monitors.adapters.tracking import MlflowTracker


def _check(tracker, batch, days_ago):
    began = time.time() - days_ago * 86400
    req = RunRecord("news", batch, {"synthetic.share": 0.1}, {}, {},
                     {"drift/report.html.gz": b"x" * 5000, "drift/report.json.gz": b"{}", "alerts.json": []},
                     "d", started=began, finished=began + 20)
    return tracker.log_check(req)


def _drift_files(tracker, run_id):
    return sorted(f.path for f in tracker.client.list_artifacts(run_id, "drift"))


def test_gc_deletes_old_drift_reports_only(tmp_path, capsys, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT_KEEP_DAYS", "30")
    settings = load_settings(None).model_copy(update={"state_dir": state})
    rt = runtime.prepare(settings)
    tracker = MlflowTracker(runtime.mlflow_client(rt), rt.artifact_root)
    old, recent = _check(tracker, "old.jsonl", 45), _check(tracker, "recent.jsonl", 2)

    assert main(["gc", "--state-dir", str(state), "--dry-run"]) == 0
    assert "would delete the drift reports of 1 check" in capsys.readouterr().out
    assert _drift_files(tracker, old) == ["drift/report.html.gz", "drift/report.json.gz"]

    assert main(["gc", "--state-dir", str(state), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["keep_days"] == 30 and [r["run_id"] for r in done["deleted"]] == [old] and done["bytes"] >= 5000
    assert _drift_files(tracker, old) == [] and len(_drift_files(tracker, recent)) == 2
    run = tracker.client.get_run(old)
    assert run.data.metrics["synthetic.share"] == 0.1 and "collapse.drift_report_deleted" in run.data.tags

    assert main(["gc", "--state-dir", str(state), "--keep-days", "1"]) == 0  # the option beats the setting
    assert "deleted the drift reports of 1 check" in capsys.readouterr().out
    assert _drift_files(tracker, recent) == []
