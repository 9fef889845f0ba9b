"""The alert state machine: pending -> firing -> (repeat) -> resolved, for_runs, unknown values, silences."""

import math

import pytest

from monitors.core.alerting import Silence, states_from_json, states_to_json, step
from monitors.core.numbers import parse_duration
from monitors.core.errors import RulesError
from monitors.core.rules import Rule, fingerprint
from monitors.adapters.gx_rules import load_rules

WARN = Rule("tail_loss", "tail.z", -5.0, None, "warning", "tails thin", for_runs=2)
CRIT = Rule("floor", "corpus.human", 0.3, None, "critical", "corpus below floor", for_runs=1)
RULES = (WARN, CRIT)
H = 3600.0


def _run(states, t, tail, human=0.9, silences=(), rules=RULES):
    return step(states, rules, {"tail.z": tail, "corpus.human": human}, "news", t, list(silences), repeat_interval=24 * H)


def _kinds(res):
    return [(n.kind, n.alert.rule) for n in res.notifications]


def test_warning_goes_pending_fires_repeats_and_resolves():
    r1 = _run({}, 0, -7)
    assert [(a.rule, a.status) for a in r1.alerts] == [("tail_loss", "pending")] and r1.notifications == []
    r2 = _run(r1.states, 3 * H, -8)
    assert _kinds(r2) == [("firing", "tail_loss")] and r2.alerts[0].status == "firing" and r2.alerts[0].value == -8
    r3 = _run(r2.states, 6 * H, -8)
    assert r3.notifications == [] and r3.alerts[0].status == "firing"  # within repeat_interval
    r4 = _run(r3.states, 27 * H, -9)
    assert _kinds(r4) == [("repeat", "tail_loss")]
    r5 = _run(r4.states, 30 * H, -1)
    assert _kinds(r5) == [("resolved", "tail_loss")] and r5.alerts[0].status == "resolved" and r5.states == {}
    r6 = _run(r5.states, 33 * H, -1)
    assert r6.alerts == [] and r6.notifications == []


def test_critical_fires_at_once_and_the_fingerprint_is_stable():
    r = _run({}, 0, 0, human=0.2)
    assert _kinds(r) == [("firing", "floor")]
    assert r.alerts[0].fingerprint == fingerprint("floor", "news") == _run({}, 99, 0, human=0.1).alerts[0].fingerprint
    assert fingerprint("floor", "news") != fingerprint("floor", "other")


def test_one_noisy_batch_never_pages():
    r1 = _run({}, 0, -7)
    r2 = _run(r1.states, H, 0)
    assert r2.notifications == [] and r2.alerts == [] and r2.states == {}


def test_an_unknown_value_keeps_the_state():
    r1 = _run(_run({}, 0, -7).states, H, -7)
    assert r1.alerts[0].status == "firing"
    r2 = _run(r1.states, 2 * H, math.nan)
    assert r2.notifications == [] and r2.alerts[0].status == "firing" and r2.states == r1.states
    r3 = step(r1.states, RULES, {"corpus.human": 0.9}, "news", 3 * H)  # column missing altogether
    assert r3.states == r1.states


def test_silence_suppresses_then_expires():
    fp = fingerprint("floor", "news")
    quiet = [Silence(fp, until=10 * H, reason="backfill", created=0)]
    r1 = _run({}, 0, 0, human=0.1, silences=quiet)
    assert r1.notifications == [] and [(n.kind, n.alert.rule) for n in r1.silenced] == [("firing", "floor")]
    assert r1.alerts[0].status == "firing"  # the state moves; only the page is held back
    r2 = _run(r1.states, 5 * H, 0, human=0.1, silences=quiet)
    assert r2.notifications == []
    r3 = _run(r2.states, 11 * H, 0, human=0.1, silences=quiet)  # expired, still firing: first real page
    assert _kinds(r3) == [("firing", "floor")]
    r4 = _run(r3.states, 12 * H, 0, human=0.1, silences=quiet)
    assert r4.notifications == []


def test_state_round_trips_and_a_removed_rule_is_forgotten():
    r = _run(_run({}, 0, -7, human=0.1).states, H, -7, human=0.1)
    assert states_from_json(states_to_json(r.states)) == r.states
    only_floor = _run(r.states, 2 * H, -7, human=0.1, rules=(CRIT,))
    assert {s.rule for s in only_floor.states.values()} == {"floor"}


