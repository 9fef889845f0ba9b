"""Collapse indicators from a finalized :class:`~monitors.profile.TextProfile`.

Diversity depends on sample size (a longer batch shows more distinct words), so every diversity indicator
is computed at a fixed size: distinct-n and rare-type coverage are *rarefied* (Hurlbert 1971): the expected
number of distinct types among ``m`` tokens drawn without replacement from the batch, computed exactly from
the counts. That is the mean distinct-n over random windows of ``m`` n-grams, without the dependence on
where window boundaries fall, so it merges exactly across shards.

Names are stable and dotted by family; MLflow logs them as they are.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable

import numpy as np
from scipy.special import gammaln

from monitors.config import IndicatorSettings
from monitors.profile import MAX_N, TextProfile

NAN = float("nan")
#: Indicators that have a companion ``<name>.ratio`` to the reference's baseline.
COMPARED = (
    "tail.distinct_1",
    "tail.distinct_2",
    "tail.distinct_3",
    "tail.rare_coverage",
    "tail.ref_tail_mass",
    "mode.compression_ratio",
    "length.mean_tokens",
)


def rarefied_presence(counts: np.ndarray, total: int, m: int) -> np.ndarray:
    """Probability that each type (with ``counts`` occurrences among ``total``) appears in ``m`` draws.

    Draws are without replacement: ``1 - C(total - c, m) / C(total, m)``.

    >>> rarefied_presence(np.array([1, 1]), 2, 1).tolist()
    [0.5, 0.5]
    """
    c = np.asarray(counts, dtype=float)
    if m > total:
        raise ValueError(f"cannot rarefy {total} tokens to {m}")
    rest = total - c
    sure = rest < m
    safe = np.where(sure, m, rest)  # keeps gammaln's arguments valid where the type is sure to appear
    log_absent = gammaln(safe + 1) - gammaln(safe - m + 1) - gammaln(total + 1) + gammaln(total - m + 1)
    return np.where(sure, 1.0, -np.expm1(log_absent))


def rarefied_distinct(counter: Counter, m: int) -> float:
    """Expected share of distinct types among ``m`` items drawn from ``counter`` (nan if fewer than m)."""
    total = sum(counter.values())
    if total < m or m <= 0:
        return NAN
    # Group types by their count: a batch has few distinct counts, so this is fast.
    values, multiplicity = np.unique(np.fromiter(counter.values(), dtype=np.int64), return_counts=True)
    return float(np.dot(rarefied_presence(values, total, m), multiplicity) / m)


def tail_types(unigrams: Counter, head_mass: float) -> frozenset[str]:
    """Types outside the smallest set of most frequent types that holds ``head_mass`` of the tokens."""
    total = sum(unigrams.values())
    ordered = sorted(unigrams.items(), key=lambda kv: (-kv[1], kv[0]))
    seen, cut = 0, len(ordered)
    for i, (_, count) in enumerate(ordered):
        seen += count
        if seen >= head_mass * total:
            cut = i + 1
            break
    return frozenset(t for t, _ in ordered[cut:])


def rare_coverage(unigrams: Counter, tail: Iterable[str], m: int) -> float:
    """Expected share of the reference's tail types seen among ``m`` tokens of the batch."""
    tail = list(tail)
    total = sum(unigrams.values())
    if not tail or total < m:
        return NAN
    counts = np.fromiter((unigrams.get(t, 0) for t in tail), dtype=np.int64, count=len(tail))
    return float(rarefied_presence(counts, total, m).mean())


def compression_ratio(texts: Iterable[str], max_bytes: int) -> float:
    """Raw / zlib-compressed size of the first ``max_bytes`` of the texts joined (up = more repetitive)."""
    raw = "\n".join(texts).encode("utf-8")[:max_bytes]
    if not raw:
        return NAN
    return len(raw) / len(zlib.compress(raw, 6))


def compute_indicators(
    profile: TextProfile, settings: IndicatorSettings, tail: frozenset[str] | None = None
) -> dict[str, float]:
    """All indicators of one profile. ``tail`` (the reference's tail types) enables the tail family.

    Values that cannot be computed (a batch too small to rarefy, no tail) are ``nan``, never guessed.
    """
    out: dict[str, float] = {}
    for n in range(1, MAX_N + 1):
        out[f"tail.distinct_{n}"] = rarefied_distinct(profile.ngrams[n - 1], settings.window)
    unigrams = profile.ngrams[0]
    if tail is not None:
        out["tail.rare_coverage"] = rare_coverage(unigrams, tail, settings.coverage_tokens)
        in_tail = sum(c for t, c in unigrams.items() if t in tail)
        out["tail.ref_tail_mass"] = in_tail / profile.tokens if profile.tokens else NAN
    out["mode.compression_ratio"] = compression_ratio((t for _, _, t in profile.sample), settings.compress_bytes)
    out["vintage.after_cutoff_share"] = profile.after_cutoff / profile.docs if profile.docs else NAN
    out["vintage.undated_share"] = profile.undated / profile.docs if profile.docs else NAN
    out["length.mean_tokens"] = profile.tokens / profile.docs if profile.docs else NAN
    return out


def with_ratios(values: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Add ``<name>.ratio`` = value / reference baseline for every compared indicator."""
    out = dict(values)
    for name in COMPARED:
        v, b = values.get(name, NAN), baseline.get(name, NAN)
        out[f"{name}.ratio"] = v / b if b and math.isfinite(b) and math.isfinite(v) else NAN
    return out
