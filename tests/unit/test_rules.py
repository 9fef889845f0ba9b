import copy
import json
import math

import pytest

from monitors.adapters import gx_rules
from monitors.config import DEFAULT_RULES
from monitors.core.errors import RulesError
from monitors.core.rules import breached_threshold, fingerprint, max_severity
from monitors.adapters.gx_rules import load_rules


def _write(tmp_path, suite):
    p = tmp_path / "rules.json"
    p.write_text(json.dumps(suite))
    return p


def test_shipped_suite_loads_and_every_rule_has_severity_and_summary():
    suite = load_rules(DEFAULT_RULES)
    assert len(suite.rules) >= 6
    assert {r.severity for r in suite.rules} == {"warning", "critical"}
    assert all(r.summary for r in suite.rules)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda e: e["meta"].update(severity="loud"), "meta.severity"),
    (lambda e: e["kwargs"].pop("column"), "kwargs.column"),
    (lambda e: e["kwargs"].update(min_value="high", max_value=None), "numeric"),
    (lambda e: e.update(type="expect_table_row_count_to_equal"), "not supported"),
])
def test_broken_rule_names_the_expectation(tmp_path, mutate, fragment):
    suite = json.loads(DEFAULT_RULES.read_text())
    mutate(suite["expectations"][1])
    with pytest.raises(RulesError) as exc:
        load_rules(_write(tmp_path, suite))
    assert "expectation #2" in str(exc.value) and fragment in str(exc.value)


def test_duplicate_rule_names_are_refused(tmp_path):
    suite = json.loads(DEFAULT_RULES.read_text())
    suite["expectations"].append(copy.deepcopy(suite["expectations"][0]))
    with pytest.raises(RulesError, match="unique"):
        load_rules(_write(tmp_path, suite))


def test_unreadable_suite(tmp_path):
    p = tmp_path / "rules.json"
    p.write_text("{not json")
    with pytest.raises(RulesError, match="not valid JSON"):
        load_rules(p)


def test_fingerprint_is_stable_and_distinguishes_its_keys():
    assert fingerprint("r", "news") == fingerprint("r", "news")
    assert len({fingerprint("r", "news"), fingerprint("r", "blogs"), fingerprint("q", "news"),
                fingerprint("r", "news", model="m"), fingerprint("r", "news", slice_="tail")}) == 5


def test_breached_threshold():
    suite = load_rules(DEFAULT_RULES)
    floor = next(r for r in suite.rules if r.name == "human_share_below_floor")
    assert breached_threshold(floor, 0.1) == floor.min_value
    assert breached_threshold(floor, 0.9) is None
    assert breached_threshold(floor, float("nan")) is None


def test_great_expectations_evaluates_the_suite():
    suite = load_rules(DEFAULT_RULES)
    row = {"batch.records": 100, "human.share": 0.2, "synthetic.share": 0.8, "tail.rare_coverage.ratio": 0.5,
           "tail.rare_coverage.z": -7.5, "tail.distinct_2.z": 1.0, "mode.compression_ratio.z": float("nan")}
    alerts = gx_rules.evaluate(suite, row, "news")
    fired = {a.rule: a for a in alerts}
    assert set(fired) == {"human_share_below_floor", "synthetic_share_high", "tail_coverage_loss", "tail_coverage_collapse"}
    assert fired["tail_coverage_collapse"].severity == "critical" and fired["tail_coverage_collapse"].threshold == 0.6
    assert fired["human_share_below_floor"].value == pytest.approx(0.2)
    assert all(a.status == "firing" and a.fingerprint == fingerprint(a.rule, "news") for a in alerts)
    assert max_severity(alerts) == "critical"
    # Missing and nan indicators are no evidence: nothing fires on them.
    assert gx_rules.evaluate(suite, {"batch.records": 5}, "news") == []
    assert not math.isnan(suite.rules[0].min_value)


def test_empty_batch_fires_critical():
    alerts = gx_rules.evaluate(load_rules(DEFAULT_RULES), {"batch.records": 0}, "news")
    assert [(a.rule, a.severity) for a in alerts] == [("batch_empty", "critical")]


def test_a_step_down_in_distinct_bigrams_since_the_previous_check_is_critical():
    """Issue 16: the rule that fires at generation 2 of an unbiased refit on its own samples (replace), and not
    under accumulate (benchmarks/lead_time_study.py); a first check (no previous one, nan) is no evidence."""
    suite = load_rules(DEFAULT_RULES)
    column = "trend.tail.distinct_2_wide.vs_previous"
    fired = gx_rules.evaluate(suite, {"batch.records": 300, column: 0.95}, "news")
    assert [(a.rule, a.severity, a.threshold) for a in fired] == [("diversity_step_drop", "critical", 0.965)]
    assert gx_rules.evaluate(suite, {"batch.records": 300, column: 0.99}, "news") == []
    assert gx_rules.evaluate(suite, {"batch.records": 300, column: float("nan")}, "news") == []
