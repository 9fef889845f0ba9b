"""Bands fitted on the reference's own variability, and the rules that use them, on real human text."""

import math
import random
from datetime import date

import numpy as np
import pytest

from monitors.core import bands

from monitors.adapters import gx_rules
from monitors.config import DEFAULT_RULES, Columns, IndicatorSettings, IngestSettings
from monitors.core.indicators import compute_indicators, with_ratios
from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
from monitors.core.reference import ReferenceProfile, build_reference
from monitors.adapters.gx_rules import load_rules
from monitors.demo.simulate import recursive_generations

SETTINGS = IndicatorSettings(reference_docs=3000, embedding_dims=16, clusters=8)


def _profile(texts, prefix, sample_size=SETTINGS.sample_size):
    objs = [{"id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]
    return profile_rows(records_from_dicts(objs), ReadOptions(Columns(), IngestSettings(), sample_size, date(2024, 1, 1)), file="m")


@pytest.fixture(scope="module")
def shuffled(austen):
    paragraphs = list(austen)
    random.Random(5).shuffle(paragraphs)
    return [p["text"] for p in paragraphs]


@pytest.fixture(scope="module")
def reference(shuffled):
    return build_reference(_profile(shuffled[:3000], "r", SETTINGS.reference_docs), dataset="t", settings=SETTINGS)


def _alerts(ref, texts, prefix):
    prof = _profile(texts, prefix)
    values = with_ratios(compute_indicators(prof, SETTINGS, ref.anchors), ref.baseline)
    values.update(bands.z_scores(values, ref.band_for(prof.records)))
    return {a.rule for a in gx_rules.evaluate(load_rules(DEFAULT_RULES), values, "t")}, values


def test_two_disjoint_human_samples_raise_no_alert(reference, shuffled):
    for lo in (3000, 3400):
        fired, values = _alerts(reference, shuffled[lo:lo + 400], f"h{lo}-")
        assert fired == set(), (fired, {k: round(v, 2) for k, v in values.items() if k.endswith(".z")})


def test_text_from_a_recursively_refit_generator_raises_alerts(reference, shuffled):
    gen = recursive_generations(shuffled[4000:5500], 6, 300, seed=3)[-1].sample(400, random.Random(2))
    fired, values = _alerts(reference, gen, "g")
    assert {"tail_coverage_loss", "distinct_bigrams_drop", "compression_rise"} <= fired
    assert values["tail.rare_coverage.z"] < -5 and values["mode.compression_ratio.z"] > 5


def test_reference_round_trips_through_its_artifacts(reference):
    again = ReferenceProfile.from_json(reference.to_json(), reference.arrays_npz())
    assert again == reference
    texts = reference.sample[:50]
    assert np.allclose(again.embedding.transform(texts), reference.embedding.transform(texts))


def test_band_for_larger_batches_narrows_like_a_mean_and_is_fitted_below():
    fitted = {100: {"x": (1.0, 0.2)}, 400: {"x": (1.1, 0.1)}}
    assert bands.band_at(fitted, 90) == {"x": (1.0, 0.2)}
    assert bands.band_at(fitted, 300) == {"x": (1.1, 0.1)}
    mean, sd = bands.band_at(fitted, 1600)["x"]
    assert (mean, sd) == (1.1, pytest.approx(0.05))
    assert bands.z_scores({"x": 1.3, "y": 5.0}, bands.band_at(fitted, 400)) == {"x.z": pytest.approx(2.0)}


def test_fit_bands_corrects_for_overlapping_subsets():
    rng = np.random.default_rng(0)
    population = rng.normal(size=400)
    fitted = bands.fit_bands(400, [100], 200, lambda idx: {"mean": float(population[idx].mean())})
    # The sd of a mean of 100 independent draws is 1/sqrt(100); subsets of one finite set vary less, the FPC undoes it.
    assert fitted[100]["mean"][1] == pytest.approx(0.1, rel=0.15)
    assert math.isfinite(fitted[100]["mean"][0])


def test_lm_scores_round_trip_with_the_reference(reference):
    import dataclasses

    from monitors.core.reference import LMReference

    rng = np.random.default_rng(0)
    lm = LMReference("model.gguf|1|budget=128|bfloat16|v1", rng.normal(size=(60, 5)), rng.integers(0, 8, 60))
    with_lm = dataclasses.replace(reference, lm=lm)
    again = ReferenceProfile.from_json(with_lm.to_json(), with_lm.arrays_npz())
    assert again.lm.tag == lm.tag
    assert np.allclose(again.lm.features, lm.features, atol=1e-6) and (again.lm.clusters == lm.clusters).all()
    # a reference built before the LM (or without it) loads with none
    assert ReferenceProfile.from_json(reference.to_json(), reference.arrays_npz()).lm is None
