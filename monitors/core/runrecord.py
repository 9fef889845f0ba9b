"""One run record for every run that evaluates rules (a check, a probe, a probe baseline).

A :class:`RunRecord` is everything one MLflow run consists of; the MLflow adapter logs it, the spool keeps it
when MLflow is unreachable. :func:`rule_run` builds one with the part every rule-evaluating run shares, so the
check and probe flows do not assemble it by hand: the alert tags (``collapse.alerts.firing``,
``collapse.alerts.max_severity``, ``collapse.notifications``, ``collapse.alert.<rule>``), ``alerts.json`` (the one
alert shape, :meth:`~monitors.core.rules.Alert.to_dict`), the alert state machine's state, the notifications,
and ``summary.json`` (the ``--json`` contract; the adapter fills in the run id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitors.core.alerting import AlertState, Notification, states_to_json
from monitors.core.rules import Alert, max_severity
from monitors.core.schema import Artifact, RunKind, Tag, alert_tag


@dataclass
class RunRecord:
    """Everything one run in MLflow consists of."""

    dataset: str  # the scope: a dataset, or models/<name>
    batch_name: str
    metrics: dict[str, float | None]
    params: dict[str, Any]
    tags: dict[str, str]
    artifacts: dict[str, str | bytes | dict | list | Path]  # a Path is copied as a file, never read into memory
    description: str
    spool_id: str = ""
    kind: str = RunKind.CHECK  # the run's collapse.kind: check | probe | probe-baseline
    run_name: str = ""  # default: "check <dataset> <batch>"
    started: float = 0.0  # epoch seconds the run's work began (0: when it is logged)
    finished: float = 0.0  # epoch seconds it ended (0: when it is logged; a spooled one keeps its own)

    def __post_init__(self):
        self.spool_id = self.spool_id or uuid.uuid4().hex


def alert_tags(alerts: list[Alert], notifications: int) -> dict[str, str]:
    firing = sum(a.status == "firing" for a in alerts)
    return {Tag.ALERTS_FIRING: str(firing), Tag.MAX_SEVERITY: max_severity(alerts),
            Tag.NOTIFICATIONS: str(notifications), **{alert_tag(a.rule): a.status for a in alerts}}


def rule_run(scope: str, batch_name: str, *, kind: str, metrics: dict[str, float | None], params: dict[str, Any],
             tags: dict[str, str], artifacts: dict[str, Any], description: str, summary: dict[str, Any],
             alerts: list[Alert], states: dict[str, AlertState], notifications: list[Notification],
             silenced: list[Notification], started: float = 0.0, run_name: str = "") -> RunRecord:
    """The run of a check or probe: its own metrics, params, tags and artifacts plus the shared alert part."""
    shared = {Artifact.ALERTS: [a.to_dict() for a in alerts], Artifact.ALERT_STATE: states_to_json(states),
              Artifact.NOTIFICATIONS: {"notify": [n.to_dict() for n in notifications],
                                       "silenced": [n.to_dict() for n in silenced]}}
    return RunRecord(scope, batch_name, metrics, params, {**tags, **alert_tags(alerts, len(notifications))},
                     {**shared, **artifacts, Artifact.SUMMARY: summary}, description, kind=kind, run_name=run_name,
                     started=started)


def firing_summary(alerts: list[Alert]) -> str:
    firing = sum(a.status == "firing" for a in alerts)
    return f"{firing} alert(s) firing, max severity {max_severity(alerts)}"
