"""The landing zone through the real `monitor_data` flow (Prefect's ephemeral API, a temporary SQLite MLflow
store and ledger): reruns count nothing twice; a run that died after logging is recovered from MLflow, one that
died before is redone; a changed file is flagged; overlapping runs split the files; a bad file is retried."""

import threading
import time

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from flows.check import check_incoming_data
from flows.cli import main
from flows.scheduled import monitor_data
from monitors.adapters import ledger, runtime
from monitors.config import load_settings
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


def _rows(austen, start, n, tag):
    return [{"id": f"{tag}-{i}", "text": p["text"], "created_at": "2020-01-01"} for i, p in enumerate(austen[start:start + n])]


def _checks(isolated) -> list:
    client = MlflowClient(f"sqlite:///{isolated}/.collapse-monitor/mlflow.db")
    exp = client.get_experiment_by_name("collapse-monitor/land")
    return client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'")


def test_landing_zone_counts_every_file_exactly_once(isolated, austen, monkeypatch, capsys):
    monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__SETTLE_SECONDS", "0")
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT", "false")
    ref = write_jsonl(isolated / "ref.jsonl", _rows(austen, 0, 800, "ref"))
    assert main(["reference", "build", "--input", str(ref), "--dataset", "land"]) == 0
    capsys.readouterr()
    landing = isolated / "landing"
    a = write_jsonl(landing / "a.jsonl", _rows(austen, 1000, 60, "a"))
    write_jsonl(landing / "b.jsonl", _rows(austen, 1100, 60, "b"))

    first = monitor_data(str(landing), "land")
    assert sorted(x["path"].rsplit("/", 1)[1] for x in first["checked"]) == ["a.jsonl", "b.jsonl"]
    again = monitor_data(str(landing), "land")
    assert again["checked"] == [] and again["already_counted"] == 2

    settings = load_settings(None)
    rt = runtime.prepare(settings)
    book = ledger.Ledger(settings.ledger_url())
    # c: a run died after MLflow took its check but before the ledger knew. d: a run died before logging.
    c = write_jsonl(landing / "c.jsonl", _rows(austen, 1200, 60, "c"))
    d = write_jsonl(landing / "d.jsonl", _rows(austen, 1300, 60, "d"))
    long_ago = time.time() - 3 * 3600
    for path in (c, d):
        sha, size = ledger.file_sha256(str(path), lambda u: open(u, "rb"))
        assert book.claim("land", ledger.LandedFile(str(path), sha, size), "flow-run/dead", now=long_ago)
        if path == c:
            dead = check_incoming_data(str(path), "land", settings, rt, batch_name="c.jsonl", content_sha256=sha)
    # a: edited after it was counted
    write_jsonl(a, _rows(austen, 1000, 59, "a"))
    third = monitor_data(str(landing), "land")
    assert [x["path"].rsplit("/", 1)[1] for x in third["checked"]] == ["d.jsonl"]
    assert [(x["path"].rsplit("/", 1)[1], x["run_id"], x["dead_owner"]) for x in third["recovered"]] == [
        ("c.jsonl", dead.run_id, "flow-run/dead")]
    assert [x["path"].rsplit("/", 1)[1] for x in third["changed"]] == ["a.jsonl"]
    assert third["already_counted"] == 1  # b

    # Two runs at once over two new files: each file is checked by exactly one of them.
    for name, start in (("e", 1400), ("f", 1500)):
        write_jsonl(landing / f"{name}.jsonl", _rows(austen, start, 60, name))
    results = []
    threads = [threading.Thread(target=lambda: results.append(monitor_data(str(landing), "land"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checked = sorted(x["path"].rsplit("/", 1)[1] for r in results for x in r["checked"])
    assert checked == ["e.jsonl", "f.jsonl"]

    # A bad file fails the run (after the others), is given back, and is tried again next time.
    (landing / "g.parquet").write_bytes(b"not parquet")
    with pytest.raises(Exception, match="1 landing file\\(s\\) could not be checked: .*g.parquet"):
        monitor_data(str(landing), "land")
    assert not [e for e in book.entries("land") if e["path"].endswith("g.parquet")]

    runs = _checks(isolated)
    by_batch = sorted(r.data.tags["collapse.batch"] for r in runs)
    assert by_batch == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl", "f.jsonl"], "each file once"
    done = {e["path"].rsplit("/", 1)[1]: e["run_id"] for e in book.entries("land") if e["status"] == "done"}
    assert done == {r.data.tags["collapse.batch"]: r.info.run_id for r in runs}
    with book.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from landing_changes")).scalar() == 1
    book.close()
