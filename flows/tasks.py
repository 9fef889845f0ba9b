"""Tasks shared by the flows. Each wraps one ``monitors`` call; only I/O tasks retry. Reading a batch is in
:mod:`flows.batches`, the synthetic share in :mod:`flows.share`, alerts to people in :mod:`flows.oncall`.

Caching is off: inputs are whole batches (hashing them costs more than the work) and a check must run
every time it is asked to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from monitors.adapters import (
    delivery,
    drift,
    files,
    gx_records,
    gx_rules,
    ledger,
    locks,
    registry,
    spool,
)
from monitors.adapters.gx_rules import load_rules
from monitors.adapters.runtime import Runtime
from monitors.adapters.tracking import PreviousCheck, RunStore, open_tracker
from monitors.config import Settings
from monitors.core import alerting, bands, indicators
from monitors.core.profile import BatchProfile
from monitors.core.reference import ReferenceProfile
from monitors.core.rules import RuleSuite
from monitors.core.runrecord import RunRecord


def _transient(task, task_run, state) -> bool:
    """Retry I/O that failed by chance; a user's error (a missing model, a bad alias) fails at once."""
    from monitors.core.errors import UserError

    return not isinstance(state.data, UserError)


io_task = task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE, retry_condition_fn=_transient)
compute_task = task(cache_policy=NONE)


def tracker_for(runtime: Runtime) -> RunStore:
    return open_tracker(runtime)




















@io_task
def load_reference(tracker: RunStore, dataset: str, run_id: str | None) -> tuple[str, ReferenceProfile]:
    return tracker.latest_reference(dataset, run_id)


@compute_task
def read_rules(settings: Settings) -> RuleSuite:
    return load_rules(settings.rules_path)


@compute_task
def read_record_suite(settings: Settings) -> dict:
    return gx_records.load_suite(settings.record_rules_path)


@io_task
def load_detector(tracker: RunStore, uri: str) -> registry.LoadedDetector | registry.NoDetector:
    """The registered detector, or why there is none (a check still runs without one)."""
    try:
        return tracker.load_detector(uri)
    except registry.DetectorUnavailable as exc:
        return registry.NoDetector(str(exc))


@compute_task
def compute_indicators(prof: BatchProfile, ref: ReferenceProfile, settings: Settings) -> dict[str, float]:
    ref.check_compatible(settings.indicators)
    values = indicators.compute_indicators(prof, settings.indicators, ref.anchors)
    return indicators.with_ratios(values, ref.baseline)


def cache_folder(settings: Settings) -> Path | None:
    """collapse-monitor's cache folder (``lm.cache_dir``; none when ``lm.cache`` is off): LM scores and the
    random classifiers' AUC percentiles of the drift report, each keyed by what it was computed from."""
    from monitors.adapters import lmscore

    return lmscore.cache_dir(settings.lm.cache_dir) if settings.lm.cache else None


def start_drift_report(prof: BatchProfile, ref: ReferenceProfile, settings: Settings) -> Future | None:
    """The drift report under way in the CLI's check worker (:mod:`flows.check_worker`), if there is one."""
    if not settings.indicators.drift:
        return None
    from flows import check_worker

    return check_worker.submit(drift.drift_report, prof.sample_texts, ref.sample, cache_folder(settings))


def start_record_validation(prof: BatchProfile, suite_raw: dict) -> Future | None:
    """The GX record validation under way in the CLI's check worker, if there is one."""
    from flows import check_worker

    return check_worker.submit(gx_records.validate, prof, suite_raw)


def _finished(pending: Future | None):
    """(True, result) of work done by the check worker; (False, None) when there was none or the worker died (the
    task then does the work itself). The work's own error is raised, as it would be in the task."""
    if pending is None:
        return False, None
    try:
        return True, pending.result()
    except BrokenProcessPool:
        return False, None


@compute_task
def drift_report(prof: BatchProfile, ref: ReferenceProfile, settings: Settings,
                 pending: Future | None = None) -> drift.DriftReport | None:
    """The Evidently drift report: computed here, or (``pending``) by the CLI's check worker while the check
    went on."""
    if not settings.indicators.drift:
        return None
    done, report = _finished(pending)
    return report if done else drift.drift_report(prof.sample_texts, ref.sample, cache_folder(settings))


@compute_task
def band_scores(values: dict[str, float], ref: ReferenceProfile, records: int) -> dict[str, float]:
    return bands.z_scores(values, ref.band_for(records))


@compute_task
def validate_records(prof: BatchProfile, suite_raw: dict, pending: Future | None = None) -> gx_records.RecordQuality:
    """GX record validation: here, or (``pending``) by the CLI's check worker while the check went on."""
    done, quality = _finished(pending)
    return quality if done else gx_records.validate(prof, suite_raw)












@io_task
def load_previous(tracker: RunStore, dataset: str) -> tuple[PreviousCheck, list[alerting.Silence]]:
    """What this check continues from (corpus totals, time since, alert states) and the dataset's silences."""
    return tracker.previous_check(dataset), tracker.silences(dataset)


