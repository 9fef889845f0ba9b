"""Issue 18's fault suite: nothing lost, nothing counted twice, nothing hangs.

One test per fault, each through real components (the CLI or the Prefect flows, MLflow on SQLite, the landing
ledger, a real HTTP receiver or a socket that never answers, a real tmpfs), asserting the two invariants
explicitly after the fault and after recovery:

* 0 records lost: for every logged check, ``batch.records + batch.quarantined`` == the records in its input;
* 0 batches counted twice: the dataset's corpus totals (``corpus.batches``, ``corpus.records`` of its newest
  check) equal the distinct batches checked and their records, however often they were (re-)checked.

| case                                   | test                                        | outcome asserted |
| -------------------------------------- | ------------------------------------------- | ---------------- |
| kill -9 of a `check` mid-ingest        | test_kill_9_mid_ingest_then_rerun           | nothing logged or spooled, lock free; re-run counts it once |
| 4 concurrent checks of one dataset     | test_four_concurrent_checks                 | 4 sequences, totals = the 3 distinct batches (a 4th is a copy: re-check) |
| full disk (a 16 MB tmpfs state dir)    | test_full_disk                              | exit 1 naming path and cause, on-call paged 'could not record', no 0-byte/partial file; after space is back: counted once, alert resolved |
| hanging alert channel                  | test_hanging_channel                        | delivery ends within its budget, page kept in the outbox and sent once when the channel works |
| broken channel URL in landing mode     | test_broken_channel_url_in_landing_mode     | rejected when settings load, nothing claimed; fixed: each file counted once |

Timing on 2 cores: about 2-3 minutes for the file.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from tests.conftest import REPO, write_jsonl

pytestmark = pytest.mark.integration

BAD = ['{"id": "cut", "text": "this line was cut in ha', {"id": "empty", "text": "   "}]  # quarantined, not lost


def _rows(austen, start: int, n: int, tag: str) -> list:
    return [{"id": f"{tag}-{i}", "text": p["text"], "created_at": "2020-01-01"}
            for i, p in enumerate(austen[start:start + n])]


def _batch(folder: Path, name: str, austen, start: int, n: int = 30) -> tuple[Path, int]:
    """A batch of n usable records and 2 that must be quarantined; returns (path, records in it)."""
    return write_jsonl(folder / name, _rows(austen, start, n, name.split(".")[0]) + BAD), n + len(BAD)


def _reference(austen, dataset: str, *extra: str) -> None:
    ref = write_jsonl(Path.cwd() / f"ref-{dataset}.jsonl", _rows(austen, 0, 300, "ref"))
    assert main(["reference", "build", "--input", str(ref), "--dataset", dataset, *extra]) == 0


def _checks(state: Path, dataset: str) -> list:
    """The dataset's finished check runs, oldest first."""
    client = MlflowClient(f"sqlite:///{state}/mlflow.db")
    exp = client.get_experiment_by_name(f"collapse-monitor/{dataset}")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"])
    return sorted(runs, key=lambda r: int(r.data.tags["collapse.sequence"]))


def assert_invariants(state: Path, dataset: str, inputs: dict[str, int]) -> None:
    """0 lost: every check's records + quarantined == its input's records. 0 counted twice: the newest check's
    corpus totals are the distinct batches (by content) and their usable records, each once."""
    runs = _checks(state, dataset)
    assert runs, "no check was logged"
    usable = {}
    for r in runs:
        m, batch = r.data.metrics, r.data.tags["collapse.batch"]
        assert m["batch.records"] + m["batch.quarantined"] == inputs[batch], f"records lost in {batch}"
        if "collapse.recheck_of" not in r.data.tags:
            assert r.data.tags.get("collapse.content_sha256") not in usable, f"{batch}: its content counted twice"
            usable[r.data.tags.get("collapse.content_sha256")] = m["batch.records"]
    newest = runs[-1].data.metrics
    assert newest["corpus.batches"] == len(usable), "a batch counted twice (or lost)"
    assert newest["corpus.records"] == sum(usable.values()), "records counted twice (or lost)"
    assert [int(r.data.tags["collapse.sequence"]) for r in runs] == list(range(len(runs))), "sequence numbers raced"


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT", "false")  # Evidently costs seconds per check
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DELIVERY_BACKOFF_SECONDS", "0")


