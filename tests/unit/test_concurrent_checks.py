"""Issue 18, item 4: concurrent checks of one dataset keep exact corpus totals. A check reads the dataset's
previous totals at its start and logs the new ones at its end; two at once used to both start from the same
totals. The flow now holds a per-dataset lock (a file in the state dir) around that read-modify-write."""

import json
from pathlib import Path
import os
import threading
import time

import pytest

from flows import check, oncall, tasks
from monitors.config import load_settings
from monitors.core.results import CheckResult


@pytest.mark.parametrize("ledger", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_four_concurrent_checks_of_one_dataset_keep_exact_totals(isolated, monkeypatch, ledger, request):
    if ledger == "postgresql":  # workers on several machines: each its own state dir, one ledger database
        url = os.environ.get("CM_TEST_POSTGRES_URL")
        if not url:  # a throwaway cluster on 127.0.0.1, stopped by the fixture's finalizer
            from tests import stack

            pg = stack.Postgres().start()
            request.addfinalizer(pg.stop)
            url = pg.url("postgres")
        monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__LEDGER_URL", url)
    base = load_settings(None)
    states = [base.model_copy(update={"state_dir": isolated / (f"worker{i}" if ledger == "postgresql" else "state")})
              for i in range(5)]
    for settings in states:
        settings.state_path.mkdir(parents=True, exist_ok=True)
    totals = isolated / "totals.json"  # stands in for the newest check's corpus.* in MLflow
    totals.write_text(json.dumps({"batches": 0, "records": 0}))
    other = isolated / "other.json"
    other.write_text(json.dumps({"batches": 0}))
    for name in ("b0", "b1", "b2", "b3", "c"):  # the flow resolves the batch's files before it takes the lock
        (isolated / f"{name}.jsonl").write_text('{"text": "x"}\n')

    def fake_check(input_path, dataset, settings, runtime, reference_run_id, content_sha256="", counted_in=""):
        store = totals if dataset == "news" else other
        previous = json.loads(store.read_text())  # load_previous
        time.sleep(0.2)  # the work
        store.write_text(json.dumps({**previous, "batches": previous["batches"] + 1,
                                     "records": previous.get("records", 0) + 300}))  # log_or_spool
        return CheckResult(run_id="r", dataset=dataset, batch_file=str(input_path), records=300, quarantined=0,
                           indicators={}, share=None, alerts=[], reference_run_id="ref", detector=None, notes=[])

    monkeypatch.setattr(check, "_check", fake_check)
    monkeypatch.setattr(oncall, "publish_to_prefect", lambda *a, **kw: None)
    monkeypatch.setattr(oncall, "deliver_and_record", lambda *a, **kw: ([], None))
    started = time.monotonic()
    threads = [threading.Thread(target=check.check_incoming_data.fn, args=(f"b{i}.jsonl", "news", states[i], None))
               for i in range(4)]
    threads.append(threading.Thread(target=check.check_incoming_data.fn, args=("c.jsonl", "other", states[4], None)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(totals.read_text()) == {"batches": 4, "records": 1200}
    assert json.loads(other.read_text())["batches"] == 1
    assert time.monotonic() - started < 1.5  # another dataset is not held up beyond news' own 4 x 0.2 s


def test_whether_content_was_counted_is_decided_under_the_lock(isolated, monkeypatch):
    """A check that outlived its landing lease, or two CLI checks of the same bytes at once: the second to get the
    dataset's lock sees the first's run and is a re-check, not counted twice (unless --recount)."""
    settings = load_settings(None)
    settings.state_path.mkdir(parents=True)
    got = []

    class Tracker:
        def run_for_content(self, dataset, sha):
            return "run-A" if sha == "s" * 64 else None

    def fake_check(input_path, dataset, settings, runtime, reference_run_id, content_sha256="", counted_in=""):
        got.append(counted_in)
        return CheckResult(run_id="r", dataset=dataset, batch_file=str(input_path), records=1, quarantined=0,
                           indicators={}, share=None, alerts=[], reference_run_id="ref", detector=None, notes=[])

    monkeypatch.setattr(check, "_check", fake_check)
    monkeypatch.setattr(tasks, "tracker_for", lambda rt: Tracker())
    monkeypatch.setattr(oncall, "publish_to_prefect", lambda *a, **kw: None)
    monkeypatch.setattr(oncall, "deliver_and_record", lambda *a, **kw: ([], None))
    for name in ("b.jsonl", "c.jsonl"):
        Path(name).write_text('{"text": "x"}\n')
    check.check_incoming_data.fn("b.jsonl", "news", settings, None, content_sha256="s" * 64)
    check.check_incoming_data.fn("b.jsonl", "news", settings, None, content_sha256="s" * 64, recount=True)
    check.check_incoming_data.fn("c.jsonl", "news", settings, None, content_sha256="t" * 64)
    assert got == ["run-A", "", ""]
