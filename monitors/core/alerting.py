"""The alert state machine, after Prometheus Alertmanager and PagerDuty Events v2. Pure: no I/O.

Each rule on each dataset (model, slice) has a stable fingerprint. Per run, every rule is either
breached, not breached, or unknown (its indicator is missing or nan: no evidence either way, the state is
kept). Transitions:

* breached in fewer than ``for_runs`` of the last ``within_runs`` runs (default ``for_runs``: consecutive
  runs): ``pending`` (nobody is paged for one noisy batch); a pending alert stays pending through a run that
  does not breach as long as the breaches in its window can still add up to ``for_runs``, so bad batches
  cannot hide between good ones;
* breached in ``for_runs`` of the last ``within_runs`` runs: ``firing``, and a ``firing`` notification;
* still firing ``repeat_interval`` after the last notification: a ``repeat`` notification;
* not breached while firing: ``resolved``, and a ``resolved`` notification; while pending and its window's
  breaches can no longer fire it: forgotten.

A silence suppresses the notifications of one fingerprint until it expires; the state machine still moves.
An alert that fired under a silence and is still firing when it expires notifies (as ``firing``) at the
next run; one that resolved meanwhile sends its ``resolved`` (held back while silenced) not at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from monitors.core.rules import Alert, NotificationKind, Rule, Status, breached_threshold, fingerprint

DEFAULT_REPEAT_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class AlertState:
    fingerprint: str
    rule: str
    severity: str
    dataset: str
    summary: str
    status: str  # a Status: pending | firing
    breaches: int  # breaching runs in this episode
    value: float | None
    threshold: float | None
    since: float  # when the current episode began (first breach)
    last_notified: float | None = None
    recent: tuple[int, ...] = ()  # 1 breached / 0 not, for the rule's last within_runs runs, oldest first


@dataclass(frozen=True)
class Silence:
    fingerprint: str
    until: float
    reason: str
    created: float

    def active(self, now: float) -> bool:
        return now < self.until


@dataclass(frozen=True)
class Notification:
    kind: str  # a NotificationKind: firing | repeat | resolved
    alert: Alert

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.alert.to_dict()}


@dataclass(frozen=True)
class StepResult:
    states: dict[str, AlertState]
    alerts: list[Alert]  # this run's alerts: pending, firing and just-resolved ones
    notifications: list[Notification]  # to deliver, grouped for this run
    silenced: list[Notification] = field(default_factory=list)  # would have been sent


def _known(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def step(states: dict[str, AlertState], rules: tuple[Rule, ...], row: dict[str, float | None], dataset: str,
         now: float, silences: list[Silence] = (), repeat_interval: float = DEFAULT_REPEAT_SECONDS,
         breached: set[str] | None = None) -> StepResult:
    """Advance every rule's state by one run whose indicator table is ``row``.

    ``breached`` (rule names) is what the rule engine (Great Expectations) decided; without it, the bounds
    are compared here. Either way, a rule whose indicator is missing or nan keeps its state.
    """
    silenced_fps = {s.fingerprint for s in silences if s.active(now)}
    new: dict[str, AlertState] = {}
    alerts, notes, held = [], [], []

    def emit(kind: str, alert: Alert) -> None:
        (held if alert.fingerprint in silenced_fps else notes).append(Notification(kind, alert))

    for rule in rules:
        fp = fingerprint(rule.name, dataset)
        old = states.get(fp)
        value = row.get(rule.column)
        if not _known(value):
            if old is not None:
                new[fp] = old
                alerts.append(_alert(old, old.status, rule))
            continue
        is_breached = (rule.name in breached) if breached is not None else breached_threshold(rule, value) is not None
        if is_breached:
            breaches = (old.breaches if old else 0) + 1
            recent = ((old.recent if old else ()) + (1,))[-rule.window:]
            st = AlertState(fp, rule.name, rule.severity, dataset, rule.summary,
                            old.status if old else Status.PENDING, breaches, float(value),
                            breached_threshold(rule, value), old.since if old else now,
                            old.last_notified if old else None, recent)
            muted = fp in silenced_fps
            if st.status == Status.PENDING and sum(recent) >= rule.for_runs:
                st = replace(st, status=Status.FIRING, last_notified=None if muted else now)
                emit(NotificationKind.FIRING, _alert(st, Status.FIRING))
            elif st.status == Status.FIRING and (st.last_notified is None or now - st.last_notified >= repeat_interval):
                # never told anyone (it fired under a silence): this is its first notification
                kind = NotificationKind.FIRING if st.last_notified is None else NotificationKind.REPEAT
                st = replace(st, last_notified=st.last_notified if muted else now)
                emit(kind, _alert(st, Status.FIRING))
            new[fp] = st
            alerts.append(_alert(st, st.status, rule))
        elif old is not None and old.status == Status.FIRING:
            done = _alert(replace(old, value=float(value), threshold=None), Status.RESOLVED)
            alerts.append(done)
            emit(NotificationKind.RESOLVED, done)
        elif old is not None and _can_still_fire(recent := (old.recent + (0,))[-rule.window:], rule):
            new[fp] = replace(old, recent=recent)  # value and threshold: those of its last breach
            alerts.append(_alert(new[fp], Status.PENDING, rule))
        # not breached and pending with no chance left in its window, or unknown: forgotten without a word
    # states of rules no longer in the suite are dropped: their rule is gone
    return StepResult(new, alerts, notes, held)


def failure_notification(kind: str, dataset: str, severity: str, summary: str,
                         rule: str = "check_failed") -> dict[str, Any]:
    """A ``check_failed`` (or ``probe_failed``) notification: the run itself failed (or, resolved, works again)."""
    alert = Alert(rule=rule, severity=severity, status=Status.RESOLVED if kind == NotificationKind.RESOLVED else Status.FIRING,
                  fingerprint=fingerprint(rule, dataset), value=None, threshold=None, summary=summary,
                  dataset=dataset)
    return Notification(kind, alert).to_dict()


def _can_still_fire(recent: tuple[int, ...], rule: Rule) -> bool:
    """Whether the breaches remembered in ``recent`` can still count: some k < for_runs further runs, all
    breaching, would add up to for_runs with those still in the window then. (With a window of for_runs, i.e.
    consecutive runs, one run without a breach always means no.)"""
    for k in range(1, rule.for_runs):
        kept = recent[max(0, len(recent) + k - rule.window):]
        if sum(kept) + k >= rule.for_runs:
            return True
    return False


def _alert(st: AlertState, status: str, rule: Rule | None = None) -> Alert:
    progress = {} if rule is None else {
        "breaches": sum(st.recent) if status == Status.PENDING else st.breaches,
        "for_runs": rule.for_runs, "within_runs": rule.window}
    return Alert(rule=st.rule, severity=st.severity, status=status, fingerprint=st.fingerprint, value=st.value,
                 threshold=st.threshold, summary=st.summary, dataset=st.dataset, **progress)


# -- (de)serialisation of the state record kept in MLflow --------------------------------------------------
def states_to_json(states: dict[str, AlertState]) -> list[dict[str, Any]]:
    return [asdict(s) for s in sorted(states.values(), key=lambda s: s.rule)]


def states_from_json(data: list[dict[str, Any]] | None) -> dict[str, AlertState]:
    """States as saved; one saved before windows existed counts its consecutive breaches as its window."""
    return {d["fingerprint"]: AlertState(**{**d, "recent": tuple(d.get("recent", (1,) * d["breaches"]))})
            for d in data or []}
