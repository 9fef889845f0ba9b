"""Synthetic-share quantification: the share of a batch, corrected for the detector's error rates.

Counting documents a detector flags is biased (a detector with 5 % false positives "finds" 5 % synthetic
text in pure human data). Adjusted classify-and-count (Forman 2008) inverts the error rates measured on
held-out data: ``p = (q - fpr) / (tpr - fpr)``. The 95 % interval is a parametric bootstrap over both the
batch's documents and the validation counts behind ``tpr`` and ``fpr``, so a detector validated on few
examples gets a wider interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectorRates:
    """Held-out error rates of a detector at its operating point, with the counts they came from."""

    tpr: float
    fpr: float
    positives: int
    negatives: int


@dataclass(frozen=True)
class ShareEstimate:
    estimate: float | None
    low: float | None
    high: float | None
    method: str
    documents: int = 0
    note: str = ""

    @classmethod
    def unavailable(cls, note: str) -> ShareEstimate:
        return cls(None, None, None, "unavailable", 0, note)


def _acc(q, tpr, fpr):
    return np.clip((q - fpr) / (tpr - fpr), 0.0, 1.0)


def adjusted_classify_and_count(
    flagged: np.ndarray, rates: DetectorRates, *, replicates: int = 1000, seed: int = 0, level: float = 0.95
) -> ShareEstimate:
    """Estimate the synthetic share from per-document flags and the detector's held-out rates.

    >>> r = DetectorRates(tpr=0.9, fpr=0.1, positives=500, negatives=500)
    >>> e = adjusted_classify_and_count(np.array([True] * 50 + [False] * 50), r)
    >>> round(e.estimate, 3), e.low < 0.5 < e.high
    (0.5, True)
    """
    flagged = np.asarray(flagged, dtype=bool)
    n = flagged.size
    if n == 0:
        return ShareEstimate.unavailable("no documents to estimate from")
    if rates.tpr - rates.fpr < 0.2:
        return ShareEstimate.unavailable(
            f"detector cannot separate the classes (tpr {rates.tpr:.2f}, fpr {rates.fpr:.2f}); retrain it"
        )
    q = flagged.mean()
    rng = np.random.default_rng(seed)
    q_b = rng.binomial(n, q, replicates) / n
    tpr_b = rng.binomial(rates.positives, rates.tpr, replicates) / rates.positives
    fpr_b = rng.binomial(rates.negatives, rates.fpr, replicates) / rates.negatives
    gap = tpr_b - fpr_b
    ok = gap > 0.05  # replicates where the rates collapse carry no information about p
    est_b = _acc(q_b[ok], tpr_b[ok], fpr_b[ok])
    tail = (1 - level) / 2
    low, high = np.quantile(est_b, [tail, 1 - tail])
    return ShareEstimate(
        estimate=float(_acc(q, rates.tpr, rates.fpr)),
        low=float(low),
        high=float(high),
        method="adjusted_classify_and_count",
        documents=n,
    )
