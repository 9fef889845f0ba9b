"""Quantification: unbiased estimators, honest intervals, out-of-range honesty, declared labels, corpus totals."""

import numpy as np
import pytest

from monitors.core.quantify import (
    CorpusTotals, Provenance, ShareEstimate, Validation, acc, combine_with_declared, em, estimate_share,
    goodness_of_fit, pacc, point_estimates, select_method,
)

# A detector's score distributions: synthetic texts score high, human texts low, with overlap.
POS, NEG = (4, 2), (2, 5)


def _val(rng, n=400, prior=0.5):
    scores = np.r_[rng.beta(*POS, n), rng.beta(*NEG, n)]
    return Validation(scores, np.r_[np.ones(n), np.zeros(n)], 0.5, prior)


def _batch(rng, n, share, pos=POS, neg=NEG):
    k = int(round(n * share))
    return np.r_[rng.beta(*pos, k), rng.beta(*neg, n - k)]


def _calibrated(rng, n, share):
    """Scores that are calibrated posteriors for a training prior of 0.5 (two Gaussians, LR-exact)."""
    k = int(round(n * share))
    x = np.r_[rng.normal(1, 1, k), rng.normal(-1, 1, n - k)]
    return 1 / (1 + np.exp(-2 * x))


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 0.9])
def test_corrected_estimators_are_unbiased_where_the_raw_count_is_not(share):
    rng = np.random.default_rng(1)
    val = _val(rng, 2000)
    runs = [point_estimates(_batch(rng, 500, share), val) for _ in range(100)]
    for method in ("acc", "pacc"):
        assert abs(np.mean([r[method] for r in runs]) - share) < 0.02, method
    if 0 < share < 1:
        assert abs(np.mean([r["cc"] for r in runs]) - share) > 0.03  # the flag count alone is biased


def test_em_recovers_the_prior_from_calibrated_posteriors():
    rng = np.random.default_rng(2)
    for share in (0.1, 0.5, 0.8):
        est = [em(_calibrated(rng, 1000, share), 0.5) for _ in range(30)]
        assert abs(np.mean(est) - share) < 0.02


def test_em_follows_quapys_published_algorithm():
    """QuaPy's EMQ.EM (quapy/method/aggregative.py, v0.2.3): E-step reweights by qs/Ptr and normalises,
    M-step averages, stop when the estimate moves by under epsilon. Our vectorised EM lands on the same
    fixed point, for rows of replicates too."""
    rng = np.random.default_rng(3)
    post = _calibrated(rng, 700, 0.3)
    px = np.c_[1 - post, post]
    ptr = np.array([0.6, 0.4])
    qs = ptr.copy()
    for _ in range(1000):
        ps = (qs / ptr) * px
        ps /= ps.sum(axis=1, keepdims=True)
        new = ps.mean(axis=0)
        if np.abs(new - qs).mean() < 1e-8:
            break
        qs = new
    assert em(post, 0.4) == pytest.approx(qs[1], abs=1e-5)
    rows = em(np.vstack([post, post[::-1]]), 0.4)
    assert rows.shape == (2,) and np.allclose(rows, qs[1], atol=1e-5)


# Golden values computed with QuaPy 0.2.3 itself (pip install quapy==0.2.3 in a separate venv):
#   ACC.solve_adjustment(M, [1-q, q], "inversion", "exact-raise") + F.normalize_prevalence(p, "clip"), with
#   M = [[1-fpr, 1-tpr], [fpr, tpr]] from flag rates (ACC) or mean scores (PACC);
#   EMQ.EM([1-prior, prior], c_[1-batch, batch], epsilon=1e-10).
_QP_POS = np.array([0.91, 0.83, 0.77, 0.64, 0.58, 0.95, 0.49, 0.72, 0.88, 0.35, 0.69, 0.81])
_QP_NEG = np.array([0.12, 0.33, 0.05, 0.41, 0.22, 0.57, 0.18, 0.09, 0.27, 0.62, 0.15, 0.31])
_QP_BATCH = np.array([0.93, 0.14, 0.66, 0.21, 0.08, 0.74, 0.52, 0.39, 0.85, 0.11, 0.29, 0.61, 0.47, 0.19, 0.71, 0.03])


