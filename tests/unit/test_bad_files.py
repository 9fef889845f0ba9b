"""Issue 18, item 11: one bad file never sinks its neighbours. Generated in tmp_path, nothing committed."""

import gzip
import json
from datetime import date

import pytest

from monitors.config import Columns, IngestSettings
from monitors.core.errors import InputError
from monitors.adapters.ingest import ReadOptions, profile_input
from monitors.core.runrecord import RunRecord
from tests.conftest import write_jsonl


def _read(spec, folder=None):
    return profile_input(str(spec), ReadOptions(Columns(), IngestSettings(), 1000, date(2024, 1, 1), folder))


def _folder(root):
    d = root / "batch"
    write_jsonl(d / "good.jsonl", [{"id": f"g{i}", "text": f"a good record number {i}"} for i in range(100)])
    (d / "bad.csv").write_text('id,text\n1,"an unclosed quote\n2,more\n')
    whole = gzip.compress(b"".join(json.dumps({"id": f"z{i}", "text": f"zipped record {i}"}).encode() + b"\n"
                                   for i in range(200)))
    (d / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # a truncated upload
    (d / "junk.parquet").write_bytes(b"PAR1 not really parquet")
    return d


@pytest.mark.parametrize("to_files", [False, True])
def test_a_malformed_file_in_a_folder_is_quarantined_whole_and_the_rest_is_checked(isolated, to_files):
    d = _folder(isolated)
    qdir = isolated / "q"
    qdir.mkdir()
    prof, _ = _read(d, str(qdir) if to_files else None)
    assert prof.records == 100 and prof.quarantined == {"unreadable_file": 3}
    entries = prof.entries if not to_files else [json.loads(line) for f in prof.quarantine_files
                                                 for line in open(f, encoding="utf-8")]
    got = {e["file"]: e for e in entries}
    assert set(got) == {str(d / "bad.csv"), str(d / "cut.jsonl.gz"), str(d / "junk.parquet")}
    assert all(e["kind"] == "unreadable_file" and "cannot be read as" in e["reason"] for e in got.values())
    assert "z1" not in {i for _, i, _ in prof.sample}  # a truncated file is not half counted


@pytest.mark.parametrize("name", ["bad.csv", "cut.jsonl.gz", "junk.parquet"])
def test_a_single_unreadable_file_is_still_an_input_error(isolated, name):
    d = _folder(isolated)
    with pytest.raises(InputError, match=f"{name}: cannot be read as"):
        _read(d / name)


# -- a corrupt spool entry is skipped with an alert, not blocking every check -------------------------------
def test_a_corrupt_spool_entry_is_moved_aside_with_an_alert_and_the_rest_replays(isolated, monkeypatch):
    from flows import oncall, tasks
    from monitors.adapters import spool
    from monitors.config import load_settings

    settings = load_settings(None)
    folder = settings.state_path / "spool"
    good = spool.save(folder, RunRecord("news", "b.jsonl", {"m": 1.0}, {}, {}, {"a.json": {"x": 1}}, "d"))
    for name, content in [("empty", ""), ("cut", '{"spooled": 1, "dataset": "ne'), ("keys", '{"spooled": 2}')]:
        (folder / name).mkdir()
        (folder / name / "request.json").write_text(content)
    sent = []
    monkeypatch.setattr(oncall, "send_notifications", lambda s, notes, run_id: sent.extend(notes))

    class Tracker:
        replayed = []

        def replay(self, req):
            self.replayed.append(req.spool_id)
            return f"run-{req.spool_id}"

    assert tasks.replay_spool.fn(Tracker(), settings) == [f"run-{good.name}"]
    assert sorted(p.name for p in (folder / "corrupt").iterdir()) == ["cut", "empty", "keys"]
    assert [n["rule"] for n in sent] == ["spool_entry_corrupt"] * 3
    assert all(str(folder / "corrupt") in n["summary"] for n in sent)
    sent.clear()
    assert tasks.replay_spool.fn(Tracker(), settings) == [] and sent == []  # once, not on every check


# -- the landing zone gives up on a poison file after N tries, with an alert --------------------------------
def test_the_landing_zone_gives_up_on_a_poison_file_after_max_attempts(isolated, monkeypatch):
    import logging

    from flows import batches, oncall, scheduled, tasks
    from monitors.adapters import ledger
    from monitors.config import load_settings

    monkeypatch.setenv("COLLAPSE_MONITOR_LANDING__MAX_ATTEMPTS", "3")
    settings = load_settings(None)
    settings.state_path.mkdir(parents=True)
    poison = ledger.LandedFile(str(isolated / "poison.csv"), "ab" * 32, 10)
    tries, sent = [], []

    def failing_check(path, *a, **kw):
        tries.append(path)
        raise InputError(f"{path}: cannot be read as csv: EOF inside string")

    class Tracker:
        def run_for_content(self, dataset, sha):
            return None

    monkeypatch.setattr(scheduled, "scan_landing", lambda landing, settle, known: ([poison], [], []))
    monkeypatch.setattr(scheduled, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(batches, "with_task_runner", lambda flow, s: failing_check)
    monkeypatch.setattr(tasks, "tracker_for", lambda rt: Tracker())
    monkeypatch.setattr(oncall, "send_notifications", lambda s, notes, run_id: sent.extend(notes))
    reports = [scheduled.check_landing("landing", "news", settings, None) for _ in range(5)]
    assert len(tries) == 3  # not retried forever
    assert [len(r.failed) for r in reports] == [1, 1, 1, 0, 0]
    assert [len(r.given_up) for r in reports] == [0, 0, 1, 1, 1] and reports[2].given_up[0]["path"] == poison.path
    assert "cannot be read as csv" in reports[2].given_up[0]["error"] and reports[2].given_up[0]["attempts"] == 3
    assert [n["rule"] for n in sent] == ["landing_file_given_up"] and poison.path in sent[0]["summary"]


# -- item 12: the landing zone hashes only what changed (path + size + mtime) --------------------------------
def test_landing_scan_hashes_only_new_or_changed_files(isolated, monkeypatch):
    import os

    from flows import scheduled
    from monitors.adapters import ledger

    for i in range(3):
        write_jsonl(isolated / "landing" / f"b{i}.jsonl", [{"id": str(i), "text": f"text {i}"}])
    hashed = []
    real = ledger.file_sha256
    monkeypatch.setattr(ledger, "file_sha256", lambda url, opener: hashed.append(url) or real(url, opener))
    book = ledger.Ledger(f"sqlite:///{isolated / 'ledger.db'}")
    def scan():
        files, _, fresh = scheduled.scan_landing.fn(str(isolated / "landing"), 0, book.known_hashes())
        book.remember_hashes(fresh)
        return files

    first = scan()
    assert len(hashed) == 3 and len(first) == 3
    hashed.clear()
    again = scan()
    assert hashed == [] and again == first
    changed = isolated / "landing" / "b1.jsonl"
    write_jsonl(changed, [{"id": "1", "text": "other text, other size"}])
    os.utime(changed, (1e9, 1e9))
    third = scan()
    assert hashed == [str(changed)] and third[1].sha256 != first[1].sha256 and third[0] == first[0]
