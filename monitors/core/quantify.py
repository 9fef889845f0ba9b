"""Synthetic-share quantification: the share of a batch, never a count of per-document labels.

Counting the documents a detector flags (classify and count, ``cc``) is biased: a detector with 5 % false
positives "finds" 5 % synthetic text in pure human data, and one with 80 % recall misses a fifth of a fully
synthetic batch. The estimators here correct for the detector's behaviour on held-out data
(a :class:`Validation`: its scores on labelled documents it was not trained on):

* ``acc``  adjusted classify and count (Forman 2008): ``p = (q - fpr) / (tpr - fpr)``, clipped to [0, 1];
* ``pacc`` probabilistic ACC (Bella et al. 2010): the same with mean scores instead of flag rates;
* ``em``   the EM prior adjustment of Saerens, Latinne and Decaestecker (2002): re-weights calibrated
  posteriors until the batch prior is a fixed point. It needs the prior the posteriors were calibrated
  for (the detector's training share).

These follow QuaPy's binary ``ACC``/``PACC`` (clip normalisation) and ``EMQ.EM``; tests/unit/test_quantify.py
checks the published behaviour. Which one a detector uses is chosen on its validation set
(:func:`select_method`) and recorded with the model.

The 95 % interval is a percentile bootstrap over the batch's documents *and* over the validation documents
(stratified), so a detector validated on few examples gets a wider interval. :func:`estimate_share` also
tests whether the batch's scores look like a mixture of the validated human and synthetic score
distributions (:func:`goodness_of_fit`, a Kolmogorov-Smirnov distance against its parametric-bootstrap null).
A second test asks whether the batch's mean score lies outside the two classes' means, which no mixture
of them can produce. When either test fails (an unseen generator, a new domain), the estimate is outside
the detector's validated range. Nothing in the scores then bounds how much of the batch is unlike
anything validated, so the interval becomes [0, 1] (declared provenance still narrows it), the point
estimate is kept for the record, and the note says why. Text from an unseen generator that the detector
scores like human text lowers the estimate. No score-based test can see it when its scores look exactly
like the human ones; benchmarks/share_accuracy.py measures how often that happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

METHODS = ("cc", "acc", "pacc", "em")
#: Estimators a detector may be configured with (``cc`` is reported for comparison only).
CORRECTED = ("acc", "pacc", "em")
OUT_OF_RANGE_P = 0.01
_BISECT_STEPS = 40


@dataclass(frozen=True)
class Validation:
    """A detector's scores on held-out labelled documents (label 1 = synthetic)."""

    scores: np.ndarray
    labels: np.ndarray
    threshold: float = 0.5
    #: Synthetic share of the documents the detector (and its calibration) were fitted on.
    train_prior: float = 0.5

    def __post_init__(self):
        s, y = np.asarray(self.scores, dtype=float), np.asarray(self.labels).astype(bool)
        if s.shape != y.shape or s.ndim != 1:
            raise ValueError(f"validation scores and labels differ in shape: {s.shape} vs {y.shape}")
        if y.all() or not y.any():
            raise ValueError("validation needs both human and synthetic documents")
        object.__setattr__(self, "scores", s)
        object.__setattr__(self, "labels", y)

    @property
    def positives(self) -> np.ndarray:
        return self.scores[self.labels]

    @property
    def negatives(self) -> np.ndarray:
        return self.scores[~self.labels]

    @property
    def tpr(self) -> float:
        return float((self.positives >= self.threshold).mean())

    @property
    def fpr(self) -> float:
        return float((self.negatives >= self.threshold).mean())

    def split(self, rng: np.random.Generator) -> tuple[Validation, Validation]:
        """Two stratified halves (for choosing an estimator without testing on the data it was fitted on)."""
        halves: tuple[list, list] = ([], [])
        for cls in (True, False):
            idx = rng.permutation(np.flatnonzero(self.labels == cls))
            halves[0].append(idx[: len(idx) // 2])
            halves[1].append(idx[len(idx) // 2 :])
        return tuple(self._take(np.concatenate(h)) for h in halves)  # type: ignore[return-value]

    def _take(self, idx: np.ndarray) -> Validation:
        return Validation(self.scores[idx], self.labels[idx], self.threshold, self.train_prior)


@dataclass(frozen=True)
class ShareEstimate:
    """A synthetic share with its 95 % interval. ``estimate`` is None when there is none to give."""

    estimate: float | None
    low: float | None
    high: float | None
    method: str
    documents: int = 0
    note: str = ""
    #: The batch's scores do not look like a mixture of the validated ones (see goodness_of_fit).
    out_of_range: bool = False
    #: p-value of the goodness-of-fit test (nan when not run).
    fit_p: float = float("nan")
    #: Every estimator's point estimate, for the record.
    by_method: dict[str, float] = field(default_factory=dict)

    @classmethod
    def unavailable(cls, note: str, low: float | None = None, high: float | None = None) -> ShareEstimate:
        return cls(None, low, high, "unavailable", 0, note)


# -- the estimators, vectorised over rows (one row per bootstrap replicate) ---------------------------------
def _ratio(q, neg, pos, clip: bool = True):
    gap = pos - neg
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(gap > 1e-9, (q - neg) / np.where(gap > 1e-9, gap, 1.0), np.nan)
    return np.clip(p, 0.0, 1.0) if clip else p


def cc(scores, threshold):
    return (np.asarray(scores) >= threshold).mean(axis=-1)


def acc(scores, pos, neg, threshold):
    """Adjusted classify and count; rows of ``scores``/``pos``/``neg`` are replicates."""
    return _ratio(cc(scores, threshold), cc(neg, threshold), cc(pos, threshold))


def pacc(scores, pos, neg):
    return _ratio(np.asarray(scores).mean(axis=-1), np.asarray(neg).mean(axis=-1), np.asarray(pos).mean(axis=-1))


def em(scores, train_prior):
    """Saerens-Latinne-Decaestecker for two classes; ``scores`` are calibrated P(synthetic | x).

    SLD's EM iterates to the maximum-likelihood batch prior under label shift. The log-likelihood is concave
    in the prior, so that maximum is found here directly, by bisection on its derivative: the same fixed
    point, to 1e-12 instead of EM's stopping tolerance, and exactly 0 or 1 when the maximum is on the
    boundary (where EM crawls and stops short, which would leave a pure batch's interval off the truth).
    """
    s = np.clip(np.atleast_2d(np.asarray(scores, dtype=float)), 1e-9, 1 - 1e-9)
    prior = float(np.clip(train_prior, 1e-6, 1 - 1e-6))
    a, b = s / prior, (1 - s) / (1 - prior)  # likelihood ratios of each document under each class
    d = a - b

    def slope(q):  # derivative of the mean log-likelihood at prior q (one q per row)
        return (d / (b + q[:, None] * d)).mean(axis=1)

    rows = s.shape[0]
    lo, hi = np.zeros(rows), np.ones(rows)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        up = slope(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    q = (lo + hi) / 2
    q = np.where(slope(np.zeros(rows)) <= 0, 0.0, np.where(slope(np.ones(rows)) >= 0, 1.0, q))
    return q if np.ndim(scores) > 1 else q[0]


def point_estimates(scores: np.ndarray, val: Validation) -> dict[str, float]:
    s = np.asarray(scores, dtype=float)
    return {
        "cc": float(cc(s, val.threshold)),
        "acc": float(acc(s, val.positives, val.negatives, val.threshold)),
        "pacc": float(pacc(s, val.positives, val.negatives)),
        "em": float(em(s, val.train_prior)),
    }


def _replicates(scores, val: Validation, rng: np.random.Generator, replicates: int) -> dict[str, np.ndarray]:
    """Each estimator on ``replicates`` bootstrap resamples of the batch and of the validation set."""
    s = np.asarray(scores, dtype=float)
    sb = s[rng.integers(0, s.size, (replicates, s.size))]
    pos, neg = val.positives, val.negatives
    pb = pos[rng.integers(0, pos.size, (replicates, pos.size))]
    nb = neg[rng.integers(0, neg.size, (replicates, neg.size))]
    return {
        "cc": cc(sb, val.threshold),
        "acc": acc(sb, pb, nb, val.threshold),
        "pacc": pacc(sb, pb, nb),
        "em": em(sb, val.train_prior),
        # unclipped: a mean score outside the two classes' means cannot come from a mixture of them
        "pacc_raw": _ratio(sb.mean(axis=1), nb.mean(axis=1), pb.mean(axis=1), clip=False),
    }


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low, high = np.quantile(v, [tail, 1 - tail])
    return float(low), float(high)


def wilson_interval(share: float, n: int, level: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``share`` seen in ``n`` documents: the least an interval
    from ``n`` documents can honestly claim (0 of 300 is still [0, 0.013] at 95 %).

    >>> [round(x, 4) for x in wilson_interval(0.0, 300, 0.95)]
    [0.0, 0.0126]
    """
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = min(max(float(share), 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# -- is the batch inside the detector's validated range? -----------------------------------------------------
def _ks_to_mixture(batch: np.ndarray, p: float, pos: np.ndarray, neg: np.ndarray) -> float:
    grid = np.sort(np.concatenate([batch, pos, neg]))
    f_batch = np.searchsorted(np.sort(batch), grid, side="right") / batch.size
    f_pos = np.searchsorted(np.sort(pos), grid, side="right") / pos.size
    f_neg = np.searchsorted(np.sort(neg), grid, side="right") / neg.size
    return float(np.abs(f_batch - (p * f_pos + (1 - p) * f_neg)).max())


def goodness_of_fit(scores: np.ndarray, val: Validation, rng: np.random.Generator,
                    replicates: int = 200) -> tuple[float, float]:
    """(KS distance, p-value) of the batch's scores against the best-fitting validated mixture.

    The mixture weight is the PACC estimate. The null distribution is a parametric bootstrap: batches of
    the same size drawn from the validated scores at that weight, compared with mixtures of *resampled*
    validation scores, so the validation set's own sampling error is in the null too.
    """
    s = np.asarray(scores, dtype=float)
    pos, neg = val.positives, val.negatives
    p = float(np.nan_to_num(pacc(s, pos, neg), nan=0.5))
    observed = _ks_to_mixture(s, p, pos, neg)
    null = np.empty(replicates)
    for b in range(replicates):
        k = rng.binomial(s.size, p)
        fake = np.concatenate([rng.choice(pos, k), rng.choice(neg, s.size - k)])
        pb, nb = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        pf = float(np.nan_to_num(pacc(fake, pb, nb), nan=0.5))
        null[b] = _ks_to_mixture(fake, pf, pb, nb)
    return observed, float((1 + (null >= observed).sum()) / (1 + replicates))


# -- the estimate a check reports ----------------------------------------------------------------------------
def estimate_share(scores: np.ndarray, val: Validation, *, method: str = "pacc", replicates: int = 1000,
                   seed: int = 0, level: float = 0.95, fit_replicates: int = 200) -> ShareEstimate:
    """The synthetic share of the documents behind ``scores`` with its bootstrap interval.

    >>> rng = np.random.default_rng(0)
    >>> val = Validation(np.r_[rng.beta(8, 2, 400), rng.beta(2, 8, 400)], np.r_[np.ones(400), np.zeros(400)])
    >>> batch = np.r_[rng.beta(8, 2, 300), rng.beta(2, 8, 700)]
    >>> e = estimate_share(batch, val)
    >>> round(e.estimate, 1), e.low < 0.3 < e.high, e.out_of_range
    (0.3, True, False)
    """
    if method not in CORRECTED:
        raise ValueError(f"unknown quantification method {method!r}; choose one of {', '.join(CORRECTED)}")
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return ShareEstimate.unavailable("no documents to estimate from")
    if val.tpr - val.fpr < 0.2:
        return ShareEstimate.unavailable(
            f"detector cannot separate the classes on its validation set (tpr {val.tpr:.2f}, fpr {val.fpr:.2f}); retrain it")
    rng = np.random.default_rng(seed)
    points = point_estimates(s, val)
    reps = _replicates(s, val, rng, replicates)
    low, high = _interval(reps[method], level)
    # The bootstrap of a batch far from the classes' overlap collapses to a point (0.000-0.000 on 300 human
    # documents): no interval is narrower than what the batch's size can show.
    floor_low, floor_high = wilson_interval(points[method], int(s.size), level)
    low, high = min(low, floor_low), max(high, floor_high)
    distance, fit_p = goodness_of_fit(s, val, rng, fit_replicates)
    raw = reps["pacc_raw"][np.isfinite(reps["pacc_raw"])]
    # one-sided bootstrap p-values of "the batch's mean score is below the human class's / above the synthetic's"
    below = (1 + (raw >= 0).sum()) / (1 + raw.size)
    above = (1 + (raw <= 1).sum()) / (1 + raw.size)
    note, why = "", []
    if fit_p < OUT_OF_RANGE_P:
        why.append(f"their distribution does not fit any mix of the validated human and synthetic scores "
                   f"(KS distance {distance:.3f}, p = {fit_p:.3f})")
    if min(below, above) < OUT_OF_RANGE_P / 2:
        side = "below the human" if below < above else "above the synthetic"
        why.append(f"their mean is {side} validation texts' (p = {min(below, above):.3f})")
    out = bool(why)
    if out:
        low, high = 0.0, 1.0
        note = (f"detector out of its validated range: the batch's scores are unlike its validation data "
                f"({'; '.join(why)}). Text from an unseen generator or domain? The estimate "
                f"({', '.join(f'{m} {points[m]:.2f}' for m in METHODS)}) cannot be trusted, so the interval is "
                f"[0, 1]; retrain the detector on this kind of text.")
    fit_p = min(fit_p, 2 * min(below, above))
    return ShareEstimate(points[method], low, high, method, int(s.size), note, out, fit_p, points)


def select_method(val: Validation, *, batch_size: int = 500, prevalences=None, batches: int = 4,
                  seed: int = 0) -> tuple[str, dict[str, float]]:
    """The corrected estimator with the least mean absolute error on the validation set.

    The validation set is split in two stratified halves; one half plays the held-out data an estimator
    is calibrated on, batches drawn from the other half at known prevalences test it; then the halves swap.
    Returns (best method, MAE by method, including plain ``cc`` for comparison).
    """
    rng = np.random.default_rng(seed)
    prevalences = np.linspace(0, 1, 11) if prevalences is None else np.asarray(prevalences)
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    a, b = val.split(rng)
    for fit, test in ((a, b), (b, a)):
        for p in prevalences:
            for _ in range(batches):
                k = int(round(p * batch_size))
                batch = np.concatenate([rng.choice(test.positives, k), rng.choice(test.negatives, batch_size - k)])
                for m, v in point_estimates(batch, fit).items():
                    errors[m].append(abs(v - k / batch_size))
    mae = {m: float(np.mean(e)) for m, e in errors.items()}
    return min(CORRECTED, key=lambda m: mae[m]), mae


# -- declared provenance --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """Declared labels of a batch's accepted records; ``undeclared`` carry no (or an unknown) label."""

    human: int
    synthetic: int
    undeclared: int

    @property
    def total(self) -> int:
        return self.human + self.synthetic + self.undeclared


def combine_with_declared(declared: Provenance, undeclared_share: ShareEstimate) -> ShareEstimate:
    """The whole batch's synthetic share: declared labels count exactly, the estimate covers the rest.

    With no detector, the declared labels still bound the share: [declared synthetic, declared synthetic +
    every undeclared record] / total.
    """
    n = declared.total
    if n == 0:
        return ShareEstimate.unavailable("no accepted records")
    if declared.undeclared == 0:
        share = declared.synthetic / n
        return ShareEstimate(share, share, share, "declared", 0, "every record declares its provenance")
    base, rest = declared.synthetic / n, declared.undeclared / n
    u = undeclared_share
    if u.estimate is None:
        return ShareEstimate.unavailable(u.note, base, base + rest)
    if declared.undeclared == n:
        return u
    scale = lambda v: None if v is None else base + rest * v  # noqa: E731
    note = (f"{declared.human + declared.synthetic} records declare their provenance (counted exactly); "
            f"{u.method} estimate for the {declared.undeclared} undeclared" + (f". {u.note}" if u.note else ""))
    return ShareEstimate(scale(u.estimate), scale(u.low), scale(u.high), f"declared+{u.method}", u.documents, note,
                         u.out_of_range, u.fit_p, {m: base + rest * v for m, v in u.by_method.items()})


# -- the accumulated corpus of a dataset ----------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusTotals:
    """Running human-data totals over every checked batch of a dataset (accumulate, don't replace).

    ``human`` sums each batch's estimated human records; ``human_low``/``human_high`` sum the bounds of their
    intervals (a sum of bounds, not a root-sum-of-squares: the detector's validation error is shared by every
    batch, so the batches' errors are not independent). Records of a batch without an estimate count as 0
    human in the low bound and all human in the high one, and are left out of the point estimate.
    """

    batches: int = 0
    records: float = 0.0
    human: float = 0.0
    human_low: float = 0.0
    human_high: float = 0.0
    unestimated: float = 0.0

    METRICS = ("batches", "records", "human", "human_low", "human_high", "unestimated")

    def add(self, records: int, share: ShareEstimate) -> CorpusTotals:
        lo_s = 0.0 if share.low is None else share.low
        hi_s = 1.0 if share.high is None else share.high
        est = share.estimate
        return CorpusTotals(
            batches=self.batches + 1,
            records=self.records + records,
            human=self.human + (0.0 if est is None else (1 - est) * records),
            human_low=self.human_low + (1 - hi_s) * records,
            human_high=self.human_high + (1 - lo_s) * records,
            unestimated=self.unestimated + (records if est is None else 0),
        )

    @property
    def share(self) -> float:
        estimated = self.records - self.unestimated
        return self.human / estimated if estimated > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        nan = float("nan")
        out = {f"corpus.{k}": float(getattr(self, k)) for k in self.METRICS}
        out["corpus.human_share"] = self.share
        out["corpus.human_share_low"] = self.human_low / self.records if self.records else nan
        out["corpus.human_share_high"] = self.human_high / self.records if self.records else nan
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> CorpusTotals:
        """Totals from a previous run's ``corpus.*`` metrics; missing ones start at zero."""
        values = {k: float(metrics.get(f"corpus.{k}", 0.0)) for k in cls.METRICS}
        return cls(**{**values, "batches": int(values["batches"])})
