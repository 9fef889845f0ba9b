"""Telling people: the alerts a run publishes to Prefect, notifications delivered to on-call through the outbox,
failed runs as alerts (and their resolution), and what delivery did, recorded with the run."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from flows import tasks
from flows.tasks import io_task
from monitors.adapters import delivery
from monitors.adapters.failures import FailureStore
from monitors.adapters.runtime import Runtime
from monitors.adapters.tracking import RunStore
from monitors.config import ALERT_URLS_ENV, Settings
from monitors.core import alerting


def open_failures(settings: Settings) -> list[dict]:
    """The open check_failed / probe_failed alerts of this state directory (see :class:`FailureStore`)."""
    return FailureStore(settings.state_path).open()


def report_failure(settings: Settings, dataset: str, batch: str, exc: Exception, rule: str = "check_failed",
                   what: str = "check") -> None:
    """A failed run is an alert: remembered locally (MLflow may be what failed) and sent via the outbox.
    Not a task: it runs when the flow is already failing, and must not fail itself."""
    from monitors.core.errors import NotRecorded, UserError

    log = logging.getLogger(__name__)
    store = FailureStore(settings.state_path)
    try:
        open_since = store.since(dataset, rule) or time.time()
        severity = "warning" if isinstance(exc, UserError) and rule == "check_failed" else "critical"
        if isinstance(exc, NotRecorded):
            summary = f"the {what} of {batch} COULD NOT RECORD its results: {delivery.scrub(str(exc))}"[:700]
        else:
            summary = f"the {what} of {batch} failed: {delivery.scrub(f'{type(exc).__name__}: {exc}')[:500]}"
        note = alerting.failure_notification("firing", dataset, severity, summary, rule)
    except Exception:  # noqa: BLE001 - reporting must never hide the failure being reported
        log.exception("could not report the failed %s", what)
        return
    # remembered, so that the next successful run resolves it; a full disk must not stop the page below
    if not store.remember(dataset, rule, {**note, "since": open_since}):
        note = {**note, "summary": note["summary"] + " (this alert could not be saved locally: resolve it by "
                                                     "hand once the run succeeds again)"}
    try:
        send_notifications(settings, [note], f"failed-{int(time.time())}")
    except Exception:  # noqa: BLE001 - reporting must never hide the failure being reported
        log.exception("could not send the alert of the failed %s", what)


def clear_failure(settings: Settings, dataset: str, run_id: str, rule: str = "check_failed",
                  what: str = "check") -> list[dict]:
    """The ``resolved`` notification of an open check_failed (probe_failed) alert of the scope (and forget it).
    A file that cannot be read still means an open alert: it is resolved (as critical, the worst it can be)."""
    old = FailureStore(settings.state_path).forget(dataset, rule)
    if old is None:
        return []
    severity = old.get("severity") if old.get("severity") in ("warning", "critical") else "critical"
    return [alerting.failure_notification("resolved", dataset, severity,
                                          f"the {what} of {dataset} succeeded again (run {run_id})", rule)]


def send_notifications(settings: Settings, notifications: list[dict], run_id: str) -> delivery.Outcome | None:
    """Send notifications (and whatever earlier runs left in the outbox) to every channel; None without any."""
    urls = settings.channel_urls()
    if not urls:
        return None
    return delivery.deliver(delivery.Outbox(settings.state_path / "outbox"), urls,
                            [{**n, "run_id": run_id} for n in notifications],
                            retries=settings.alerts.delivery_retries, backoff=settings.alerts.delivery_backoff_seconds,
                            timeout=settings.alerts.delivery_timeout_seconds, budget=settings.alerts.delivery_budget_seconds,
                            max_items=settings.alerts.outbox_max_items, max_age_hours=settings.alerts.outbox_max_age_hours)


#: retries happen inside, per notification, with backoff; the outbox keeps the rest
deliver_notifications = task(send_notifications, name="deliver_notifications", cache_policy=NONE)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "scope"


@task(cache_policy=NONE)
def publish_to_prefect(alerts: list, scope: str, run_id: str, description: str) -> None:
    """The run's alerts in the Prefect UI (a table artifact ``collapse-alerts-<scope>``) and one Prefect event
    per firing or resolved alert, ``collapse.alert.firing`` / ``collapse.alert.resolved``, for teams to hang
    automations on."""
    from prefect.artifacts import create_table_artifact
    from prefect.events import emit_event

    rows = [{"rule": a.rule, "severity": a.severity, "status": a.status,
             "value": None if a.value is None or a.value != a.value else round(a.value, 4),
             "threshold": a.threshold, "fingerprint": a.fingerprint} for a in alerts]
    create_table_artifact(rows or [{"rule": "-", "severity": "-", "status": "no alert"}],
                          key=f"collapse-alerts-{_slug(scope)}", description=description)
    for a, row in zip(alerts, rows):
        if a.status in ("firing", "resolved"):
            emit_event(event=f"collapse.alert.{a.status}",
                       resource={"prefect.resource.id": f"collapse.alert.{a.fingerprint}",
                                 "prefect.resource.name": a.rule, "collapse.dataset": scope,
                                 "collapse.severity": a.severity},
                       payload={"value": row["value"], "threshold": a.threshold, "summary": a.summary,
                                "mlflow_run_id": run_id})


@io_task
def record_delivery(tracker: RunStore, run_id: str, outcome: dict) -> None:
    tracker.record_delivery(run_id, outcome)


def after_run(result, settings: Settings, runtime: Runtime, scope: str, description: str,
              rule: str = "check_failed", what: str = "check"):
    """The tail every logged check and probe shares, outside the scope's lock: publish its alerts to Prefect
    (a copy for the Prefect UI; MLflow has them, so a failure is a note), then deliver its notifications and
    record what delivery did. Never raises: the run is logged (see :func:`deliver_and_record`)."""
    try:
        publish_to_prefect(result.alerts, scope, result.run_id, description)
    except Exception as exc:  # noqa: BLE001
        result.notes.append(f"could not publish the alerts to Prefect: {type(exc).__name__}: {str(exc)[:200]}")
    result.notifications, result.delivery = deliver_and_record(
        settings, runtime, scope, result.run_id, result.spooled, result.notifications, rule, what)
    return result


def deliver_and_record(settings: Settings, runtime: Runtime, scope: str, run_id: str, spooled: str,
                       notifications: list[dict], rule: str = "check_failed", what: str = "check"
                       ) -> tuple[list[dict], dict]:
    """After a successful run: resolve an open ``rule`` failure alert, deliver the run's notifications (and
    the outbox's), and record what delivery did with the run. Returns (all notifications, delivery).

    Never raises: the run is logged, and a failure here must not fail it (a landing zone would count its
    batch again). What could not be sent waits in the outbox for the next run; the error is returned."""
    try:
        notifications = notifications + clear_failure(settings, scope, run_id or "(spooled)", rule, what)
        outcome = deliver_notifications(settings, notifications, run_id or f"spooled-{Path(spooled).name}")
    except Exception as exc:  # noqa: BLE001 - see above: delivery's problem, not the run's
        logging.getLogger(__name__).exception("delivery after %s %s failed", what, run_id or spooled)
        return notifications, {"sent": 0, "queued": None,
                               "errors": [delivery.scrub(f"delivery failed: {type(exc).__name__}: {exc}")[:500]]}
    if outcome is not None:
        result = {"sent": outcome.sent, "queued": outcome.queued, "errors": outcome.errors}
        if run_id:
            try:
                record_delivery(tasks.tracker_for(runtime), run_id, result)
            except Exception as exc:  # noqa: BLE001 - the notifications went out; only their record is missing
                logging.getLogger(__name__).warning("could not record delivery with run %s: %s", run_id,
                                                    delivery.scrub(str(exc))[:200])
        return notifications, result
    if notifications:
        return notifications, {"sent": 0, "queued": 0, "errors": [
            f"no alert channel configured ({ALERT_URLS_ENV} or alerts.urls): logged to MLflow only"]}
    return notifications, {}
