"""Alert rules: the batch-level expectation suite in ``expectations/``, read and checked.

Each expectation is one rule over one column of the one-row-per-run indicator table, with
``meta.rule`` (its name), ``meta.severity`` (warning | critical), ``meta.summary`` and optionally
``meta.for_runs`` (breaching runs before it fires; default 1 for critical, 2 for warning) and optionally
``meta.within_runs`` (counted over the last that many runs; default ``for_runs``: consecutive runs).
Great Expectations evaluates the suite (see :mod:`monitors.adapters.gx_rules`); this module holds the pure parts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from monitors.core.errors import RulesError

SEVERITIES = ("warning", "critical")
SUPPORTED = {"expect_column_values_to_be_between"}


class Status(StrEnum):
    """An alert's status in a run: breaching but not yet for long enough, firing, or just resolved."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class NotificationKind(StrEnum):
    """Why on-call hears about an alert: it started firing, it still fires after repeat_interval, it resolved."""

    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Rule:
    name: str
    column: str
    min_value: float | None
    max_value: float | None
    severity: str
    summary: str
    #: breaching runs before the alert fires (meta.for_runs; default 1 critical, 2 warning) ...
    for_runs: int = 1
    #: ... among the last this many runs (meta.within_runs; 0 or default: for_runs, i.e. consecutive runs)
    within_runs: int = 0

    @property
    def window(self) -> int:
        return max(self.within_runs, self.for_runs)


DEFAULT_FOR_RUNS = {"critical": 1, "warning": 2}


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    status: str
    fingerprint: str
    value: float | None
    threshold: float | None
    summary: str
    dataset: str
    #: a state machine alert's progress: breaching runs counted (in the window while pending), for_runs, window
    breaches: int | None = None
    for_runs: int | None = None
    within_runs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleSuite:
    path: Path
    raw: dict[str, Any]
    rules: tuple[Rule, ...]

    @property
    def columns(self) -> list[str]:
        return sorted({r.column for r in self.rules})


def parse_rules(raw: Any, path: Path) -> RuleSuite:
    """Check a suite read from ``path`` (named in every error); a problem raises :class:`RulesError`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise RulesError(f"rule suite {path} must be an object with an 'expectations' list")
    rules, names = [], set()
    for i, exp in enumerate(raw["expectations"]):
        meta = exp.get("meta") or {}
        label = f"rule suite {path}, expectation #{i + 1} ({meta.get('rule', 'unnamed')})"
        kwargs = exp.get("kwargs") or {}
        if exp.get("type") not in SUPPORTED:
            raise RulesError(f"{label}: type {exp.get('type')!r} is not supported; use one of {sorted(SUPPORTED)}")
        if not meta.get("rule") or meta["rule"] in names:
            raise RulesError(f"{label}: meta.rule must be a unique, non-empty name")
        if meta.get("severity") not in SEVERITIES:
            raise RulesError(f"{label}: meta.severity must be one of {SEVERITIES}, not {meta.get('severity')!r}")
        if not isinstance(kwargs.get("column"), str):
            raise RulesError(f"{label}: kwargs.column must name an indicator")
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        if all(b is None for b in bounds) or any(b is not None and not isinstance(b, (int, float)) for b in bounds):
            raise RulesError(f"{label}: give a numeric kwargs.min_value and/or kwargs.max_value")
        for_runs = meta.get("for_runs", DEFAULT_FOR_RUNS[meta["severity"]])
        if not isinstance(for_runs, int) or isinstance(for_runs, bool) or for_runs < 1:
            raise RulesError(f"{label}: meta.for_runs must be a whole number of runs >= 1, not {for_runs!r}")
        within = meta.get("within_runs", for_runs)
        if not isinstance(within, int) or isinstance(within, bool) or within < for_runs:
            raise RulesError(f"{label}: meta.within_runs must be a whole number of runs >= meta.for_runs ({for_runs}), "
                             f"not {within!r}")
        names.add(meta["rule"])
        rules.append(Rule(meta["rule"], kwargs["column"], bounds[0], bounds[1], meta["severity"],
                          meta.get("summary", ""), for_runs, within))
    return RuleSuite(path=path, raw=raw, rules=tuple(rules))


def fingerprint(rule: str, dataset: str, model: str | None = None, slice_: str | None = None) -> str:
    """Stable identity of an alert: the same rule on the same dataset/model/slice is the same alert."""
    key = json.dumps([rule, dataset, model or "", slice_ or ""])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def breached_threshold(rule: Rule, value: float | None) -> float | None:
    """The bound a value broke (for the alert's ``threshold``), or None if it broke none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if rule.min_value is not None and value < rule.min_value:
        return rule.min_value
    if rule.max_value is not None and value > rule.max_value:
        return rule.max_value
    return None


def firing_alert(rule: Rule, value: float | None, dataset: str) -> Alert:
    return Alert(rule=rule.name, severity=rule.severity, status=Status.FIRING,
                 fingerprint=fingerprint(rule.name, dataset), value=value,
                 threshold=breached_threshold(rule, value), summary=rule.summary, dataset=dataset)


def max_severity(alerts: list[Alert]) -> str:
    firing = [a.severity for a in alerts if a.status == Status.FIRING]
    return max(firing, key=SEVERITIES.index) if firing else "none"
