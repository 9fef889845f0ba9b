"""The stored Evidently report (issue 20, item 11): it says that its per-column drift verdicts are Evidently's
p-value tests, not collapse-monitor's (which come from bands fitted on the reference), and it is stored
gzipped (4 MB of HTML per check otherwise: about 12 GB a year for a dataset checked every 3 hours)."""

import gzip
import re

from monitors.adapters import drift


def test_stored_report_is_labelled_and_compressed(austen):
    texts = [p["text"] for p in austen[:120]]
    report = drift.drift_report(texts[:60], texts[60:])
    stored = drift.report_artifacts(report)
    assert set(stored) == {"drift/report.html.gz", "drift/report.json.gz"}
    html = gzip.decompress(stored["drift/report.html.gz"]).decode("utf-8")
    assert html.startswith(report.html[:20]) and drift.VERDICT_NOTE in html
    assert re.search(r"<body[^>]*>\s*<div[^>]*>" + re.escape(drift.VERDICT_NOTE), html)  # first in the page
    assert len(stored["drift/report.html.gz"]) < len(report.html.encode()) / 3
    assert gzip.decompress(stored["drift/report.json.gz"]).decode("utf-8") == report.json
