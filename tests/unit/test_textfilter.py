"""The filter's math (monitors.core.textfilter): the operating point, cross-fitting, the LM stage's threshold,
and the human loss it promises, measured on held-out human text none of it was built or tuned on."""

import math
import random

import numpy as np
import pytest

from monitors.core import textfilter as tf
from monitors.core.profile import stable_hash
from monitors.demo.simulate import recursive_generations


def test_threshold_flags_at_most_the_asked_share_of_the_scores_it_was_set_on():
    rng = np.random.default_rng(0)
    for n in (50, 333, 1000):
        human = rng.normal(size=n)
        for loss in (0.01, 0.05, 0.2):
            t = tf.threshold_for_loss(human, loss)
            assert tf.loss_at(human, t) <= loss
            assert tf.loss_at(human, t) > loss - 1.5 / n  # and not far below it: the lowest such threshold
    assert tf.threshold_for_loss(np.arange(10.0), 1.0) == -math.inf


def test_a_given_threshold_reports_its_loss_on_the_calibration_documents():
    cal = np.arange(100.0)
    point = tf.operating_point(cal, threshold=89.5)
    assert point.expected_human_loss == pytest.approx(0.10) and point.max_human_loss is None
    with pytest.raises(ValueError, match="calibration"):
        tf.operating_point(np.arange(10.0), max_human_loss=0.05)


def test_every_training_document_is_scored_by_the_model_that_did_not_see_it():
    human = [(stable_hash(f"h{i}"), f"plain human words number {i}") for i in range(60)]
    batch = [(stable_hash(f"b{i}"), f"other batch words number {i}") for i in range(40)]
    scorer = tf.train_fast(human, batch)
    for docs in (human, batch):
        hashes = [h for h, _ in docs]
        assert (scorer.model_for(hashes) == 1 - np.array([scorer.trained_on[h] for h in hashes])).all()
    assert {scorer.trained_on[h] for h, _ in human} == {0, 1}  # both halves of the reference train a model


def test_a_model_knows_only_the_features_of_its_own_training_half():
    """A calibration document must be as unseen by its scorer as a new one: with one vocabulary built from both
    halves, a reference document's n-grams shared with one other document were known to the model scoring
    it, and unseen documents' were not, so the threshold flagged new human text more than asked."""
    rng = random.Random(5)
    words = [f"w{i}" for i in range(400)]
    human = [(stable_hash(f"h{i}"), " ".join(rng.choices(words, k=30))) for i in range(200)]
    batch = [(stable_hash(f"b{i}"), " ".join(rng.choices(words, k=30))) for i in range(200)]
    scorer = tf.train_fast(human, batch)
    for m in (0, 1):
        own = set().union(*(tf.features(t) for h, t in human + batch if scorer.trained_on[h] == m))
        assert scorer.vocabulary[m] <= own  # nothing only the other half (the documents it scores) had
        assert scorer.vocabulary[m] == own  # min_df 1: every n-gram of its own half
    assert scorer.vocabulary[0] != scorer.vocabulary[1]


def test_a_sampled_document_is_scored_by_the_model_that_did_not_see_it():
    scorer = tf.FastScorer(({}, {}), (0.0, 1.0), {11: 0, 12: 1})
    assert scorer.model_for([11, 12]).tolist() == [1, 0]
    others = [stable_hash(f"d{i}") for i in range(200)]
    which = scorer.model_for(others)
    assert set(which.tolist()) == {0, 1}  # unsampled documents split between the two models by hash
    assert scorer.score(["a b", "c d"], [11, 12]).tolist() == [1.0, 0.0]


def test_the_lm_threshold_keeps_the_cascade_at_the_asked_loss():
    rng = np.random.default_rng(1)
    cal = rng.normal(size=1000)
    band = tf.uncertain_band(cal, 0.05)
    assert band[0] < tf.threshold_for_loss(cal, 0.05) < band[1]
    in_band = cal[(cal > band[0]) & (cal <= band[1])]
    lm = rng.normal(size=in_band.size)
    t = tf.lm_threshold(cal, band, lm, 0.05)
    flagged = (cal > band[1]).sum() + (lm > t).sum()
    assert flagged == int(0.05 * 1000)


def test_recall_from_the_share_with_an_interval_and_unknown_without_one():
    from monitors.core.quantify import ShareEstimate

    def share(est, low, high):
        return ShareEstimate(estimate=est, low=low, high=high, method="test")

    flagged = 0.5 * 0.8 + 0.5 * 0.05
    r = tf.recall_estimate(flagged, share(0.5, 0.4, 0.6), 0.05, (0.04, 0.06))
    assert r.estimate == pytest.approx(0.8) and r.low < 0.8 < r.high and not r.note
    assert r.low == pytest.approx((flagged - 0.4 * 0.06) / 0.6)  # the share's and the loss's high ends
    assert tf.recall_estimate(0.3, ShareEstimate.unavailable("none"), 0.05, (0.04, 0.06)).estimate is None
    assert tf.recall_estimate(0.3, share(0.01, 0.0, 0.03), 0.05, (0.04, 0.06)).high is None


