"""The SQLite reader answers as MLflow does: one real MLflow store, written by the tracker, read both ways.

The reader (monitors/adapters/mlflow_sqlite.py) serves `history`, `alerts list` and the reference lookup of
`check` without importing MLflow; if it drifted from MLflow's own answers, those commands would quietly lie.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from monitors.adapters import mlflow_sqlite
from monitors.core.alerting import Silence
from monitors.core.errors import ReferenceNotFound, UserError
from monitors.core.runrecord import RunRecord
from monitors.core.schema import Artifact, RunKind, Tag, model_scope

REPO = Path(__file__).resolve().parents[2]


def _state(fp: str, status: str) -> dict:
    return {"fingerprint": fp, "rule": "tail_loss", "severity": "warning", "dataset": "d", "summary": "s",
            "status": status, "breaches": 1, "value": 0.5, "threshold": 0.6, "since": 1.0}


def _check(scope, batch, state, *, kind=RunKind.CHECK, started=0.0, alerts=None):
    return RunRecord(scope, batch, {"corpus.batches": 1.0, "batch.records": 10.0, "x.nan": float("nan")},
                     {"input": batch}, {Tag.MAX_SEVERITY: "warning", **(alerts or {Tag.ALERT + "tail_loss": "firing"})},
                     {Artifact.ALERT_STATE: state, Artifact.SUMMARY: {"records": 10}}, f"check of {batch}", kind=kind,
                     started=started)


@pytest.fixture(scope="module")
def store(tmp_path_factory, austen):
    """A store with what the commands read: references, checks (one failed, one deleted, two with the same start
    time), a probe scope, silences, a deleted experiment, and a run of another tool."""
    from mlflow import MlflowClient

    from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
    from monitors.adapters.tracking import MlflowTracker
    from monitors.config import Columns, IndicatorSettings, IngestSettings
    from monitors.core.reference import build_reference

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MlflowTracker(MlflowClient(uri), str(root / "artifacts"))
    objs = [{"id": p["id"], "text": p["text"]} for p in austen[:300]]
    prof = profile_rows(records_from_dicts(objs), ReadOptions(Columns(), IngestSettings(), 300, date(2024, 1, 1)), file="m")
    ref = build_reference(prof, dataset="news", settings=IndicatorSettings(reference_docs=300, embedding_dims=16, clusters=4))
    ids = {"ref_old": tracker.save_reference(ref, "a.jsonl"), "ref_new": tracker.save_reference(ref, "b.jsonl")}
    tie = time.time()
    ids["a"] = tracker.log_check(_check("news", "a.jsonl", [_state("f1", "firing")], started=tie))
    ids["b"] = tracker.log_check(_check("news", "b.jsonl", [_state("f1", "pending")], started=tie))  # same start
    ids["c"] = tracker.log_check(_check("news", "c.jsonl", [_state("f2", "firing"), _state("f1", "resolved")],
                                        alerts={Tag.ALERT + "tail_loss": "resolved", Tag.ALERT + "x": "firing"}))
    with pytest.raises(RuntimeError), tracker._run("news", RunKind.CHECK, "failed", {}):  # a failed newest check
        raise RuntimeError("boom")
    gone = tracker.log_check(_check("news", "gone.jsonl", [_state("f9", "firing")]))
    tracker.client.delete_run(gone)
    tracker.log_check(_check("other", "o.jsonl", []))
    tracker.log_check(_check(model_scope("intent"), "v1", [_state("m1", "firing")], kind=RunKind.PROBE))
    until = time.time() + 3600
    tracker.add_silence("news", Silence("f1", until=until, reason="known", created=until - 3600))
    tracker.add_silence("news", Silence("f2", until=until - 7200, reason="over", created=until - 9000))
    tracker.experiment_id("dropped")
    tracker.client.delete_experiment(tracker.experiment_id("dropped", create=False))
    tracker.client.create_run(tracker.client.create_experiment("someone-else"))
    reader = mlflow_sqlite.open_reader(uri, lambda: tracker)
    assert reader is not None
    yield tracker, reader, ids, root
    reader.close()


def test_the_pinned_mlflow_writes_the_schema_the_reader_knows(store):
    *_, root = store
    with sqlite3.connect(root / "mlflow.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == mlflow_sqlite.SCHEMA


def test_scopes_and_experiments_match_mlflow(store):
    tracker, reader, *_ = store
    assert reader.scopes() == tracker.scopes() == ["models/intent", "news", "other"]
    for name in ("news", "other", "dropped", "nothing", "models/intent"):
        assert reader.experiment_id(name) == tracker.experiment_id(name, create=False)


def test_the_reference_lookup_matches_mlflow_including_its_errors(store):
    tracker, reader, ids, _ = store
    assert reader.reference_run("news") == tracker.reference_run("news") == ids["ref_new"]
    assert reader.reference_run("news", ids["ref_old"]) == ids["ref_old"]
    for bad in ("0" * 32, ids["a"]):
        with pytest.raises(UserError) as want:
            tracker.reference_run("news", bad)
        with pytest.raises(UserError) as got:
            reader.reference_run("news", bad)
        assert str(got.value) == str(want.value)
    for scope in ("other", "nothing"):
        with pytest.raises(ReferenceNotFound) as want:
            tracker.reference_run(scope)
        with pytest.raises(ReferenceNotFound) as got:
            reader.reference_run(scope)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dataset,last,kind", [
    ("news", 20, RunKind.CHECK), ("news", 2, RunKind.CHECK), ("news", None, RunKind.CHECK), (None, 20, RunKind.CHECK),
    ("news", 20, RunKind.REFERENCE), ("nothing", 20, RunKind.CHECK), (None, None, RunKind.PROBE)])
def test_history_rows_match_mlflow(store, dataset, last, kind):
    tracker, reader, *_ = store
    want = tracker.history(dataset, last, kind)
    got = reader.history(dataset, last, kind)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def test_history_orders_and_filters_as_search_runs_does(store):
    _, reader, ids, _ = store
    rows = reader.history("news", None)
    assert ids["c"] == rows[1]["run_id"] and rows[0]["status"] == "FAILED"  # the failed run is newest
    assert sorted([ids["a"], ids["b"]]) == [r["run_id"] for r in rows[2:4]]  # same start: by run id
    assert all(r["batch"] != "gone.jsonl" for r in rows)  # deleted runs are not shown
    assert rows[1]["alerts"] == ["x"] and rows[1]["alert_states"] == {"tail_loss": "resolved", "x": "firing"}


def test_alert_state_and_silences_match_mlflow(store):
    tracker, reader, *_ = store
    for scope in ("news", "other", "nothing", "models/intent"):
        assert reader.previous_alert_state(scope) == tracker.previous_alert_state(scope)
        assert reader.silences(scope) == tracker.silences(scope)
    assert set(reader.previous_alert_state("news")) == {"f1", "f2"}  # check c: the failed run carries no state
    assert reader.previous_alert_state("models/intent")["m1"].status == "firing"
    assert [s.fingerprint for s in reader.silences("news")] == ["f1", "f2"]


def test_an_artifact_outside_the_local_disk_is_read_by_mlflow(store, tmp_path):
    tracker, _, ids, root = store
    db = tmp_path / "mlflow.db"
    shutil.copyfile(root / "mlflow.db", db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET artifact_uri = 's3://bucket/x' WHERE run_uuid = ?", (ids["c"],))
    asked = []

    class Fallback:
        def _alert_state(self, run_id):
            asked.append(run_id)
            return [_state("remote", "firing")]

    reader = mlflow_sqlite.open_reader(f"sqlite:///{db}", Fallback)
    try:
        assert list(reader.previous_alert_state("news")) == ["remote"] and asked == [ids["c"]]
    finally:
        reader.close()


def test_the_reader_stands_aside_where_it_cannot_be_exact(store, tmp_path, monkeypatch):
    *_, root = store
    never = lambda: pytest.fail("no fallback expected")  # noqa: E731
    assert mlflow_sqlite.open_reader("http://127.0.0.1:5000", never) is None
    assert mlflow_sqlite.open_reader(f"sqlite:///{tmp_path / 'none.db'}", never) is None
    assert not (tmp_path / "none.db").exists()  # read-only: nothing created
    other = tmp_path / "other.db"
    shutil.copyfile(root / "mlflow.db", other)
    with sqlite3.connect(other) as con:
        con.execute("UPDATE alembic_version SET version_num = 'f0000000000f'")
    assert mlflow_sqlite.open_reader(f"sqlite:///{other}", never) is None
    (tmp_path / "junk.db").write_text("not a database")
    assert mlflow_sqlite.open_reader(f"sqlite:///{tmp_path / 'junk.db'}", never) is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert mlflow_sqlite.open_reader(f"sqlite:///{root / 'mlflow.db'}", never) is None


def _cli(*commands: list[str]) -> tuple[list[int], bool]:
    """Run CLI commands in one fresh Python process: their exit codes, and whether MLflow got imported."""
    code = ("import json, sys; from flows.cli import main; "
            "codes = [main(c) for c in json.loads(sys.argv[1])]; print(json.dumps([codes, 'mlflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=180)
    assert out.returncode == 0, out.stderr
    codes, imported = json.loads(out.stdout.strip().splitlines()[-1])
    return codes, imported


def test_read_only_commands_and_the_reference_lookup_do_not_import_mlflow(isolated):
    """What makes `history`, `alerts list` and a missing reference fast (issue 20, item 6): no MLflow import
    once the default store exists. The first command, on no store, goes through MLflow, which creates it."""
    st = ["--state-dir", "st"]
    assert _cli(["history", *st]) == ([0], True)
    assert (isolated / "st" / "mlflow.db").is_file()
    assert _cli(["history", *st], ["alerts", "list", *st], ["history", "--json", *st]) == ([0, 0, 0], False)
    Path("b.jsonl").write_text(json.dumps({"id": "1", "text": "a human sentence"}) + "\n")
    assert _cli(["check", "--input", "b.jsonl", "--dataset", "news", *st]) == ([2], False)
