"""The synthetic-text filter's math: a fast per-document scorer learned from the human reference, the operating
point that bounds how much human text is thrown away, the LM stage's share of the decisions, and the report.

**The fast stage** is positive-unlabelled learning (Elkan & Noto 2008): a logistic regression on word
1-2-grams (binary, l2-normalised) tells the dataset's human reference (label 0) from a uniform sample of the batch itself (label 1).
Nobody has labelled machine text of the user's domain, and the batch's own generators are unseen; what the
model learns is "what this batch has that the human reference lacks", and its score ranks documents by how
un-human they look (the PU posterior is a monotone function of the true one). A topic the reference lacks
looks un-human too: the filter says so through the share before filtering, and the LM stage (which scores
how predictable a text is, not its topic) decides the documents the fast stage cannot.

**Cross-fitting**: the batch's sample is split in two by id hash; model A learns from half A and model B from
half B, and every document is scored by one model that never saw it (a sampled document by the other half's
model, every other document by its hash's parity). The human reference is split the same way (model A learns
from reference half A), and each model's vocabulary comes from its own half alone, so every reference document
is scored by a model that never saw it, exactly as a new document is, and the whole reference **calibrates**:
the threshold for ``max_human_loss`` is the quantile of those scores, so on human text like the reference that
share is flagged, give or take the sampling error of ``n`` reference documents (:func:`loss_interval`: about +-1.3 points at 5 % and 1,000 documents, +-1 at 2,000).

**The LM stage** (a cascade): documents whose fast score falls in the uncertain band (between the calibration
humans' top ``4 * loss`` and top ``loss / 2``) go to the local LM, at most a budget of them; the LM's threshold
is set on the calibration humans of the same band, so that the whole cascade flags the same share of human
text as the fast threshold alone. Band documents over the budget are decided by the fast threshold.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the fast stage's features: the word 1-2-grams of a model's training half, at most this many (the most frequent)
MAX_FEATURES = 200_000
MIN_CALIBRATION = 50
MIN_BATCH_SAMPLE = 20
#: the uncertain band, as multiples of max_human_loss in the calibration humans' upper tail
BAND_LOW, BAND_HIGH = 4.0, 0.5
#: punctuation becomes a word boundary (ASCII and the typographic marks common in prose)
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation + "\u201c\u201d\u2018\u2019\u2014\u2013\u2026\u00ab\u00bb", " "))


def tokens(text: str) -> list[str]:
    return text.lower().translate(_PUNCT).split()


def features(text: str) -> set[str]:
    """A document's word 1-2-grams (lower-cased, punctuation dropped), built with C-level calls only: that is
    what makes the fast stage fast. Training uses the same function (as CountVectorizer's analyzer)."""
    toks = tokens(text)
    out = set(toks)
    out.update(map(" ".join, zip(toks, toks[1:])))
    return out


def _feature_list(text: str) -> list[str]:
    return list(features(text))


def _fold(hashes: np.ndarray) -> np.ndarray:
    """0 or 1 per document: which half of a sample it is in (and which model scores it when unsampled)."""
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(17)) & np.uint64(1)


