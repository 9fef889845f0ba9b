"""The scheduled flows and their deployments: the landing-zone check (every 3 h by default) and the probes
(every 6 h). Nothing is served or deployed at import time: ``collapse-monitor serve`` (one process,
``prefect.serve``) and ``deployments/prefect.yaml`` (``prefect deploy`` and a process work pool) both use the
flows here.

Deployment parameters are plain JSON (a config file path, names, URIs): each run loads the settings and
prepares its runtime itself, so it behaves the same in the serve process, in a worker's subprocess and
from the CLI.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.events import emit_event

from flows import batches, oncall, tasks
from flows.automations import announce_completed
from flows.check import check_incoming_data
from flows.probe import evaluate_long_tail_probes
from monitors.adapters import delivery, ledger, runtime, sources
from monitors.config import Settings, load_settings
from monitors.core import alerting
from monitors.core.errors import InputError, UserError
from monitors.core.modeluri import split_model_uris
from monitors.core.numbers import parse_duration

DATA_FLOW, PROBE_FLOW = "monitor_data", "monitor_models"


@dataclass
class LandingReport:
    """What one scheduled run of a landing zone did."""

    landing: str
    dataset: str
    checked: list[dict] = field(default_factory=list)  # {"path", "sha256", "run_id"}
    already_counted: int = 0
    busy: list[str] = field(default_factory=list)  # claimed by a live run
    settling: list[str] = field(default_factory=list)  # modified too recently
    changed: list[dict] = field(default_factory=list)  # {"path", "sha256", "counted_sha256"}
    duplicates: list[dict] = field(default_factory=list)  # same bytes as a counted file under another name
    recovered: list[dict] = field(default_factory=list)  # counted by a run that died before the ledger knew
    failed: list[dict] = field(default_factory=list)  # {"path", "error"}
    given_up: list[dict] = field(default_factory=list)  # {"path", "sha256", "attempts", "error"}: failed too often

    def to_dict(self) -> dict:
        return asdict(self)


@tasks.io_task
def scan_landing(landing: str, settle_seconds: float, known: dict[str, tuple[int, float, str]] | None = None,
                 ) -> tuple[list[ledger.LandedFile], list[str], list[tuple[str, int, float, str]]]:
    """The landing zone's files that have settled, hashed; those still being written; and the hashes just
    computed. A file whose path, size and modification time are ``known`` is not read again."""
    try:
        urls = sources.expand(landing)
    except InputError as exc:
        if "matches no batch file" in str(exc):
            return [], [], []
        raise
    now, files, settling, fresh = time.time(), [], [], []
    for url in urls:
        size, mtime = sources.stat(url)
        if mtime is not None and now - mtime < settle_seconds:
            settling.append(url)
            continue
        seen = (known or {}).get(url)
        if mtime is not None and seen is not None and seen[:2] == (size, mtime):
            files.append(ledger.LandedFile(url, seen[2], size))
            continue
        sha, size = ledger.file_sha256(url, sources.open_binary)
        files.append(ledger.LandedFile(url, sha, size))
        if mtime is not None:
            fresh.append((url, size, mtime, sha))
    return files, settling, fresh


def _owner() -> str:
    try:
        return f"flow-run/{get_run_context().flow_run.id}"
    except Exception:  # noqa: BLE001 - outside a flow run (tests)
        return f"pid/{os.getpid()}/{time.time():.0f}"


def _logged_anyway(tracker, dataset: str, f: ledger.LandedFile, book: ledger.Ledger, owner: str,
                   report: LandingReport, error: str) -> bool:
    """A check that failed after MLflow took its run has counted the file: keep it counted, never redo it."""
    try:
        run_id = tracker.run_for_content(dataset, f.sha256)
    except Exception:  # noqa: BLE001 - MLflow unreachable: the claim is given back, as for any failed check
        return False
    if run_id:
        book.complete(dataset, f.sha256, owner, run_id)
        report.checked.append({"path": f.path, "sha256": f.sha256, "run_id": run_id, "error": error})
    return bool(run_id)


def check_landing(landing: str, dataset: str, settings: Settings, rt: runtime.Runtime) -> LandingReport:
    """Check every new file of a landing zone once, each as its own ``check_incoming_data`` run."""
    log = get_run_logger()
    report = LandingReport(landing, dataset)
    book = ledger.Ledger(settings.ledger_url(), settings.landing.lease_minutes * 60, settings.landing.max_attempts)
    try:
        files, report.settling, fresh = scan_landing(landing, settings.landing.settle_seconds, book.known_hashes())
        book.remember_hashes(fresh)  # the archive only grows: a file already hashed is not read again
    except BaseException:
        book.close()
        raise
    tracker = tasks.tracker_for(rt)
    owner = _owner()
    try:
        plan = book.plan(dataset, files)
        report.already_counted = len(plan.done)
        report.busy = [f.path for f in plan.busy]
        report.duplicates = [{"path": f.path, "sha256": f.sha256, "counted_by": run} for f, run in plan.duplicates]
        report.given_up = [{"path": f.path, "sha256": f.sha256, "attempts": row["attempts"], "error": row["last_error"]}
                           for f, row in plan.given_up]
        for f, counted, first in plan.changed:
            report.changed.append({"path": f.path, "sha256": f.sha256, "counted_sha256": counted})
            if first:
                book.flag_changed(dataset, f, counted)
                log.warning("landing file %s changed after it was checked (counted content %s, now %s): not "
                            "counted again", f.path, counted[:12], f.sha256[:12])
                emit_event(event="collapse.landing.changed", resource={
                    "prefect.resource.id": f"collapse.landing.{dataset}.{f.sha256[:16]}", "collapse.dataset": dataset},
                    payload={"path": f.path, "sha256": f.sha256, "counted_sha256": counted})
        todo = list(plan.new)
        for f, row in plan.stale:  # a run died holding it: did it get as far as MLflow?
            run_id = tracker.run_for_content(dataset, f.sha256)
            if run_id and book.claim(dataset, f, owner):
                book.complete(dataset, f.sha256, owner, run_id)
                report.recovered.append({"path": f.path, "sha256": f.sha256, "run_id": run_id, "dead_owner": row["owner"]})
            elif not run_id:
                todo.append(f)
        for f in todo:
            if not book.claim(dataset, f, owner):
                report.busy.append(f.path)
                continue
            try:
                result = batches.with_task_runner(check_incoming_data, settings)(
                    f.path, dataset, settings, rt, batch_name=Path(f.path).name, content_sha256=f.sha256)
            except Exception as exc:  # noqa: BLE001 - check_failed has alerted; the next run tries the file again
                error = f"{type(exc).__name__}: {exc}"[:500]
                if not _logged_anyway(tracker, dataset, f, book, owner, report, error):
                    if _not_the_files_fault(exc):  # a full disk: the file is fine, and is tried again in full
                        _give_back(book, dataset, f, owner)
                        report.failed.append({"path": f.path, "error": error})
                        continue
                    attempts = book.fail(dataset, f.sha256, f.path, owner, error)
                    report.failed.append({"path": f.path, "error": error})
                    if attempts >= book.max_attempts:
                        _give_up(settings, dataset, f, attempts, error, report)
                continue
            run_id = result.run_id or f"spooled:{Path(result.spooled).name}"
            entry = {"path": f.path, "sha256": f.sha256, "run_id": run_id}
            try:
                book.complete(dataset, f.sha256, owner, run_id)
            except RuntimeError as exc:  # outlived its lease: the run that took the file over finds this run
                entry["error"] = str(exc)  # (under the dataset's lock) and does not count it again
                log.warning("%s", exc)
            report.checked.append(entry)
    finally:
        book.close()
    log.info("landing %s: %d checked, %d counted before, %d busy, %d settling, %d changed, %d failed, %d given up",
             landing, len(report.checked), report.already_counted, len(report.busy), len(report.settling),
             len(report.changed), len(report.failed), len(report.given_up))
    return report


def _not_the_files_fault(exc: Exception) -> bool:
    """A check that could record its results nowhere (a full disk) says nothing about the file: it must not count
    towards ``landing.max_attempts``, or a disk full for a few runs would give up good files."""
    from monitors.adapters.files import is_no_space
    from monitors.core.errors import NotRecorded

    return isinstance(exc, NotRecorded) or is_no_space(exc)


def _give_back(book: ledger.Ledger, dataset: str, f: ledger.LandedFile, owner: str) -> None:
    try:
        book.release(dataset, f.sha256, owner)
    except Exception as exc:  # noqa: BLE001 - the ledger is on the full disk too: the claim's lease runs out instead
        logging.getLogger(__name__).warning("could not give back the claim on %s (%s): the next run takes it over "
                                            "once its lease expires", f.path, exc)


def _give_up(settings: Settings, dataset: str, f: ledger.LandedFile, attempts: int, error: str,
             report: LandingReport) -> None:
    """A file that failed max_attempts checks is not tried again: on-call is told once, with what to do."""
    summary = (f"landing file {f.path} failed {attempts} checks and is given up (not checked again; last error: "
               f"{delivery.scrub(error)[:300]}). Fix or remove it; a corrected file (new content) is checked as new")
    get_run_logger().error(summary)
    report.given_up.append({"path": f.path, "sha256": f.sha256, "attempts": attempts, "error": error})
    oncall.send_notifications(settings, [alerting.failure_notification(
        "firing", dataset, "warning", summary, "landing_file_given_up")], f"given-up-{f.sha256[:16]}")


def _setup(config: str | None) -> tuple[Settings, runtime.Runtime]:
    settings = load_settings(config)
    return settings, runtime.prepare(settings, quiet_prefect=False)


@flow(name=DATA_FLOW, flow_run_name="monitor {dataset}", validate_parameters=False, on_completion=[announce_completed])
def monitor_data(landing: str, dataset: str, config: str | None = None) -> dict:
    """Scheduled: check the landing zone's new files, each exactly once (see :mod:`monitors.adapters.ledger`).

    The run fails (after trying every file) when a file could not be checked; that file's ``check_failed``
    alert has gone out and the next run tries it again."""
    settings, rt = _setup(config)
    report = check_landing(landing, dataset, settings, rt)
    if report.failed:
        raise UserError(f"{len(report.failed)} landing file(s) could not be checked: "
                        + "; ".join(f"{x['path']}: {x['error']}" for x in report.failed))
    return report.to_dict()


@flow(name=PROBE_FLOW, flow_run_name="probe {probe_set}", validate_parameters=False,
      on_completion=[announce_completed])
def monitor_models(models: list[str] | str, probe_set: str, config: str | None = None) -> dict:
    """Scheduled: evaluate each model URI on the probe set; one model's failure does not stop the others."""
    settings, rt = _setup(config)
    if isinstance(models, str):  # from prefect.yaml's environment template: "models:/a@prod models:/b@prod"
        models = split_model_uris(models)
    done, failed = {}, {}
    for uri in models:
        try:
            result = evaluate_long_tail_probes(uri, probe_set, settings, rt)
            done[uri] = {"run_id": result.run_id, "version": result.version,
                         "firing": [a.rule for a in result.alerts if a.status == "firing"]}
        except Exception as exc:  # noqa: BLE001 - probe_failed has alerted
            failed[uri] = f"{type(exc).__name__}: {exc}"[:500]
    if failed:
        raise UserError(f"{len(failed)} model(s) could not be probed: "
                        + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return {"probed": done}


# -- deployments ----------------------------------------------------------------------------------------------
def _schedule(every: str, cron: str | None, timezone: str, what: str):
    from datetime import timedelta

    from prefect.schedules import Cron, Interval

    if cron:
        return Cron(cron, timezone=timezone)
    try:
        return Interval(timedelta(seconds=parse_duration(every)), timezone=timezone)
    except ValueError as exc:
        raise UserError(f"schedules.{what}_every: {exc}") from None


def deployments(settings: Settings, config: str | None, *, data_every: str | None = None,
                probes_every: str | None = None) -> list:
    """The deployments the settings ask for (one per configured schedule), for ``prefect.serve``.

    Each has a concurrency limit of 1 that cancels a run which would overlap the one in progress."""
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )

    sched = settings.schedules
    no_overlap = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    config = str(Path(config).resolve()) if config else None
    out = []
    if sched.landing:
        dataset = sched.dataset or settings.dataset
        out.append(monitor_data.to_deployment(
            name=f"data-{dataset}", parameters={"landing": sched.landing, "dataset": dataset, "config": config},
            concurrency_limit=no_overlap, tags=["collapse-monitor", "data"],
            description=f"Check new files of {sched.landing} against dataset {dataset!r}",
            schedule=_schedule(data_every or sched.data_every, None if data_every else sched.data_cron,
                               sched.timezone, "data")))
    if sched.models:
        if not sched.probe_set:
            raise UserError("schedules.models is set but schedules.probe_set is not: the probes need a probe set "
                            "(build one with `collapse-monitor probes build`)")
        out.append(monitor_models.to_deployment(
            name="probes", parameters={"models": list(sched.models), "probe_set": sched.probe_set, "config": config},
            concurrency_limit=no_overlap, tags=["collapse-monitor", "probes"],
            description=f"Probe {', '.join(sched.models)} on {sched.probe_set}",
            schedule=_schedule(probes_every or sched.probes_every, None if probes_every else sched.probes_cron,
                               sched.timezone, "probes")))
    if not out:
        raise UserError("nothing to schedule: set schedules.landing (the data check) and/or schedules.models with "
                        "schedules.probe_set (the probes) in the config file or COLLAPSE_MONITOR_SCHEDULES__* variables")
    return out