def test_estimators_reproduce_quapy_0_2_3():
    assert acc(_QP_BATCH, _QP_POS, _QP_NEG, 0.5) == pytest.approx(0.40625, abs=1e-9)
    assert pacc(_QP_BATCH, _QP_POS, _QP_NEG) == pytest.approx(0.3542452830188679, abs=1e-9)
    assert em(_QP_BATCH, 0.5) == pytest.approx(0.2980119246844878, abs=1e-8)
    assert em(_QP_BATCH, 0.3) == pytest.approx(0.7148138406916009, abs=1e-8)


def test_acc_and_pacc_follow_the_adjustment_formulas_and_clip():
    pos, neg = np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.1, 0.3, 0.6, 0.2])
    batch = np.array([0.9, 0.1, 0.55, 0.4])
    # tpr 3/4, fpr 1/4, q 2/4 -> (0.5 - 0.25) / 0.5
    assert acc(batch, pos, neg, 0.5) == pytest.approx(0.5)
    assert pacc(batch, pos, neg) == pytest.approx((batch.mean() - neg.mean()) / (pos.mean() - neg.mean()))
    assert acc(np.zeros(4), pos, neg, 0.5) == 0.0 and pacc(np.ones(4), pos, neg) == 1.0


def test_interval_covers_the_truth_at_least_90_percent_of_the_time():
    rng = np.random.default_rng(4)
    for method in ("acc", "pacc"):
        hits = 0
        for i in range(100):
            val = _val(rng, 300)  # the detector's rates are themselves estimated from validation data
            e = estimate_share(_batch(rng, 500, 0.3), val, method=method, replicates=300, seed=i, fit_replicates=50)
            hits += e.low <= 0.3 <= e.high
        assert hits >= 90, (method, hits)


def test_fewer_validation_examples_give_a_wider_interval():
    rng = np.random.default_rng(5)
    batch = _batch(rng, 500, 0.4)
    wide = estimate_share(batch, _val(rng, 40), replicates=400)
    narrow = estimate_share(batch, _val(rng, 4000), replicates=400)
    assert (wide.high - wide.low) > (narrow.high - narrow.low) * 1.3


def test_unseen_generator_is_flagged_out_of_range_and_widens_the_interval():
    rng = np.random.default_rng(6)
    val = _val(rng)
    # A generator the detector never saw: its texts score in the middle, unlike either validated class.
    unseen = np.r_[rng.beta(5, 5, 300), rng.beta(*NEG, 700)]
    out = estimate_share(unseen, val, replicates=400)
    assert out.out_of_range and out.fit_p < 0.01 and "out of its validated range" in out.note
    assert (out.low, out.high) == (0.0, 1.0) and set(out.by_method) == {"cc", "acc", "pacc", "em"}
    ok = estimate_share(_batch(rng, 1000, 0.3), val, replicates=400)
    assert not ok.out_of_range and ok.note == "" and ok.high - ok.low < 0.2


def test_text_scored_more_human_than_human_is_out_of_range():
    """An unseen generator the detector scores lower than real human text: every estimator says 0, a tight
    interval would be a confident wrong answer; the mean-score test catches it."""
    rng = np.random.default_rng(11)
    val = _val(rng)
    e = estimate_share(rng.beta(1.2, 9, 300), val, replicates=400)
    assert e.estimate == 0.0 and e.out_of_range and "below the human" in e.note and (e.low, e.high) == (0.0, 1.0)


def test_goodness_of_fit_rarely_false_alarms_on_validated_text():
    rng = np.random.default_rng(7)
    val = _val(rng)
    alarms = sum(goodness_of_fit(_batch(rng, 500, s), val, rng, 100)[1] < 0.01
                 for s in np.linspace(0, 1, 30))
    assert alarms <= 2
    # both tests together (fit and mean score), as a check runs them
    alarms = sum(estimate_share(_batch(rng, 500, s), val, replicates=300, seed=i, fit_replicates=100).out_of_range
                 for i, s in enumerate(np.linspace(0, 1, 30)))
    assert alarms <= 2


def test_selection_prefers_a_corrected_estimator_over_raw_counting():
    method, mae = select_method(_val(np.random.default_rng(8)), batches=3)
    assert method in ("acc", "pacc", "em") and mae[method] < mae["cc"] and mae[method] < 0.05


