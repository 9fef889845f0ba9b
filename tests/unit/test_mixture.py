"""The share from a human reference alone (monitors.core.mixture) and the LM statistics' pure parts (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from monitors.adapters import lmscore
from monitors.core import lmfeatures, mixture


# -- per-token numbers -> per-document statistics -------------------------------------------------------------
def test_document_statistics_by_hand():
    # doc 0: two tokens; doc 1: one token (too few: nan); doc 2: none
    ll = np.array([-1.0, -3.0, -2.0])
    ent = np.array([2.0, 2.0, 1.0])
    m2 = np.array([5.0, 6.0, 1.0])  # E[(log p)^2]; variance = m2 - ent^2 = 1, 2
    rank = np.log(np.array([1.0, 4.0, 2.0]))
    doc = np.array([0, 0, 1])
    out = lmfeatures.document_statistics(ll, ent, m2, rank, doc, 3)
    nll, entropy, log_rank, curvature, ratio = out[0]
    assert nll == pytest.approx(2.0)
    assert entropy == pytest.approx(2.0)
    assert log_rank == pytest.approx(np.log(4) / 2)
    # (sum log p - sum E[log p]) / sqrt(sum var) = (-4 + 4) / sqrt(3)
    assert curvature == pytest.approx(0.0)
    assert ratio == pytest.approx(1.0)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()


def test_curvature_is_positive_for_text_more_likely_than_the_model_expects():
    out = lmfeatures.document_statistics(np.array([-0.5, -0.5]), np.array([2.0, 2.0]), np.array([5.0, 5.0]),
                                      np.zeros(2), np.array([0, 0]), 1)
    assert out[0, lmfeatures.FEATURES.index("curvature")] > 0


def test_cache_round_trip_and_keys(tmp_path):
    cache = lmscore.ScoreCache(tmp_path / "c.sqlite")
    k1, k2 = lmscore.text_key("a", "text"), lmscore.text_key("b", "text")
    assert k1 != k2  # another scorer's numbers are never reused
    assert lmscore.text_key("a", "\ud800") != lmscore.text_key("a", "?")  # lone surrogates hash, and distinctly
    cache.put({k1: np.array([1.0, 2.0, np.nan, 4.0, 5.0])})
    got = cache.get([k1, k2])
    assert list(got) == [k1]
    assert np.allclose(got[k1][[0, 1, 3, 4]], [1, 2, 4, 5]) and np.isnan(got[k1][2])


class _CountingScorer(lmscore.LMScorer):
    """The real caching and batching around a fake forward pass (the model itself is tested in integration)."""

    def __init__(self, model_file, **kw):
        super().__init__(lmscore.ScorerConfig(model_file=str(model_file), batch_size=2), **kw)
        self.seen: list[str] = []

    def _load(self):
        pass

    def _forward(self, texts):
        self.seen += texts
        return np.array([[len(t), 1, 2, 3, 4] for t in texts], dtype=float), 3 * len(texts)


def test_scorer_scores_each_text_once_and_keeps_input_order(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"not read by the fake")
    scorer = _CountingScorer(model, cache=lmscore.ScoreCache(tmp_path / "c.sqlite"))
    out = scorer.score(["ccc", "a", "ccc", "bb"])
    assert out[:, 0].tolist() == [3, 1, 3, 2]
    assert sorted(scorer.seen) == ["a", "bb", "ccc"]  # the duplicate is scored once
    assert scorer.seen == ["a", "bb", "ccc"]  # length-sorted batches
    again = _CountingScorer(model, cache=lmscore.ScoreCache(tmp_path / "c.sqlite"))
    assert again.score(["bb", "dddd"])[:, 0].tolist() == [2, 4]
    assert again.seen == ["dddd"] and again.last["cached"] == 1


def test_missing_or_corrupt_model_file_names_it(tmp_path):
    with pytest.raises(lmscore.ScorerUnavailable, match="nope.gguf does not exist"):
        lmscore.LMScorer(lmscore.ScorerConfig(model_file=str(tmp_path / "nope.gguf")))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    scorer = lmscore.LMScorer(lmscore.ScorerConfig(model_file=str(bad)))
    with pytest.raises(lmscore.ScorerUnavailable, match="bad.gguf could not be loaded"):
        scorer.score(["some text"])


# -- mixture-proportion estimation --------------------------------------------------------------------------
def _mixture(rng, share, n, shift=3.0):
    k = int(round(share * n))
    return np.r_[rng.normal(shift, 1, k), rng.normal(0, 1, n - k)]


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_bbe_recovers_a_known_share(share):
    rng = np.random.default_rng(int(share * 10))
    human = rng.normal(0, 1, 2000)
    batch = _mixture(rng, share, 2000)
    est = 1 - mixture.bbe_human_share(batch, human)[0]
    assert est == pytest.approx(share, abs=0.06)


def test_interval_covers_on_simulated_mixtures():
    rng = np.random.default_rng(7)
    covered, errors = 0, []
    for i in range(40):
        share = rng.uniform(0, 1)
        human = rng.normal(0, 1, 400)
        batch = _mixture(rng, share, 300)
        e = mixture.estimate_from_reference(batch, human, replicates=300, seed=i)
        truth = round(share * 300) / 300
        covered += e.low <= truth <= e.high
        errors.append(abs(e.estimate - truth))
        assert e.method == mixture.METHOD and not e.out_of_range
    assert covered >= 34  # >= 85 % of 40 (the benchmark measures coverage on real text)
    assert np.mean(errors) < 0.06


def test_human_only_batch_reads_near_zero():
    rng = np.random.default_rng(3)
    estimates = [mixture.estimate_from_reference(rng.normal(0, 1, 300), rng.normal(0, 1, 400),
                                                 replicates=200, seed=s).estimate for s in range(20)]
    assert np.mean(estimates) < 0.05


def test_topic_weights_compare_a_batch_with_the_reference_of_its_topics():
    rng = np.random.default_rng(0)
    # two topics: topic 1 is more predictable (higher score) even when human
    human = np.r_[rng.normal(0, 1, 300), rng.normal(1.5, 1, 300)]
    human_c = np.r_[np.zeros(300, int), np.ones(300, int)]
    batch = rng.normal(1.5, 1, 300)  # human text of topic 1 only
    plain = mixture.estimate_from_reference(batch, human, replicates=200)
    weighted = mixture.estimate_from_reference(batch, human, batch_clusters=np.ones(300, int),
                                               human_clusters=human_c, clusters=2, replicates=200, reweight=True)
    assert plain.estimate > 0.3  # the trap: a change of topic reads as machine text
    assert weighted.estimate < 0.08
    assert weighted.by_method[f"{mixture.METHOD}-unweighted"] == pytest.approx(plain.by_method[f"{mixture.METHOD}-uncorrected"])


def test_topics_the_reference_lacks_widen_the_interval():
    rng = np.random.default_rng(1)
    human = rng.normal(0, 1, 400)
    e = mixture.estimate_from_reference(rng.normal(0, 1, 200), human, batch_clusters=np.full(200, 2),
                                        human_clusters=np.zeros(400, int), clusters=3, replicates=100)
    assert e.out_of_range and (e.low, e.high) == (0.0, 1.0) and "barely covers" in e.note


def test_nan_scores_are_left_out_and_said():
    rng = np.random.default_rng(2)
    batch = np.r_[rng.normal(0, 1, 100), [np.nan] * 5]
    e = mixture.estimate_from_reference(batch, rng.normal(0, 1, 200), replicates=100)
    assert e.documents == 100 and "5 document(s) too short" in e.note


def test_too_little_to_estimate_is_unavailable():
    rng = np.random.default_rng(4)
    assert mixture.estimate_from_reference(rng.normal(size=5), rng.normal(size=200)).estimate is None
    assert "reference" in mixture.estimate_from_reference(rng.normal(size=100), rng.normal(size=10)).note


def test_text_less_predictable_than_human_is_flagged_and_widened():
    rng = np.random.default_rng(5)
    human = rng.normal(0, 1, 400)
    batch = np.r_[rng.normal(0, 1, 150), rng.normal(-3, 1, 100)]  # 40 % far on the human side: a weak generator
    e = mixture.estimate_from_reference(batch, human, replicates=200)
    assert e.out_of_range and e.high == 1.0 and "less predictable" in e.note
    clean = mixture.estimate_from_reference(rng.normal(0, 1, 250), human, replicates=200)
    assert not clean.out_of_range


def test_a_model_file_with_other_content_gets_another_tag(tmp_path):
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for path, fill in ((a, b"\1"), (b, b"\2")):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + fill * 3_000_000)
    tags = {lmscore.LMScorer(lmscore.ScorerConfig(model_file=str(p))).tag for p in (a, b)}
    assert len(tags) == 2  # same name and size, other bytes: neither cached scores nor the converted model are shared
