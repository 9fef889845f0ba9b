import numpy as np
import pytest

from monitors.quantify import DetectorRates, adjusted_classify_and_count

RATES = DetectorRates(tpr=0.9, fpr=0.05, positives=400, negatives=400)


def _flags(rng, n, share, rates=RATES):
    synthetic = rng.random(n) < share
    return np.where(synthetic, rng.random(n) < rates.tpr, rng.random(n) < rates.fpr)


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 0.9])
def test_adjusted_count_is_unbiased_where_raw_count_is_not(share):
    rng = np.random.default_rng(1)
    est, raw = [], []
    for _ in range(200):
        f = _flags(rng, 500, share)
        est.append(adjusted_classify_and_count(f, RATES, replicates=200).estimate)
        raw.append(f.mean())
    assert abs(np.mean(est) - share) < 0.02
    if 0 < share < 1:
        assert abs(np.mean(raw) - share) > 0.02  # the flag count alone is biased


def test_interval_covers_the_truth_at_least_90_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(200):
        # The detector's rates are themselves estimated from validation data.
        tpr = rng.binomial(RATES.positives, RATES.tpr) / RATES.positives
        fpr = rng.binomial(RATES.negatives, RATES.fpr) / RATES.negatives
        e = adjusted_classify_and_count(_flags(rng, 500, 0.3), DetectorRates(tpr, fpr, 400, 400), replicates=400)
        hits += e.low <= 0.3 <= e.high
    assert hits / 200 >= 0.9


def test_fewer_validation_examples_give_a_wider_interval():
    f = _flags(np.random.default_rng(3), 500, 0.4)
    wide = adjusted_classify_and_count(f, DetectorRates(0.9, 0.05, 40, 40))
    narrow = adjusted_classify_and_count(f, DetectorRates(0.9, 0.05, 4000, 4000))
    assert (wide.high - wide.low) > (narrow.high - narrow.low)


def test_useless_detector_and_empty_batch_give_no_estimate():
    assert adjusted_classify_and_count(np.array([True, False]), DetectorRates(0.5, 0.45, 100, 100)).estimate is None
    e = adjusted_classify_and_count(np.array([], dtype=bool), RATES)
    assert e.estimate is None and e.method == "unavailable" and "no documents" in e.note


def test_estimate_is_clipped_to_a_share():
    e = adjusted_classify_and_count(np.zeros(100, dtype=bool), RATES)
    assert e.estimate == 0.0 and 0.0 <= e.low <= e.high <= 1.0