@dataclass
class FastScorer:
    """Two cross-fitted linear models over binary, l2-normalised word 1-2-grams; a document is scored by one
    that never saw it. Each model has its own vocabulary, built from its own training half only: with one
    vocabulary built from every training document, a document's own rare n-grams (shared with one other
    document) were in it when the document was a calibration one and not when it was unseen, so the two were
    not scored alike (on Austen splits at an asked 5 %: 4.4 % of the sampled batch humans flagged, 5.3 % of the
    others). The weights are dicts (feature -> weight) so that scoring a document is a dict lookup per feature
    and an exact sum, with no sparse matrix built."""

    weights: tuple[dict[str, float], dict[str, float]]
    intercept: tuple[float, float]
    trained_on: dict[int, int] = field(default_factory=dict)  # id hash of a sampled batch document -> its half

    @property
    def vocabulary(self) -> tuple[frozenset[str], frozenset[str]]:
        """Each model's features (the keys of its weights)."""
        return frozenset(self.weights[0]), frozenset(self.weights[1])

    def model_for(self, hashes: Sequence[int]) -> np.ndarray:
        h = np.asarray(hashes, dtype=np.uint64)
        which = _fold(h).astype(np.int64)
        if self.trained_on:
            for i, x in enumerate(h.tolist()):
                half = self.trained_on.get(x)
                if half is not None:
                    which[i] = 1 - half
        return which

    def score(self, texts: Sequence[str], hashes: Sequence[int]) -> np.ndarray:
        """Logits (higher: less like the human reference)."""
        out = np.empty(len(texts))
        for i, (text, m) in enumerate(zip(texts, self.model_for(hashes).tolist())):
            # one dict lookup per feature (None: not in this model's vocabulary); a weight of 0.0 that filter()
            # drops adds nothing to the sum. fsum: exact, so the score does not depend on the set's order (string
            # hashing differs per process)
            weights = list(map(self.weights[m].get, features(text)))
            known = len(weights) - weights.count(None)
            out[i] = (math.fsum(filter(None, weights)) / math.sqrt(known) if known else 0.0) + self.intercept[m]
        return out


def _halves(hashes: np.ndarray) -> np.ndarray:
    halves = _fold(hashes).astype(int)
    if min((halves == 0).sum(), (halves == 1).sum()) < max(1, len(halves) // 4):  # tiny sets: split by position
        halves = np.arange(len(hashes)) % 2
    return halves


def train_fast(human: Sequence[tuple[int, str]], batch: Sequence[tuple[int, str]], seed: int = 0, *, C: float = 4.0,
               min_df: int = 1) -> FastScorer:
    """The fast stage from the human reference and the batch's sample, both (id hash, text): model A learns
    from half A of each, model B from half B; every one of these documents is then scored by the other model,
    so the whole reference calibrates (:func:`calibration_scores`) and no document's score saw it."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    if len(batch) < MIN_BATCH_SAMPLE:
        raise ValueError(f"the batch has {len(batch)} usable documents; the filter needs at least {MIN_BATCH_SAMPLE}")
    h_hash = np.array([h for h, _ in human], dtype=np.uint64)
    b_hash = np.array([h for h, _ in batch], dtype=np.uint64)
    h_halves, b_halves = _halves(h_hash), _halves(b_hash)
    weights, intercepts = [], []
    for half in (0, 1):
        hum, mine = np.flatnonzero(h_halves == half), np.flatnonzero(b_halves == half)
        # the vocabulary from this half alone (see FastScorer): every document it scores is unseen by it
        vec = CountVectorizer(analyzer=_feature_list, min_df=min_df, max_features=MAX_FEATURES, binary=True,
                              dtype=np.float32)
        x = normalize(vec.fit_transform([human[i][1] for i in hum] + [batch[i][1] for i in mine]))
        lr = LogisticRegression(C=C, class_weight="balanced", max_iter=1000, solver="liblinear", random_state=seed)
        lr.fit(x, np.r_[np.zeros(len(hum)), np.ones(len(mine))])
        names = vec.get_feature_names_out().tolist()
        weights.append(dict(zip(names, lr.coef_[0].tolist())))
        intercepts.append(float(lr.intercept_[0]))
    trained_on = {int(h): int(f) for h, f in zip(h_hash.tolist(), h_halves.tolist())}
    trained_on.update({int(h): int(f) for h, f in zip(b_hash.tolist(), b_halves.tolist())})
    return FastScorer((weights[0], weights[1]), (intercepts[0], intercepts[1]), trained_on)


def calibration_scores(scorer: FastScorer, human: Sequence[tuple[int, str]]) -> np.ndarray:
    """The reference's scores, each by the model that did not train on it: what the threshold is set on."""
    return scorer.score([t for _, t in human], [h for h, _ in human])


def threshold_for_loss(human_scores: np.ndarray, max_loss: float) -> float:
    """The lowest threshold that flags (score > threshold) at most ``max_loss`` of these human scores."""
    s = np.sort(np.asarray(human_scores, dtype=float))
    n = s.size
    allowed = int(math.floor(max_loss * n + 1e-9))
    if allowed >= n:
        return -math.inf
    return float(s[n - allowed - 1])


def loss_at(human_scores: np.ndarray, threshold: float) -> float:
    s = np.asarray(human_scores, dtype=float)
    return float((s > threshold).mean()) if s.size else float("nan")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float  # flag when the fast score is above it
    expected_human_loss: float  # on the calibration humans
    calibration_docs: int
    max_human_loss: float | None  # None when the threshold was given
    band: tuple[float, float] | None = None  # the LM stage's (low, high] fast-score band
    lm_threshold: float | None = None  # flag a band document when its LM machine score is above it

    @property
    def loss_interval(self) -> tuple[float, float]:
        """95 % interval of the human loss on new human text like the reference (:func:`loss_interval`)."""
        return loss_interval(self.expected_human_loss, self.calibration_docs)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "expected_human_loss": self.expected_human_loss,
                "expected_human_loss_interval": list(self.loss_interval),
                "calibration_docs": self.calibration_docs, "max_human_loss": self.max_human_loss,
                "band": list(self.band) if self.band else None, "lm_threshold": self.lm_threshold}


