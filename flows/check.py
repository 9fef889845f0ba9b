"""``check_incoming_data``: one batch (file, folder, glob or URL) against its dataset's human reference."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from flows import tasks
from monitors import alerting, delivery, spool
from monitors.config import Settings
from monitors.gx_records import alerts as record_alerts
from monitors.quantify import CorpusTotals
from monitors.results import CheckResult, run_indicators, schedule_indicators
from monitors.rules import max_severity
from monitors.runtime import Runtime
from monitors.spool import LogRequest
from monitors.tracking import ALERT_STATE, MlflowTracker


def log_request(result: CheckResult, settings: Settings, artifacts: dict) -> LogRequest:
    """The MLflow run a check consists of: metrics, params, tags, artifacts, description."""
    firing = [a for a in result.alerts if a.status == "firing"]
    tags = {
        "collapse.notifications": str(len(result.notifications)),
        "collapse.reference_run": result.reference_run_id,
        "collapse.detector": result.detector or "none",
        "collapse.alerts.firing": str(len(firing)),
        "collapse.alerts.max_severity": max_severity(result.alerts),
        **{f"collapse.alert.{a.rule}": a.status for a in result.alerts},
    }
    params = {"input": result.batch_file, "contamination_cutoff": settings.contamination_cutoff.isoformat(),
              "share_method": result.share.method,
              **{f"indicators.{k}": v for k, v in settings.indicators.model_dump().items()}}
    description = (f"{result.records} records ({result.quarantined} quarantined) from {result.batch_file}; "
                   f"{len(firing)} alert(s) firing, max severity {max_severity(result.alerts)}")
    # summary.json is the --json contract, with its own run id (filled in when the run exists).
    artifacts = {"alerts.json": [a.to_dict() for a in result.alerts], **artifacts, "summary.json": result.to_dict()}
    return LogRequest(result.dataset, Path(result.batch_file).name, result.indicators, params, tags, artifacts,
                      description)


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
def log_check(tracker: MlflowTracker, req: LogRequest) -> str:
    return tracker.log_check(req)


@flow(name="check_incoming_data", flow_run_name="check {dataset}: {batch_name}", validate_parameters=False)
def check_incoming_data(
    input_path: str, dataset: str, settings: Settings, runtime: Runtime,
    batch_name: str = "", reference_run_id: str | None = None,
) -> CheckResult:
    """Ingest a batch, check its records (GX), compute its collapse indicators and drift against the
    reference with bands fitted on the reference, estimate its synthetic share, evaluate the alert rules
    and log one MLflow run. Alerts are data, not failures: the flow completes and says what fired.

    A check that fails (bad input, an unreachable store, a bug) is itself an alert, ``check_failed``, sent to
    on-call through the outbox (it needs no MLflow), and resolved by the dataset's next successful check."""
    try:
        result = _check(input_path, dataset, settings, runtime, reference_run_id)
    except Exception as exc:
        tasks.report_failure(settings, dataset, batch_name or input_path, exc)
        raise
    resolved = tasks.clear_failure(settings, dataset, result.run_id)
    notifications = result.notifications + resolved
    outcome = tasks.deliver_notifications(settings, notifications, result.run_id or f"spooled-{Path(result.spooled).name}")
    if outcome is not None:
        result.delivery = {"sent": outcome.sent, "queued": outcome.queued, "errors": outcome.errors}
        if result.run_id:
            record_delivery(tasks.tracker_for(runtime), result.run_id, result.delivery)
    elif notifications:
        result.delivery = {"sent": 0, "queued": 0, "errors": [
            f"no alert channel configured ({tasks.ALERT_URLS_ENV} or alerts.urls): logged to MLflow only"]}
    result.notifications = notifications
    return result


