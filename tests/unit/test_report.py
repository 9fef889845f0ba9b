"""History filters and CSV (monitors/core/history.py) and the report renderer (monitors/adapters/html_report.py) on hand-made rows."""

import csv
import io
import re

import pytest

from monitors.adapters import html_report as report
from monitors.core import history
from monitors.core.rules import Rule

DAY = 86_400_000


def _row(seq, started, batch, states=None, metrics=None, severity="none"):
    return {"run_id": f"run{seq}", "experiment_id": "7", "dataset": "news", "batch": batch, "sequence": seq,
            "started": started, "status": "FINISHED", "metrics": metrics or {}, "alert_states": states or {},
            "alerts": sorted(k for k, v in (states or {}).items() if v == "firing"), "max_severity": severity,
            "description": f"checked {batch}", "tags": {}}


ROWS = [  # newest first, as the tracker gives them
    _row(2, 10 * DAY, "c.jsonl", {"tail_coverage_collapse": "firing", "text_drift": "pending"}, severity="critical"),
    _row(1, 9 * DAY, "b.jsonl", {"text_drift": "firing"}, severity="warning"),
    _row(0, 1 * DAY, "a.jsonl", {"text_drift": "resolved"}),
]


def test_select_filters_by_time_severity_and_state():
    assert [r["batch"] for r in history.select(ROWS, since=5 * DAY)] == ["c.jsonl", "b.jsonl"]
    assert [r["batch"] for r in history.select(ROWS, severity="warning")] == ["c.jsonl", "b.jsonl"]
    assert [r["batch"] for r in history.select(ROWS, severity="critical")] == ["c.jsonl"]
    assert [r["batch"] for r in history.select(ROWS, state="resolved")] == ["a.jsonl"]
    assert [r["batch"] for r in history.select(ROWS, state="pending", since=0)] == ["c.jsonl"]
    assert [r["batch"] for r in history.select(ROWS, last=1)] == ["c.jsonl"]


def test_since_takes_a_duration_or_a_date():
    assert history.since_ms("2d", now=10 * 86_400) == 8 * DAY
    assert history.since_ms("1970-01-03") == 2 * DAY
    with pytest.raises(ValueError, match="neither a duration"):
        history.since_ms("last tuesday")


def test_csv_has_one_line_per_run():
    rows = list(csv.DictReader(io.StringIO(history.to_csv(ROWS))))
    assert [r["batch"] for r in rows] == ["c.jsonl", "b.jsonl", "a.jsonl"]
    assert rows[0]["firing"] == "tail_coverage_collapse" and rows[0]["pending"] == "text_drift"
    assert rows[2]["started_utc"] == "1970-01-02T00:00:00Z"


def test_report_escapes_data_and_marks_when_alerts_started(isolated):
    hostile = "<script>document.body.dataset.pwned = 1</script>"
    runs = [_row(i, i * DAY, hostile if i == 1 else f"b{i}.jsonl",
                 {"tail_coverage_loss": s} if s else {}, {"tail.rare_coverage.z": z, "synthetic.share": 0.1 * i,
                                                         "synthetic.share_low": 0.05 * i, "synthetic.share_high": 0.15 * i})
            for i, (s, z) in enumerate([(None, 0.1), (None, -2.0), ("pending", -6.0), ("firing", -9.0), ("resolved", -1.0)])]
    rules = [Rule("tail_coverage_loss", "tail.rare_coverage.z", -5, None, "warning", "tail <b>loss</b>", 2)]
    probe = {"m<i>x</i>": [{**_row(0, 5 * DAY, "v1"), "tags": {"collapse.model_version": "1"},
                           "metrics": {"probe.tail_head_ratio": 0.5}},
                          {**_row(1, 6 * DAY, "v2", {"probe_tail_collapse": "firing"}),
                           "tags": {"collapse.model_version": "2"}, "metrics": {"probe.tail_head_ratio": 0.2}}]}
    page = report.render("news", runs, rules, probe, lambda r: f"http://ui/#/runs/{r['run_id']}?a=1&b=2",
                         isolated / "out").read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page and "m&lt;i&gt;x&lt;/i&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert 'href="http://ui/#/runs/run3?a=1&amp;b=2"' in page
    breach = re.search(r"<tr><td>warning</td><td>tail_coverage_loss</td>(.*?)</tr>", page).group(1)
    assert ">#2 1970-01-03 00:00<" in breach and ">#3 1970-01-04 00:00<" in breach and ">#4 1970-01-05 00:00<" in breach
    charts = sorted(p.name for p in (isolated / "out" / "charts").iterdir())
    assert charts == ["probe_m_i_x__i_.png", "synthetic_share.png", "tail_rare_coverage_z.png"]
    assert page.count('<img alt="') == 3 and page.count("data:image/png;base64,iVBORw0KGgo") == 3


def test_report_leads_with_current_status_and_charts_over_time(isolated, monkeypatch):
    """Issue 20, item 12: what is firing now (since when, how severe) comes first; the breach table has a
    severity column with critical rules on top; charts run over time, and a chart whose values wiggle by 2 %
    is not drawn as a cliff."""
    drawn = {}

    def keep(plt, fig):
        ax = fig.axes[0]
        drawn[ax.get_title()] = (ax.get_xlabel(), ax.get_ylim())
        plt.close(fig)
        return b"\x89PNG"

    monkeypatch.setattr(report, "_png", keep)
    states = [{}, {"text_drift": "pending"}, {"text_drift": "firing", "tail_coverage_loss": "firing"},
              {"text_drift": "firing", "tail_coverage_loss": "firing"}]
    runs = [_row(i, (i + 1) * DAY, f"b{i}.jsonl", s, {"drift.text_auc.z": 1.0 + 0.02 * i, "tail.rare_coverage.z": -1.0 * i,
                                                    "human.share": 0.98 + 0.005 * i})
            for i, s in enumerate(states)]
    rules = [Rule("text_drift", "drift.text_auc.z", None, 4.0, "warning", "drift", 2),
             Rule("tail_coverage_loss", "tail.rare_coverage.z", -5.0, None, "critical", "tail", 1)]
    page = report.render("news", runs, rules, {}, lambda r: "http://ui/", isolated / "out").read_text()

    status = page[page.index('id="status"'):page.index('id="breaches"')]
    assert page.index('id="status"') < page.index("<h2>Indicators")
    assert status.index("tail_coverage_loss") < status.index("text_drift")  # critical first
    assert re.search(r"critical</b> tail_coverage_loss: firing since <a[^>]*>#2 1970-01-04", status, re.S)
    assert re.search(r"warning</b> text_drift: firing since <a[^>]*>#2 1970-01-04", status, re.S)
    table = page[page.index('id="breaches"'):]
    assert "<th>severity</th>" in table
    assert table.index("<td>critical</td><td>tail_coverage_loss</td>") < table.index("<td>warning</td><td>text_drift</td>")

    xlabel, (lo, hi) = drawn["drift.text_auc.z"]
    assert "UTC" in xlabel and "sequence" not in xlabel
    assert lo <= 1.0 and hi >= 4.0  # the threshold is on the chart
    _, (lo, hi) = drawn["tail.rare_coverage.z"]
    assert lo <= -5.0 <= hi
    _, (lo, hi) = drawn["human.share"]  # no rule: 0.98 to 0.995 is not drawn edge to edge
    assert hi - lo >= 0.1