def test_an_underestimated_share_is_named_and_the_recall_interval_still_covers_the_truth():
    """The benchmark's case: a true share of 0.25 with recall 0.85 and loss 0.05, estimated as 0.185 (0.09-0.28):
    the point estimate would need a recall over 100 %; the note says so, the share's floor from the flagged
    count is above the estimate, and the interval covers the true recall."""
    from monitors.core.quantify import ShareEstimate

    flagged = 0.25 * 0.85 + 0.75 * 0.05
    r = tf.recall_estimate(flagged, ShareEstimate(estimate=0.185, low=0.09, high=0.28, method="test"), 0.05, (0.038, 0.064))
    assert r.estimate == 1.0 and "underestimated" in r.note
    assert 0.185 < r.share_floor < 0.25
    assert r.low <= 0.85 <= r.high


def test_the_human_loss_holds_on_held_out_human_text(austen):
    """Reference, batch and the held-out human text are disjoint Austen paragraphs; the machine text is a
    bigram model's. The loss measured on 3,000 held-out paragraphs is within 0.02 of the asked 5 %."""
    paras = [p["text"] for p in austen]
    random.Random(3).shuffle(paras)
    reference, batch_human, gen_train, heldout = paras[:1400], paras[1400:1900], paras[1900:3400], paras[3400:6400]
    machine = recursive_generations(gen_train, 2, 500, seed=4)[-1].sample(500, random.Random(4))
    human = [(stable_hash(t), t) for t in reference]
    batch = [(stable_hash(f"b{i}"), t) for i, t in enumerate(batch_human + machine)]
    scorer = tf.train_fast(human, batch)
    point = tf.operating_point(tf.calibration_scores(scorer, human), max_human_loss=0.05)
    held = scorer.score(heldout, [stable_hash(f"h{i}") for i in range(len(heldout))])
    measured = float((held > point.threshold).mean())
    assert abs(measured - 0.05) <= 0.02, measured
    scores = scorer.score([t for _, t in batch], [h for h, _ in batch])
    recall = float((scores[500:] > point.threshold).mean())
    assert recall > 4 * 0.05, recall  # it catches machine text at several times the rate it loses human text


def test_the_fast_path_scores_exactly_what_the_trained_model_would():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    human = [(stable_hash(f"h{i}"), f"the quiet house stood by the river number {i % 7}, and it rained") for i in range(60)]
    batch = [(stable_hash(f"b{i}"), f"As an AI language model, I delve into the rich tapestry {i % 5}!") for i in range(40)]
    scorer = tf.train_fast(human, batch)
    texts = ["The quiet house -- it rained.", "I delve into the rich tapestry of the river", "nothing known here"]
    hashes = [stable_hash(t) for t in texts]
    models = scorer.model_for(hashes)
    expected = []
    for text, m in zip(texts, models):
        names = sorted(scorer.vocabulary[m])
        x = normalize(CountVectorizer(analyzer=tf._feature_list, vocabulary=names, binary=True).transform([text]))
        expected.append(float((x[0] @ np.array([scorer.weights[m][n] for n in names]))[0]) + scorer.intercept[m])
    assert scorer.score(texts, hashes) == pytest.approx(expected)
    assert scorer.score(texts, hashes)[1] > scorer.score(texts, hashes)[0]  # the batch's phrasing scores as un-human


def test_the_loss_interval_covers_the_loss_on_new_human_text_as_often_as_it_says():
    """The Beta(k + 1, n - k) interval of a quantile threshold's loss, checked by simulation: thresholds set on
    1,000 calibration scores, the loss measured on 20,000 new scores of the same distribution."""
    rng = np.random.default_rng(0)
    lo, hi = tf.loss_interval(0.05, 1000)
    assert 0.035 < lo < 0.045 and 0.055 < hi < 0.07  # about +-0.013 at 1,000 documents
    covered = 0
    for _ in range(200):
        cal = rng.normal(size=1000)
        point = tf.operating_point(cal, max_human_loss=0.05)
        new_loss = float((rng.normal(size=20_000) > point.threshold).mean())
        low, high = point.loss_interval
        covered += low <= new_loss <= high
    assert 0.90 <= covered / 200 <= 0.99, covered
    assert tf.loss_interval(0.05, 4000)[1] - tf.loss_interval(0.05, 4000)[0] < 0.5 * (hi - lo) + 0.002  # sqrt(n)
