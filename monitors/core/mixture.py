"""The synthetic share from a human reference alone: mixture-proportion estimation on LM statistics.

A batch's scores are a mixture ``pi * H + (1 - pi) * M`` of the human score distribution ``H`` (known: the
reference's held-out documents, scored by :mod:`monitors.adapters.lmscore` at build time) and an unknown machine
one ``M``. Machine text of any family sits on the *predictable* side (high curvature), so on the human side
of the score axis the batch can hold no more than its human part: for every threshold ``t``

    q_batch(t) = pi * q_human(t) + (1 - pi) * q_machine(t) >= pi * q_human(t),   q(t) = P(score <= t)

and ``pi <= min_t q_batch(t) / q_human(t)``, with equality where the machine text has no mass. This is Best
Bin Estimation (Garg, Wu, Smola, Balakrishnan and Lipton, NeurIPS 2021) with the human reference as the
known component: the threshold minimises an upper confidence bound of the ratio,

    q_batch(t) / q_human(t) + (1 + gamma) / q_human(t) * (sqrt(log(4/delta) / 2 n_batch) + sqrt(log(4/delta) / 2 n_human))

so a threshold with few reference documents below it (a noisy ratio) is not picked by chance. The share is
``1 - pi``. Its 95 % interval is a percentile bootstrap over the batch's and the reference's documents,
threshold choice included.

**The trap, and what is done about it.** A human batch from a narrower sub-domain than the reference (a
change of topic) can be more predictable than the reference as a whole and would read as machine text.
Two things guard against it. (1) The score is the Fast-DetectGPT curvature, normalised by the model's own
expectation at each token, which moves much less with topic than raw surprisal does (human Python
documentation and human Austen paragraphs average -2.07 and -1.99). (2) The reference's and the batch's
documents are assigned to the reference's embedding clusters: when batch documents fall in clusters the
reference barely covers, the estimate is flagged out of range and its interval widened to what the data
allow (:func:`estimate_from_reference`). Re-weighting the reference to the batch's clusters
(``p_batch(cluster) / p_reference(cluster)``, capped) is available (``reweight``, ``lm.topic_weights``) but
off: on single-domain human batches it cost more in effective sample size than it removed in bias.

Everything here is pure numpy: scores in, a :class:`~monitors.core.quantify.ShareEstimate` out.
"""

from __future__ import annotations

import numpy as np

from monitors.core.quantify import ShareEstimate, wilson_interval

METHOD = "mpe-bbe"
DELTA, GAMMA = 0.1, 0.01
#: Cap on a reference document's topic weight, and the share of weight below which a cluster is "uncovered".
MAX_WEIGHT = 5.0
MIN_EFFECTIVE = 60  # effective reference documents below which the estimate is flagged
UNCOVERED_SHARE = 0.2  # batch share in clusters the reference barely covers above which it is flagged
_GRID = np.linspace(0.02, 0.98, 49)
EXCESS_QUANTILES = (0.05, 0.1, 0.25)
EXCESS_Z = 3.0  # one-sided, three thresholds: about 0.4 % of human batches flagged by chance


def machine_score(features: np.ndarray) -> np.ndarray:
    """The 1-D score the share is estimated on (higher = more machine-like): the analytic curvature."""
    from monitors.core.lmfeatures import FEATURES

    return np.asarray(features, dtype=float)[:, FEATURES.index("curvature")]


def topic_weights(ref_clusters: np.ndarray, batch_clusters: np.ndarray, k: int, *,
                  cap: float = MAX_WEIGHT) -> tuple[np.ndarray, float]:
    """Weights of the reference documents that give them the batch's cluster occupancy, and the batch's share
    in clusters the reference holds (almost) no documents of (which no weight can make up for)."""
    ref = np.bincount(ref_clusters, minlength=k).astype(float)
    bat = np.bincount(batch_clusters, minlength=k).astype(float)
    p_ref, p_bat = ref / ref.sum(), bat / bat.sum()
    covered = ref >= 3
    ratio = np.where(covered, p_bat / np.where(covered, p_ref, 1.0), 0.0)
    w = np.minimum(ratio, cap)[ref_clusters]
    uncovered = float(p_bat[~covered].sum())
    if w.sum() <= 0:
        return np.ones(len(ref_clusters)), 1.0
    return w * (len(w) / w.sum()), uncovered


