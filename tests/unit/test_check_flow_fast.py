"""The check flow's logic in seconds: Prefect tasks run as plain functions and MLflow is the in-memory run store
(whose behaviour tests/unit/test_run_store_contract.py holds to the real one). The integration tests run the
same flow on the real Prefect API and MLflow store."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import SecretStr

from monitors.adapters.memory_store import InMemoryRunStore
from monitors.core.schema import Artifact, RunKind, Tag
from tests.conftest import write_jsonl


@pytest.fixture
def flow(monkeypatch, isolated, austen):
    from prefect import Task

    from flows import batches, check, oncall, synthetic_share, tasks
    from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
    from monitors.adapters.runtime import Runtime
    from monitors.config import Columns, IngestSettings, Settings
    from monitors.core.reference import build_reference

    for module in (tasks, batches, synthetic_share, oncall):
        for name, obj in list(vars(module).items()):
            if isinstance(obj, Task):
                monkeypatch.setattr(module, name, obj.fn)
    store = InMemoryRunStore()
    published = []
    monkeypatch.setattr(tasks, "tracker_for", lambda runtime: store)
    monkeypatch.setattr(oncall, "publish_to_prefect", lambda alerts, scope, run_id, description: published.append(run_id))
    settings = Settings(state_dir=isolated / "state", dataset="news", indicators={"reference_docs": 400, "drift": False})  # Evidently: integration tests
    settings.state_path.mkdir(parents=True)
    ind = settings.indicators
    objs = [{"id": p["id"], "text": p["text"]} for p in austen[:400]]
    prof = profile_rows(records_from_dicts(objs), ReadOptions(Columns(), IngestSettings(), 400, date(2024, 1, 1)), file="m")
    store.save_reference(build_reference(prof, dataset="news", settings=ind), "ref.jsonl")
    runtime = Runtime(tracking=SecretStr("memory://"), artifact_root=None, prefect_api_url=None)

    def run(path, **kw):
        return check.check_incoming_data.fn(str(path), "news", settings, runtime, batch_name=path.name, **kw)

    return run, store, published, oncall, settings


def test_a_check_logs_one_run_with_the_shared_alert_record(flow, isolated, austen):
    run, store, published, _, _ = flow
    batch = write_jsonl(isolated / "b1.jsonl", [{"id": f"b{i}", "text": p["text"]} for i, p in enumerate(austen[500:620])])
    result = run(batch, content_sha256="sha-1")
    assert result.records == 120 and result.run_id and not result.spooled
    [row] = store.history("news")
    assert row["run_id"] == result.run_id and row["metrics"]["corpus.batches"] == 1.0
    logged = next(r for r in store.runs if r.run_id == result.run_id)
    assert logged.kind == RunKind.CHECK and logged.tags[Tag.CONTENT] == "sha-1"
    assert logged.tags[Tag.ALERTS_FIRING] == str(sum(a.status == "firing" for a in result.alerts))
    assert set(logged.artifacts) >= {Artifact.ALERTS, Artifact.ALERT_STATE, Artifact.NOTIFICATIONS, Artifact.SUMMARY,
                                     Artifact.RECORD_QUALITY}
    assert store.artifact(result.run_id, Artifact.SUMMARY)["run_id"] == result.run_id
    assert store.artifact(result.run_id, Artifact.ALERTS) == [a.to_dict() for a in result.alerts]
    assert published == [result.run_id]


def test_the_same_content_again_is_a_recheck_and_not_counted(flow, isolated, austen):
    run, store, _, _, _ = flow
    batch = write_jsonl(isolated / "b1.jsonl", [{"id": f"b{i}", "text": p["text"]} for i, p in enumerate(austen[500:560])])
    first = run(batch, content_sha256="sha-1")
    again = run(batch, content_sha256="sha-1")
    assert again.recheck_of == first.run_id
    assert [r["metrics"]["corpus.batches"] for r in store.history("news")] == [1.0, 1.0]
    recounted = run(batch, content_sha256="sha-1", recount=True)
    assert not recounted.recheck_of and store.history("news")[0]["metrics"]["corpus.batches"] == 2.0


def test_a_failed_check_is_an_alert_that_the_next_check_resolves(flow, isolated, austen):
    run, store, _, oncall, settings = flow
    with pytest.raises(Exception, match="missing.jsonl"):
        run(isolated / "missing.jsonl")
    [failure] = oncall.open_failures(settings)
    assert failure["rule"] == "check_failed" and store.history("news") == []
    batch = write_jsonl(isolated / "b1.jsonl", [{"id": f"b{i}", "text": p["text"]} for i, p in enumerate(austen[500:560])])
    result = run(batch)
    assert oncall.open_failures(settings) == []
    assert any(n["rule"] == "check_failed" and n["status"] == "resolved" for n in result.notifications)


def test_check_compares_distinct_bigrams_with_the_dataset_previous_check(flow, isolated, austen):
    """Issue 16: the step that diversity_step_drop (critical) reads comes from the previous check's logged value;
    nan on a first check, near 1 between two human batches, and down when half the batch repeats the other half."""
    import math
    import random

    run, _, _, _, _ = flow
    picked = random.Random(0).sample(austen[400:], 600)
    key = "trend.tail.distinct_2_wide.vs_previous"
    first = run(write_jsonl(isolated / "h1.jsonl", [{"id": f"a{i}", "text": p["text"]} for i, p in enumerate(picked[:300])]))
    assert math.isnan(first.indicators[key]) and "diversity_step_drop" not in {a.rule for a in first.alerts}
    second = run(write_jsonl(isolated / "h2.jsonl", [{"id": f"b{i}", "text": p["text"]} for i, p in enumerate(picked[300:])]))
    assert 0.965 < second.indicators[key] < 1.035 and "diversity_step_drop" not in {a.rule for a in second.alerts}
    halved = [p["text"] for p in picked[:150]] * 2  # the same 22,000 words' worth of text, half as varied
    third = run(write_jsonl(isolated / "h3.jsonl", [{"id": f"c{i}", "text": t} for i, t in enumerate(halved)]))
    assert third.indicators[key] < 0.9
    fired = {a.rule: a for a in third.alerts if a.status == "firing"}
    assert fired["diversity_step_drop"].severity == "critical" and fired["diversity_step_drop"].threshold == 0.965


def test_a_ctrl_c_python_lost_in_a_finalizer_still_stops_the_check_before_it_is_logged(flow, isolated, austen,
                                                                                      monkeypatch):
    """Seen in CI: a SIGINT whose KeyboardInterrupt was raised inside a weakref callback is 'ignored' by Python, and
    the interrupted check finished and exited 0. flows/interrupts.py keeps a note of it: the check stops before
    it logs its run."""
    import os
    import signal
    import time

    from flows import interrupts, synthetic_share

    run, store, *_ = flow
    batch = write_jsonl(isolated / "b.jsonl", [{"id": f"b{i}", "text": p["text"]} for i, p in enumerate(austen[500:620])])
    real = synthetic_share.estimate_share

    def interrupted_in_a_finalizer(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)  # the handler runs here
        except KeyboardInterrupt:
            pass  # what Python does with an exception raised in a finalizer
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic_share, "estimate_share", interrupted_in_a_finalizer)
    previous = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(batch)
        assert interrupts.pending()
    finally:
        interrupts.handled()
        interrupts.restore(previous)
    assert store.history("news") == []  # nothing logged
    assert not interrupts.pending()
