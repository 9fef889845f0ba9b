"""Issue 18, item 5, with a fault-injecting fake disk: every write the state directory gets goes through an atomic
helper (temp file + fsync + rename), so a full disk (ENOSPC) leaves no 0-byte or half-written file; the results
that could be written nowhere are a loud, paged 'could not record' (never silence); on-call is paged over the
network even when the outbox cannot take the page; and once space is back the alert resolves.
The real thing (a small tmpfs filled up, a real check) is tests/integration/test_fault_suite.py::test_full_disk."""

import errno
import json
from pathlib import Path

import pytest

from flows import batches, oncall, tasks
from monitors.core.runrecord import RunRecord
from monitors.adapters import files, spool
from monitors.adapters.delivery import Outbox, deliver
from monitors.config import load_settings
from monitors.core import alerting
from monitors.core.errors import NotRecorded

SECRET = "R0UT1NGKEYs3cr3t"


class FullDisk:
    """``open`` for the atomic helper on a disk with no room: the file is created (a name costs no data block),
    and the first write (or the flush) fails with ENOSPC, as the kernel does."""

    def __init__(self):
        self.opened: list[Path] = []

    def __call__(self, path, mode="r", *args, **kwargs):
        import builtins

        fh = builtins.open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return fh
        self.opened.append(Path(path))

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                pass

            def fileno(self):
                return fh.fileno()

        return Full()


@pytest.fixture
def full_disk(monkeypatch):
    fake = FullDisk()
    monkeypatch.setattr(files, "open", fake, raising=False)
    return fake


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(isolated, full_disk):
    target = isolated / "state" / "x.json"
    target.parent.mkdir()
    target.write_text('{"old": true}')
    with pytest.raises(OSError) as exc:
        files.atomic_write_json(target, {"new": True})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)  # names the file, not its temp
    assert "x.json: No space left on device (ENOSPC)" in files.describe(exc.value)
    assert json.loads(target.read_text()) == {"old": True} and _files(target.parent) == [target]
    assert full_disk.opened and all(p.name.endswith(".tmp") for p in full_disk.opened)


def test_atomic_write_replaces_whole_files(isolated):
    target = files.atomic_write_text(isolated / "a.txt", "one")
    files.atomic_write_bytes(target, b"two")
    assert target.read_text() == "two" and _files(isolated) == [target]
    copy = files.atomic_copy(target, isolated / "b.txt")
    assert copy.read_bytes() == b"two"


def test_a_spool_entry_that_cannot_be_written_leaves_nothing(isolated, full_disk):
    req = RunRecord("news", "b.jsonl", {"batch.records": 3.0}, {}, {}, {"summary.json": {"a": 1},
                           "quarantine.jsonl": "x\n", "drift/report.html.gz": b"z"}, "d")
    with pytest.raises(OSError) as exc:
        spool.save(isolated / "spool", req)
    assert exc.value.errno == errno.ENOSPC and str(isolated / "spool") in exc.value.filename
    assert _files(isolated / "spool") == [] and list((isolated / "spool").iterdir()) == []


def test_results_that_can_be_written_nowhere_raise_not_recorded_naming_path_and_cause(isolated, full_disk,
                                                                                      monkeypatch):
    settings = load_settings(None)

    def log_check(tracker, req):  # the MLflow store is on the same full disk (the Prefect task would retry)
        raise RuntimeError("(sqlite3.OperationalError) database or disk is full")

    monkeypatch.setattr(tasks, "log_check", log_check)
    req = RunRecord("news", "b.jsonl", {"batch.records": 3.0}, {}, {}, {"summary.json": {}}, "d")
    with pytest.raises(NotRecorded) as exc:
        tasks.log_or_spool(None, req, settings)
    msg = str(exc.value)
    assert "database or disk is full" in msg and str(settings.state_path / "spool") in msg
    assert "No space left on device (ENOSPC)" in msg and "Nothing of this check was recorded" in msg
    assert not list((settings.state_path / "spool").rglob("*"))