def test_for_runs_defaults_and_errors(isolated):
    import json

    suite = {"expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "a", "min_value": 1},
         "meta": {"rule": "w", "severity": "warning"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "b", "min_value": 1},
         "meta": {"rule": "c", "severity": "critical"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "c", "min_value": 1},
         "meta": {"rule": "x", "severity": "warning", "for_runs": 3}},
    ]}
    path = isolated / "rules.json"
    path.write_text(json.dumps(suite))
    assert [r.for_runs for r in load_rules(path).rules] == [2, 1, 3]
    suite["expectations"][2]["meta"]["for_runs"] = 0
    path.write_text(json.dumps(suite))
    with pytest.raises(RulesError, match=r"expectation #3 \(x\): meta.for_runs must be a whole number"):
        load_rules(path)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1w", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0m", "abc", "nanh"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="positive number with a unit"):
        parse_duration(text)


# -- for_runs over a window: bad batches cannot hide between good ones (issue 20, item 4) --------------------
WINDOWED = Rule("tail_loss", "tail.z", -5.0, None, "warning", "tails thin", for_runs=2, within_runs=3)


def test_a_window_rule_fires_on_two_bad_batches_of_three():
    r1 = _run({}, 0, -7, rules=(WINDOWED,))
    r2 = _run(r1.states, H, 0, rules=(WINDOWED,))  # a good batch in between: still pending, and shown
    assert [(a.rule, a.status, a.breaches, a.for_runs, a.within_runs) for a in r2.alerts] == [("tail_loss", "pending", 1, 2, 3)]
    r3 = _run(r2.states, 2 * H, -7, rules=(WINDOWED,))
    assert _kinds(r3) == [("firing", "tail_loss")]
    # strictly consecutive (the default window = for_runs): the same stream never fires
    c3 = _run(_run(_run({}, 0, -7).states, H, 0).states, 2 * H, -7)
    assert c3.notifications == [] and c3.alerts[0].status == "pending"


def test_a_window_forgets_a_breach_that_left_it():
    r = _run({}, 0, -7, rules=(WINDOWED,))
    for i in range(1, 3):
        r = _run(r.states, i * H, 0, rules=(WINDOWED,))
    assert r.states == {} and r.alerts == []  # 1 of the last 3 can no longer reach 2 before it leaves
    r = _run(r.states, 3 * H, -7, rules=(WINDOWED,))
    assert r.notifications == [] and r.alerts[0].status == "pending"


def test_states_saved_before_windows_still_load():
    old = states_to_json(_run({}, 0, -7).states)
    for s in old:
        del s["recent"]
    assert _kinds(_run(states_from_json(old), H, -7)) == [("firing", "tail_loss")]


def test_within_runs_is_read_and_checked(isolated):
    import json

    exp = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "a", "min_value": 1},
           "meta": {"rule": "w", "severity": "warning", "for_runs": 2, "within_runs": 3}}
    path = isolated / "rules.json"
    path.write_text(json.dumps({"expectations": [exp]}))
    assert (load_rules(path).rules[0].for_runs, load_rules(path).rules[0].within_runs) == (2, 3)
    exp["meta"]["within_runs"] = 1
    path.write_text(json.dumps({"expectations": [exp]}))
    with pytest.raises(RulesError, match=r"meta.within_runs must be a whole number of runs >= meta.for_runs \(2\)"):
        load_rules(path)


def test_the_shipped_share_rules_count_two_bad_batches_of_three():
    from tests.conftest import REPO

    rules = {r.name: r for r in load_rules(REPO / "expectations" / "collapse_indicators.json").rules}
    assert (rules["synthetic_share_high"].for_runs, rules["synthetic_share_high"].within_runs) == (2, 3)
    assert (rules["human_share_below_floor"].for_runs, rules["human_share_below_floor"].within_runs) == (2, 3)


def test_the_summary_and_json_lead_with_a_pending_alert():
    from monitors.core.quantify import ShareEstimate
    from monitors.core.results import CheckResult

    pending = _run({}, 0, -7, rules=(WINDOWED,)).alerts
    result = CheckResult("r1", "news", "b.jsonl", 100, 0, {"tail.z": -7.0}, ShareEstimate.unavailable("none"), pending, "ref", None)
    lines = result.summary().splitlines()
    assert lines[1].strip().startswith("PENDING [warning] tail_loss") and "1 of 2 breaching runs (within 3)" in lines[1]
    data = result.to_dict()
    assert data["pending"] == ["tail_loss"] and data["firing"] == []
    assert data["alerts"][0] | {"breaches": 1, "for_runs": 2, "within_runs": 3} == data["alerts"][0]