@io_task
def replay_spool(tracker: RunStore, settings: Settings) -> list[str]:
    """Log every spooled check (oldest first) and remove it; returns the run ids. Stops at the first that
    fails to log (MLflow is away), leaving it and the rest for the next run. An entry that cannot be read is
    moved to ``spool/corrupt/`` with an alert and skipped: it would otherwise block every later check."""
    done = []
    for entry in spool.entries(settings.state_path / "spool"):
        try:
            req = spool.load(entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _set_aside(settings, entry, exc)
            continue
        done.append(tracker.replay(req))
        shutil.rmtree(entry)
    return done


def _set_aside(settings: Settings, entry: Path, exc: Exception) -> None:
    aside = entry.parent / "corrupt" / entry.name
    aside.parent.mkdir(exist_ok=True)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(entry, aside)
    summary = (f"spooled run {entry.name} cannot be read ({type(exc).__name__}: {str(exc)[:200]}): it was moved to "
               f"{aside} and skipped, so its check is not in MLflow. Inspect it, then delete it")
    logging.getLogger(__name__).error(summary)
    from flows import oncall  # imports this module

    oncall.send_notifications(settings, [alerting.failure_notification("firing", "spool", "warning", summary,
                                                                "spool_entry_corrupt")], f"spool-{entry.name}")


@contextmanager
def dataset_lock(settings: Settings, dataset: str) -> Iterator[None]:
    """Serialise the runs of one dataset (or model scope) that read its state and log the next: two at once would
    both carry on from the same corpus totals, alert states and sequence number. With a PostgreSQL ledger
    (several workers), an advisory lock in its database; else a lock file in the state dir. Either is released
    if its holder dies; a run waits for it at most ``landing.lease_minutes``."""
    url, wait = settings.ledger_url(), settings.landing.lease_minutes * 60
    if url.startswith("postgresql"):
        lock, where = ledger.advisory_lock(url, f"collapse-monitor/{dataset}", wait), "the ledger database's advisory lock"
    else:
        path = settings.state_path / "locks" / f"{hashlib.sha256(dataset.encode()).hexdigest()[:16]}.lock"
        lock, where = locks.file_lock(path, timeout=wait), f"its lock file {path}"
    with lock as locked:
        if not locked:
            raise RuntimeError(f"another check of {dataset!r} held {where} for {wait:.0f} s (landing.lease_minutes); "
                               f"if no check is running, remove the lock file (or end that database session) and retry")
        yield








@compute_task
def advance_alerts(states: dict[str, alerting.AlertState], silences: list[alerting.Silence], suite: RuleSuite,
                   row: dict[str, float], breached: list, dataset: str, settings: Settings) -> alerting.StepResult:
    return alerting.step(states, suite.rules, row, dataset, time.time(), silences,
                         repeat_interval=settings.alerts.repeat_interval_hours * 3600,
                         breached={a.rule for a in breached})








def start_rule_evaluation(suite: RuleSuite, row: dict[str, float], dataset: str) -> Future | None:
    """The rule suite's GX evaluation under way in the CLI's check worker, if there is one (GX is imported
    there already: this process need not import it at all)."""
    from flows import check_worker

    return check_worker.submit(gx_rules.evaluate, suite, row, dataset)


@compute_task
def evaluate_rules(suite: RuleSuite, row: dict[str, float], dataset: str, pending: Future | None = None):
    """The alert rules (a GX suite) on the run's indicators: here, or (``pending``) by the CLI's check worker."""
    done, breached = _finished(pending)
    return breached if done else gx_rules.evaluate(suite, row, dataset)


@io_task
def artifact_location(tracker: RunStore, run_id: str, name: str) -> str:
    """Where a run's artifact is; never fails (it is asked after the run is logged, when nothing may)."""
    try:
        return tracker.artifact_location(run_id, name)
    except Exception:  # noqa: BLE001 - a store that went away now is no reason to fail a logged check
        return f"{name} in MLflow run {run_id}"


@io_task
def log_check(tracker: RunStore, req: RunRecord) -> str:
    return tracker.log_check(req)


def log_or_spool(tracker: RunStore, req: RunRecord, settings: Settings) -> tuple[str, str, str]:
    """Log the run; when MLflow cannot take it, keep it in the spool for the next run to replay.

    Returns (run id, spool folder, a note for the user); exactly one of the first two is set."""
    from monitors.core.errors import NotRecorded

    try:
        return log_check(tracker, req), "", ""
    except Exception as exc:  # noqa: BLE001 - the store went away mid-run: keep the results, replay later
        lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("(raised as a result")]
        why = delivery.scrub(lines[0] if lines else type(exc).__name__)[:200]  # SQLAlchemy's first line can be noise
        folder = settings.state_path / "spool"
        try:
            spooled = str(spool.save(folder, req))
        except OSError as err:  # a full disk: say so, loudly; the caller pages on-call (over the network)
            raise NotRecorded(f"MLflow did not take the results ({why}) and they could not be spooled in {folder}: "
                              f"{files.describe(err)}. Nothing of this check was recorded; free space there and "
                              f"check the batch again") from err
        return "", spooled, (f"MLflow could not take the results ({why}); they are "
                             f"spooled in {spooled} and the next run replays them")










