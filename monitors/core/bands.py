"""Alert bands fitted on the reference's own variability, at the batch's size.

A p-value says only that two large samples differ, which they always do. What matters is whether a batch
is further from the reference than independent human batches *of the same size* are. So the reference's
held-out documents are cut into pseudo-batches at a ladder of sizes (random subsets, several replicates
each); every indicator's mean and standard deviation at each size form its band, and a batch's
``<name>.z = (value - mean) / sd`` is compared with ``k`` in the rule suite (a k-sigma band).

Subsets of a finite held-out set overlap, which shrinks their spread; the finite-population correction
``sd / sqrt((H - n) / (H - 1))`` undoes that. Beyond the largest size the spread is scaled by
``sqrt(n_max / n)`` (the rate of a mean), and the mean of the largest size is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Band = dict[str, tuple[float, float]]  # indicator -> (mean, sd)
LADDER = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800)
MIN_SD_REL = 0.01  # a band is never narrower than 1 % of its mean: a z of 40 on a constant helps nobody


def ladder(holdout: int, sample_size: int) -> list[int]:
    """Pseudo-batch sizes: up to half the held-out documents and at most the sample size (text indicators
    see at most ``sample_size`` documents, so larger batches look like that size)."""
    top = min(holdout // 2, sample_size)
    sizes = [s for s in LADDER if s < top]
    return sizes + [top] if top >= LADDER[0] else sizes


def fit_bands(
    n_docs: int, sizes: Sequence[int], replicates: int, measure: Callable[[np.ndarray], dict[str, float]], seed: int = 0,
    tick: Callable[[int, int], None] = lambda done, total: None,
) -> dict[int, Band]:
    """Mean and FPC-corrected sd of every indicator ``measure`` returns on random subsets of ``n_docs`` items.

    ``measure`` gets the indices of one pseudo-batch; ``tick(done, total)`` is told after each one.
    """
    rng = np.random.default_rng(seed)
    out: dict[int, Band] = {}
    total = len(sizes) * replicates
    for k, size in enumerate(sizes):
        runs = []
        for r in range(replicates):
            runs.append(measure(np.sort(rng.choice(n_docs, size, replace=False))))
            tick(k * replicates + r + 1, total)
        fpc = math.sqrt((n_docs - size) / (n_docs - 1)) if n_docs > 1 else 1.0
        band: Band = {}
        for name in runs[0]:
            vals = np.array([r.get(name, math.nan) for r in runs], dtype=float)
            vals = vals[np.isfinite(vals)]
            if len(vals) >= 2:
                band[name] = (float(vals.mean()), float(vals.std(ddof=1) / fpc))
        out[size] = band
    return out


def band_at(bands: dict[int, Band], n: int) -> Band:
    """The band for a batch of ``n`` documents, per indicator: the nearest size (in log scale) at which that
    indicator was fitted, with its spread scaled by ``sqrt(top / n)`` beyond its largest fitted size."""
    if not bands or n <= 0:
        return {}
    names = {k for b in bands.values() for k in b}
    out: Band = {}
    for name in sorted(names):
        sizes = sorted(s for s, b in bands.items() if name in b)
        top = sizes[-1]
        if n >= top:
            mean, sd = bands[top][name]
            out[name] = (mean, sd * math.sqrt(top / n))
        else:
            out[name] = bands[min(sizes, key=lambda s: abs(math.log(s) - math.log(n)))][name]
    return out


def z_scores(values: dict[str, float], band: Band) -> dict[str, float]:
    """``<name>.z`` for every indicator that has a band and a finite value."""
    out = {}
    for name, (mean, sd) in band.items():
        v = values.get(name, math.nan)
        if not math.isfinite(v):
            continue
        sd = max(sd, MIN_SD_REL * abs(mean), 1e-9)
        out[f"{name}.z"] = (v - mean) / sd
    return out
