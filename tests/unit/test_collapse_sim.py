"""The simulator's pure core against the papers' closed forms, on tiny seeded sizes (well under a second each).

Tolerances are stated per test and sit at 3-4 standard errors of the Monte Carlo estimate at these sizes.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from monitors.core import collapse_sim as cs
from monitors.core.errors import UserError

REPLACE, ACCUMULATE = cs.parse_policy("replace"), cs.parse_policy("accumulate")


def test_policies_parse_and_a_bad_one_names_the_option():
    assert cs.parse_policy("mix:0.1") == cs.Policy("mix", 0.1)
    assert cs.parse_policy("mix:0.1").slug == "mix0.1" and cs.parse_policy(" Replace ").name == "replace"
    for bad in ("mix:0", "mix:1.5", "mix:x", "keep"):
        with pytest.raises(UserError, match="--policy"):
            cs.parse_policy(bad)


def test_gaussian_replace_variance_and_w2_follow_the_closed_form():
    n = 10
    rows = cs.gaussian_run(n, 4, REPLACE, repeats=4000, seed=1)
    for r in rows[1:]:
        t = r["generation"]
        assert r["variance_mean"] == pytest.approx(((n - 1) / n) ** t, rel=0.05)  # ~3.5 standard errors
        assert r["log_variance_mean"] == pytest.approx(r["theory_log_variance"], abs=0.05)
        assert r["w2_squared_mean"] == pytest.approx(r["theory_w2_squared"], rel=0.08)
    # the typical variance collapses faster than the mean: median well under the mean by generation 4
    assert rows[4]["variance_median"] < 0.8 * rows[4]["variance_mean"]


def test_gaussian_accumulate_keeps_the_variance_that_replace_loses():
    rep = cs.gaussian_run(10, 10, REPLACE, repeats=2000, seed=2)[-1]["variance_mean"]
    acc = cs.gaussian_run(10, 10, ACCUMULATE, repeats=2000, seed=2)[-1]["variance_mean"]
    assert rep < 0.45 and acc > 0.8


def test_gaussian_theory_at_known_points():
    th = cs.gaussian_theory(10, 1)
    assert th["variance"] == pytest.approx(0.9)
    digamma_4_5 = -0.5772156649 - 2 * math.log(2) + 2 * sum(1 / (2 * k - 1) for k in range(1, 5))  # exact series
    assert th["log_variance"] == pytest.approx(digamma_4_5 + math.log(2 / 10), abs=1e-6)
    assert cs.gaussian_theory(10, 0)["w2_squared"] == pytest.approx(0.0)


def test_regression_replace_grows_linearly_and_accumulate_stays_under_the_bound():
    d, T = 5, 30
    unit = d / (T - d - 1)
    rep = cs.regression_run(d, T, 1.0, 4, REPLACE, repeats=1500, seed=3)
    acc = cs.regression_run(d, T, 1.0, 4, ACCUMULATE, repeats=1500, seed=3)
    for t in (1, 2, 4):
        assert rep[t]["test_error"] == pytest.approx(unit * t, rel=0.08)
        assert acc[t]["test_error"] == pytest.approx(unit * sum(1 / i ** 2 for i in range(1, t + 1)), rel=0.08)
    assert max(r["test_error"] for r in acc) < cs.regression_bound(d, T, 1.0)
    assert rep[4]["test_error"] > 2.5 * acc[4]["test_error"]


def test_regression_refuses_too_few_rows():
    with pytest.raises(UserError, match="--rows|rows"):
        cs.regression_run(10, 11, 1.0, 1, REPLACE)


def test_zipf_reproduces_the_projects_type_counts_and_the_expected_first_generation():
    rows = cs.zipf_run(10_000, 1.1, 100_000, 5, REPLACE, seed=0)
    p = cs.zipf_probs(10_000, 1.1)
    expected = float(np.sum(1 - (1 - p) ** 100_000))  # E[distinct types in N draws]
    assert rows[1]["types"] == pytest.approx(expected, rel=0.01)
    assert rows[1]["types"] == pytest.approx(7_400, rel=0.02) and rows[5]["types"] == pytest.approx(4_300, rel=0.03)
    # unbiased refitting: the tail's expected mass is a martingale, so it barely moves
    assert abs(rows[5]["tail_mass"] - rows[0]["tail_mass"]) < 0.01


def test_zipf_truncated_decoding_removes_the_tail_mass():
    rows = cs.zipf_run(2_000, 1.1, 20_000, 4, REPLACE, top_p=0.9, seed=0)
    assert rows[4]["tail_mass"] < 0.5 * rows[0]["tail_mass"]
    assert cs.truncate(np.array([0.5, 0.3, 0.2]), top_k=2).tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert cs.truncate(np.array([0.5, 0.3, 0.2]), top_p=0.5).tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_zipf_accumulate_never_loses_a_type():
    rows = cs.zipf_run(2_000, 1.1, 10_000, 4, ACCUMULATE, seed=0)
    assert [r["types"] for r in rows[1:]] == [rows[1]["types"]] * 4


def test_hapax_share_counts_types_seen_once_in_the_window():
    assert cs.hapax_share(["a", "b", "a", "c"]) == pytest.approx(2 / 3)
    assert cs.hapax_share(["a", "b", "a", "c"], window=2) == pytest.approx(1.0)
    assert math.isnan(cs.hapax_share([]))


def test_self_bleu_is_one_for_copies_zero_for_disjoint_text_and_rises_with_repetition():
    doc = "the cat sat on the mat today".split()
    assert cs.self_bleu([doc, doc, doc]) == pytest.approx(1.0)
    assert cs.self_bleu([["a", "b", "c", "d"], ["e", "f", "g", "h"]]) == 0.0
    rng = random.Random(0)
    words = [f"w{i}" for i in range(200)]
    diverse = [[rng.choice(words) for _ in range(20)] for _ in range(20)]
    narrow = [[rng.choice(words[:15]) for _ in range(20)] for _ in range(20)]
    assert cs.self_bleu(narrow) > cs.self_bleu(diverse) + 0.1


def test_lead_times_first_firing_first_breach_and_counts():
    per_gen = [(1, [("a", "warning", "pending")]),
               (2, [("a", "warning", "firing"), ("c", "critical", "firing")]),
               (3, [("a", "warning", "firing"), ("c", "critical", "resolved"), ("b", "warning", "pending")])]
    got = {t.rule: t for t in cs.lead_times(per_gen)}
    assert (got["a"].first_breach, got["a"].first_firing, got["a"].firing_generations) == (1, 2, 2)
    assert (got["b"].first_firing, got["b"].first_breach) == (None, 3)
    assert [t.rule for t in cs.lead_times(per_gen)][0] == "c"
    assert cs.first_critical(cs.lead_times(per_gen)) == 2
    assert cs.first_critical(cs.lead_times(per_gen[:1])) is None
