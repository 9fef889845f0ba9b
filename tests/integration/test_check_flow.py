"""`check` through the real Prefect ephemeral API and a temporary MLflow store (SQLite + artifact folder).

One human reference; then a disjoint human batch (nothing fires, exit 0) and a batch from a recursively
retrained generator (collapse alerts fire, a critical one among them, exit 3). The runs, metrics, tags and
artifacts are read back from MLflow itself.
"""

import asyncio
import json
import os
import random
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from monitors.demo.simulate import recursive_generations
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(austen):
    rng = random.Random(5)
    paras = list(austen)
    rng.shuffle(paras)
    reference, human_batch, gen_train = paras[:1500], paras[1500:1800], paras[1800:3300]
    collapsed = recursive_generations([p["text"] for p in gen_train], 9, 300, seed=2)[-1].sample(300, rng)
    return reference, human_batch, collapsed


def _run_json(argv, capsys):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


SECRET = "pdROUTINGkey0secret"


def test_check_logs_runs_metrics_and_alert_tags_to_mlflow(isolated, data, capsys, receiver, monkeypatch):
    reference, human_batch, collapsed = data
    # On-call: PagerDuty Events v2 to a real receiver on 127.0.0.1, the routing key a secret.
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/v2/enqueue")
    # A still-firing alert re-notifies after repeat_interval (24 h by default; 0.7 s here).
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__REPEAT_INTERVAL_HOURS", "0.0002")
    ref_file = write_jsonl(isolated / "ref.jsonl", [{"id": p["id"], "text": p["text"], "created_at": "2020-01-01"} for p in reference])
    assert main(["reference", "build", "--input", str(ref_file), "--dataset", "news"]) == 0
    assert "reference for dataset 'news'" in capsys.readouterr().out

    human = write_jsonl(isolated / "human.jsonl", [{"id": p["id"], "text": p["text"], "created_at": "2021-03-04"} for p in human_batch])
    code, ok = _run_json(["check", "--input", str(human), "--dataset", "news"], capsys)
    assert code == 0
    assert ok["dataset"] == "news" and ok["batch"]["records"] == 300 and ok["batch"]["quarantined"] == 0
    assert ok["alerts"] == []
    assert 0.85 < ok["indicators"]["tail.rare_coverage.ratio"] < 1.15
    assert ok["synthetic_share"]["estimate"] is None and "no detector is registered" in ok["synthetic_share"]["note"]

    bad = write_jsonl(isolated / "collapsed.jsonl",
                      [{"id": f"s{i}", "text": t, "created_at": "2025-06-01"} for i, t in enumerate(collapsed)] + ['{"id": "cut", "te'])
    code, fired = _run_json(["check", "--input", str(bad), "--dataset", "news"], capsys)
    assert code == 3
    rules = {a["rule"]: a for a in fired["alerts"]}
    assert {"tail_coverage_loss", "tail_coverage_collapse", "post_cutoff_majority"} <= set(rules)
    assert rules["tail_coverage_collapse"]["severity"] == "critical"
    assert rules["tail_coverage_collapse"]["value"] < rules["tail_coverage_collapse"]["threshold"] == 0.6
    assert fired["batch"] == {"file": str(bad), "records": 300, "quarantined": 1}
    assert set(fired["alerts"][0]) >= {"rule", "severity", "status", "fingerprint", "value", "threshold"}

    client = MlflowClient(tracking_uri=f"sqlite:///{isolated / '.collapse-monitor' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("collapse-monitor/news")
    runs = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'", order_by=["attributes.start_time ASC"])
    assert [r.info.run_id for r in runs] == [ok["run_id"], fired["run_id"]]
    first, second = runs
    assert first.data.tags["collapse.alerts.firing"] == "0" and first.data.tags["collapse.alerts.max_severity"] == "none"
    assert second.data.tags["collapse.alerts.max_severity"] == "critical"
    assert second.data.tags["collapse.alert.tail_coverage_collapse"] == "firing"
    assert int(second.data.tags["collapse.alerts.firing"]) == sum(a["status"] == "firing" for a in fired["alerts"])
    # Critical rules fire at the first breach; warnings wait for a second breaching run (meta.for_runs).
    assert rules["tail_coverage_loss"]["status"] == "pending" and rules["tail_coverage_collapse"]["status"] == "firing"
    assert second.data.tags["collapse.alert.tail_coverage_loss"] == "pending"
    assert {(n["kind"], n["rule"]) for n in fired["notifications"]} == {("firing", "tail_coverage_collapse")}
    assert second.data.metrics["tail.rare_coverage.ratio"] == pytest.approx(fired["indicators"]["tail.rare_coverage.ratio"])
    assert second.data.metrics["batch.quarantined"] == 1
    assert second.info.run_name == "check news collapsed.jsonl" and second.info.status == "FINISHED"
    history = client.get_metric_history(second.info.run_id, "tail.distinct_2")
    assert history[0].step == 1  # the run's sequence number in its dataset
    artifacts = {a.path for a in client.list_artifacts(second.info.run_id)}
    assert {"alerts.json", "summary.json", "quarantine.jsonl", "drift", "record_quality", "alerts"} <= artifacts
    state = json.load(open(client.download_artifacts(second.info.run_id, "alerts/state.json", str(isolated / "st"))))
    assert {s["rule"]: s["status"] for s in state}["tail_coverage_loss"] == "pending"
    quarantine = client.download_artifacts(second.info.run_id, "quarantine.jsonl", str(isolated))
    assert "not valid JSON" in open(quarantine).read()
    # Evidently's report and GX's results and Data Docs are artifacts; their figures are metrics.
    drift_dir = client.download_artifacts(second.info.run_id, "drift", str(isolated / "dl"))
    assert {"report.html.gz", "report.json.gz"} <= set(os.listdir(drift_dir))
    assert second.data.metrics["drift.text_auc"] > 0.9 and second.data.metrics["drift.text_auc.z"] > 5
    assert first.data.metrics["drift.text_auc"] < 0.75
    rq = client.download_artifacts(second.info.run_id, "record_quality", str(isolated / "dl"))
    checks = json.load(open(os.path.join(rq, "results.json")))
    assert {c["rule"] for c in checks} >= {"records_duplicate_ids", "records_provenance_unknown_value"}
    assert "<html" in open(os.path.join(rq, "data_docs.html")).read().lower()
    for name in ("tail.entropy_1", "tail.entropy_1.z", "mode.near_duplicate_share", "mode.embedding_dispersion",
                 "mode.cluster_entropy.z", "length.median_words", "batch.quarantined_share"):
        assert name in second.data.metrics, name

    # The run history reads the same runs back, newest first.
    assert main(["history", "--dataset", "news", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == [fired["run_id"], ok["run_id"]]
    assert "tail_coverage_collapse" in rows[0]["alerts"]
    assert main(["history"]) == 0
    table = capsys.readouterr().out
    assert "collapsed.jsonl" in table and "tail_coverage_collapse" in table

    # The readable summary (no --json) names what fired.
    assert main(["check", "--input", str(bad), "--dataset", "news"]) == 3
    text = capsys.readouterr().out
    assert "[critical] tail_coverage_collapse" in text and "1 quarantined" in text
    assert "firing tail_coverage_loss" in text  # its second breaching run: it fires and is to be notified
    assert "repeat tail_coverage_collapse" in text  # still firing after repeat_interval: notified again

    # --reference must name a reference run; anything else is a usage error before any flow starts.
    assert main(["check", "--input", str(bad), "--dataset", "news", "--reference", ok["run_id"]]) == 2
    assert "is a check run, not a reference" in capsys.readouterr().err
    assert main(["check", "--input", str(bad), "--dataset", "news", "--reference", "0" * 32]) == 2
    assert "no such MLflow run" in capsys.readouterr().err
    code, pinned = _run_json(["check", "--input", str(human), "--dataset", "news", "--reference", ok["reference_run_id"]], capsys)
    assert code == 0 and pinned["reference_run_id"] == ok["reference_run_id"]
    resolved = {(n["kind"], n["rule"]) for n in pinned["notifications"]}
    assert {("resolved", "tail_coverage_collapse"), ("resolved", "tail_coverage_loss")} <= resolved
    assert {n["kind"] for n in pinned["notifications"]} == {"resolved"}

    # A failed check is an alert too (no MLflow needed to send it); the next good check resolves it.
    (isolated / "broken.parquet").write_bytes(b"not a parquet file")
    assert main(["check", "--input", str(isolated / "broken.parquet"), "--dataset", "news"]) == 2
    capsys.readouterr()
    failed = [e["json"] for e in receiver.received if e["json"]["event_action"] == "trigger"][-1]
    assert "check_failed" in failed["payload"]["summary"] and "cannot be read as parquet" in failed["payload"]["custom_details"]["summary"]
    # ... and a schedule that expected a check every 0.36 s finds the gap since the last one too long.
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__EXPECTED_INTERVAL_HOURS", "0.0001")
    code, again = _run_json(["check", "--input", str(human), "--dataset", "news"], capsys)
    kinds = {(n["kind"], n["rule"]) for n in again["notifications"]}
    assert ("resolved", "check_failed") in kinds and ("firing", "checks_missed") in kinds
    assert again["indicators"]["schedule.gap_ratio"] > 2
    assert receiver.received[-1]["json"]["event_action"] in ("trigger", "resolve") and again["delivery"]["queued"] == 0
    monkeypatch.delenv("COLLAPSE_MONITOR_ALERTS__EXPECTED_INTERVAL_HOURS")

    # alerts list shows no current alert after the resolve; a silence is kept as an experiment tag.
    assert main(["alerts", "list", "--dataset", "news", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["news"]
    assert [a["rule"] for a in listed["alerts"]] == ["checks_missed"] and listed["silences"] == []
    fp = rules["tail_coverage_collapse"]["fingerprint"]
    assert main(["alerts", "silence", fp, "--for", "2h", "--reason", "vendor backfill", "--dataset", "news"]) == 0
    assert f"silenced {fp} on dataset 'news'" in capsys.readouterr().out
    assert main(["alerts", "list"]) == 0
    silences = [ln.split() for ln in capsys.readouterr().out.split("SILENCE", 1)[1].splitlines()[1:]]
    assert [ln[0] for ln in silences if fp in ln] == ["active"]
    assert main(["alerts", "silence", "feedfacefeedface", "--for", "2h", "--reason", "x"]) == 2
    assert "no current alert has fingerprint" in capsys.readouterr().err

    # The receiver saw the lifecycle: the critical alert at its first breach and its repeat, the warning at its
    # second breach, both resolved by the human batch, each once, with the fingerprint as PagerDuty's dedup key.
    events = [(e["json"]["event_action"], e["json"]["dedup_key"]) for e in receiver.received]
    fps = {a["rule"]: a["fingerprint"] for a in fired["alerts"]}
    assert events[0] == ("trigger", fps["tail_coverage_collapse"])
    assert ("trigger", fps["tail_coverage_loss"]) in events
    assert events.count(("trigger", fps["tail_coverage_collapse"])) == 2  # firing, then its repeat
    resolves = [fp for action, fp in events if action == "resolve"]
    assert {fps["tail_coverage_collapse"], fps["tail_coverage_loss"]} <= set(resolves) and len(resolves) == len(set(resolves))
    assert pinned["delivery"]["queued"] == 0 and pinned["delivery"]["sent"] == len(pinned["notifications"])
    # The secret never reached the MLflow store, its artifacts, Prefect's database or the outbox.
    stores = [isolated / ".collapse-monitor", Path(os.environ["PREFECT_HOME"])]
    leaks = [p for root in stores for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == [] and any(p.suffix == ".db" for p in stores[1].rglob("*"))

    # A silence holds back the page while the alert fires again, and lets it through once it has expired.
    before = len(receiver.received)
    code, muted = _run_json(["check", "--input", str(bad), "--dataset", "news"], capsys)
    assert code == 3 and ("firing", "tail_coverage_collapse") in {(n["kind"], n["rule"]) for n in muted["silenced"]}
    assert fp not in [e["json"]["dedup_key"] for e in receiver.received[before:]]
    assert main(["alerts", "silence", fp, "--for", "1s", "--reason", "shorten it", "--dataset", "news"]) == 0
    capsys.readouterr()
    time.sleep(1.5)
    code, loud = _run_json(["check", "--input", str(bad), "--dataset", "news"], capsys)
    assert ("firing", "tail_coverage_collapse") in {(n["kind"], n["rule"]) for n in loud["notifications"]}
    assert ("trigger", fp) in [(e["json"]["event_action"], e["json"]["dedup_key"]) for e in receiver.received[before:]]
    # what the receiver saw, for people reading the test output
    (isolated / "receiver.jsonl").write_text("".join(json.dumps(e["json"]) + "\n" for e in receiver.received))

    # The checks really went through Prefect: their flow runs are in the (ephemeral) API, completed.
    found = asyncio.run(_flow_runs("check_incoming_data"))
    states = sorted(r.state.type.value for r in found)
    assert len(found) >= 5 and states.count("FAILED") == 1 and set(states) == {"COMPLETED", "FAILED"}  # broken.parquet
    assert any(r.name == "check news: collapsed.jsonl" for r in found)
    # ... with the alerts as a Prefect table artifact and one Prefect event per firing / resolved alert.
    table = asyncio.run(_artifact("collapse-alerts-news"))
    assert table is not None and table.type == "table"
    names = asyncio.run(_events({"collapse.alert.firing", "collapse.alert.resolved"}, expect=4))
    assert {"collapse.alert.firing", "collapse.alert.resolved"} <= names


async def _artifact(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return found[0] if found else None


async def _events(names, expect, timeout=20.0):
    """Event names seen (events reach the API asynchronously: poll a little)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = asyncio.get_event_loop().time() + timeout
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=EventFilter(event=EventNameFilter(name=sorted(names))), limit=50)
            if len(page.events) >= expect or asyncio.get_event_loop().time() > deadline:
                return {e.event for e in page.events}
            await asyncio.sleep(0.5)


async def _flow_runs(name):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))


def test_first_hour_mistakes_are_named_and_not_counted(isolated, data, capsys):
    """Issue 20: a wrong text column is an input error (no run, no page), the quarantine is findable, a re-check
    of the same file is not counted into the corpus twice, and a failed check shows in `alerts list`."""
    import gzip

    reference, human_batch, _ = data
    ref_file = write_jsonl(isolated / "ref.jsonl", [{"id": p["id"], "text": p["text"]} for p in reference[:600]])
    assert main(["reference", "build", "--input", str(ref_file), "--dataset", "news"]) == 0
    shown = capsys.readouterr()  # progress on stderr (item 7), the result alone on stdout
    assert "reading " in shown.err and "fitting bands" in shown.err and "pseudo-batches: " in shown.err
    assert "saving the reference to MLflow" in shown.err and shown.out.startswith("reference for dataset 'news'")

    body = write_jsonl(isolated / "body.jsonl", [{"id": p["id"], "body": p["text"]} for p in human_batch[:100]])
    code, err = _run_json(["check", "--input", str(body), "--dataset", "news"], capsys)
    assert code == 2 and err["exit_code"] == 2
    for part in (str(body), "no record has the text column 'text'", "columns found: body, id", "columns.text"):
        assert part in err["error"], part
    assert main(["history", "--dataset", "news", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []

    batch = write_jsonl(isolated / "human.jsonl", [{"id": p["id"], "text": p["text"]} for p in human_batch] + ['{"id": "cut'])
    assert main(["check", "--input", str(batch), "--dataset", "news"]) == 0
    out = capsys.readouterr().out
    where = [ln.split("quarantined records: ", 1)[1] for ln in out.splitlines() if "quarantined records: " in ln]
    assert len(where) == 1 and "not valid JSON" in Path(where[0]).read_text(), out

    code, again = _run_json(["check", "--input", str(batch), "--dataset", "news"], capsys)
    assert code == 0 and again["recheck_of"] and again["indicators"]["corpus.batches"] == 1
    assert any("already counted" in n for n in again["notes"])
    code, recounted = _run_json(["check", "--input", str(batch), "--dataset", "news", "--recount"], capsys)
    assert recounted["recheck_of"] is None and recounted["indicators"]["corpus.batches"] == 2

    whole = gzip.compress(b"".join(json.dumps({"id": p["id"], "text": p["text"]}).encode() + b"\n" for p in human_batch))
    (isolated / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    assert main(["check", "--input", str(isolated / "cut.jsonl.gz"), "--dataset", "news"]) == 2
    capsys.readouterr()
    assert main(["alerts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SEVERITY") and lines[1].split()[:4] == ["warning", "firing", "check_failed", "news"]
