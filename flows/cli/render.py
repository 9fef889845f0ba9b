"""The text the CLI prints for people: tables of alerts and of the run history (``--json`` prints data as is)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

#: short column names of the history table
SHORT = {"synthetic.share": "syn", "human.share": "human", "corpus.human_share": "corp.hum", "tail.distinct_2.ratio": "dist2",
         "tail.rare_coverage.ratio": "rarecov", "mode.compression_ratio.ratio": "compr",
         "vintage.after_cutoff_share": "post-cut", "tail.rare_coverage.z": "rarecov.z",
         "mode.near_duplicate_share": "neardup", "mode.cluster_entropy.z": "clust.z", "drift.text_auc": "txt-auc"}


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M")


def alerts_table(report: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Alerts, severity first and critical on top, then silences; ``report`` is ``alerts list --json``'s object."""
    from monitors.core.rules import SEVERITIES

    if not any(v["alerts"] or v["silences"] for v in report.values()):
        return "no pending or firing alerts and no silences"
    rows, out = [], []
    for dataset, v in report.items():
        muted = {s["fingerprint"] for s in v["silences"] if s["active"]}
        for a in v["alerts"]:
            runs = f"{a['breaches']}" + (f"/{a['for_runs']}" if a.get("for_runs") and a["status"] == "pending" else "") \
                if a.get("breaches") is not None else "-"
            rank = (-SEVERITIES.index(a["severity"]), a["status"] != "firing", dataset, a["rule"])
            rows.append((rank, f"{a['severity']:<9} {a['status']:<8} {a['rule']:<28} {dataset:<14} {_utc(a['since']):<17} "
                               f"{runs:>5}  {a['fingerprint']}" + ("  [silenced]" if a["fingerprint"] in muted else "")
                               + (f"  {a['summary']}" if a.get("failure") else "")))
    if rows:
        out.append(f"{'SEVERITY':<9} {'STATUS':<8} {'RULE':<28} {'DATASET':<14} {'SINCE (UTC)':<17} {'RUNS':>5}  FINGERPRINT")
        out += [line for _, line in sorted(rows)]
    silences = [(d, s) for d, v in report.items() for s in v["silences"]]
    if silences:
        out.append(f"\n{'SILENCE':<9} {'UNTIL (UTC)':<17} {'DATASET':<14} {'FINGERPRINT':<16}  REASON")
    for dataset, s in silences:
        out.append(f"{'active' if s['active'] else 'expired':<9} {_utc(s['until']):<17} {dataset:<14} "
                   f"{s['fingerprint']:<16}  {s['reason']}")
    return "\n".join(out)


def filter_table(rows: list[dict[str, Any]], dataset: str | None, where: str) -> str:
    """One line per filter run: when, dataset, batch, kept / flagged / quarantined, the loss and the shares."""
    if not rows:
        return "no filter runs yet" + (f" for dataset {dataset!r}" if dataset else "") + f" in {where}"

    def pct(x) -> str:
        return f"{x:.1%}" if isinstance(x, (int, float)) and x == x else "n/a"

    out = [f"{'started (UTC)':<17} {'dataset':<10} {'batch':<22} {'kept':>8} {'flagged':>8} {'quarant.':>8} "
           f"{'h. loss':>8}  share before -> after"]
    for row in rows:
        m = row["metrics"]
        out.append(f"{_utc(row['started'] / 1000):<17} {str(row['dataset'])[:10]:<10} {str(row['batch'])[:22]:<22} "
                   f"{int(m.get('filter.kept', 0)):>8} {int(m.get('filter.flagged', 0)):>8} "
                   f"{int(m.get('filter.quarantined', 0)):>8} {pct(m.get('filter.expected_human_loss')):>8}  "
                   f"{pct(m.get('filter.share_before'))} -> {pct(m.get('filter.share_after'))}")
    return "\n".join(out)


def history_table(rows: list[dict[str, Any]], dataset: str | None, where: str) -> str:
    """One line per run: when, dataset, batch, the key indicators, the firing alerts."""
    from monitors.core.results import (
        KEY_INDICATORS,  # numpy: imported when a table is printed
    )

    if not rows:
        return "no checks yet" + (f" for dataset {dataset!r}" if dataset else "") + f" in {where}"
    out = [f"{'started (UTC)':<17} {'dataset':<10} {'batch':<22} " + " ".join(f"{SHORT[k]:>8}" for k in KEY_INDICATORS)
           + "  alerts"]
    for row in rows:
        vals = " ".join(f"{row['metrics'][k]:>8.3f}" if k in row["metrics"] else f"{'n/a':>8}" for k in KEY_INDICATORS)
        alerts = ", ".join(row["alerts"]) or "-"
        out.append(f"{_utc(row['started'] / 1000):<17} {str(row['dataset'])[:10]:<10} {str(row['batch'])[:22]:<22} "
                   f"{vals}  {alerts}")
    return "\n".join(out)
