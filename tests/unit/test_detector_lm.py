"""The detector with the local LM's statistics as a feature block, with a fake scorer (no model): it trains,
predicts, survives a skops round trip with only the types registry.py trusts, and a check computes the
features it needs or says why it could not. Detectors without LM features keep their 1-D text input."""

import random

import numpy as np
import pytest
import skops.io

from flows import synthetic_share
from monitors.config import Settings
from monitors.demo.corpus import detector_set
from monitors.core.detector import LM_COLUMNS, detector_input, train_detector
from monitors.adapters.lmscore import FEATURES, ScorerUnavailable
from monitors.adapters.registry import LoadedDetector, _trusted_types


class FakeScorer:
    """Statistics that depend on the text only (like the real ones), machine text a little more predictable."""

    tag = "fake-lm|budget=128|v1"

    def __init__(self, machine: set[str] = frozenset()):
        self.machine = machine
        self.calls: list[list[str]] = []

    def score(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        out = np.array([[random.Random(t).gauss(0, 1) for _ in FEATURES] for t in texts]).reshape(len(texts), len(FEATURES))
        out[[t in self.machine for t in texts]] -= 1.0
        return out


@pytest.fixture(scope="module")
def data():
    rows = detector_set()
    random.Random(5).shuffle(rows)
    human = [r["text"] for r in rows if r["label"] == "human"][:150]
    machine = [r["text"] for r in rows if r["generator"] == "smollm2-t0.8"][:150]
    scorer = FakeScorer(set(machine))
    return human, machine, scorer


def test_lm_block_trains_predicts_and_round_trips_through_skops(data):
    human, machine, scorer = data
    det = train_detector(human, machine, lm_features=(scorer.score(human), scorer.score(machine)), lm_tag=scorer.tag)
    assert det.lm_tag == scorer.tag
    assert det.roc_auc > 0.9
    names = det.model.calibrated_classifiers_[0].estimator.named_steps["features"].get_feature_names_out()
    assert {f"lm__{c}" for c in LM_COLUMNS} <= set(names)

    x = detector_input(human[:5] + machine[:5], scorer.score(human[:5] + machine[:5]))
    before = det.model.predict_proba(x)[:, 1]
    trusted = _trusted_types(det.model)
    assert all(t.startswith(("sklearn.", "numpy.", "monitors.")) for t in trusted), trusted
    loaded = skops.io.loads(skops.io.dumps(det.model), trusted=trusted)
    np.testing.assert_allclose(loaded.predict_proba(x)[:, 1], before)

    # a check-time detector: LM features in, and nan rows (text too short for the LM) imputed, not an error
    live = LoadedDetector("models:/d@p", "1", loaded, det.validation, det.method, lm_tag=det.lm_tag)
    np.testing.assert_allclose(live.scores(human[:5] + machine[:5], scorer.score(human[:5] + machine[:5])), before)
    nan_rows = np.full((2, len(FEATURES)), np.nan)
    assert np.isfinite(live.scores(["hi", "yo"], nan_rows)).all()
    assert np.isfinite(live.scores(human[:3])).all()  # no features at all: medians for every row


def test_lm_features_carry_signal_the_ngrams_lack(data):
    """Fake features that alone separate the classes raise the held-out AUC over n-grams alone on a hard split."""
    human, machine, _ = data
    rng = np.random.default_rng(0)
    # label the *same* kind of texts both ways so n-grams cannot separate them; only the LM block can
    pool = human[:150]
    a, b = pool[:75], pool[75:150]
    fa, fb = rng.normal(0, 1, (75, 5)), rng.normal(2.5, 1, (75, 5))
    with_lm = train_detector(a, b, lm_features=(fa, fb), lm_tag="t", seed=1)
    without = train_detector(a, b, seed=1)
    assert with_lm.roc_auc > 0.9 > without.roc_auc + 0.1


def test_detector_without_lm_features_keeps_text_input(data):
    human, machine, _ = data
    det = train_detector(human[:60], machine[:60])
    assert det.lm_tag == ""
    live = LoadedDetector("models:/d@p", "1", det.model, det.validation, det.method)  # as older versions load
    assert live.scores(human[:3]).shape == (3,)
    settings = Settings()
    assert synthetic_share.detector_lm_features(human[:3], live, settings) == (None, "")


def test_check_computes_the_features_with_the_configured_scorer_or_says_why_not(data, monkeypatch):
    human, machine, scorer = data
    det = train_detector(human[:60], machine[:60], lm_features=(scorer.score(human[:60]), scorer.score(machine[:60])),
                         lm_tag=scorer.tag)
    live = LoadedDetector("models:/d@p", "3", det.model, det.validation, det.method, lm_tag=det.lm_tag)
    texts = human[100:104]

    monkeypatch.setenv("COLLAPSE_MONITOR_LM__ENABLED", "false")
    features, note = synthetic_share.detector_lm_features(texts, live, Settings())
    assert features is None and "trained with LM features" in note and "lm.enabled" in note

    monkeypatch.setenv("COLLAPSE_MONITOR_LM__ENABLED", "true")
    monkeypatch.setattr(synthetic_share, "lm_scorer", lambda settings, label="": scorer)
    features, note = synthetic_share.detector_lm_features(texts, live, Settings())
    assert note == "" and features.shape == (4, len(FEATURES)) and scorer.calls[-1] == texts

    def unavailable(settings, label=""):
        raise ScorerUnavailable("LM file /x.gguf does not exist")
    monkeypatch.setattr(synthetic_share, "lm_scorer", unavailable)
    features, note = synthetic_share.detector_lm_features(texts, live, Settings())
    assert features is None and "/x.gguf" in note and "n-grams alone" in note

    other = FakeScorer()
    other.tag = "another-lm|v1"
    monkeypatch.setattr(synthetic_share, "lm_scorer", lambda settings, label="": other)
    features, note = synthetic_share.detector_lm_features(texts, live, Settings())
    assert features is not None and "another-lm" in note and "retrain" in note
