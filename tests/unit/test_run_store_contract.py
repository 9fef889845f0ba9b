"""One contract, two run stores: the MLflow tracker (a real SQLite MLflow store) and the in-memory fake the fast
flow tests use. Each test runs against both, so the fake cannot drift from MLflow unnoticed."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import date

import pytest

from monitors.adapters.memory_store import InMemoryRunStore
from monitors.core.alerting import Silence
from monitors.core.errors import ReferenceNotFound, UserError
from monitors.core.runrecord import RunRecord
from monitors.core.schema import Artifact, RunKind, Tag


@pytest.fixture(scope="module")
def reference(austen):
    from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
    from monitors.config import Columns, IndicatorSettings, IngestSettings
    from monitors.core.reference import build_reference

    settings = IndicatorSettings(reference_docs=300, embedding_dims=16, clusters=4)
    objs = [{"id": p["id"], "text": p["text"]} for p in austen[:300]]
    prof = profile_rows(records_from_dicts(objs), ReadOptions(Columns(), IngestSettings(), 300, date(2024, 1, 1)), file="m")
    return build_reference(prof, dataset="news", settings=settings)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(params=["memory", "mlflow"])
def store(request, mlflow_uri, tmp_path):
    if request.param == "memory":
        return InMemoryRunStore()
    from mlflow import MlflowClient

    from monitors.adapters.tracking import MlflowTracker

    # one database for the module (creating one costs seconds); a fresh artifact root and scope names per test
    return MlflowTracker(MlflowClient(mlflow_uri), str(tmp_path / "artifacts"))


@pytest.fixture
def scope(request):
    return f"ds{abs(hash(request.node.name)) % 10**8}"


def _state(fp: str, status: str) -> dict:
    return {"fingerprint": fp, "rule": "tail_loss", "severity": "warning", "dataset": "d", "summary": "s",
            "status": status, "breaches": 1, "value": 0.5, "threshold": 0.6, "since": 1.0}


def _record(scope: str, batch: str, *, corpus: float = 1.0, tags=None, kind=RunKind.CHECK, state=None,
            spool_id: str = "") -> RunRecord:
    return RunRecord(scope, batch, {"corpus.batches": corpus, "batch.records": 10.0, "x.nan": float("nan")},
                     {"input": batch}, {Tag.ALERT + "tail_loss": "firing", Tag.MAX_SEVERITY: "warning", **(tags or {})},
                     {Artifact.ALERT_STATE: state or [_state("f1", "firing")],
                      Artifact.SUMMARY: {"records": 10}}, f"check of {batch}", kind=kind, spool_id=spool_id)


def test_a_scope_without_a_reference_says_how_to_build_one(store, scope):
    with pytest.raises(ReferenceNotFound, match="reference build"):
        store.reference_run(scope)


def test_the_newest_reference_round_trips(store, reference, scope):
    ref = dataclasses.replace(reference, dataset=scope)
    first = store.save_reference(ref, "a.jsonl")
    second = store.save_reference(ref, "b.jsonl")
    assert store.reference_run(scope) == second
    run_id, loaded = store.latest_reference(scope, first)
    assert run_id == first and loaded.documents == reference.documents
    # nan (an indicator this small reference cannot give, e.g. mode.self_bleu under 100 documents) round-trips
    assert loaded.baseline.keys() == reference.baseline.keys()
    assert all(v == reference.baseline[k] or (math.isnan(v) and math.isnan(reference.baseline[k]))
               for k, v in loaded.baseline.items())
    with pytest.raises(UserError, match="no such MLflow run|not a reference"):
        store.reference_run(scope, "0" * 32)


def test_checks_get_sequence_numbers_and_the_next_one_continues_from_the_newest(store, scope):
    empty = store.previous_check(scope)
    assert empty.corpus == {} and empty.hours_since is None and empty.alert_states == {} and empty.metrics == {}
    a = store.log_check(_record(scope, "a.jsonl", corpus=1.0))
    b = store.log_check(_record(scope, "b.jsonl", corpus=2.0, state=[_state("f2", "pending")]))
    prev = store.previous_check(scope)
    assert prev.corpus == {"corpus.batches": 2.0}
    assert prev.metrics.get("batch.records") == 10.0  # its indicators, for the trend rules
    assert list(prev.alert_states) == ["f2"] and prev.alert_states["f2"].status == "pending"
    assert store.previous_alert_state(scope)["f2"].recent == (1,)  # saved before windows: its breaches count
    assert prev.hours_since is not None and prev.hours_since < 0.1
    rows = store.history(scope)
    assert [r["run_id"] for r in rows] == [b, a] and [r["sequence"] for r in rows] == [1, 0]
    assert rows[0]["alerts"] == ["tail_loss"] and rows[0]["max_severity"] == "warning"
    assert rows[0]["description"] == "check of b.jsonl" and "x.nan" not in rows[0]["metrics"]


def test_content_that_a_check_counted_is_found_again(store, scope):
    assert store.run_for_content(scope, "abc") is None
    run = store.log_check(_record(scope, "a.jsonl", tags={Tag.CONTENT: "abc"}))
    assert store.run_for_content(scope, "abc") == run
    assert store.run_for_content(scope, "other") is None


def test_a_replayed_record_is_logged_once(store, scope):
    req = _record(scope, "spooled.jsonl", spool_id="s" * 32)
    first = store.replay(req)
    assert store.replay(req) == first
    assert [r["run_id"] for r in store.history(scope)] == [first]


def test_silences_are_kept_per_scope(store, scope):
    until = time.time() + 3600
    store.experiment_id(scope)
    store.add_silence(scope, Silence("f1", until=until, reason="known", created=until - 3600))
    assert store.silences(scope) == [Silence("f1", until=until, reason="known", created=until - 3600)]
    assert store.silences(scope + "x") == []


def test_probe_results_keep_each_versions_newest_raw_metrics(store, scope):
    def probe(version, quality, kind=RunKind.PROBE):
        return RunRecord(scope, f"v{version}", {"probe.tail.quality": quality, "probe.tail.quality.delta_prev": 0.1},
                         {}, {Tag.PROBE_SET: "digest", Tag.MODEL_VERSION: version}, {}, "p", kind=kind)

    store.log_check(probe("1", 0.5, RunKind.PROBE_BASELINE))
    newest = store.log_check(probe("1", 0.6))
    two = store.log_check(probe("2", 0.4))
    got = store.probe_results(scope, "digest")
    assert got == {"1": {"run_id": newest, "metrics": {"probe.tail.quality": 0.6}},
                   "2": {"run_id": two, "metrics": {"probe.tail.quality": 0.4}}}
    assert store.probe_results(scope, "other") == {}


def test_the_summary_artifact_gets_the_run_id_and_delivery_is_recorded(store, scope):
    run = store.log_check(_record(scope, "a.jsonl"))
    store.record_delivery(run, {"sent": 2, "queued": 0, "errors": []})
    if isinstance(store, InMemoryRunStore):
        summary, delivery = store.artifact(run, Artifact.SUMMARY), store.artifact(run, Artifact.DELIVERY)
    else:
        from pathlib import Path

        summary = json.loads(Path(store.artifact_location(run, Artifact.SUMMARY)).read_text())
        delivery = json.loads(Path(store.artifact_location(run, Artifact.DELIVERY)).read_text())
    assert summary == {"records": 10, "run_id": run}
    assert delivery == {"sent": 2, "queued": 0, "errors": []}


def test_both_stores_implement_every_method_of_the_port_with_its_parameters():
    import inspect

    from monitors.adapters.tracking import MlflowTracker, RunStore

    methods = [n for n, f in vars(RunStore).items() if callable(f) and not n.startswith("_")]
    assert len(methods) > 15
    for cls in (MlflowTracker, InMemoryRunStore):
        for name in methods:
            want = list(inspect.signature(getattr(RunStore, name)).parameters)
            assert list(inspect.signature(getattr(cls, name)).parameters) == want, (cls.__name__, name)
