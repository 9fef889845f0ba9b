"""The result of one check: what ``--json`` prints, what the summary shows, what MLflow receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitors.core.quantify import ShareEstimate
from monitors.core.rules import SEVERITIES, Alert, max_severity
from monitors.core.text import shown
from monitors.core.numbers import finite_or_none

#: Indicators shown in the readable summary and the history table, in this order.
KEY_INDICATORS = (
    "synthetic.share",
    "human.share",
    "corpus.human_share",
    "tail.distinct_2.ratio",
    "tail.rare_coverage.ratio",
    "tail.rare_coverage.z",
    "mode.compression_ratio.ratio",
    "mode.near_duplicate_share",
    "mode.cluster_entropy.z",
    "drift.text_auc",
    "vintage.after_cutoff_share",
)


def run_indicators(records: int, quarantined: int, values: dict[str, float], share: ShareEstimate,
                   corpus: dict[str, float] | None = None) -> dict[str, float]:
    """The one-row indicator table of a run: batch counts, text indicators, the synthetic/human shares of the
    batch and the accumulated corpus's human share (``corpus.*``, see :class:`~monitors.core.quantify.CorpusTotals`)."""
    nan = float("nan")

    def num(v):
        return nan if v is None else float(v)

    est, low, high = num(share.estimate), num(share.low), num(share.high)
    return {
        "batch.records": float(records),
        "batch.quarantined": float(quarantined),
        "batch.quarantined_share": quarantined / (records + quarantined) if records + quarantined else nan,
        **values,
        "synthetic.share": est,
        "synthetic.share_low": low,
        "synthetic.share_high": high,
        "synthetic.out_of_range": float(share.out_of_range) if share.estimate is not None else nan,
        "synthetic.fit_p": share.fit_p,
        **{f"synthetic.by_method.{m}": v for m, v in share.by_method.items()},
        "human.share": 1.0 - est,
        "human.share_low": 1.0 - high,
        "human.share_high": 1.0 - low,
        **(corpus or {}),
    }


def schedule_indicators(hours_since_last: float | None, expected_hours: float | None) -> dict[str, float]:
    """``schedule.hours_since_last_check`` and ``schedule.gap_ratio`` (that / the expected interval): the
    missed-run rule fires when no successful check happened within twice the schedule's interval."""
    nan = float("nan")
    gap = nan if hours_since_last is None else float(hours_since_last)
    ratio = gap / expected_hours if expected_hours and hours_since_last is not None else nan
    return {"schedule.hours_since_last_check": gap, "schedule.gap_ratio": ratio}


_num = finite_or_none


def _fmt(v, signed: bool = False) -> str:
    if _num(v) is None:
        return "n/a"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def critical_firing(alerts: list[Alert]) -> bool:
    return any(a.status == "firing" and a.severity == "critical" for a in alerts)


def _threshold(a: Alert) -> str:
    return "" if a.threshold is None else f", threshold {a.threshold}"


def lead_lines(alerts: list[Alert]) -> list[str]:
    """The first lines of a run's summary: what fires, critical first, then what is pending and when it fires."""
    order = sorted(alerts, key=lambda a: (a.status != "firing", -SEVERITIES.index(a.severity), a.rule))
    lines = []
    for a in order:
        if a.status == "firing":
            lines.append(f"  FIRING [{a.severity}] {a.rule}: value {_fmt(a.value)}{_threshold(a)}")
        elif a.status == "pending":
            window = f" (within {a.within_runs})" if a.within_runs and a.within_runs > (a.for_runs or 0) else ""
            progress = f"; {a.breaches} of {a.for_runs} breaching runs{window} to fire" if a.for_runs else ""
            lines.append(f"  PENDING [{a.severity}] {a.rule}: value {_fmt(a.value)}{_threshold(a)}{progress}")
    return lines


def alert_lines(alerts: list[Alert], notifications: list[dict], delivery: dict, notes: list[str]) -> list[str]:
    """The end of a run's summary: firing alerts, pending and resolved ones, what was sent, the notes."""
    firing = [a for a in alerts if a.status == "firing"]
    if firing:
        lines = [f"  alerts firing ({max_severity(alerts)}):"]
        lines += [f"    [{a.severity}] {a.rule}: value {_fmt(a.value)}{_threshold(a)} - {a.summary}" for a in firing]
    else:
        lines = ["  alerts: none firing"]
    pending = [a.rule for a in alerts if a.status == "pending"]
    resolved = [a.rule for a in alerts if a.status == "resolved"]
    if pending:
        lines.append(f"  pending (breached, not yet in enough runs to fire): {', '.join(pending)}")
    if resolved:
        lines.append(f"  resolved: {', '.join(resolved)}")
    if notifications:
        lines.append("  to notify: " + ", ".join(f"{n['kind']} {n['rule']}" for n in notifications))
    if delivery:
        queued = "?" if delivery["queued"] is None else delivery["queued"]  # None: delivery itself failed
        lines.append(f"  delivery: {delivery['sent']} sent, {queued} waiting in the outbox"
                     + "".join(f"\n    {e}" for e in delivery["errors"]))
    return lines + [f"  note: {n}" for n in notes]


