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

from monitors.core.text import words
from monitors.config import Columns, IndicatorSettings, IngestSettings
from monitors.core.indicators import (
    compression_ratio,
    compute_indicators,
    rare_coverage,
    rarefied_distinct,
    rarefied_hapax,
    rarefied_presence,
    tail_types,
    text_indicators,
    trend_indicators,
    windowed_entropy,
    with_ratios,
)
from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
from monitors.core.neardup import near_duplicate_share
from monitors.core.profile import COLUMNS, BatchProfile
from monitors.core.reference import build_reference

SETTINGS = IndicatorSettings(window=200, coverage_tokens=300, sample_size=60, compress_bytes=4096, reference_docs=1500,
                             embedding_dims=8, clusters=4)
CUT = date(2024, 1, 1)


def _profile(rows, sample_size=SETTINGS.sample_size):
    objs = [{"id": i, "text": t, "created_at": d.isoformat() if d else None} for i, t, d in rows]
    opts = ReadOptions(Columns(), IngestSettings(), sample_size, CUT)
    return profile_rows(records_from_dicts(objs), opts, file="mem")


@pytest.fixture(scope="module")
def rows(austen):
    rng = random.Random(3)
    picked = rng.sample(austen, 120)
    dates = [None, date(2020, 5, 1), date(2025, 2, 3)]
    return [(p["id"], p["text"], dates[i % 3]) for i, p in enumerate(picked)]


@pytest.fixture(scope="module")
def anchors(austen):
    ref = build_reference(_profile([(p["id"], p["text"], None) for p in austen[:1500]], SETTINGS.reference_docs),
                          dataset="t", settings=SETTINGS)
    return ref.anchors


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k


@pytest.fixture(scope="module")
def every_indicator(rows, anchors):
    """Name -> value on ``rows``: the contract below runs over each of these names."""
    return compute_indicators(_profile(rows), SETTINGS, anchors)


INDICATOR_NAMES = [
    "batch.records", "batch.quarantined", "length.mean_words", "length.cv_words", "length.p10_words",
    "length.median_words", "length.p90_words", "length.mean_chars", "vintage.after_cutoff_share",
    "vintage.undated_share", "mode.exact_duplicate_share", "provenance.declared_human_share",
    "provenance.declared_synthetic_share", "provenance.declared_unknown_share", "tail.distinct_1", "tail.distinct_2",
    "tail.distinct_3", "tail.entropy_1", "tail.entropy_2", "tail.rare_coverage", "tail.ref_tail_mass",
    "mode.compression_ratio", "mode.near_duplicate_share", "mode.embedding_dispersion", "mode.cluster_entropy",
    "drift.cluster_js", "tail.distinct_2_wide", "tail.hapax_share", "mode.self_bleu",
]


def test_the_contract_covers_every_indicator(every_indicator):
    assert sorted(every_indicator) == sorted(INDICATOR_NAMES)


@pytest.mark.parametrize("name", INDICATOR_NAMES)
def test_indicator_contract(name, rows, anchors, every_indicator, monkeypatch):
    """Same input, same output; merge of parts == profile of the whole; empty batch gives nan or 0; no I/O."""
    def forbidden(*a, **k):
        raise AssertionError("indicator code did I/O")
    whole = _profile(rows)
    merged = _profile(rows[:37]).merge(_profile(rows[37:90])).merge(_profile(rows[90:]))
    empty = _profile([])
    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    again = compute_indicators(whole, SETTINGS, anchors)[name]
    value = every_indicator[name]
    assert value == again or (math.isnan(value) and math.isnan(again))
    from_merge = compute_indicators(merged, SETTINGS, anchors)[name]
    assert (math.isnan(value) and math.isnan(from_merge)) or from_merge == pytest.approx(value, rel=1e-12, abs=1e-12)
    on_empty = compute_indicators(empty, SETTINGS, anchors)[name]
    assert math.isnan(on_empty) or on_empty == 0


def test_merge_equals_profile_of_union_exactly(rows):
    whole = _profile(rows)
    merged = _profile(rows[:37]).merge(_profile(rows[37:90])).merge(_profile(rows[90:]))
    assert merged.sample == whole.sample and merged.records == whole.records
    for col in ("id_hash", "text_hash", "words", "day", "accepted"):
        assert np.array_equal(merged.cols[col], whole.cols[col]), col


