"""``check_incoming_data``: one batch file against its dataset's human reference, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from flows import tasks
from monitors.config import Settings
from monitors.results import CheckResult, run_indicators
from monitors.rules import max_severity
from monitors.runtime import Runtime
from monitors.tracking import MlflowTracker, to_json_text


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
def log_check(tracker: MlflowTracker, result: CheckResult, batch, settings: Settings) -> str:
    firing = [a for a in result.alerts if a.status == "firing"]
    tags = {
        "collapse.reference_run": result.reference_run_id,
        "collapse.detector": result.detector or "none",
        "collapse.alerts.firing": str(len(firing)),
        "collapse.alerts.max_severity": max_severity(result.alerts),
        **{f"collapse.alert.{a.rule}": a.status for a in result.alerts},
    }
    params = {"input": batch.path, "contamination_cutoff": settings.contamination_cutoff.isoformat(),
              "share_method": result.share.method,
              **{f"indicators.{k}": v for k, v in settings.indicators.model_dump().items()}}
    artifacts = {"alerts.json": [a.to_dict() for a in result.alerts]}
    if batch.quarantine:
        artifacts["quarantine.jsonl"] = "\n".join(to_json_text(q).replace("\n", "") for q in batch.quarantine) + "\n"
    description = (f"{result.records} records ({result.quarantined} quarantined) from {Path(batch.path).name}; "
                   f"{len(firing)} alert(s) firing, max severity {max_severity(result.alerts)}")
    run_id = tracker.log_check(result.dataset, Path(batch.path).name, metrics=result.indicators, params=params,
                               tags=tags, artifacts=artifacts, description=description)
    # summary.json is the --json contract, with its own run id, for readers of the run's artifacts.
    summary = {**result.to_dict(), "run_id": run_id}
    tracker.client.log_text(run_id, to_json_text(summary), "summary.json")
    return run_id


@flow(name="check_incoming_data", flow_run_name="check {dataset}: {batch_name}", validate_parameters=False)
def check_incoming_data(
    input_path: str, dataset: str, settings: Settings, runtime: Runtime,
    batch_name: str = "", reference_run_id: str | None = None,
) -> CheckResult:
    """Ingest a batch, compute its collapse indicators against the reference, estimate its synthetic
    share, evaluate the alert rules and log one MLflow run. Alerts are data, not failures: the flow
    completes and says what fired."""
    tracker = tasks.tracker_for(runtime)
    reference_run, reference = tasks.load_reference(tracker, dataset, reference_run_id)
    suite = tasks.read_rules(settings)
    batch = tasks.read_batch(input_path, settings)
    detector = tasks.load_detector(tracker, settings.detector.model_uri)
    prof = tasks.profile_batch(batch, settings)
    values = tasks.compute_indicators(prof, reference, settings)
    share = tasks.estimate_share(batch, detector, settings)
    row = run_indicators(len(batch.records), len(batch.quarantine), values, share)
    alerts = tasks.evaluate_rules(suite, row, dataset)
    notes = [f"{len(batch.quarantine)} record(s) quarantined; see quarantine.jsonl in the run"] if batch.quarantine else []
    result = CheckResult(
        run_id="", dataset=dataset, batch_file=input_path, records=len(batch.records),
        quarantined=len(batch.quarantine), indicators=row, share=share, alerts=alerts,
        reference_run_id=reference_run, detector=None if isinstance(detector, str) else detector.label, notes=notes,
    )
    result.run_id = log_check(tracker, result, batch, settings)
    return result