@dataclass(kw_only=True)
class RunOutcome:
    """What every rule-evaluating run (a check, a probe) reports besides its own figures."""

    notes: list[str] = field(default_factory=list)
    #: what the alert state machine says to deliver for this run (firing / repeat / resolved), and what a
    #: silence held back
    notifications: list[dict[str, Any]] = field(default_factory=list)
    silenced: list[dict[str, Any]] = field(default_factory=list)
    #: what delivery to on-call did: sent, still queued in the outbox, errors (no URLs in them)
    delivery: dict[str, Any] = field(default_factory=dict)
    #: where the results wait when MLflow could not take them (replayed by the next run)
    spooled: str = ""

    @property
    def critical_firing(self) -> bool:
        return critical_firing(self.alerts)


@dataclass
class CheckResult(RunOutcome):
    run_id: str
    dataset: str
    batch_file: str
    records: int
    quarantined: int
    indicators: dict[str, float]
    share: ShareEstimate
    alerts: list[Alert]
    reference_run_id: str
    detector: str | None
    record_checks: list[dict[str, Any]] = field(default_factory=list)
    #: the run that already counted this batch's content: a re-check, not added to the corpus totals again
    recheck_of: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` contract (nan becomes null)."""
        num = _num
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "batch": {"file": self.batch_file, "records": self.records, "quarantined": self.quarantined},
            "indicators": {k: num(v) for k, v in sorted(self.indicators.items())},
            "synthetic_share": {"estimate": num(self.share.estimate), "low": num(self.share.low),
                                "high": num(self.share.high), "method": self.share.method,
                                "detector": self.detector, "note": self.share.note,
                                "out_of_range": self.share.out_of_range, "fit_p": num(self.share.fit_p),
                                "by_method": self.share.by_method},
            "alerts": [{"rule": a.rule, "severity": a.severity, "status": a.status, "fingerprint": a.fingerprint,
                        "value": num(a.value), "threshold": a.threshold, "summary": a.summary, "breaches": a.breaches,
                        "for_runs": a.for_runs, "within_runs": a.within_runs} for a in self.alerts],
            "firing": [a.rule for a in self.alerts if a.status == "firing"],
            "pending": [a.rule for a in self.alerts if a.status == "pending"],
            "reference_run_id": self.reference_run_id,
            "max_severity": max_severity(self.alerts),
            "record_checks": self.record_checks,
            "notifications": self.notifications,
            "silenced": self.silenced,
            "delivery": self.delivery,
            "spooled": self.spooled,
            "recheck_of": self.recheck_of or None,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A few readable lines for a terminal."""
        fmt = _fmt
        s = self.share
        if s.estimate is not None:
            source = f"detector {self.detector}" if self.detector else "local LM against the human reference"
            share = f"{fmt(s.estimate)} (95% interval {fmt(s.low)}-{fmt(s.high)}, {s.method}, {source})"
            if s.note:
                share += f"\n    {'WARNING: ' if s.out_of_range else ''}{s.note}"
        elif s.low is not None:
            share = f"n/a, between {fmt(s.low)} and {fmt(s.high)} by declared provenance ({s.note})"
        else:
            share = f"n/a ({s.note})"
        lines = [
            f"{'re-check' if self.recheck_of else 'check'} of {shown(self.batch_file)} against dataset {self.dataset!r} "
            f"(MLflow run {self.run_id})",
            *lead_lines(self.alerts),
            f"  records: {self.records} checked, {self.quarantined} quarantined",
            f"  synthetic share: {share}",
        ]
        lines += [f"  {k}: {fmt(self.indicators.get(k))}" for k in KEY_INDICATORS if k != "synthetic.share"]
        lines += alert_lines(self.alerts, self.notifications, self.delivery, self.notes)
        return "\n".join(lines)


#: Per-slice metrics shown in a probe's summary, by model kind.
PROBE_METRICS = {"classifier": ("accuracy", "macro_f1", "ece"),
                 "generator": ("perplexity", "distinct_2.ratio", "compression_ratio.ratio", "self_similarity.ratio")}


@dataclass
class ProbeResult(RunOutcome):
    """One evaluation of a registered model on a probe set, compared with earlier versions."""

    run_id: str
    model_uri: str
    model: str
    version: str
    kind: str
    probe_set: str
    probe_digest: str
    examples: dict[str, int]  # per slice
    indicators: dict[str, float]
    previous: dict[str, Any] | None  # {"version", "run_id", "evaluated_now"} of the previous registry version
    first: dict[str, Any] | None  # the oldest version evaluated on this probe set (None: this one)
    lineage: dict[str, Any]
    alerts: list[Alert]
    #: the memorization probe's inputs and canary exposures (None: not asked); its figures are indicators
    memorization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        num = _num
        return {
            "run_id": self.run_id, "model_uri": self.model_uri, "model": self.model, "version": self.version,
            "kind": self.kind, "probe_set": {"path": self.probe_set, "sha256": self.probe_digest, "examples": self.examples},
            "indicators": {k: num(v) for k, v in sorted(self.indicators.items())},
            "previous": self.previous, "first": self.first, "lineage": self.lineage,
            "memorization": self.memorization,
            "alerts": [{**a.to_dict(), "value": num(a.value)} for a in self.alerts],
            "max_severity": max_severity(self.alerts), "notifications": self.notifications,
            "firing": [a.rule for a in self.alerts if a.status == "firing"],
            "pending": [a.rule for a in self.alerts if a.status == "pending"],
            "silenced": self.silenced, "delivery": self.delivery, "spooled": self.spooled, "notes": self.notes,
        }

    def summary(self) -> str:
        fmt = _fmt
        what = " and ".join(([self.probe_set] if self.probe_set else [])
                            + ([f"memorization ({self.memorization['training']})"] if self.memorization else []))
        lines = [f"probe of {self.model_uri} ({self.model} version {self.version}, {self.kind}) on {what} "
                 f"(MLflow run {self.run_id})", *lead_lines(self.alerts)]
        if self.probe_set:
            lines.append("  examples: " + ", ".join(f"{s} {n}" for s, n in self.examples.items()))
        against = [f"previous version {self.previous['version']}" + (" (evaluated now)" if self.previous["evaluated_now"] else "")
                   ] if self.previous else []
        against += [f"first evaluated version {self.first['version']}"] if self.first else []
        lines.append("  compared with: " + (", ".join(against) or "nothing (no earlier version on this probe set)"))
        lines += self._slice_lines() if self.probe_set else []
        lines += self._memorization_lines()
        lin = self.lineage
        lines.append(f"  lineage: distillation depth {lin['depth']}"
                     + (f" ({' <- '.join(lin['chain'])})" if lin["depth"] else "")
                     + (f"; synthetic fraction {fmt(lin['synthetic_fraction'])}" if lin.get("synthetic_fraction") is not None else ""))
        lines += alert_lines(self.alerts, self.notifications, self.delivery, self.notes)
        return "\n".join(line for line in lines if line)

    def _memorization_lines(self) -> list[str]:
        if not self.memorization:
            return []
        ind, fmt = self.indicators, _fmt

        def cell(key: str) -> str:
            delta = ind.get(f"{key}.delta_prev")
            return fmt(ind.get(key)) + (f" ({fmt(delta, True)})" if delta is not None else "")

        lines = [f"  memorization ({int(ind.get('memorization.records', 0))} training records, "
                 f"{int(ind.get('memorization.control_records', 0))} held-out):",
                 f"    extraction rate {cell('memorization.extraction_rate')}, control {cell('memorization.control_rate')}, "
                 f"excess {cell('memorization.excess')} (exact continuation)",
                 f"    similar (edit similarity >= {self.memorization['settings']['similarity']}): extraction "
                 f"{cell('memorization.extraction_rate_similar')}, control {cell('memorization.control_rate_similar')}, "
                 f"excess {cell('memorization.excess_similar')}"]
        if "memorization.max_exposure" in ind:
            by = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in ind.items()
                        if k.startswith("memorization.mean_exposure.repeats_") and ".delta_" not in k)
            lines.append(f"    canary exposure (bits): max {cell('memorization.max_exposure')}, mean "
                         f"{cell('memorization.mean_exposure')}; by times planted: "
                         + ", ".join(f"{r}x {fmt(v)}" for r, v in by))
        else:
            lines.append("    canary exposure: not measured (see the notes)")
        return lines

    def _slice_lines(self) -> list[str]:
        ind, fmt, lines = self.indicators, _fmt, []
        metrics = PROBE_METRICS[self.kind]
        lines.append(f"  {'slice':<6} " + " ".join(f"{m:>24}" for m in metrics))
        for sl in ("head", "torso", "tail", "all"):
            if f"probe.{sl}.examples" not in ind:
                continue
            cells = []
            for m in metrics:
                key = f"probe.{sl}.{m}"
                delta = ind.get(f"{key}.delta_prev")
                cells.append(f"{fmt(ind.get(key))} ({fmt(delta, True)})" if delta is not None else fmt(ind.get(key)))
            lines.append(f"  {sl:<6} " + " ".join(f"{c:>24}" for c in cells))
        lines.append("  (in brackets: the change since the previous version)" if self.previous else "")
        lines.append(f"  tail/head ratio: {fmt(ind.get('probe.tail_head_ratio'))}"
                     + (f" (previous {fmt(ind.get('probe.tail_head_ratio') - ind['probe.tail_head_ratio.delta_prev'])})"
                        if "probe.tail_head_ratio.delta_prev" in ind else "")
                     + f"; tail drop while the head held: {fmt(ind.get('probe.early_collapse'))}")
        return lines
