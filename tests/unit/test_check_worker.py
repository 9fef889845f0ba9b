"""Issue 20, item 6: the CLI's check worker (flows/check_worker.py) runs the Evidently drift report and the GX
record validation in another process while the check goes on. Its results are those of the same functions run
in-process, its GX Data Docs folder goes with it, and a worker that died leaves the work to the task."""

import json
import sys
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path

from flows import check_worker, tasks
from monitors.adapters import drift, gx_records, ingest
from monitors.config import Columns, IngestSettings
from tests.conftest import REPO


class _Marker:
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __del__(self) -> None:
        Path(self.folder, "teardown-ran").touch()


def _leave_markers(folder: str) -> None:
    """In the worker: an exit handler, and a module global that only the interpreter's teardown finalizes."""
    import atexit

    atexit.register(Path(folder, "exit-handlers-ran").touch)
    globals()["_finalized_at_teardown"] = _Marker(folder)


def _profile(texts):
    rows = [{"id": str(i), "text": t} for i, t in enumerate(texts)] + [{"id": "0", "text": "a duplicate id"}]
    return ingest.profile_rows(ingest.records_from_dicts(rows), ingest.ReadOptions(
        Columns(), IngestSettings(), 100, date(2024, 1, 1)), file="x")


def test_the_worker_gives_the_in_process_results_and_cleans_up(austen, isolated, monkeypatch):
    texts = [p["text"] for p in austen[:120]]
    suite = json.loads((REPO / "expectations" / "incoming_batch.json").read_text())
    prof = _profile(texts[:60])
    local = drift.drift_report(texts[:60], texts[60:])
    local_quality = gx_records.validate(prof, suite)
    check_worker.start()
    assert check_worker._pool is None  # this process has Evidently imported: in-process is cheaper
    monkeypatch.setenv("TMPDIR", str(isolated))  # the worker's temporary folders (this process keeps its own)
    monkeypatch.delitem(sys.modules, "evidently")  # as in a fresh CLI process
    check_worker.start()
    try:
        report = check_worker.submit(drift.drift_report, texts[:60], texts[60:], None)
        quality = check_worker.submit(gx_records.validate, prof, suite)
        report, quality = report.result(timeout=300), quality.result(timeout=300)
        check_worker.submit(_leave_markers, str(isolated)).result(timeout=60)
    finally:
        check_worker.stop()
    assert not list(isolated.glob("cm-gx-docs-*"))  # the worker's Data Docs folder went with it
    # it ran its exit handlers, but skipped the interpreter's teardown (about 1.7 s the check waited for)
    assert (isolated / "exit-handlers-ran").exists() and not (isolated / "teardown-ran").exists()
    assert check_worker.submit(int) is None  # stopped: the tasks do the work themselves
    assert report.values == local.values and json.loads(report.json)["metrics"] == json.loads(local.json)["metrics"]
    assert quality.checks == local_quality.checks and any(not c.success for c in quality.checks)
    assert quality.data_docs_html


def test_a_dead_worker_leaves_the_work_to_the_task():
    broken: Future = Future()
    broken.set_exception(BrokenProcessPool("the worker died"))
    assert tasks._finished(broken) == (False, None) and tasks._finished(None) == (False, None)
    done: Future = Future()
    done.set_result("report")
    assert tasks._finished(done) == (True, "report")
    failed: Future = Future()
    failed.set_exception(ValueError("the work's own error"))
    try:
        tasks._finished(failed)
    except ValueError:
        pass
    else:
        raise AssertionError("the work's own error must be raised")
