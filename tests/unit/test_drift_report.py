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


def test_random_auc_percentile_is_computed_once_with_the_same_result():
    """Issue 20: Evidently asks for the random classifiers' AUC percentile three times per report; within one report
    it is computed once. The value and NumPy's global random state afterwards are those of Evidently's own code."""
    import numpy as np
    from evidently.legacy.utils import data_drift_utils as ddu

    y = np.array([0, 1] * 60 + [1] * 7)
    original = ddu.roc_auc_random_classifier_percentile
    expected = original(y)
    expected_next = np.random.rand()
    calls = []
    ddu.roc_auc_random_classifier_percentile = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with drift._random_auc_computed_once():
            got = [ddu.roc_auc_random_classifier_percentile(y) for _ in range(3)]
            got_next = np.random.rand()
    finally:
        ddu.roc_auc_random_classifier_percentile = original
    assert got == [expected] * 3 and got_next == expected_next
    assert len(calls) == 1


def test_random_auc_percentile_is_kept_on_disk_with_the_same_result(tmp_path):
    """Issue 20, item 6: the percentile depends only on the test labels (the two samples' sizes), so it is kept in
    the cache folder across checks; a later report gets the same value and leaves NumPy's random state as
    Evidently's own computation does, without the 1000 AUCs."""
    import numpy as np
    from evidently.legacy.utils import data_drift_utils as ddu

    y = np.array([0, 1] * 60 + [1] * 7)
    original = ddu.roc_auc_random_classifier_percentile
    expected = original(y)
    expected_next = np.random.rand()
    calls = []
    ddu.roc_auc_random_classifier_percentile = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        for _ in range(2):  # two checks: the first computes and keeps it, the second reads it
            with drift._random_auc_computed_once(tmp_path):
                got = ddu.roc_auc_random_classifier_percentile(y)
                got_next = np.random.rand()
            assert got == expected and type(got) is type(expected) and got_next == expected_next
    finally:
        ddu.roc_auc_random_classifier_percentile = original
    assert len(calls) == 1 and (tmp_path / drift.RANDOM_AUC_FILE).exists()
    (tmp_path / drift.RANDOM_AUC_FILE).write_text("not json")  # a damaged cache is recomputed, not an error
    with drift._random_auc_computed_once(tmp_path):
        assert ddu.roc_auc_random_classifier_percentile(y) == expected