def test_useless_detector_and_empty_batch_give_no_estimate():
    rng = np.random.default_rng(9)
    same = Validation(rng.random(200), np.r_[np.ones(100), np.zeros(100)])
    e = estimate_share(rng.random(50), same)
    assert e.estimate is None and "cannot separate" in e.note
    e = estimate_share(np.array([]), _val(rng))
    assert e.estimate is None and e.method == "unavailable" and "no documents" in e.note
    with pytest.raises(ValueError, match="both human and synthetic"):
        Validation(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="unknown quantification method"):
        estimate_share(rng.random(5), _val(rng), method="cc")


def test_declared_provenance_counts_exactly_and_the_estimate_covers_the_rest():
    est = ShareEstimate(0.5, 0.4, 0.6, "pacc", 100, by_method={"pacc": 0.5})
    # 20 declared synthetic, 30 declared human, 50 undeclared of which half is estimated synthetic
    c = combine_with_declared(Provenance(human=30, synthetic=20, undeclared=50), est)
    assert (c.estimate, c.low, c.high) == pytest.approx((0.45, 0.40, 0.50)) and c.method == "declared+pacc"
    exact = combine_with_declared(Provenance(human=7, synthetic=3, undeclared=0), ShareEstimate.unavailable("none"))
    assert (exact.estimate, exact.low, exact.high, exact.method) == (0.3, 0.3, 0.3, "declared")
    bounded = combine_with_declared(Provenance(30, 20, 50), ShareEstimate.unavailable("no detector"))
    assert bounded.estimate is None and (bounded.low, bounded.high) == pytest.approx((0.2, 0.7))
    assert combine_with_declared(Provenance(0, 0, 10), est) is est


def test_corpus_totals_accumulate_and_survive_a_round_trip_through_metrics():
    t = CorpusTotals()
    t = t.add(100, ShareEstimate(0.2, 0.1, 0.3, "pacc"))   # 80 human
    t = t.add(300, ShareEstimate(0.9, 0.85, 0.95, "pacc"))  # 30 human
    m = t.metrics()
    assert m["corpus.human_share"] == pytest.approx(110 / 400)
    assert m["corpus.human_share_low"] == pytest.approx((70 + 15) / 400)
    assert m["corpus.human_share_high"] == pytest.approx((90 + 45) / 400)
    again = CorpusTotals.from_metrics(m)
    assert again == t and again.batches == 2
    # a batch without an estimate widens the bounds and stays out of the point estimate
    u = again.add(100, ShareEstimate.unavailable("no detector"))
    mu = u.metrics()
    assert mu["corpus.human_share"] == pytest.approx(110 / 400)
    assert mu["corpus.human_share_low"] == pytest.approx(85 / 500) and mu["corpus.human_share_high"] == pytest.approx(235 / 500)
    assert mu["corpus.unestimated"] == 100


def test_em_lands_on_the_boundary_for_a_pure_batch():
    """EM crawls towards 0 for an all-human batch and stops short; the maximum likelihood is exactly 0 there,
    so a pure batch's interval contains the truth."""
    rng = np.random.default_rng(10)
    human_only = _calibrated(rng, 500, 0.0)
    assert em(human_only, 0.5) < 0.01
    e = estimate_share(human_only, Validation(np.r_[_calibrated(rng, 400, 1.0), _calibrated(rng, 400, 0.0)],
                                              np.r_[np.ones(400), np.zeros(400)]), method="em", replicates=300)
    assert e.low == 0.0 and e.high < 0.05
    assert em(np.full(50, 0.01), 0.5) == 0.0 and em(np.full(50, 0.99), 0.5) == 1.0


def test_interval_never_narrower_than_the_batch_size_allows():
    """Issue 20, item 11: a clearly human 300-document batch got the interval 0.000-0.000. Whatever the
    bootstrap says, 300 documents cannot show a share that exactly: the interval holds at least the Wilson
    interval of the estimate at the batch's size."""
    from monitors.core.quantify import wilson_interval

    rng = np.random.default_rng(3)
    val = Validation(np.r_[rng.beta(30, 2, 400), rng.beta(2, 30, 400)], np.r_[np.ones(400), np.zeros(400)], 0.5, 0.5)
    e = estimate_share(rng.beta(2, 30, 300), val)
    low, high = wilson_interval(e.estimate, 300, 0.95)
    assert e.low <= low and e.high >= high
    assert e.high >= 0.012 and e.low == 0.0  # at 0 of 300: [0, 0.0126]
    assert wilson_interval(0.5, 100, 0.95) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0.0, 3000, 0.95)[1] < wilson_interval(0.0, 300, 0.95)[1]  # more documents show more
