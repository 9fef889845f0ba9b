"""`check` through the real Prefect ephemeral API and a temporary MLflow store (SQLite + artifact folder).

One story per module (the ``story`` fixture: a human reference, a disjoint human batch that fires nothing, a
batch from a recursively retrained generator that fires collapse alerts, re-checks, a failed check, silences,
with a real on-call receiver), run once; each test asserts one behaviour of it, so the first failure does not
hide the rest. The runs, metrics, tags and artifacts are read back from MLflow itself.
"""

import asyncio
import contextlib
import io
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from monitors.demo.simulate import recursive_generations
from tests.conftest import Receiver, write_jsonl

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


@dataclass
class Step:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        lines = [ln for ln in self.out.splitlines() if ln.strip()]
        assert len(lines) == 1, self.out  # exactly one JSON object on stdout
        return json.loads(lines[0])


@dataclass
class Story:
    """What one dataset's sequence of checks did; each test below asserts one behaviour of it."""

    root: Path
    receiver: Receiver
    steps: dict[str, Step] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    def run(self, name: str, *argv: str) -> Step:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--state-dir", str(self.root / "state"), *argv])
        self.steps[name] = Step(code, out.getvalue(), err.getvalue())
        return self.steps[name]


@pytest.fixture(scope="module")
def story(data, tmp_path_factory):
    """One human reference; a disjoint human batch (nothing fires), a batch from a recursively retrained
    generator (collapse alerts fire, a critical one among them), re-checks, a failed check, silences. Runs
    once for the module, through the real Prefect API and MLflow store, with a real on-call receiver."""
    reference, human_batch, collapsed = data
    root = tmp_path_factory.mktemp("story")
    receiver = Receiver()
    st = Story(root, receiver)
    saved = dict(os.environ)  # the CLI points MLflow and Prefect at its state dir through os.environ
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            # On-call: PagerDuty Events v2 to a real receiver on 127.0.0.1, the routing key a secret.
            mp.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/v2/enqueue")
            # A still-firing alert re-notifies after repeat_interval (24 h by default; 0.7 s here).
            mp.setenv("COLLAPSE_MONITOR_ALERTS__REPEAT_INTERVAL_HOURS", "0.0002")
            ref_file = write_jsonl(root / "ref.jsonl", [{"id": p["id"], "text": p["text"], "created_at": "2020-01-01"} for p in reference])
            st.run("reference", "reference", "build", "--input", str(ref_file), "--dataset", "news")
            human = write_jsonl(root / "human.jsonl", [{"id": p["id"], "text": p["text"], "created_at": "2021-03-04"} for p in human_batch])
            st.facts["human"], st.facts["bad"] = str(human), str(root / "collapsed.jsonl")
            st.run("human", "check", "--input", str(human), "--dataset", "news", "--json")
            bad = write_jsonl(root / "collapsed.jsonl",
                              [{"id": f"s{i}", "text": t, "created_at": "2025-06-01"} for i, t in enumerate(collapsed)] + ['{"id": "cut", "te'])
            st.run("fired", "check", "--input", str(bad), "--dataset", "news", "--json")
            st.run("history_json", "history", "--dataset", "news", "--json")
            st.run("history_table", "history")
            st.run("summary", "check", "--input", str(bad), "--dataset", "news")  # the readable summary
            ok = st.steps["human"].json
            st.run("ref_is_check", "check", "--input", str(bad), "--dataset", "news", "--reference", ok["run_id"])
            st.run("ref_unknown", "check", "--input", str(bad), "--dataset", "news", "--reference", "0" * 32)
            st.run("pinned", "check", "--input", str(human), "--dataset", "news", "--reference", ok["reference_run_id"], "--json")
            (root / "broken.parquet").write_bytes(b"not a parquet file")
            st.run("broken", "check", "--input", str(root / "broken.parquet"), "--dataset", "news")
            st.facts["failed_page"] = [e["json"] for e in receiver.received if e["json"]["event_action"] == "trigger"][-1]
            # a schedule that expected a check every 0.36 s finds the gap since the last one too long
            mp.setenv("COLLAPSE_MONITOR_ALERTS__EXPECTED_INTERVAL_HOURS", "0.0001")
            st.run("again", "check", "--input", str(human), "--dataset", "news", "--json")
            st.facts["last_page_after_again"] = receiver.received[-1]["json"]["event_action"]
            mp.delenv("COLLAPSE_MONITOR_ALERTS__EXPECTED_INTERVAL_HOURS")
            st.run("alerts_json", "alerts", "list", "--dataset", "news", "--json")
            fp = {a["rule"]: a for a in st.steps["fired"].json["alerts"]}["tail_coverage_collapse"]["fingerprint"]
            st.facts["fp"] = fp
            st.run("silence", "alerts", "silence", fp, "--for", "2h", "--reason", "vendor backfill", "--dataset", "news")
            st.run("alerts_table", "alerts", "list")
            st.run("silence_unknown", "alerts", "silence", "feedfacefeedface", "--for", "2h", "--reason", "x")
            st.facts["events_before_silence"] = len(receiver.received)
            st.facts["events_until_silenced"] = [(e["json"]["event_action"], e["json"]["dedup_key"]) for e in receiver.received]
            stores = [root / "state", Path(os.environ["PREFECT_HOME"])]
            st.facts["leaks"] = [p for r in stores for p in r.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
            st.facts["prefect_db"] = any(p.suffix == ".db" for p in stores[1].rglob("*"))
            st.run("muted", "check", "--input", str(bad), "--dataset", "news", "--json")
            st.facts["pages_while_muted"] = [e["json"]["dedup_key"] for e in receiver.received[st.facts["events_before_silence"]:]]
            st.run("shorten", "alerts", "silence", fp, "--for", "1s", "--reason", "shorten it", "--dataset", "news")
            time.sleep(1.5)
            st.run("loud", "check", "--input", str(bad), "--dataset", "news", "--json")
            st.facts["pages_after_silence"] = [(e["json"]["event_action"], e["json"]["dedup_key"])
                                               for e in receiver.received[st.facts["events_before_silence"]:]]
            # what the receiver saw, for people reading the test output
            (root / "receiver.jsonl").write_text("".join(json.dumps(e["json"]) + "\n" for e in receiver.received))
            st.facts["flow_runs"] = asyncio.run(_flow_runs("check_incoming_data"))
            st.facts["table"] = asyncio.run(_artifact("collapse-alerts-news"))
            st.facts["events"] = asyncio.run(_events({"collapse.alert.firing", "collapse.alert.resolved"}, expect=4))
    finally:
        receiver.close()
        os.environ.clear()
        os.environ.update(saved)
    return st


@pytest.fixture(scope="module")
def mlflow_runs(story):
    client = MlflowClient(tracking_uri=f"sqlite:///{story.root / 'state' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("collapse-monitor/news")
    runs = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'", order_by=["attributes.start_time ASC"])
    return client, runs


def _alerts(step: Step) -> dict[str, dict]:
    return {a["rule"]: a for a in step.json["alerts"]}


def test_the_reference_is_built(story):
    assert story.steps["reference"].code == 0 and "reference for dataset 'news'" in story.steps["reference"].out


def test_a_human_batch_fires_nothing(story):
    ok = story.steps["human"]
    assert ok.code == 0
    ok = ok.json
    assert ok["dataset"] == "news" and ok["batch"]["records"] == 300 and ok["batch"]["quarantined"] == 0
    assert ok["alerts"] == []
    assert 0.85 < ok["indicators"]["tail.rare_coverage.ratio"] < 1.15
    assert ok["synthetic_share"]["estimate"] is None and "no detector is registered" in ok["synthetic_share"]["note"]


def test_a_collapsed_batch_fires_the_tail_alerts_and_quarantines_the_cut_record(story):
    assert story.steps["fired"].code == 3
    fired, rules = story.steps["fired"].json, _alerts(story.steps["fired"])
    assert {"tail_coverage_loss", "tail_coverage_collapse", "post_cutoff_majority"} <= set(rules)
    assert rules["tail_coverage_collapse"]["severity"] == "critical"
    assert rules["tail_coverage_collapse"]["value"] < rules["tail_coverage_collapse"]["threshold"] == 0.6
    assert fired["batch"] == {"file": story.facts["bad"], "records": 300, "quarantined": 1}
    assert set(fired["alerts"][0]) >= {"rule", "severity", "status", "fingerprint", "value", "threshold"}
    # Critical rules fire at the first breach; warnings wait for a second breaching run (meta.for_runs).
    assert rules["tail_coverage_loss"]["status"] == "pending" and rules["tail_coverage_collapse"]["status"] == "firing"
    assert {(n["kind"], n["rule"]) for n in fired["notifications"]} == {("firing", "tail_coverage_collapse")}


def test_each_check_is_an_mlflow_run_with_metrics_and_alert_tags(story, mlflow_runs):
    client, runs = mlflow_runs
    ok, fired = story.steps["human"].json, story.steps["fired"].json
    assert [r.info.run_id for r in runs[:2]] == [ok["run_id"], fired["run_id"]]
    first, second = runs[:2]
    assert first.data.tags["collapse.alerts.firing"] == "0" and first.data.tags["collapse.alerts.max_severity"] == "none"
    assert second.data.tags["collapse.alerts.max_severity"] == "critical"
    assert second.data.tags["collapse.alert.tail_coverage_collapse"] == "firing"
    assert second.data.tags["collapse.alert.tail_coverage_loss"] == "pending"
    assert int(second.data.tags["collapse.alerts.firing"]) == sum(a["status"] == "firing" for a in fired["alerts"])
    assert second.data.metrics["tail.rare_coverage.ratio"] == pytest.approx(fired["indicators"]["tail.rare_coverage.ratio"])
    assert second.data.metrics["batch.quarantined"] == 1
    assert second.info.run_name == "check news collapsed.jsonl" and second.info.status == "FINISHED"
    assert client.get_metric_history(second.info.run_id, "tail.distinct_2")[0].step == 1  # its sequence number
    for name in ("tail.entropy_1", "tail.entropy_1.z", "mode.near_duplicate_share", "mode.embedding_dispersion",
                 "mode.cluster_entropy.z", "length.median_words", "batch.quarantined_share"):
        assert name in second.data.metrics, name


def test_alert_state_quarantine_drift_and_record_quality_are_artifacts(story, mlflow_runs, tmp_path):
    client, runs = mlflow_runs
    first, second = runs[:2]
    artifacts = {a.path for a in client.list_artifacts(second.info.run_id)}
    assert {"alerts.json", "summary.json", "quarantine.jsonl", "drift", "record_quality", "alerts"} <= artifacts
    state = json.load(open(client.download_artifacts(second.info.run_id, "alerts/state.json", str(tmp_path / "st"))))
    assert {s["rule"]: s["status"] for s in state}["tail_coverage_loss"] == "pending"
    assert "not valid JSON" in open(client.download_artifacts(second.info.run_id, "quarantine.jsonl", str(tmp_path))).read()
    # Evidently's report and GX's results and Data Docs are artifacts; their figures are metrics.
    drift_dir = client.download_artifacts(second.info.run_id, "drift", str(tmp_path / "dl"))
    assert {"report.html.gz", "report.json.gz"} <= set(os.listdir(drift_dir))
    assert second.data.metrics["drift.text_auc"] > 0.9 and second.data.metrics["drift.text_auc.z"] > 5
    assert first.data.metrics["drift.text_auc"] < 0.75
    rq = client.download_artifacts(second.info.run_id, "record_quality", str(tmp_path / "dl"))
    checks = json.load(open(os.path.join(rq, "results.json")))
    assert {c["rule"] for c in checks} >= {"records_duplicate_ids", "records_provenance_unknown_value"}
    assert "<html" in open(os.path.join(rq, "data_docs.html")).read().lower()


def test_history_reads_the_runs_back_newest_first(story):
    assert story.steps["history_json"].code == 0
    rows = json.loads(story.steps["history_json"].out)
    assert [r["run_id"] for r in rows] == [story.steps["fired"].json["run_id"], story.steps["human"].json["run_id"]]
    assert "tail_coverage_collapse" in rows[0]["alerts"]
    table = story.steps["history_table"]
    assert table.code == 0 and "collapsed.jsonl" in table.out and "tail_coverage_collapse" in table.out


def test_the_readable_summary_names_what_fired_and_repeats_what_still_fires(story):
    text = story.steps["summary"]
    assert text.code == 3
    assert "[critical] tail_coverage_collapse" in text.out and "1 quarantined" in text.out
    assert "firing tail_coverage_loss" in text.out  # its second breaching run: it fires and is to be notified
    assert "repeat tail_coverage_collapse" in text.out  # still firing after repeat_interval: notified again


def test_reference_must_name_a_reference_run(story):
    assert story.steps["ref_is_check"].code == 2 and "is a check run, not a reference" in story.steps["ref_is_check"].err
    assert story.steps["ref_unknown"].code == 2 and "no such MLflow run" in story.steps["ref_unknown"].err


def test_a_human_batch_on_a_pinned_reference_resolves_the_alerts_and_delivers_each(story):
    ok, pinned = story.steps["human"].json, story.steps["pinned"]
    assert pinned.code == 0 and pinned.json["reference_run_id"] == ok["reference_run_id"]
    resolved = {(n["kind"], n["rule"]) for n in pinned.json["notifications"]}
    assert {("resolved", "tail_coverage_collapse"), ("resolved", "tail_coverage_loss")} <= resolved
    assert {n["kind"] for n in pinned.json["notifications"]} == {"resolved"}
    assert pinned.json["delivery"]["queued"] == 0 and pinned.json["delivery"]["sent"] == len(pinned.json["notifications"])


def test_a_failed_check_pages_and_the_next_check_resolves_it_and_a_missed_schedule_fires(story):
    assert story.steps["broken"].code == 2
    failed = story.facts["failed_page"]
    assert "check_failed" in failed["payload"]["summary"]
    assert "cannot be read as parquet" in failed["payload"]["custom_details"]["summary"]
    again = story.steps["again"].json
    kinds = {(n["kind"], n["rule"]) for n in again["notifications"]}
    assert ("resolved", "check_failed") in kinds and ("firing", "checks_missed") in kinds
    assert again["indicators"]["schedule.gap_ratio"] > 2
    assert story.facts["last_page_after_again"] in ("trigger", "resolve") and again["delivery"]["queued"] == 0


def test_alerts_list_shows_current_alerts_and_silences(story):
    assert story.steps["alerts_json"].code == 0
    listed = json.loads(story.steps["alerts_json"].out)["news"]
    assert [a["rule"] for a in listed["alerts"]] == ["checks_missed"] and listed["silences"] == []
    fp = story.facts["fp"]
    assert story.steps["silence"].code == 0 and f"silenced {fp} on dataset 'news'" in story.steps["silence"].out
    assert story.steps["alerts_table"].code == 0
    silences = [ln.split() for ln in story.steps["alerts_table"].out.split("SILENCE", 1)[1].splitlines()[1:]]
    assert [ln[0] for ln in silences if fp in ln] == ["active"]
    assert story.steps["silence_unknown"].code == 2
    assert "no current alert has fingerprint" in story.steps["silence_unknown"].err


def test_the_receiver_saw_each_lifecycle_event_once_keyed_by_fingerprint(story):
    """The critical alert at its first breach and its repeat, the warning at its second breach, both resolved by
    the human batch, each once, with the fingerprint as PagerDuty's dedup key."""
    events = story.facts["events_until_silenced"]
    fps = {a["rule"]: a["fingerprint"] for a in story.steps["fired"].json["alerts"]}
    assert events[0] == ("trigger", fps["tail_coverage_collapse"])
    assert ("trigger", fps["tail_coverage_loss"]) in events
    assert events.count(("trigger", fps["tail_coverage_collapse"])) == 2  # firing, then its repeat
    resolves = [fp for action, fp in events if action == "resolve"]
    assert {fps["tail_coverage_collapse"], fps["tail_coverage_loss"]} <= set(resolves) and len(resolves) == len(set(resolves))


def test_the_routing_key_never_reaches_a_store(story):
    """Not the MLflow store, its artifacts, Prefect's database or the outbox."""
    assert story.facts["leaks"] == [] and story.facts["prefect_db"]


def test_a_silence_holds_back_the_page_until_it_expires(story):
    fp, muted = story.facts["fp"], story.steps["muted"]
    assert muted.code == 3 and ("firing", "tail_coverage_collapse") in {(n["kind"], n["rule"]) for n in muted.json["silenced"]}
    assert fp not in story.facts["pages_while_muted"]
    assert story.steps["shorten"].code == 0
    loud = story.steps["loud"].json
    assert ("firing", "tail_coverage_collapse") in {(n["kind"], n["rule"]) for n in loud["notifications"]}
    assert ("trigger", fp) in story.facts["pages_after_silence"]


def test_the_checks_ran_through_prefect_with_an_alert_table_and_events(story):
    found = story.facts["flow_runs"]
    states = sorted(r.state.type.value for r in found)
    assert len(found) >= 5 and states.count("FAILED") == 1 and set(states) == {"COMPLETED", "FAILED"}  # broken.parquet
    assert any(r.name == "check news: collapsed.jsonl" for r in found)
    table = story.facts["table"]
    assert table is not None and table.type == "table"
    assert {"collapse.alert.firing", "collapse.alert.resolved"} <= story.facts["events"]


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
