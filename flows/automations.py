"""Prefect automations that watch the schedule itself, on the Prefect server (a check cannot report that it
never ran):

* a **dead man's switch** per deployment: a proactive trigger that fires when no run of the deployment has
  completed within twice its interval (at least ``alerts.dead_man_min_seconds``, by default a minute): the
  scheduler, the worker or the serve process is down. A run counts when the trigger sees its ``prefect.flow-run.Completed`` event *or* the
  ``collapse.run.completed`` event that the scheduled flows emit themselves when they complete
  (:func:`announce_completed`, their ``on_completion`` hook). The second is needed: Prefect's triggers service
  holds back the state-change events of a run whose ``Scheduled`` state the scheduler created less than 5
  minutes before the run started (the ``Pending`` event ``follows`` that state, which never had an event of its
  own), for 15 minutes, and then drops them as older than the trigger's window. So for the runs due in the
  first 5 minutes of a new schedule (with a 20 s interval, 15 runs) the switch would page while runs
  complete. Our own event follows nothing and reaches the trigger at once;
* a **crashed run** alert: a run of the deployment was killed (OOM, a lost machine) before it could report.

Both notify on-call through a Prefect notification block made from the first on-call channel that a block can
serve: ``pdevents://KEY`` / ``pdevents+http(s)://KEY@HOST/PATH`` (PagerDuty Events v2, the routing key kept
as a block secret) or an Apprise ``json://`` / ``jsons://`` webhook. The PagerDuty ``dedup_key`` is the
fingerprint of rule ``schedule_dead`` on the dataset, so repeated firings are one incident; it is resolved by
hand (Prefect automations have no "resolved" action), or by PagerDuty's auto-resolve.

Why not ``checks_missed``: it measures the gap between *checks*, and a landing zone that is quiet for a day
has no check to make, though its scheduled runs completed; the switch watches the runs themselves.
"""

from __future__ import annotations

import re
from datetime import timedelta

from monitors.adapters import delivery
from monitors.config import AlertSettings
from monitors.core.rules import fingerprint

BLOCK_NAME = "collapse-monitor-on-call"
RULE = "schedule_dead"
COMPLETED = "collapse.run.completed"  # emitted by the scheduled flows on completion; counted by the switch
_JSON = re.compile(r"^(?P<proto>jsons?)://(?P<rest>.+)$")


def notification_block(urls: list[str], dataset: str):
    """A saved Prefect block for the first channel a block can serve, or None when none can."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    for url in urls:
        pd = delivery.pagerduty(url)
        m = _JSON.match(url)
        if pd:
            endpoint, key = pd
            block = CustomWebhookNotificationBlock(
                name="PagerDuty Events v2 (collapse-monitor)", url=endpoint, method="POST",
                json_data={"routing_key": "{{routing_key}}", "event_action": "trigger",
                           "dedup_key": fingerprint(RULE, dataset),
                           "payload": {"summary": "{{subject}}", "source": f"collapse-monitor/{dataset}",
                                       "severity": "critical", "custom_details": {"summary": "{{body}}"}}},
                secrets={"routing_key": key})
            break
        if m:
            scheme = "https" if m["proto"] == "jsons" else "http"
            block = CustomWebhookNotificationBlock(
                name="collapse-monitor", url=f"{scheme}://{m['rest']}", method="POST",
                json_data={"title": "{{subject}}", "message": "{{body}}", "type": "failure"})
            break
    else:
        return None
    block.save(f"{BLOCK_NAME}-{re.sub('[^a-z0-9-]+', '-', dataset.lower())}", overwrite=True)
    return block


def announce_completed(flow, flow_run, state) -> None:
    """``on_completion`` hook of the scheduled flows: tell the dead man's switch that a run of a deployment completed.

    Prefect's own ``prefect.flow-run.Completed`` event may reach the switch 15 minutes late (see the module
    docstring); this one declares no preceding event, so the triggers service evaluates it when it arrives."""
    if not getattr(flow_run, "deployment_id", None):
        return  # an ad hoc run: no deployment, no switch
    from prefect.events import emit_event

    emit_event(event=COMPLETED,
               resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                         "prefect.resource.name": flow_run.name or ""},
               related=[{"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                         "prefect.resource.role": "deployment"}])


#: The switch's shortest window unless told otherwise: the default of alerts.dead_man_min_seconds (60 s).
MIN_WINDOW_SECONDS: float = AlertSettings.model_fields["dead_man_min_seconds"].default


def install(deployment_id, deployment_name: str, dataset: str, interval_seconds: float | None, block,
            min_window_seconds: float = MIN_WINDOW_SECONDS) -> list[str]:
    """(Re)create the two automations of one deployment; returns their names. The dead man's switch's window is
    twice the interval, or ``min_window_seconds`` (alerts.dead_man_min_seconds, >= Prefect's 10 s) if longer."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}"}
    runs = {"prefect.resource.id": "prefect.flow-run.*"}
    key = fingerprint(RULE, dataset)  # the PagerDuty dedup key of the block
    wanted = []
    if interval_seconds:
        within = max(2 * interval_seconds, min_window_seconds)
        wanted.append((f"collapse-monitor dead man's switch: {deployment_name}", EventTrigger(
            match=runs, match_related=related, expect={"prefect.flow-run.Completed", COMPLETED},
            posture=Posture.Proactive,
            threshold=1, within=timedelta(seconds=within)),
            f"[FIRING] critical {RULE} on {dataset}",
            f"No run of {deployment_name} completed in the last {within:.0f} s (twice its interval): the scheduler, "
            f"the worker or the serve process may be down. Fingerprint {key}."))
    wanted.append((f"collapse-monitor crashed run: {deployment_name}", EventTrigger(
        match=runs, match_related=related, expect={"prefect.flow-run.Crashed"}, posture=Posture.Reactive,
        threshold=1, within=timedelta(0)),
        f"[FIRING] critical check_crashed on {dataset}",
        f"A run of {deployment_name} crashed (killed before it could report): {{{{ event.resource.name }}}}."))
    names = []
    for name, trigger, subject, body in wanted:
        try:
            Automation.read(name=name).delete()
        except Exception:  # noqa: BLE001 - none yet (the lookup raises ValueError or an HTTP 404)
            pass
        Automation(name=name, description=f"created by collapse-monitor serve for {deployment_name}", trigger=trigger,
                   actions=[SendNotification(block_document_id=block._block_document_id, subject=subject,
                                             body=body)]).create()
        names.append(name)
    return names


def watch(deps: list, urls: list[str], min_window_seconds: float = MIN_WINDOW_SECONDS) -> list[str]:
    """Register the deployments and install their automations; returns what was done, for the console.
    ``min_window_seconds``: the dead man's switch's shortest window (alerts.dead_man_min_seconds)."""
    lines = []
    for d in deps:
        dataset = (d.parameters or {}).get("dataset") or "probes"
        block = notification_block(urls, dataset)
        if block is None:
            return [("no on-call channel that a Prefect notification block can serve (pdevents:// or json://): "
                     "the dead man's switch and the crashed-run alert are not installed")]
        schedule = d.schedules[0].schedule if d.schedules else None
        interval = schedule.interval.total_seconds() if getattr(schedule, "interval", None) else None
        names = install(d.apply(), f"{d.flow_name}/{d.name}", dataset, interval, block, min_window_seconds)
        lines += [f"automation: {n}" for n in names]
        if interval is None:
            lines.append(f"{d.flow_name}/{d.name} runs on a cron schedule: no dead man's switch (set an interval)")
    return lines
