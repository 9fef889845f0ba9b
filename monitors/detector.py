"""A synthetic-text detector: a scikit-learn pipeline, trained and evaluated on held-out data.

The detector's per-document flags are never reported as the synthetic share; they feed
:func:`monitors.quantify.adjusted_classify_and_count` together with the held-out rates measured here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline

from monitors.quantify import DetectorRates

THRESHOLD = 0.5


def make_pipeline(seed: int = 0) -> Pipeline:
    """Word 1-2-grams and character 2-4-grams, TF-IDF weighted, into a logistic regression."""
    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True)),
    ])
    return Pipeline([("features", features), ("clf", LogisticRegression(C=4.0, max_iter=2000, random_state=seed))])


@dataclass(frozen=True)
class TrainedDetector:
    pipeline: Pipeline
    rates: DetectorRates
    roc_auc: float
    threshold: float = THRESHOLD

    def flag(self, texts: list[str]) -> np.ndarray:
        """True where a document scores as synthetic at the operating threshold."""
        return self.pipeline.predict_proba(np.asarray(texts, dtype=object))[:, 1] >= self.threshold

    def metrics(self) -> dict[str, float]:
        r = self.rates
        return {"roc_auc": self.roc_auc, "tpr": r.tpr, "fpr": r.fpr,
                "val_positives": r.positives, "val_negatives": r.negatives, "threshold": self.threshold}


def train_detector(human: list[str], synthetic: list[str], *, seed: int = 0, held_out: float = 0.3) -> TrainedDetector:
    """Fit on (1 - held_out) of the labelled texts; measure TPR, FPR and ROC AUC on the rest."""
    if min(len(human), len(synthetic)) < 20:
        raise ValueError(f"need at least 20 human and 20 synthetic texts, got {len(human)} and {len(synthetic)}")
    texts = np.asarray(human + synthetic, dtype=object)
    labels = np.array([0] * len(human) + [1] * len(synthetic))
    x_tr, x_va, y_tr, y_va = train_test_split(texts, labels, test_size=held_out, stratify=labels, random_state=seed)
    pipeline = make_pipeline(seed).fit(x_tr, y_tr)
    scores = pipeline.predict_proba(x_va)[:, 1]
    flags = scores >= THRESHOLD
    pos, neg = y_va == 1, y_va == 0
    rates = DetectorRates(tpr=float(flags[pos].mean()), fpr=float(flags[neg].mean()),
                          positives=int(pos.sum()), negatives=int(neg.sum()))
    return TrainedDetector(pipeline=pipeline, rates=rates, roc_auc=float(roc_auc_score(y_va, scores)))