def loss_interval(loss: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Where the human loss on new human text like the ``n`` calibration documents lies, when ``loss`` of them
    (k documents) are flagged. A threshold at the calibration scores' (n - k)-th smallest value flags a new
    human document with a probability distributed Beta(k + 1, n - k) (order statistics: exact and free of any
    assumption on the scores' distribution). At 5 % of 1,000 documents that is about 3.8-6.4 %: the reference's
    size, not the model, sets how closely the promised loss holds."""
    from scipy.stats import beta

    if n <= 0 or not math.isfinite(loss):
        return (math.nan, math.nan)
    k = min(n - 1, max(0, int(round(loss * n))))
    a = (1 - level) / 2
    return float(beta.ppf(a, k + 1, n - k)), float(beta.ppf(1 - a, k + 1, n - k))


def operating_point(cal_scores: np.ndarray, *, max_human_loss: float | None = None,
                    threshold: float | None = None) -> OperatingPoint:
    cal = np.asarray(cal_scores, dtype=float)
    if cal.size < MIN_CALIBRATION:
        raise ValueError(f"only {cal.size} calibration documents; need {MIN_CALIBRATION}")
    t = float(threshold) if threshold is not None else threshold_for_loss(cal, float(max_human_loss))
    return OperatingPoint(t, loss_at(cal, t), int(cal.size), None if threshold is not None else max_human_loss)


def uncertain_band(cal_scores: np.ndarray, max_human_loss: float) -> tuple[float, float]:
    """(low, high]: fast scores the LM decides. Above ``high`` at most half the loss budget is flagged unseen."""
    cal = np.asarray(cal_scores, dtype=float)
    return (threshold_for_loss(cal, min(1.0, BAND_LOW * max_human_loss)),
            threshold_for_loss(cal, BAND_HIGH * max_human_loss))


def lm_threshold(cal_fast: np.ndarray, band: tuple[float, float], band_lm: np.ndarray, max_human_loss: float) -> float:
    """The LM threshold on the calibration humans in the band (their LM scores ``band_lm``, nan = unscored), so
    that the cascade flags ``max_human_loss`` of them in all: those above the band plus those the LM flags."""
    cal = np.asarray(cal_fast, dtype=float)
    above = int((cal > band[1]).sum())
    allowed_total = int(math.floor(max_human_loss * cal.size + 1e-9))
    lm = np.asarray(band_lm, dtype=float)
    lm = lm[np.isfinite(lm)]
    if lm.size == 0:
        return math.inf
    return threshold_for_loss(lm, max(0, allowed_total - above) / lm.size)


def _recall(flagged: float, share: float, loss: float) -> float:
    return min(1.0, max(0.0, (flagged - (1 - share) * loss) / share))


def share_floor(flagged_share: float, loss: float) -> float:
    """The smallest machine share that explains what was flagged: at most all machine text and ``loss`` of the
    human text is flagged, so flagged <= share + (1 - share) * loss. With the loss interval's upper end it is a
    lower bound on the batch's share that needs no share estimate."""
    if not (math.isfinite(flagged_share) and math.isfinite(loss)) or loss >= 1:
        return 0.0
    return max(0.0, (flagged_share - loss) / (1 - loss))


@dataclass(frozen=True)
class RecallEstimate:
    """Machine text flagged, from the share: flagged = share * recall + (1 - share) * loss. ``None`` where the
    share is unknown or under 5 % (too small to divide by)."""

    estimate: float | None
    low: float | None
    high: float | None
    share_floor: float  # the batch's machine share is at least this (see share_floor)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "share_floor": self.share_floor,
                "basis": "estimated from the share before filtering and the human loss (no labelled machine text)"
                if self.high is not None else "unknown: the share before filtering is unknown or under 5 %",
                "note": self.note}


def recall_estimate(flagged_share: float, share: Any, loss: float, loss_interval: tuple[float, float]) -> RecallEstimate:
    """The recall on machine text and its interval, from the share before filtering (``share``: a
    ShareEstimate) and the human loss with its interval. The interval takes the share at its interval's ends
    (but never under :func:`share_floor`) and the loss at its own: recall falls as either grows."""
    floor = share_floor(flagged_share, loss_interval[1])
    est, low, high = share.estimate, share.low, share.high
    if est is None or not math.isfinite(est) or high is None or not math.isfinite(high) or high < 0.05:
        return RecallEstimate(None, None, None, floor)
    point = _recall(flagged_share, est, loss) if est >= 0.05 else None
    s_low = max(low if low is not None and math.isfinite(low) else 0.0, floor)
    r_low = _recall(flagged_share, high, loss_interval[1])
    r_high = _recall(flagged_share, s_low, loss_interval[0]) if s_low >= 0.05 else 1.0
    note = ""
    if est < share_floor(flagged_share, loss):
        note = (f"more was flagged than a share of {est:.1%} and a human loss of {loss:.1%} explain: the share "
                f"before filtering is underestimated (the batch is at least {floor:.1%} machine-made), so the "
                f"recall's point estimate is capped at 100 %; read its interval")
    return RecallEstimate(point, r_low, max(r_low, r_high), floor, note)


def _share_dict(e) -> dict[str, Any]:
    return {"estimate": e.estimate, "low": e.low, "high": e.high, "method": e.method, "note": e.note}


@dataclass
class FilterResult:
    """What ``filter --json`` prints and the filter's MLflow run holds."""

    dataset: str
    input: str
    out_dir: str
    format: str
    records: int  # usable input records: kept + flagged
    kept: int
    flagged: int
    quarantined: int
    point: OperatingPoint
    lm_decided: int
    lm_note: str
    recall: RecallEstimate
    share_before: Any  # ShareEstimate
    share_after: Any
    reference_run_id: str
    files: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    spooled: str = ""
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        return {"filter.records": self.records, "filter.kept": self.kept, "filter.flagged": self.flagged,
                "filter.quarantined": self.quarantined, "filter.flagged_share": self.flagged / self.records if self.records else None,
                "filter.threshold": self.point.threshold, "filter.expected_human_loss": self.point.expected_human_loss,
                "filter.expected_human_loss_low": self.point.loss_interval[0],
                "filter.expected_human_loss_high": self.point.loss_interval[1],
                "filter.expected_recall": self.recall.estimate, "filter.expected_recall_low": self.recall.low,
                "filter.expected_recall_high": self.recall.high, "filter.share_floor": self.recall.share_floor,
                "filter.lm_decided": self.lm_decided,
                "filter.share_before": self.share_before.estimate, "filter.share_before_low": self.share_before.low,
                "filter.share_before_high": self.share_before.high, "filter.share_after": self.share_after.estimate,
                "filter.share_after_low": self.share_after.low, "filter.share_after_high": self.share_after.high}

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dataset": self.dataset, "input": self.input, "out_dir": self.out_dir,
                "format": self.format, "records": self.records, "kept": self.kept, "flagged": self.flagged,
                "quarantined": self.quarantined, "input_records": self.records + self.quarantined,
                "operating_point": self.point.to_dict(), "lm_decided": self.lm_decided, "lm_note": self.lm_note,
                "expected_recall": self.recall.to_dict(),
                "share_before": _share_dict(self.share_before), "share_after": _share_dict(self.share_after),
                "reference_run_id": self.reference_run_id, "files": self.files, "spooled": self.spooled,
                "notes": self.notes}

    def summary(self) -> str:
        def pct(x):
            return "unknown" if x is None else f"{x:.1%}"

        def share(e):
            return "unknown" if e.estimate is None else f"{e.estimate:.1%} (95 % interval {e.low:.1%}-{e.high:.1%})"

        p = self.point
        goal = f"at most {p.max_human_loss:.1%} asked" if p.max_human_loss is not None else f"threshold {p.threshold:.3f} given"
        lines = [f"filter {self.dataset}: {self.input}",
                 f"  {self.records + self.quarantined} input records = {self.kept} kept + {self.flagged} flagged + "
                 f"{self.quarantined} quarantined",
                 f"  expected human loss {pct(p.expected_human_loss)} ({goal}; measured on {p.calibration_docs} held-out "
                 f"reference documents; 95 % interval {pct(p.loss_interval[0])}-{pct(p.loss_interval[1])} on new human text)",
                 f"  expected recall on machine text {pct(self.recall.estimate)}"
                 + (f" (95 % interval {pct(self.recall.low)}-{pct(self.recall.high)}; estimated from the share and "
                    f"the loss, no labelled machine text)" if self.recall.high is not None else ""),
                 f"  synthetic share before {share(self.share_before)} (at least {self.recall.share_floor:.1%} by "
                 f"what was flagged), after (kept) {share(self.share_after)}"]
        if self.recall.note:
            lines.append(f"  note: {self.recall.note}")
        if self.lm_decided or self.lm_note:
            lines.append(f"  the local LM decided {self.lm_decided} uncertain document(s)" + (f"; {self.lm_note}" if self.lm_note else ""))
        lines += [f"  {k}: {v}" for k, v in self.files.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def cascade_loss(cal_scores: np.ndarray, band: tuple[float, float], band_lm: np.ndarray, t_lm: float) -> float:
    """The cascade's human loss on the calibration documents: above the band, or in it and flagged by the LM."""
    cal = np.asarray(cal_scores, dtype=float)
    return float(((cal > band[1]).sum() + (np.asarray(band_lm, dtype=float) > t_lm).sum()) / cal.size)


def decider(threshold: float, lm_scores: dict[int, float], t_lm: float | None):
    """``decide(id hash, fast score) -> (flagged, by the LM)``: the LM's verdict where it scored the document,
    else the fast threshold's."""
    def decide(h: int, s: float) -> tuple[bool, bool]:
        lm = lm_scores.get(h)
        if lm is not None and t_lm is not None and math.isfinite(lm):
            return lm > t_lm, True
        return s > threshold, False

    return decide


def shares(sample_scores: np.ndarray, cal_scores: np.ndarray, threshold: float, *, replicates: int, seed: int):
    """The synthetic share of the batch (its sample's fast scores against the reference's) and of what the
    threshold keeps (the kept sample against the reference documents the threshold keeps), with intervals."""
    from monitors.core import mixture
    from monitors.core.quantify import ShareEstimate

    s, cal = np.asarray(sample_scores, dtype=float), np.asarray(cal_scores, dtype=float)
    before = mixture.estimate_from_reference(s, cal, replicates=replicates, seed=seed)
    kept = s <= threshold
    if kept.sum() < 10:
        return before, ShareEstimate.unavailable("fewer than 10 kept documents in the sample")
    return before, mixture.estimate_from_reference(s[kept], cal[cal <= threshold], replicates=replicates, seed=seed)