def _check(input_path: str, dataset: str, settings: Settings, runtime: Runtime,
           reference_run_id: str | None) -> CheckResult:
    tracker = tasks.tracker_for(runtime)
    replayed = tasks.replay_spool(tracker, settings)  # before any state is read: spooled runs come first
    reference_run, reference = tasks.load_reference(tracker, dataset, reference_run_id)
    suite = tasks.read_rules(settings)
    record_suite = tasks.read_record_suite(settings)
    detector = tasks.load_detector(tracker, settings.detector.model_uri)
    previous, silences = tasks.load_previous(tracker, dataset)  # every read of MLflow happens before the work
    with tasks.workspace() as work:
        prof, shards = tasks.profile_batch(input_path, settings, work)
        quarantine = tasks.write_quarantine(prof, shards, work, settings)
        values = tasks.compute_indicators(prof, reference, settings)
        report = tasks.drift_report(prof, reference, settings)
        if report is not None:
            values.update(report.values)
        values.update(tasks.band_scores(values, reference, prof.records))
        values.update(schedule_indicators(previous.hours_since, settings.alerts.expected_interval_hours))
        quality = tasks.validate_records(prof, record_suite)
        share = tasks.estimate_share(prof, detector, settings)
        corpus = CorpusTotals.from_metrics(previous.corpus).add(prof.records, share)
        row = run_indicators(prof.records, prof.quarantined_total, values, share, corpus.metrics())
        breached = tasks.evaluate_rules(suite, row, dataset)
        stepped = tasks.advance_alerts(previous.alert_states, silences, suite, row, breached, dataset, settings)
        alerts = stepped.alerts + record_alerts(quality, dataset)
        notes = [f"replayed {len(replayed)} spooled check(s) into MLflow: {', '.join(replayed)}"] if replayed else []
        notes += [f"the synthetic share comes from detector {detector.label} ({share.method})"
                 if not isinstance(detector, str) else f"no synthetic-share estimate: {detector}"]
        if prof.quarantined_total:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(prof.quarantined.items()))
            notes.append(f"{prof.quarantined_total} record(s) quarantined ({kinds}); see quarantine.jsonl in the run")
        if prof.records > settings.indicators.sample_size:
            notes.append(f"text indicators and the synthetic share use a uniform sample of {settings.indicators.sample_size} "
                         f"of the {prof.records} records")
        result = CheckResult(
            run_id="", dataset=dataset, batch_file=input_path, records=prof.records,
            quarantined=prof.quarantined_total, indicators=row, share=share, alerts=alerts,
            reference_run_id=reference_run, detector=None if isinstance(detector, str) else detector.label, notes=notes,
            record_checks=[c.to_dict() for c in quality.checks],
            notifications=[n.to_dict() for n in stepped.notifications],
            silenced=[n.to_dict() for n in stepped.silenced],
        )
        artifacts: dict = {"record_quality/results.json": result.record_checks,
                           ALERT_STATE: alerting.states_to_json(stepped.states),
                           "alerts/notifications.json": {"notify": result.notifications, "silenced": result.silenced}}
        if quality.data_docs_html:
            artifacts["record_quality/data_docs.html"] = quality.data_docs_html
        if report is not None:
            artifacts["drift/report.html"] = report.html
            artifacts["drift/report.json"] = report.json
        if quarantine is not None:
            artifacts["quarantine.jsonl"] = quarantine
        req = log_request(result, settings, artifacts)
        try:
            result.run_id = log_check(tracker, req)
        except Exception as exc:  # noqa: BLE001 - the store went away mid-run: keep the results, replay later
            result.spooled = str(spool.save(settings.state_path / "spool", req))
            result.notes.append(f"MLflow could not take the results ({delivery.scrub(str(exc))[:200]}); they are "
                                f"spooled in {result.spooled} and the next check replays them")
    publish_to_prefect(result)
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "dataset"


@task(cache_policy=NONE)
def publish_to_prefect(result: CheckResult) -> None:
    """The run's alerts in the Prefect UI (a table artifact) and one Prefect event per firing or resolved
    alert, ``collapse.alert.firing`` / ``collapse.alert.resolved``, for teams to hang automations on."""
    rows = [{"rule": a.rule, "severity": a.severity, "status": a.status,
             "value": None if a.value is None or a.value != a.value else round(a.value, 4),
             "threshold": a.threshold, "fingerprint": a.fingerprint} for a in result.alerts]
    create_table_artifact(rows or [{"rule": "-", "severity": "-", "status": "no alert"}],
                          key=f"collapse-alerts-{_slug(result.dataset)}",
                          description=f"Alerts of check {result.run_id} ({result.dataset}, {Path(result.batch_file).name})")
    for a, row in zip(result.alerts, rows):
        if a.status in ("firing", "resolved"):
            emit_event(event=f"collapse.alert.{a.status}",
                       resource={"prefect.resource.id": f"collapse.alert.{a.fingerprint}",
                                 "prefect.resource.name": a.rule, "collapse.dataset": result.dataset,
                                 "collapse.severity": a.severity},
                       payload={"value": row["value"], "threshold": a.threshold, "summary": a.summary,
                                "mlflow_run_id": result.run_id})


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
def record_delivery(tracker: MlflowTracker, run_id: str, outcome: dict) -> None:
    tracker.client.set_tag(run_id, "collapse.delivery.sent", str(outcome["sent"]))
    tracker.client.set_tag(run_id, "collapse.delivery.queued", str(outcome["queued"]))
    tracker.client.log_dict(run_id, outcome, "alerts/delivery.json")