# -- 1. kill -9 mid-ingest -------------------------------------------------------------------------------------------
KILLED_CHECK = """
import pathlib, sys, time
from monitors.adapters import sources
real_rows = sources.rows
def rows(*args, **kwargs):  # the fault's timing: read 10 records of the batch, then wait to be killed
    for n, row in enumerate(real_rows(*args, **kwargs)):
        if n == 10:
            pathlib.Path(sys.argv[1]).write_text("mid-ingest")
            time.sleep(600)
        yield row
sources.rows = rows
from flows.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_kill_9_mid_ingest_then_rerun(isolated, austen, quick, capsys, monkeypatch):
    _reference(austen, "kill")
    a, a_n = _batch(isolated, "a.jsonl", austen, 1000)
    b, b_n = _batch(isolated, "b.jsonl", austen, 1100)
    assert main(["check", "--input", str(a), "--dataset", "kill"]) == 0
    state = isolated / ".collapse-monitor"
    tmp = isolated / "tmp"
    tmp.mkdir()
    mark = isolated / "mid-ingest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_HOME")}
    env.update({"PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "PREFECT_HOME": str(isolated / "prefect-killed")})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHECK, str(mark), "check", "--input", str(b),
                             "--dataset", "kill"], cwd=isolated, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(isolated / "killed.log", "wb"))
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert proc.poll() is None, (isolated / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the check never reached its ingest"
            time.sleep(0.2)
        assert list(tmp.glob(f"cm-run-{proc.pid}-*")), "killed with its workspace open"
        os.kill(proc.pid, signal.SIGKILL)  # the fault: no finally, no atexit, no flush
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it started (its Prefect server), by its process group
        except ProcessLookupError:
            pass

    # Nothing of b is recorded, half or whole, and the dataset's lock died with its holder.
    assert [r.data.tags["collapse.batch"] for r in _checks(state, "kill")] == ["a.jsonl"]
    assert not (state / "spool").exists() or not any((state / "spool").iterdir())
    from monitors.adapters import locks

    lock_files = list((state / "locks").glob("*.lock"))
    assert lock_files
    for path in lock_files:
        with locks.file_lock(path, timeout=0) as free:
            assert free, f"{path} still held after kill -9"

    # Re-run: b counted once; its dead workspace is removed by the next start; a third check of b is a re-check.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    capsys.readouterr()
    assert main(["check", "--input", str(b), "--dataset", "kill"]) == 0
    assert not list(tmp.glob(f"cm-run-{proc.pid}-*"))
    assert main(["check", "--input", str(b), "--dataset", "kill", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["recheck_of"]
    assert_invariants(state, "kill", {"a.jsonl": a_n, "b.jsonl": b_n})
    assert _checks(state, "kill")[-1].data.metrics["corpus.batches"] == 2


# -- 2. four concurrent checks of one dataset ------------------------------------------------------------------------
def test_four_concurrent_checks(isolated, austen, quick):
    """Four checks of one dataset at once through the real flow, in threads of one process (as a worker running
    several flow runs does); the fourth batch is the first's bytes under another name."""
    from flows import batches, tasks
    from flows.check import check_incoming_data
    from monitors.adapters import runtime
    from monitors.config import load_settings

    _reference(austen, "conc")
    paths = [_batch(isolated, f"c{i}.jsonl", austen, 1000 + 40 * i) for i in range(3)]
    copy = isolated / "c0-again.jsonl"
    copy.write_bytes(paths[0][0].read_bytes())
    paths.append((copy, paths[0][1]))
    settings = load_settings(None)
    rt = runtime.prepare(settings)
    ref = tasks.tracker_for(rt).reference_run("conc")
    results, errors = {}, []

    def run(path: Path) -> None:
        try:
            results[path.name] = check_incoming_data(str(path), "conc", settings, rt, batch_name=path.name,
                                                     reference_run_id=ref, content_sha256=batches.batch_sha256(str(path)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p, _ in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(bool(r.recheck_of) for r in results.values()) == [False, False, False, True]
    assert {results["c0.jsonl"].recheck_of, results["c0-again.jsonl"].recheck_of} - {""} <= {
        results["c0.jsonl"].run_id, results["c0-again.jsonl"].run_id}
    assert_invariants(settings.state_path, "conc", {p.name: n for p, n in paths})
    assert _checks(settings.state_path, "conc")[-1].data.metrics["corpus.batches"] == 3


# -- 3. full disk ----------------------------------------------------------------------------------------------------
def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({done.stderr.decode().strip()}): needs root; "
                    f"tests/unit/test_full_disk.py covers the same with a fault-injecting fake disk")


def _fill(folder: Path) -> Path:
    """Write zeros until the filesystem is full to the last block."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_disk(isolated, austen, quick, capsys, monkeypatch, receiver):
    state = isolated / "state"
    _mount_tmpfs(state, "16m")
    try:
        _full_disk(isolated, state, austen, capsys, monkeypatch, receiver)
    finally:  # lazily when MLflow's pooled SQLite connections still hold the store open
        if subprocess.run(["umount", str(state)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(state)], check=True)


def _full_disk(isolated, state, austen, capsys, monkeypatch, receiver):
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://KEY@127.0.0.1:{receiver.port}/x")
    _reference(austen, "full", "--state-dir", str(state))
    batch, n = _batch(isolated, "f.jsonl", austen, 1000)
    filler = _fill(state)
    capsys.readouterr()

    started = time.monotonic()
    code = main(["check", "--input", str(batch), "--dataset", "full", "--state-dir", str(state), "--json"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    error = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and error["exit_code"] == 1, (out, err)
    for text in (error["error"], err):  # the path and the cause, in the JSON and on stderr; no traceback
        assert str(state / "spool") in text and "No space left on device" in text
    # the CLI's own last word is the message, not a traceback of ours (MLflow logs the SQLite error it caught)
    assert err.strip().splitlines()[-1].startswith("collapse-monitor: error: MLflow did not take the results")
    # on-call was paged that the check could not record, though neither the outbox nor alerts/ had room
    pages = [r["json"] for r in receiver.received if r["json"]["event_action"] == "trigger"]
    assert len(pages) == 1 and pages[0]["payload"]["severity"] == "critical"
    assert "COULD NOT RECORD" in pages[0]["payload"]["custom_details"]["summary"]
    assert "No space left on device" in pages[0]["payload"]["custom_details"]["summary"]
    # nothing half-written: empty files are only the lock files and the alert's marker (its name is the record)
    empty = sorted(p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file() and p.stat().st_size == 0)
    assert all(e.endswith((".lock", ".unsaved")) for e in empty), empty
    assert not [p for p in state.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert _checks(state, "full") == []
    print(f"full disk: the failed check took {took:.1f} s")

    filler.unlink()  # space is back
    assert main(["check", "--input", str(batch), "--dataset", "full", "--state-dir", str(state)]) == 0
    assert [r["json"]["event_action"] for r in receiver.received] == ["trigger", "resolve"]
    assert not list((state / "alerts").iterdir()) and not list((state / "spool").iterdir())
    assert main(["check", "--input", str(batch), "--dataset", "full", "--state-dir", str(state)]) == 0  # re-check
    assert_invariants(state, "full", {"f.jsonl": n})
    assert _checks(state, "full")[-1].data.metrics["corpus.batches"] == 1


# -- 4. hanging alert channel ----------------------------------------------------------------------------------------
def test_hanging_channel(isolated, austen, quick, capsys, monkeypatch, receiver):
    from flows import oncall
    from monitors.adapters import delivery

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(50)  # the kernel accepts connections; nobody ever answers
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://KEY@127.0.0.1:{hang.getsockname()[1]}/x")
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DELIVERY_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DELIVERY_BUDGET_SECONDS", "3")
    spent = []
    real = oncall.deliver_and_record

    def timed(*args, **kwargs):
        t0 = time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.monotonic() - t0)

    monkeypatch.setattr(oncall, "deliver_and_record", timed)
    try:
        _reference(austen, "hang")
        empty = write_jsonl(isolated / "empty.jsonl", [{"id": f"e{i}", "text": ""} for i in range(20)])
        good, n = _batch(isolated, "good.jsonl", austen, 1000)
        capsys.readouterr()
        # A batch whose every record is quarantined: batch_empty (critical) fires and pages the hanging channel.
        assert main(["check", "--input", str(empty), "--dataset", "hang", "--json"]) == 3
        first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert "batch_empty" in first["firing"] and first["delivery"]["sent"] == 0
        assert spent[-1] < 3 + 2, spent  # the delivery budget (3 s), not one timeout per retry and item
        box = delivery.Outbox(isolated / ".collapse-monitor" / "outbox")
        waiting = box.pending()
        assert [(i["notification"]["rule"], i["attempts"]) for i in waiting] == [("batch_empty", 1)]
        assert first["run_id"], "the run is logged whatever delivery did"
    finally:
        hang.close()

    # The channel works again: the waiting page goes out once, then the outbox is empty.
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://KEY@127.0.0.1:{receiver.port}/x")
    assert main(["check", "--input", str(good), "--dataset", "hang"]) == 0
    keys = [(r["json"]["event_action"], r["json"]["payload"]["summary"] if "payload" in r["json"] else "")
            for r in receiver.received]
    assert sum(1 for action, s in keys if action == "trigger" and "batch_empty" in s) == 1, keys
    assert box.pending() == []
    assert_invariants(isolated / ".collapse-monitor", "hang", {"empty.jsonl": 20, "good.jsonl": n})
    assert _checks(isolated / ".collapse-monitor", "hang")[-1].data.metrics["corpus.batches"] == 2


# -- 5. broken channel URL in landing mode ---------------------------------------------------------------------------
def test_broken_channel_url_in_landing_mode(isolated, austen, quick, monkeypatch):
    from flows.scheduled import monitor_data
    from monitors.adapters import ledger
    from monitors.config import load_settings
    from monitors.core.errors import ConfigError

    monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__SETTLE_SECONDS", "0")
    _reference(austen, "land")
    landing = isolated / "landing"
    inputs = {name: n for name, n in (
        (p.name, n) for p, n in (_batch(landing, f"{x}.jsonl", austen, 1000 + 40 * i) for i, x in enumerate("ab")))}
    settings = load_settings(None)

    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", "pdevents+http://KEY@127.0.0.1:18o81/x")  # the typo
    for _ in range(2):  # every scheduled run until it is fixed: rejected before any file is claimed or counted
        with pytest.raises(ConfigError, match="COLLAPSE_MONITOR_ALERT_URLS") as exc:
            monitor_data(str(landing), "land")
        assert "KEY" not in str(exc.value)
        book = ledger.Ledger(settings.ledger_url())
        assert book.entries("land") == []
        book.close()
    assert _checks(settings.state_path, "land") == []

    monkeypatch.delenv("COLLAPSE_MONITOR_ALERT_URLS")
    first = monitor_data(str(landing), "land")
    again = monitor_data(str(landing), "land")
    assert sorted(x["path"].rsplit("/", 1)[1] for x in first["checked"]) == ["a.jsonl", "b.jsonl"]
    assert again["checked"] == [] and again["already_counted"] == 2
    assert_invariants(settings.state_path, "land", inputs)
    assert _checks(settings.state_path, "land")[-1].data.metrics["corpus.batches"] == 2
