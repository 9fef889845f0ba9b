"""``check_incoming_data``: one batch (file, folder, glob or URL) against its dataset's human reference."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from flows import batches, interrupts, oncall, synthetic_share, tasks
from monitors.adapters import drift
from monitors.adapters.gx_records import alerts as record_alerts
from monitors.adapters.registry import NoDetector
from monitors.adapters.runtime import Runtime
from monitors.adapters.sources import Batch
from monitors.config import Settings
from monitors.core import alerting
from monitors.core.indicators import trend_indicators
from monitors.core.quantify import CorpusTotals
from monitors.core.results import CheckResult, run_indicators, schedule_indicators
from monitors.core.runrecord import RunRecord, firing_summary, rule_run
from monitors.core.schema import Artifact, RunKind, Tag


def check_record(result: CheckResult, settings: Settings, stepped: alerting.StepResult, artifacts: dict,
                 started: float) -> RunRecord:
    """The MLflow run a check consists of: its own params, tags and artifacts plus the shared alert part."""
    tags = {Tag.REFERENCE_RUN: result.reference_run_id, Tag.DETECTOR: result.detector or "none"}
    params = {"input": result.batch_file, "contamination_cutoff": settings.contamination_cutoff.isoformat(),
              "share_method": result.share.method,
              **{f"indicators.{k}": v for k, v in settings.indicators.model_dump().items()}}
    description = (f"{result.records} records ({result.quarantined} quarantined) from {result.batch_file}; "
                   f"{firing_summary(result.alerts)}")
    return rule_run(result.dataset, Path(result.batch_file).name, kind=RunKind.CHECK, metrics=result.indicators,
                    params=params, tags=tags, artifacts=artifacts, description=description, summary=result.to_dict(),
                    alerts=result.alerts, states=stepped.states, notifications=stepped.notifications,
                    silenced=stepped.silenced, started=started)


@flow(name="check_incoming_data", flow_run_name="check {dataset}: {batch_name}", validate_parameters=False)
def check_incoming_data(
    input_path: str | Batch, dataset: str, settings: Settings, runtime: Runtime,
    batch_name: str = "", reference_run_id: str | None = None, content_sha256: str = "", counted_in: str = "",
    recount: bool = False,
) -> CheckResult:
    """Ingest a batch, check its records (GX), compute its collapse indicators and drift against the
    reference with bands fitted on the reference, estimate its synthetic share, evaluate the alert rules
    and log one MLflow run. Alerts are data, not failures: the flow completes and says what fired.

    A check that fails (bad input, an unreachable store, a bug) is itself an alert, ``check_failed``, sent to
    on-call through the outbox (it needs no MLflow), and resolved by the dataset's next successful check.
    Once the run is logged (or spooled) the check has succeeded: nothing after that may fail it, or a landing
    zone would count the batch again.

    ``counted_in``: the run that already counted this content (a re-check): the batch is checked and logged,
    but not added to the corpus totals again. Unless ``recount``, a batch with ``content_sha256`` is looked up
    while the dataset's lock is held, so a concurrent check of the same bytes (or one that outlived its landing
    lease) that counted it first makes this one a re-check."""
    batch_label = batch_name or str(input_path)
    try:
        batch = Batch.resolve(input_path)  # once: hashed, planned and read from this list of files
        with tasks.dataset_lock(settings, dataset):  # from reading the previous totals to logging the new ones
            if content_sha256 and not counted_in and not recount:
                counted_in = _counted_by(runtime, dataset, content_sha256)
            result = _check(batch, dataset, settings, runtime, reference_run_id, content_sha256, counted_in)
    except Exception as exc:
        oncall.report_failure(settings, dataset, batch_label, exc)
        raise
    return oncall.after_run(result, settings, runtime, dataset,
                           f"Alerts of check {result.run_id} ({dataset}, {Path(str(input_path)).name})")


def _counted_by(runtime: Runtime, dataset: str, content_sha256: str) -> str:
    try:
        return tasks.tracker_for(runtime).run_for_content(dataset, content_sha256) or ""
    except Exception:  # noqa: BLE001 - MLflow unreachable: the check spools, and counts, as it would have
        return ""


def _check(batch: Batch, dataset: str, settings: Settings, runtime: Runtime,
           reference_run_id: str | None, content_sha256: str = "", counted_in: str = "") -> CheckResult:
    started = time.time()  # the MLflow run spans the check, not just the logging of it
    tracker = tasks.tracker_for(runtime)
    replayed = tasks.replay_spool(tracker, settings)  # before any state is read: spooled runs come first
    reference_run, reference = tasks.load_reference(tracker, dataset, reference_run_id)
    suite = tasks.read_rules(settings)
    record_suite = tasks.read_record_suite(settings)
    detector = tasks.load_detector(tracker, settings.detector.model_uri)
    previous, silences = tasks.load_previous(tracker, dataset)  # every read of MLflow happens before the work
    with batches.workspace() as work:
        if settings.task_runner == "dask":
            prof, shards = batches.profile_batch_on_runner(batch, settings, work)
        else:
            prof, shards = batches.profile_batch(batch, settings, work)
        quarantine = batches.write_quarantine(prof, shards, work, settings)
        # in the CLI's check worker (another process), if it has one, while this one goes on
        pending_report = tasks.start_drift_report(prof, reference, settings)
        pending_quality = tasks.start_record_validation(prof, record_suite)
        values = tasks.compute_indicators(prof, reference, settings)
        share = synthetic_share.estimate_share(prof, detector, settings, reference)
        report = tasks.drift_report(prof, reference, settings, pending_report)
        quality = tasks.validate_records(prof, record_suite, pending_quality)
        if report is not None:
            values.update(report.values)
        values.update(tasks.band_scores(values, reference, prof.records))
        values.update(trend_indicators(values, previous.metrics))  # against the dataset's previous check
        values.update(schedule_indicators(previous.hours_since, settings.alerts.expected_interval_hours))
        corpus = CorpusTotals.from_metrics(previous.corpus)
        corpus = corpus if counted_in else corpus.add(prof.records, share)
        row = run_indicators(prof.records, prof.quarantined_total, values, share, corpus.metrics())
        breached = tasks.evaluate_rules(suite, row, dataset, tasks.start_rule_evaluation(suite, row, dataset))
        stepped = tasks.advance_alerts(previous.alert_states, silences, suite, row, breached, dataset, settings)
        alerts = stepped.alerts + record_alerts(quality, dataset)
        notes = [f"replayed {len(replayed)} spooled check(s) into MLflow: {', '.join(replayed)}"] if replayed else []
        notes += [f"a re-check: this content was already counted by run {counted_in}, so the corpus totals (corpus.*) "
                  f"are not added to again (--recount counts it again)"] if counted_in else []
        notes += [f"the synthetic share comes from detector {detector.label} ({share.method})"
                 if not isinstance(detector, NoDetector) else
                 f"the synthetic share comes from the local LM against the human reference ({share.method}; "
                 f"no detector: {detector})" if share.estimate is not None and "mpe" in share.method else
                 f"no synthetic-share estimate: {share.note or detector}"]
        if prof.quarantined_total:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(prof.quarantined.items()))
            cap = settings.ingest.quarantine_entries_per_reason
            capped = f" (the first {cap} of each reason)" if max(prof.quarantined.values()) > cap else ""
            notes.append(f"{prof.quarantined_total} record(s) quarantined ({kinds}); see quarantine.jsonl in the run{capped}")
        if prof.records > settings.indicators.sample_size:
            notes.append(f"text indicators and the synthetic share use a uniform sample of {settings.indicators.sample_size} "
                         f"of the {prof.records} records")
        result = CheckResult(
            run_id="", dataset=dataset, batch_file=batch.spec, records=prof.records,
            quarantined=prof.quarantined_total, indicators=row, share=share, alerts=alerts,
            reference_run_id=reference_run, detector=None if isinstance(detector, NoDetector) else detector.label, notes=notes,
            record_checks=[c.to_dict() for c in quality.checks],
            notifications=[n.to_dict() for n in stepped.notifications],
            silenced=[n.to_dict() for n in stepped.silenced], recheck_of=counted_in,
        )
        artifacts: dict = {Artifact.RECORD_QUALITY: result.record_checks}
        if quality.data_docs_html:
            artifacts[Artifact.DATA_DOCS] = quality.data_docs_html
        if report is not None:
            artifacts.update(drift.report_artifacts(report))
        if quarantine is not None:
            artifacts[Artifact.QUARANTINE] = quarantine
        req = check_record(result, settings, stepped, artifacts, started)
        if content_sha256 and not counted_in:  # lets a later run find out that this content was counted
            req.tags[Tag.CONTENT] = content_sha256
        if counted_in:
            req.tags[Tag.RECHECK_OF] = counted_in
        interrupts.checkpoint()  # a Ctrl-C lost in a finalizer stops the check before it is logged
        result.run_id, result.spooled, note = tasks.log_or_spool(tracker, req, settings)
        result.notes += [note] if note else []
        if quarantine is not None:
            result.notes.append("quarantined records: " + (tasks.artifact_location(tracker, result.run_id, Artifact.QUARANTINE)
                                if result.run_id else f"{Artifact.QUARANTINE} of the spooled run in {result.spooled}"))
    return result