def test_could_not_record_pages_on_call_through_a_full_disk_and_resolves_once_space_is_back(
        isolated, monkeypatch, receiver):
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/x")
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DELIVERY_BACKOFF_SECONDS", "0")
    settings = load_settings(None)
    state = settings.state_path
    (state / "alerts").mkdir(parents=True)
    fake = FullDisk()
    monkeypatch.setattr(files, "open", fake, raising=False)
    failure = NotRecorded(f"MLflow did not take the results (database or disk is full) and they could not be spooled "
                          f"in {state / 'spool'}: {state / 'spool'}/x/request.json: No space left on device (ENOSPC)")
    oncall.report_failure(settings, "news", "b.jsonl", failure)

    # the page went out, from memory: neither the alert file nor the outbox item could be written
    assert [r["json"]["event_action"] for r in receiver.received] == ["trigger"]
    page = receiver.received[0]["json"]["payload"]
    assert page["severity"] == "critical" and "COULD NOT RECORD" in page["custom_details"]["summary"]
    assert "No space left on device" in page["custom_details"]["summary"]
    assert fake.opened, "the writes were attempted"
    leftovers = _files(state)
    fp = alerting.fingerprint("check_failed", "news")
    # no 0-byte or half-written data file: only the alert's empty marker (its name is the information) and the
    # outbox's lock file
    assert sorted(p.relative_to(state).as_posix() for p in leftovers) == [
        f"alerts/check_failed-{fp}.unsaved", "outbox/.lock"]
    assert [a["rule"] for a in oncall.open_failures(settings)] == ["check_failed"]  # `alerts list` shows it

    monkeypatch.setattr(files, "open", open)  # space is back
    notes = oncall.clear_failure(settings, "news", "run-2")
    assert [(n["kind"], n["severity"]) for n in notes] == [("resolved", "critical")]
    assert _files(state / "alerts") == [] and oncall.clear_failure(settings, "news", "run-3") == []


def test_a_page_the_outbox_cannot_take_nor_the_channel_accept_is_reported_lost(isolated, full_disk, receiver):
    receiver.fail_next(10)
    n = {"kind": "firing", "rule": "check_failed", "severity": "critical", "status": "firing", "fingerprint": "fp",
         "value": None, "threshold": None, "summary": "s", "dataset": "news", "run_id": "r"}
    out = deliver(Outbox(isolated / "outbox"), [f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/x"], [n],
                  retries=2, backoff=0, timeout=2, budget=5)
    assert out.sent == 0 and out.queued == 0
    text = " ".join(out.errors)
    assert "could not be written to the outbox" in text and "it is lost" in text and SECRET not in text
    assert [p.name for p in _files(isolated / "outbox")] == [".lock"]


def test_a_full_disk_in_landing_mode_never_gives_up_a_good_file(isolated, monkeypatch):
    """A check that could record nothing says nothing about its file: it is tried again in full, however many
    scheduled runs the disk stays full, and is not given up as a poison file (landing.max_attempts)."""
    import logging

    from flows import scheduled
    from monitors.adapters import ledger

    monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__MAX_ATTEMPTS", "2")
    settings = load_settings(None)
    settings.state_path.mkdir(parents=True)
    good = ledger.LandedFile(str(isolated / "good.jsonl"), "cd" * 32, 10)
    tries = []

    def full_disk_check(path, *a, **kw):
        tries.append(path)
        if len(tries) <= 3:
            raise NotRecorded(f"MLflow did not take the results and they could not be spooled: {settings.state_path}"
                              f"/spool/x: No space left on device (ENOSPC)")
        return type("R", (), {"run_id": "run-1", "spooled": ""})()

    class Tracker:
        def run_for_content(self, dataset, sha):
            return None

    monkeypatch.setattr(scheduled, "scan_landing", lambda landing, settle, known: ([good], [], []))
    monkeypatch.setattr(scheduled, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(batches, "with_task_runner", lambda flow, s: full_disk_check)
    monkeypatch.setattr(tasks, "tracker_for", lambda rt: Tracker())
    reports = [scheduled.check_landing("landing", "news", settings, None) for _ in range(5)]
    assert [len(r.failed) for r in reports] == [1, 1, 1, 0, 0] and all(not r.given_up for r in reports)
    assert [len(r.checked) for r in reports] == [0, 0, 0, 1, 0] and reports[4].already_counted == 1
    assert len(tries) == 4
