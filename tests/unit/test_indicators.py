"""Contract of every indicator: deterministic, empty input handled, merge(a, b) == profile(a + b), no I/O."""

import builtins
import math
import random
import socket
from collections import Counter
from datetime import date
from itertools import combinations

import numpy as np
import pytest

from monitors.config import IndicatorSettings
from monitors.indicators import (
    compression_ratio,
    compute_indicators,
    rare_coverage,
    rarefied_distinct,
    rarefied_presence,
    tail_types,
    with_ratios,
)
from monitors.profile import TextProfile, profile_documents

SETTINGS = IndicatorSettings(window=200, coverage_tokens=300, sample_size=50, compress_bytes=4096)
CUT = date(2024, 1, 1)


def _profile(rows):
    return profile_documents([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                             cutoff=CUT, sample_size=SETTINGS.sample_size)


@pytest.fixture(scope="module")
def rows(austen):
    rng = random.Random(3)
    picked = rng.sample(austen, 120)
    dates = [None, date(2020, 5, 1), date(2025, 2, 3)]
    return [(p["id"], p["text"], dates[i % 3]) for i, p in enumerate(picked)]


@pytest.fixture(scope="module")
def tail(austen):
    return tail_types(_profile([(p["id"], p["text"], None) for p in austen[:800]]).ngrams[0], 0.8)


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k


def test_same_input_same_output(rows, tail):
    _same(compute_indicators(_profile(rows), SETTINGS, tail), compute_indicators(_profile(rows), SETTINGS, tail))


def test_merge_equals_profile_of_union_exactly(rows, tail):
    whole = _profile(rows)
    merged = _profile(rows[:37]).merge(_profile(rows[37:90])).merge(_profile(rows[90:]))
    assert merged.docs == whole.docs and merged.tokens == whole.tokens
    assert merged.ngrams == whole.ngrams
    assert merged.sample == whole.sample
    assert (merged.dated, merged.after_cutoff) == (whole.dated, whole.after_cutoff)
    _same(compute_indicators(merged, SETTINGS, tail), compute_indicators(whole, SETTINGS, tail))


def test_merge_is_order_independent_and_leaves_inputs_alone(rows):
    a, b = _profile(rows[:60]), _profile(rows[60:])
    a_docs, a_sample = a.docs, list(a.sample)
    assert a.merge(b).sample == b.merge(a).sample
    assert (a.docs, a.sample) == (a_docs, a_sample)


def test_empty_batch_gives_nan_not_a_crash(tail):
    empty = _profile([])
    values = compute_indicators(empty, SETTINGS, tail)
    assert all(math.isnan(v) for v in values.values())
    assert empty.merge(empty).docs == 0


def test_batch_too_small_to_rarefy_is_nan_not_a_guess(tail):
    values = compute_indicators(_profile([("a", "just a few words here", None)]), SETTINGS, tail)
    assert math.isnan(values["tail.distinct_2"]) and math.isnan(values["tail.rare_coverage"])
    assert values["length.mean_tokens"] == 5


def test_no_io_during_computation(rows, tail, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("indicator code did I/O")
    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    compute_indicators(_profile(rows), SETTINGS, tail)


def test_rarefaction_matches_brute_force_enumeration():
    # Tokens a a a b b c; draw m = 2 without replacement; enumerate all 15 pairs.
    tokens = list("aaabbc")
    pairs = list(combinations(range(len(tokens)), 2))
    expected = np.mean([len({tokens[i], tokens[j]}) for i, j in pairs]) / 2
    assert rarefied_distinct(Counter(tokens), 2) == pytest.approx(expected)
    assert rarefied_presence(np.array([3, 2, 1]), 6, 2).tolist() == pytest.approx([12 / 15, 9 / 15, 5 / 15])


def test_rarefaction_does_not_depend_on_batch_length(austen):
    texts = [p["text"] for p in austen]
    small = _profile([(str(i), t, None) for i, t in enumerate(texts[:300])])
    large = _profile([(str(i), t, None) for i, t in enumerate(texts[:3000])])
    # Raw distinct counts grow with size; the rarefied share barely moves.
    assert len(large.ngrams[0]) > 2 * len(small.ngrams[0])
    assert rarefied_distinct(large.ngrams[0], 1000) == pytest.approx(rarefied_distinct(small.ngrams[0], 1000), rel=0.05)


def test_tail_types_leave_the_head_out():
    counts = Counter({"the": 50, "and": 30, "rare": 1, "odd": 1})
    assert tail_types(counts, 0.8) == {"rare", "odd"}


def test_rare_coverage_falls_when_rare_words_are_gone():
    tail = {"rare", "odd"}
    assert rare_coverage(Counter({"the": 10, "rare": 1, "odd": 1}), tail, 6) > rare_coverage(Counter({"the": 12}), tail, 6) == 0


def test_compression_ratio_rises_on_repetitive_text():
    varied = [f"sentence {i} with word{i * 7919 % 1000} and more{i}" for i in range(200)]
    assert compression_ratio(["the same line again"] * 200, 4096) > 2 * compression_ratio(varied, 4096)


def test_vintage_shares(rows, tail):
    values = compute_indicators(_profile(rows), SETTINGS, tail)
    assert values["vintage.undated_share"] == pytest.approx(1 / 3)
    assert values["vintage.after_cutoff_share"] == pytest.approx(1 / 3)


def test_ratios_to_baseline():
    out = with_ratios({"tail.distinct_2": 0.5, "mode.compression_ratio": float("nan")}, {"tail.distinct_2": 0.8})
    assert out["tail.distinct_2.ratio"] == pytest.approx(0.625)
    assert math.isnan(out["mode.compression_ratio.ratio"]) and math.isnan(out["tail.rare_coverage.ratio"])


def test_profile_rejects_merging_different_sample_sizes():
    with pytest.raises(ValueError, match="sample sizes"):
        TextProfile(sample_size=5).merge(TextProfile(sample_size=6))
