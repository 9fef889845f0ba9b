"""The trend report: one self-contained HTML page (PNG charts inlined, also written as files) over a dataset's
checks and the probed models' versions. Pure: rows in (as :meth:`MlflowTracker.history` gives them), files
out. No JavaScript; every text that came from data (batch names, summaries, model names) is escaped, and a
Content-Security-Policy that allows no script at all backs that up.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitors.adapters.files import atomic_write_bytes, atomic_write_text
from monitors.core.results import KEY_INDICATORS
from monitors.core.rules import Rule
from monitors.core.numbers import is_finite
from monitors.core.schema import Tag

COLORS = {"pending": "#e69f00", "firing": "#d55e00", "resolved": "#009e73"}
MARKERS = {"pending": "^", "firing": "o", "resolved": "D"}


@dataclass(frozen=True)
class Chart:
    name: str  # file name stem
    title: str
    png: bytes


_finite = is_finite


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _figure(over_time: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(11, 2.8), dpi=100)
    ax.grid(alpha=0.3)
    if over_time:
        locator = mdates.AutoDateLocator(tz=timezone.utc)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
        ax.set_xlabel("check started (UTC)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # registry versions are whole numbers
    return plt, fig, ax


def _t(run: dict) -> datetime:
    """A check's place on a chart's x-axis: when it started."""
    return datetime.fromtimestamp(run["started"] / 1000, timezone.utc)


def _y_range(values, bounds) -> tuple[float, float]:
    """The y-axis: the values and every threshold, and never narrower than a tenth of the values' magnitude,
    so that a 2 % wiggle is drawn as a wiggle, not a cliff."""
    lo, hi = min([*values, *bounds]), max([*values, *bounds])
    least = 0.1 * max(abs(lo), abs(hi)) or 0.1
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = mid - least / 2, mid + least / 2
    pad = (hi - lo) * 0.1
    return lo - pad, hi + pad


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def indicator_chart(column: str, runs: list[dict], rules: list[Rule]) -> Chart | None:
    """One indicator across runs (x: when each check started), its allowed band per rule (outside shaded)
    and the runs where a rule on it was pending, firing or resolved; the y-axis always shows the thresholds."""
    pts = [(_t(r), r["metrics"][column]) for r in runs if _finite(r["metrics"].get(column))]
    if not pts:
        return None
    plt, fig, ax = _figure(over_time=True)
    xs, ys = zip(*pts)
    ax.plot(xs, ys, color="#0072b2", marker=".", lw=1.5, label=column)
    bounds = [b for rule in rules for b in (rule.min_value, rule.max_value) if b is not None]
    for rule in rules:
        for bound in (rule.min_value, rule.max_value):
            if bound is not None:
                ax.axhline(bound, color="#d55e00", ls="--", lw=1)
        for state in ("pending", "firing", "resolved"):
            hit = [(_t(r), r["metrics"].get(column)) for r in runs
                   if r["alert_states"].get(rule.name) == state and _finite(r["metrics"].get(column))]
            if hit:
                ax.scatter(*zip(*hit), color=COLORS[state], marker=MARKERS[state], s=60, zorder=3,
                           label=f"{rule.name} {state}")
    low, high = _y_range(ys, bounds)
    ax.set_ylim(low, high)
    for rule in rules:  # shade what breaks the rule
        if rule.min_value is not None:
            ax.axhspan(low, rule.min_value, color="#d55e00", alpha=0.08)
        if rule.max_value is not None:
            ax.axhspan(rule.max_value, high, color="#d55e00", alpha=0.08)
    ax.set_title(column, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return Chart(column.replace(".", "_"), column, _png(plt, fig))


def share_chart(runs: list[dict]) -> Chart | None:
    """The synthetic share with its 95 % interval band, and the corpus's human share."""
    pts = [r for r in runs if _finite(r["metrics"].get("synthetic.share"))]
    if not pts:
        return None
    plt, fig, ax = _figure(over_time=True)
    xs = [_t(r) for r in pts]
    ax.fill_between(xs, [r["metrics"].get("synthetic.share_low", math.nan) for r in pts],
                    [r["metrics"].get("synthetic.share_high", math.nan) for r in pts], color="#cc79a7", alpha=0.25,
                    label="95 % interval")
    ax.plot(xs, [r["metrics"]["synthetic.share"] for r in pts], color="#cc79a7", marker=".", label="synthetic share")
    corpus = [(_t(r), r["metrics"]["corpus.human_share"]) for r in runs if _finite(r["metrics"].get("corpus.human_share"))]
    if corpus:
        ax.plot(*zip(*corpus), color="#009e73", ls="-.", label="corpus human share")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("synthetic share (batch) and human share (accumulated corpus)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return Chart("synthetic_share", "synthetic share", _png(plt, fig))


def probe_chart(model: str, runs: list[dict]) -> Chart | None:
    """A model's tail-to-head quality ratio by registry version, with its firing probe alerts."""
    pts = sorted((int(r["tags"].get(Tag.MODEL_VERSION, "0")), r) for r in runs
                 if _finite(r["metrics"].get("probe.tail_head_ratio")))
    if not pts:
        return None
    plt, fig, ax = _figure()
    ax.plot([v for v, _ in pts], [r["metrics"]["probe.tail_head_ratio"] for _, r in pts], color="#0072b2", marker="o")
    for v, r in pts:
        if r["alerts"]:
            ax.annotate(", ".join(r["alerts"]), (v, r["metrics"]["probe.tail_head_ratio"]), fontsize=6,
                        color=COLORS["firing"], xytext=(3, 6), textcoords="offset points")
    ax.set_xlabel("registry version")
    ax.set_title(f"{model}: tail / head quality", fontsize=10)
    return Chart(f"probe_{''.join(c if c.isalnum() else '_' for c in model)}", f"{model} tail/head", _png(plt, fig))


def _rank(severity: str) -> int:
    """critical first, then warning, then alerts of no rule in the suite (check_failed and the like)."""
    return {"critical": 0, "warning": 1}.get(severity, 2)


def current_status(runs: list[dict], rules: list[Rule]) -> list[dict[str, Any]]:
    """What the newest check has firing or pending, each with its severity and the run its current streak
    began (runs oldest first); critical first, firing before pending."""
    if not runs:
        return []
    severity = {r.name: r.severity for r in rules}
    out = []
    for rule, state in runs[-1]["alert_states"].items():
        if state not in ("firing", "pending"):
            continue
        i = len(runs) - 1
        while i > 0 and runs[i - 1]["alert_states"].get(rule) == state:
            i -= 1
        out.append({"rule": rule, "state": state, "severity": severity.get(rule, "-"), "since": runs[i]})
    return sorted(out, key=lambda a: (_rank(a["severity"]), a["state"] != "firing", a["rule"]))


def first_breaches(runs: list[dict]) -> list[dict[str, Any]]:
    """Per rule: the first run it was pending, first firing, and first resolved (runs oldest first)."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        for rule, state in r["alert_states"].items():
            entry = out.setdefault(rule, {"rule": rule})
            entry.setdefault(state, r)
    return sorted(out.values(), key=lambda e: min(e[s]["sequence"] for s in ("pending", "firing", "resolved") if s in e))


def render(dataset: str, runs: list[dict], rules: list[Rule], probe_runs: dict[str, list[dict]],
           run_url: Callable[[dict], str], out: Path, filter_runs: list[dict] | None = None) -> Path:
    """Write ``out/index.html`` and ``out/charts/*.png``; ``runs`` oldest first. Returns the page's path."""
    e = html.escape
    out.mkdir(parents=True, exist_ok=True)
    (out / "charts").mkdir(exist_ok=True)
    columns = list(dict.fromkeys([*KEY_INDICATORS, *[r.column for r in rules]]))
    charts: list[Chart] = [c for c in [share_chart(runs)] if c]
    for col in columns:
        if col == "synthetic.share":
            continue
        chart = indicator_chart(col, runs, [r for r in rules if r.column == col])
        if chart:
            charts.append(chart)
    probe_charts = [c for c in (probe_chart(m, rs) for m, rs in sorted(probe_runs.items())) if c]
    for c in [*charts, *probe_charts]:
        atomic_write_bytes(out / "charts" / f"{c.name}.png", c.png)

    def img(c: Chart) -> str:
        data = base64.b64encode(c.png).decode("ascii")
        return (f'<figure class="chart" data-chart="{e(c.name)}"><img alt="{e(c.title)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{e(c.title)}</figcaption></figure>')

    def link(r: dict, text: str) -> str:
        return f'<a href="{e(run_url(r))}">{e(text)}</a>'

    def at(run: dict) -> str:
        return link(run, "#%d %s" % (run["sequence"], _when(run["started"])))

    severity = {r.name: r.severity for r in rules}
    breach_rows = []
    for b in sorted(first_breaches(runs), key=lambda b: _rank(severity.get(b["rule"], "-"))):  # stable: by time within
        cells = []
        for state in ("pending", "firing", "resolved"):
            run = b.get(state)
            cells.append(f"<td>{at(run)}</td>" if run else "<td>-</td>")
        breach_rows.append(f"<tr><td>{e(severity.get(b['rule'], '-'))}</td><td>{e(b['rule'])}</td>{''.join(cells)}</tr>")
    now = current_status(runs, rules)
    status_rows = "".join(
        f"<li class='{'firing' if a['state'] == 'firing' else ''}'><b>{e(a['severity'])}</b> {e(a['rule'])}: "
        f"{a['state']} since {at(a['since'])}</li>" for a in now)
    status = (f"<ul>{status_rows}</ul>" if now else "<p>Nothing firing or pending at the newest check.</p>")
    newest = f" (newest check: {at(runs[-1])})" if runs else ""
    run_rows = []
    for r in reversed(runs):
        states = r["alert_states"]
        run_rows.append(
            f"<tr><td>{r['sequence']}</td><td>{_when(r['started'])}</td><td>{link(r, r['batch'] or r['run_id'])}</td>"
            f"<td>{e(r['max_severity'])}</td>"
            f"<td class='firing'>{e(', '.join(sorted(k for k, v in states.items() if v == 'firing')))}</td>"
            f"<td>{e(', '.join(sorted(k for k, v in states.items() if v == 'pending')))}</td>"
            f"<td>{e(', '.join(sorted(k for k, v in states.items() if v == 'resolved')))}</td>"
            f"<td>{e(r.get('description', ''))}</td></tr>")
    probe_rows = []
    for model, rs in sorted(probe_runs.items()):
        for r in sorted(rs, key=lambda r: int(r["tags"].get(Tag.MODEL_VERSION, "0"))):
            ratio = r["metrics"].get("probe.tail_head_ratio")
            probe_rows.append(
                f"<tr><td>{e(model)}</td><td>{link(r, 'v' + r['tags'].get('collapse.model_version', '?'))}</td>"
                f"<td>{_when(r['started'])}</td><td>{'%.3f' % ratio if _finite(ratio) else 'n/a'}</td>"
                f"<td class='firing'>{e(', '.join(r['alerts']))}</td></tr>")
    def pct(x) -> str:
        return "%.1f %%" % (100 * x) if _finite(x) else "n/a"

    filter_rows = [
        f"<tr><td>{_when(r['started'])}</td><td>{link(r, r['batch'] or r['run_id'])}</td>"
        f"<td>{int(r['metrics'].get('filter.kept', 0))}</td><td>{int(r['metrics'].get('filter.flagged', 0))}</td>"
        f"<td>{int(r['metrics'].get('filter.quarantined', 0))}</td><td>{pct(r['metrics'].get('filter.expected_human_loss'))}</td>"
        f"<td>{pct(r['metrics'].get('filter.share_before'))} &rarr; {pct(r['metrics'].get('filter.share_after'))}</td></tr>"
        for r in (filter_runs or [])]
    span = f"{_when(runs[0]['started'])} to {_when(runs[-1]['started'])}" if runs else "no checks"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>collapse-monitor report: {e(dataset)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }} table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; font-size: 13px; text-align: left; vertical-align: top; }}
.firing {{ color: #b03a00; }} figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 12px; color: #555; }} #charts figure, #probe-charts figure {{ display: block; max-width: 1100px; }}
#status {{ border: 2px solid #b03a00; padding: 0.3em 1em; margin: 1em 0; max-width: 1100px; }}
#status.quiet {{ border-color: #009e73; }}
</style></head><body>
<h1>Dataset {e(dataset)}: {len(runs)} checks, {span} (UTC)</h1>
<div id="status" class="{'' if now else 'quiet'}"><h2>Now{newest}</h2>{status}</div>
<p>Each chart is one indicator across checks (x: when the check started, UTC). Dashed red lines are
alert thresholds and the shaded side breaks the rule; the y-axis always includes them. Triangles mark runs where a
rule was pending, dots where it fired, diamonds where it resolved. Links open the MLflow run.</p>
<h2>When each alert started</h2>
<table id="breaches"><tr><th>severity</th><th>rule</th><th>first pending</th><th>first firing</th><th>first resolved</th></tr>
{''.join(breach_rows) or '<tr><td colspan="5">no alert so far</td></tr>'}</table>
<h2>Indicators</h2>
<div id="charts">{''.join(img(c) for c in charts)}</div>
<h2>Models on long-tail probes</h2>
<div id="probe-charts">{''.join(img(c) for c in probe_charts) or '<p>no model has been probed</p>'}</div>
<table id="probes"><tr><th>model</th><th>version</th><th>probed (UTC)</th><th>tail/head</th><th>firing</th></tr>
{''.join(probe_rows)}</table>
<h2>Filter runs, newest first</h2>
<table id="filters"><tr><th>started (UTC)</th><th>batch</th><th>kept</th><th>flagged</th><th>quarantined</th>
<th>expected human loss</th><th>synthetic share before &rarr; after</th></tr>
{''.join(filter_rows) or '<tr><td colspan="7">no filter run</td></tr>'}</table>
<h2>Checks, newest first</h2>
<table id="runs"><tr><th>#</th><th>started (UTC)</th><th>batch</th><th>max severity</th><th>firing</th><th>pending</th>
<th>resolved</th><th>description</th></tr>
{''.join(run_rows)}</table>
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)  # a full disk leaves the previous report, not half of a page
    return path