def test_merge_is_order_independent_for_the_sample_and_leaves_inputs_alone(rows):
    a, b = _profile(rows[:60]), _profile(rows[60:])
    a_records, a_sample = a.records, list(a.sample)
    assert a.merge(b).sample == b.merge(a).sample
    assert (a.records, a.sample) == (a_records, a_sample)


def test_batch_too_small_to_rarefy_is_nan_not_a_guess(anchors):
    values = compute_indicators(_profile([("a", "just a few words here", None)]), SETTINGS, anchors)
    assert math.isnan(values["tail.distinct_2"]) and math.isnan(values["tail.rare_coverage"])
    assert values["length.mean_words"] == 5


def test_rarefaction_matches_brute_force_enumeration():
    # Tokens a a a b b c; draw m = 2 without replacement; enumerate all 15 pairs.
    tokens = list("aaabbc")
    pairs = list(combinations(range(len(tokens)), 2))
    expected = np.mean([len({tokens[i], tokens[j]}) for i, j in pairs]) / 2
    assert rarefied_distinct(Counter(tokens), 2) == pytest.approx(expected)
    assert rarefied_presence(np.array([3, 2, 1]), 6, 2).tolist() == pytest.approx([12 / 15, 9 / 15, 5 / 15])


def test_rarefied_hapax_share_matches_brute_force_enumeration():
    # Tokens a a a b b c; draw m = 2 (or 3) without replacement; enumerate every draw.
    tokens = list("aaabbc")
    for m in (2, 3):
        draws = [Counter(tokens[i] for i in idx) for idx in combinations(range(len(tokens)), m)]
        hapax = np.mean([sum(c == 1 for c in d.values()) for d in draws])
        types = np.mean([len(d) for d in draws])
        assert rarefied_hapax(Counter(tokens), m) == pytest.approx(hapax / types)
    assert rarefied_hapax(Counter(tokens), 6) == pytest.approx(1 / 3)  # the whole batch: only c is seen once
    assert math.isnan(rarefied_hapax(Counter(tokens), 7))


def test_trend_compares_with_the_previous_check_and_is_nan_without_one():
    now = {"tail.distinct_2_wide": 0.69}
    assert trend_indicators(now, {"tail.distinct_2_wide": 0.72})["trend.tail.distinct_2_wide.vs_previous"] == pytest.approx(0.69 / 0.72)
    assert math.isnan(trend_indicators(now, {})["trend.tail.distinct_2_wide.vs_previous"])  # a first check
    assert math.isnan(trend_indicators({"tail.distinct_2_wide": float("nan")},
                                       {"tail.distinct_2_wide": 0.7})["trend.tail.distinct_2_wide.vs_previous"])


def test_fixed_size_indicators_do_not_depend_on_batch_length(austen):
    texts = [p["text"] for p in austen]
    small, large = [words(t) for t in texts[:300]], [words(t) for t in texts[:3000]]
    small_c, large_c = Counter(w for t in small for w in t), Counter(w for t in large for w in t)
    # Raw distinct counts grow with size; the rarefied share and windowed entropy barely move.
    assert len(large_c) > 2 * len(small_c)
    assert rarefied_distinct(large_c, 1000) == pytest.approx(rarefied_distinct(small_c, 1000), rel=0.05)
    assert windowed_entropy(large, 1, 1000) == pytest.approx(windowed_entropy(small, 1, 1000), rel=0.02)


def test_tail_types_leave_the_head_out():
    counts = Counter({"the": 50, "and": 30, "rare": 1, "odd": 1})
    assert tail_types(counts, 0.8) == {"rare", "odd"}


def test_rare_coverage_falls_when_rare_words_are_gone():
    tail = {"rare", "odd"}
    assert rare_coverage(Counter({"the": 10, "rare": 1, "odd": 1}), tail, 6) > rare_coverage(Counter({"the": 12}), tail, 6) == 0


def test_compression_ratio_rises_on_repetitive_text():
    varied = [f"sentence {i} with word{i * 7919 % 1000} and more{i}" for i in range(200)]
    assert compression_ratio(["the same line again"] * 200, 4096) > 2 * compression_ratio(varied, 4096)


def test_near_duplicates_are_found_and_distinct_texts_are_not(austen):
    texts = [p["text"] for p in austen[:200] if len(p["text"].split()) > 30][:50]
    assert near_duplicate_share(texts, 0.7) == 0
    edited = texts + [t.replace(".", "!", 1) for t in texts[:10]]  # 10 lightly edited copies
    assert near_duplicate_share(edited, 0.7) == pytest.approx(20 / 60)