def effective_size(weights: np.ndarray) -> float:
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0


def human_side_excess(batch: np.ndarray, human: np.ndarray, weights: np.ndarray | None, n_human: float) -> float:
    """How far the batch has *more* mass on the human side than the reference (largest z over a few low
    thresholds). A mixture of human text and predictable machine text cannot: documents less predictable than
    human are unlike anything this estimate is built on, and nothing bounds how many of them are machine text."""
    w = np.ones_like(human) if weights is None else weights
    w = w / w.sum()
    z = []
    for t in np.quantile(human, EXCESS_QUANTILES):
        qb, qh = float((batch <= t).mean()), float(((human <= t) * w).sum())
        var = qh * (1 - qh) * (1 / batch.size + 1 / max(n_human, 1.0))
        z.append((qb - qh) / np.sqrt(var) if var > 0 else 0.0)
    return float(max(z))


def _below(x: np.ndarray, grid: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``x`` (R, n), the share (or the weight) of its values at or below each grid point: (R, G).

    Row by row through a sort, never an (R, n, G) array: with 1,000 bootstrap replicates of 1,000 scores that
    array alone was 600 MB."""
    out = np.empty((x.shape[0], grid.size))
    for r in range(x.shape[0]):
        order = np.argsort(x[r], kind="stable")
        counts = np.searchsorted(x[r][order], grid, side="right")
        if weights is None:
            out[r] = counts / x.shape[1]
        else:
            cum = np.concatenate([[0.0], np.cumsum(weights[r][order])])
            out[r] = cum[counts]
    return out


def bbe_human_share(batch: np.ndarray, human: np.ndarray, weights: np.ndarray | None = None, *,
                    n_human: float | None = None, delta: float = DELTA, gamma: float = GAMMA) -> np.ndarray:
    """Best Bin Estimation of the human proportion of ``batch``; rows are bootstrap replicates.

    ``batch`` (R, n_b) and ``human`` (R, n_h) scores (higher = more machine-like), ``weights`` (R, n_h) of
    the human documents (None: equal). Thresholds are quantiles of the pooled human scores.
    """
    b = np.atleast_2d(np.asarray(batch, dtype=float))
    h = np.atleast_2d(np.asarray(human, dtype=float))
    w = np.ones_like(h) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    w = w / w.sum(axis=1, keepdims=True)
    grid = np.quantile(h, _GRID)  # (G,) fixed thresholds across replicates
    q_b, q_h = _below(b, grid), _below(h, grid, w)  # (R, G)
    n_h = h.shape[1] if n_human is None else n_human
    slack = np.sqrt(np.log(4 / delta) / (2 * b.shape[1])) + np.sqrt(np.log(4 / delta) / (2 * n_h))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(q_h > 0, q_b / q_h, np.inf)
        ucb = np.where(q_h > 0, ratio + (1 + gamma) / q_h * slack, np.inf)
    best = np.argmin(ucb, axis=1)
    pi = ratio[np.arange(len(best)), best]
    return np.clip(pi, 0.0, 1.0)


def estimate_from_reference(batch: np.ndarray, human: np.ndarray, *, batch_clusters: np.ndarray | None = None,
                            human_clusters: np.ndarray | None = None, clusters: int = 0, replicates: int = 1000,
                            seed: int = 0, level: float = 0.95, reweight: bool = False) -> ShareEstimate:
    """The synthetic share of the documents behind ``batch`` scores, against the human reference's scores.

    Scores are per-document :func:`machine_score` values; nan scores (texts too short to score) are left
    out and counted in the note. With cluster assignments, a batch on topics the reference barely covers is
    flagged, and with ``reweight`` the reference is also re-weighted to the batch's topics (off by default:
    on the benchmark's sub-domain batches the lost effective sample size cost more than the topic shift).

    >>> rng = np.random.default_rng(0)
    >>> human = rng.normal(0, 1, 400)
    >>> batch = np.r_[rng.normal(0, 1, 210), rng.normal(4, 1, 90)]
    >>> e = estimate_from_reference(batch, human)
    >>> e.low <= 0.3 <= e.high, round(e.estimate, 1)
    (True, 0.3)
    """
    b_all, h_all = np.asarray(batch, dtype=float), np.asarray(human, dtype=float)
    b_ok, h_ok = np.isfinite(b_all), np.isfinite(h_all)
    b, h = b_all[b_ok], h_all[h_ok]
    if b.size < 10:
        return ShareEstimate.unavailable(f"only {b.size} batch document(s) could be scored by the LM; need 10")
    if h.size < 50:
        return ShareEstimate.unavailable(f"the reference has only {h.size} LM-scored documents; rebuild it "
                                         f"with more human text (lm.reference_docs)")
    weights, uncovered, why = None, 0.0, []
    if batch_clusters is not None and human_clusters is not None and clusters:
        weights, uncovered = topic_weights(np.asarray(human_clusters)[h_ok], np.asarray(batch_clusters)[b_ok], clusters)
        if not reweight:
            weights = None
    n_eff = effective_size(weights) if weights is not None else float(h.size)
    rng = np.random.default_rng(seed)
    raw = 1 - float(bbe_human_share(b, h, weights, n_human=n_eff)[0])
    bi = rng.integers(0, b.size, (replicates, b.size))
    hi = rng.integers(0, h.size, (replicates, h.size))
    wb = None if weights is None else weights[hi]
    reps = 1 - bbe_human_share(b[bi], h[hi], wb, n_human=n_eff)
    # Best-bin selection takes a minimum over noisy ratios: the estimate is biased away from 0 (a human batch
    # reads as a little machine text) and from 1. The bootstrap shows the bias, because each replicate selects
    # again: subtract it (bootstrap bias correction), and shift the replicates with it.
    bias = float(reps.mean()) - raw
    point = float(np.clip(raw - bias, 0.0, 1.0))
    tail = (1 - level) / 2
    low, high = (float(np.clip(v, 0.0, 1.0)) for v in np.quantile(reps - 2 * bias, [tail, 1 - tail]))
    # The clipped percentile interval cannot reach a boundary a pure batch sits on: take the larger of its two
    # half-widths on both sides.
    half = max(point - low, high - point)
    low, high = max(0.0, min(low, point - half)), min(1.0, max(high, point + half))
    floor_low, floor_high = wilson_interval(point, int(b.size), level)  # no narrower than n documents can show
    low, high = min(low, floor_low), max(high, floor_high)
    by_method = {METHOD: point, f"{METHOD}-uncorrected": raw}
    if weights is not None:
        unweighted = 1 - float(bbe_human_share(b, h)[0])
        by_method[f"{METHOD}-unweighted"] = unweighted
    excess = human_side_excess(b, h, weights, n_eff)
    topic_ok = n_eff >= MIN_EFFECTIVE and uncovered <= UNCOVERED_SHARE
    if excess > EXCESS_Z:
        why.append(f"more of it is less predictable than the human reference allows (z = {excess:.1f}): "
                   f"text from high-temperature sampling or a weak generator, or human text unlike the reference")
    if n_eff < MIN_EFFECTIVE:
        why.append(f"re-weighted to the batch's topics, the reference has only {n_eff:.0f} effective documents")
    if uncovered > UNCOVERED_SHARE:
        why.append(f"{uncovered:.0%} of the batch is on topics the reference barely covers")
    notes = []
    if why:
        # Nothing in the scores bounds how much of such a batch is machine text: widen to what is known. Off-topic
        # human text can read as machine text (low bound 0); unusually unpredictable text can hide machine text
        # of an unseen kind (high bound 1).
        low, high = (low if topic_ok else 0.0), 1.0
        notes.append("the batch is unlike the human reference (" + "; ".join(why) + "), so the interval is "
                     "widened to what the data allow; if it is human text on other topics, rebuild the reference "
                     "with such text")
    dropped = int((~b_ok).sum())
    if dropped:
        notes.append(f"{dropped} document(s) too short for the LM were left out")
    return ShareEstimate(point, low, high, METHOD, int(b.size), "; ".join(notes), bool(why), float("nan"), by_method)
