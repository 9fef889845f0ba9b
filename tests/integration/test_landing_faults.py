"""Issue 18, item 1, through the real `monitor_data` flow: a failure after a check's run is logged (a 0-byte
check_failed file, a channel whose sender raises) never releases the landing claim, so no file is counted twice;
a typo in a channel URL stops the run before it claims anything."""

import http.client

import pytest
from mlflow import MlflowClient

from flows import oncall
from flows.cli import main
from flows.scheduled import monitor_data
from monitors.core import alerting
from monitors.adapters import delivery, ledger
from monitors.config import load_settings
from monitors.core.errors import ConfigError
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


def _rows(austen, start, n, tag):
    return [{"id": f"{tag}-{i}", "text": p["text"], "created_at": "2020-01-01"} for i, p in enumerate(austen[start:start + n])]


def _batches(isolated) -> list[str]:
    client = MlflowClient(f"sqlite:///{isolated}/.collapse-monitor/mlflow.db")
    exp = client.get_experiment_by_name("collapse-monitor/land")
    return sorted(r.data.tags["collapse.batch"] for r in client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'"))


def test_failures_after_logging_never_recount_a_landing_file(isolated, austen, monkeypatch, capsys, receiver):
    monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__SETTLE_SECONDS", "0")
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT", "false")
    ref = write_jsonl(isolated / "ref.jsonl", _rows(austen, 0, 400, "ref"))
    assert main(["reference", "build", "--input", str(ref), "--dataset", "land"]) == 0
    capsys.readouterr()
    settings = load_settings(None)
    landing = isolated / "landing"
    failed_file = settings.state_path / "alerts" / f"check_failed-{alerting.fingerprint('check_failed', 'land')}.json"

    # 1. `: > STATE/alerts/check_failed-<fp>.json` (a crash or a full disk cut it): resolved, not a crash.
    # The batch carries item 2's hostile records too: each is quarantined, none kills the check.
    hostile = ['{"id": "deep", "text": "fine", "x": ' + "[" * 10_000 + "]" * 10_000 + "}",
               '{"id": "sur", "text": "half a pair \\ud800 of a surrogate"}',
               {"id": "pl", "text": "a text that is fine", "provenance": ["human"]},
               {"id": "pd", "text": "a text that is fine", "provenance": {}}]
    write_jsonl(landing / "a.jsonl", _rows(austen, 1000, 40, "a") + hostile)
    failed_file.parent.mkdir(parents=True, exist_ok=True)
    failed_file.write_text("")
    first = monitor_data(str(landing), "land")
    assert [x["path"].rsplit("/", 1)[1] for x in first["checked"]] == ["a.jsonl"] and first["failed"] == []
    assert not failed_file.exists()

    # 2. A channel whose sender raises something other than OSError (urllib's InvalidURL did) after the run is
    # logged: the delivery waits in the outbox, the file stays counted.
    def broken(url, payload, timeout):
        raise http.client.InvalidURL("nonnumeric port: '18o81'")

    monkeypatch.setattr(delivery, "_post_json", broken)
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://KEY@127.0.0.1:{receiver.port}/x")
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DELIVERY_BACKOFF_SECONDS", "0")
    oncall.report_failure(load_settings(None), "land", "an earlier batch", RuntimeError("earlier"))  # an open alert
    write_jsonl(landing / "b.jsonl", _rows(austen, 1100, 40, "b"))
    second = monitor_data(str(landing), "land")
    assert [x["path"].rsplit("/", 1)[1] for x in second["checked"]] == ["b.jsonl"] and second["failed"] == []
    pending = delivery.Outbox(settings.state_path / "outbox").pending()
    assert {p["notification"]["kind"] for p in pending} >= {"resolved"}
    assert all("InvalidURL" in p["last_error"] and "KEY" not in p["last_error"] for p in pending if p["attempts"])

    # 3. The repro, a typo in the port: rejected when settings load, before any file is claimed.
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", "pdevents+http://KEY@127.0.0.1:18o81/x")
    write_jsonl(landing / "c.jsonl", _rows(austen, 1200, 40, "c"))
    with pytest.raises(ConfigError, match="COLLAPSE_MONITOR_ALERT_URLS"):
        monitor_data(str(landing), "land")
    monkeypatch.delenv("COLLAPSE_MONITOR_ALERT_URLS")
    again = monitor_data(str(landing), "land")
    assert [x["path"].rsplit("/", 1)[1] for x in again["checked"]] == ["c.jsonl"] and again["already_counted"] == 2

    assert _batches(isolated) == ["a.jsonl", "b.jsonl", "c.jsonl"], "each file counted once"
    client = MlflowClient(f"sqlite:///{isolated}/.collapse-monitor/mlflow.db")
    a_run = client.get_run(first["checked"][0]["run_id"])
    assert (a_run.data.metrics["batch.records"], a_run.data.metrics["batch.quarantined"]) == (40, 4)
    book = ledger.Ledger(settings.ledger_url())
    assert sorted(e["path"].rsplit("/", 1)[1] for e in book.entries("land") if e["status"] == "done") == [
        "a.jsonl", "b.jsonl", "c.jsonl"]
    book.close()