def test_vintage_shares(rows, anchors):
    values = compute_indicators(_profile(rows), SETTINGS, anchors)
    assert values["vintage.undated_share"] == pytest.approx(1 / 3)
    assert values["vintage.after_cutoff_share"] == pytest.approx(1 / 3)


def test_ratios_to_baseline():
    out = with_ratios({"tail.distinct_2": 0.5, "mode.compression_ratio": float("nan")}, {"tail.distinct_2": 0.8})
    assert out["tail.distinct_2.ratio"] == pytest.approx(0.625)
    assert math.isnan(out["mode.compression_ratio.ratio"]) and math.isnan(out["tail.rare_coverage.ratio"])


def test_profile_rejects_merging_different_sample_sizes():
    with pytest.raises(ValueError, match="sample size"):
        BatchProfile(sample_size=5, cutoff=CUT).merge(BatchProfile(sample_size=6, cutoff=CUT))


def test_text_indicators_separate_human_from_recursively_generated_text(austen, anchors):
    from monitors.demo.simulate import recursive_generations

    human = [p["text"] for p in austen[2000:2300]]
    gen = recursive_generations([p["text"] for p in austen[3000:4000]], 5, 200, seed=1)[-1].sample(300, random.Random(0))
    h, g = text_indicators(human, SETTINGS, anchors), text_indicators(gen, SETTINGS, anchors)
    assert g["tail.distinct_1"] < h["tail.distinct_1"] and g["tail.rare_coverage"] < h["tail.rare_coverage"]
    assert g["mode.compression_ratio"] > h["mode.compression_ratio"]
    # the literature's diversity metrics, at fixed sizes
    assert g["tail.hapax_share"] < h["tail.hapax_share"] and g["mode.self_bleu"] > h["mode.self_bleu"] > 0
    assert math.isnan(g["tail.distinct_2_wide"])  # the bigram generator's short documents: under 15,000 words


def test_wide_distinct_bigrams_fall_generation_after_generation_of_a_refit_on_its_own_samples(austen):
    """The indicator the critical step rule reads (issue 16): 300 documents of a length-preserving n-gram lineage."""
    from monitors.demo.simulate import text_lineage

    human = [p["text"] for p in austen[2000:2300]]
    samples = [sample[:300] for _, _, sample in text_lineage([p["text"] for p in austen[3000:3600]], 3, "replace", seed=1)]
    wide = [text_indicators(texts, SETTINGS)["tail.distinct_2_wide"] for texts in (human, *samples)]
    assert wide == sorted(wide, reverse=True) and not any(math.isnan(v) for v in wide), wide


def test_merging_many_parts_at_once_equals_one_pass_with_ids_repeated_across_parts(rows):
    """merge_all merges the shards in one go (one concatenation per column, parts consumed): a record whose id an
    earlier part accepted is quarantined as a duplicate, exactly as one pass over the whole batch does, and its
    (shard, line) is reported for its quarantine entry."""
    from monitors.core.profile import merge_profiles

    dup = [(rows[3][0], "A later record that reuses an earlier id, with its own words.", None),
           (rows[70][0], "Another one, repeating an id of the second part.", None)]
    data = rows[:50] + [dup[0]] + rows[50:100] + [dup[1]] + rows[100:]
    cuts = [(0, 40), (40, 80), (80, len(data))]
    parts = []
    for shard, (lo, hi) in enumerate(cuts):
        p = _profile(data[lo:hi])
        p.cols["shard"][:] = shard
        parts.append(p)
    pairwise = parts[0].merge(parts[1]).merge(parts[2])
    at_once = merge_profiles(parts, consume=True)
    whole = _profile(data)
    assert at_once.quarantined == whole.quarantined == pairwise.quarantined
    assert at_once.quarantined["duplicate_id"] == 2
    assert at_once.sample == whole.sample == pairwise.sample
    for col in COLUMNS:
        if col != "shard":
            assert np.array_equal(at_once.cols[col], pairwise.cols[col]), col
    assert np.array_equal(at_once.cols["accepted"], whole.cols["accepted"])
    lines = at_once.cols["line"]
    assert sorted(at_once.late_duplicates) == sorted(pairwise.late_duplicates) == [
        (1, int(lines[50])), (2, int(lines[101]))]
    assert all(not p.cols for p in parts)  # consumed: their columns were freed as they were copied
