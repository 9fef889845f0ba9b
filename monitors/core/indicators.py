"""Collapse indicators from a :class:`~monitors.core.profile.BatchProfile`.

Two kinds: *whole-batch* indicators (counts, length distribution, vintage, exact duplicates, declared
provenance) are exact over every accepted record; *text* indicators (n-gram diversity, entropy, rare-type
coverage, compression, near-duplicates, embeddings) are computed on the profile's fixed-size uniform sample.

Diversity depends on sample size (a longer batch shows more distinct words), so every diversity indicator
is computed at a fixed size: distinct-n and rare-type coverage are *rarefied* (Hurlbert 1971): the expected
number of distinct types among ``m`` tokens drawn without replacement from the batch, computed exactly from
the counts. That is the mean distinct-n over random windows of ``m`` n-grams, without the dependence on
where window boundaries fall, so it merges exactly across shards.

Collapse is also a trend across retrains, so one indicator is compared with the dataset's own previous
check: ``trend.tail.distinct_2_wide.vs_previous`` (see :func:`trend_indicators`).

Names are stable and dotted by family; MLflow logs them as they are.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from monitors.core import embedding as emb_mod
from monitors.core.collapse_sim import self_bleu
from monitors.config import IndicatorSettings
from monitors.core.neardup import near_duplicate_share
from monitors.core.profile import NO_DAY, PROVENANCE, BatchProfile, days
from monitors.core.text import words

MAX_N = 3
#: bigrams per window of ``tail.distinct_2_wide``: wide enough to see the rare bigrams that a refit on its own
#: samples loses first (benchmarks/lead_time_study.py: at 1,000 they barely move; at 10,000, 15,000 and 20,000
#: the step from one check to the next separates replace from accumulate, better the wider; 15,000 still fits
#: in the 300 documents of a typical batch, ~22,000 words of Austen).
WIDE_WINDOW = 15_000
#: tokens per window of ``tail.hapax_share`` and documents of ``mode.self_bleu`` (both depend on size).
HAPAX_TOKENS = 10_000
SELF_BLEU_DOCS = 100
#: Indicators compared with the dataset's previous check (``trend.<name>.vs_previous``).
TRENDED = ("tail.distinct_2_wide",)

NAN = float("nan")
#: Indicators that have a companion ``<name>.ratio`` to the reference's baseline.
COMPARED = (
    "tail.distinct_1",
    "tail.distinct_2",
    "tail.distinct_3",
    "tail.distinct_2_wide",
    "tail.hapax_share",
    "tail.entropy_1",
    "tail.entropy_2",
    "tail.rare_coverage",
    "tail.ref_tail_mass",
    "mode.compression_ratio",
    "mode.near_duplicate_share",
    "mode.self_bleu",
    "mode.embedding_dispersion",
    "mode.cluster_entropy",
    "drift.cluster_js",
    "length.mean_words",
    "length.cv_words",
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


def rarefied_hapax(counter: Counter, m: int) -> float:
    """Expected number of types seen exactly once among ``m`` tokens drawn (without replacement) from
    ``counter``, over the expected number of types seen: the hapax share at a fixed size (Gambetta et al. 2024
    track its fall under recursive training). nan if fewer than ``m`` tokens.

    >>> rarefied_hapax(Counter({"a": 1, "b": 1}), 2)
    1.0
    """
    total = sum(counter.values())
    if total < m or m <= 0:
        return NAN
    values, multiplicity = np.unique(np.fromiter(counter.values(), dtype=np.int64), return_counts=True)
    c = values.astype(float)
    rest = total - c
    # P(exactly one) = c * C(total - c, m - 1) / C(total, m); zero when fewer than m - 1 other tokens remain
    possible = rest >= m - 1
    safe = np.where(possible, rest, m - 1)
    log_one = (np.log(c) + gammaln(safe + 1) - gammaln(m) - gammaln(safe - m + 2)
               - gammaln(total + 1) + gammaln(m + 1) + gammaln(total - m + 1))
    once = np.where(possible, np.exp(log_one), 0.0)
    seen = rarefied_presence(values, total, m)
    return float(np.dot(once, multiplicity) / np.dot(seen, multiplicity))


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


@dataclass(frozen=True)
class Anchors:
    """What the reference lends a batch's indicators: its tail types, embedding and cluster occupancy."""

    tail: frozenset[str]
    embedding: emb_mod.HashedEmbedding | None = None
    occupancy: np.ndarray | None = None


def ngram_counts(token_lists: list[list[str]]) -> tuple[Counter, ...]:
    """n-gram counts (n = 1..3) within documents."""
    counts = tuple(Counter() for _ in range(MAX_N))
    for toks in token_lists:
        for n in range(1, MAX_N + 1):
            counts[n - 1].update(toks if n == 1 else zip(*(toks[i:] for i in range(n))))
    return counts


def windowed_entropy(token_lists: list[list[str]], n: int, window: int) -> float:
    """Mean plug-in entropy (bits) of n-grams over consecutive windows of ``window`` n-grams.

    Fixed windows make it independent of batch length; nan when there is not one full window.
    """
    ids: dict = {}
    seq = [ids.setdefault(g, len(ids)) for toks in token_lists
           for g in (toks if n == 1 else zip(*(toks[i:] for i in range(n))))]
    full = len(seq) // window
    if full == 0:
        return NAN
    arr = np.asarray(seq[: full * window], dtype=np.int64).reshape(full, window)
    arr.sort(axis=1)
    ent = []
    for row in arr:
        _, c = np.unique(row, return_counts=True)
        p = c / window
        ent.append(-(p * np.log2(p)).sum())
    return float(np.mean(ent))


def text_indicators(texts: list[str], settings: IndicatorSettings, anchors: Anchors | None = None,
                    self_bleu_too: bool = True) -> dict[str, float]:
    """Indicators of the sample's texts; ``anchors`` (from the reference) enables coverage and embeddings.

    Values that cannot be computed (too few tokens for a window, no reference) are ``nan``, never guessed.
    ``self_bleu_too=False`` leaves out ``mode.self_bleu`` (70 ms a call: the reference's bands skip it).
    """
    token_lists = [words(t) for t in texts]
    grams = ngram_counts(token_lists)
    out: dict[str, float] = {}
    for n in range(1, MAX_N + 1):
        out[f"tail.distinct_{n}"] = rarefied_distinct(grams[n - 1], settings.window)
    out["tail.distinct_2_wide"] = rarefied_distinct(grams[1], WIDE_WINDOW)
    out["tail.hapax_share"] = rarefied_hapax(grams[0], HAPAX_TOKENS)
    for n in (1, 2):
        out[f"tail.entropy_{n}"] = windowed_entropy(token_lists, n, settings.window)
    unigrams = grams[0]
    tokens = sum(unigrams.values())
    if anchors is not None:
        out["tail.rare_coverage"] = rare_coverage(unigrams, anchors.tail, settings.coverage_tokens)
        in_tail = sum(c for t, c in unigrams.items() if t in anchors.tail)
        out["tail.ref_tail_mass"] = in_tail / tokens if tokens else NAN
    out["mode.compression_ratio"] = compression_ratio(texts, settings.compress_bytes)
    out["mode.near_duplicate_share"] = near_duplicate_share(texts, settings.near_duplicate_jaccard)
    # Self-BLEU-4 (Zhu et al. 2018; Guo et al. 2023) on the sample's first documents (a uniform sample: the
    # profile's bottom-k by id hash); a fixed number of them, since it grows with the number of references.
    if self_bleu_too:
        out["mode.self_bleu"] = self_bleu(token_lists[:SELF_BLEU_DOCS]) if len(token_lists) >= SELF_BLEU_DOCS else NAN
    if anchors is not None and anchors.embedding is not None:
        vectors = anchors.embedding.transform(texts)
        out["mode.embedding_dispersion"] = emb_mod.dispersion(vectors)
        occ = emb_mod.occupancy(anchors.embedding.assign(vectors), len(anchors.embedding.centroids_))
        out["mode.cluster_entropy"] = emb_mod.normalized_entropy(occ) if len(texts) else NAN
        out["drift.cluster_js"] = emb_mod.js_divergence(occ, anchors.occupancy) if anchors.occupancy is not None else NAN
    return out


def _quantiles(x: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.percentile(x, [10, 50, 90])) if len(x) else (NAN, NAN, NAN)


def batch_indicators(profile: BatchProfile) -> dict[str, float]:
    """Exact indicators over every accepted record of the batch."""
    n = profile.records
    w = profile.accepted("words").astype(float)
    chars = profile.accepted("text_chars").astype(float)
    day = profile.accepted("day")
    prov = profile.accepted("provenance")
    dated = day != NO_DAY
    p10, p50, p90 = _quantiles(w)
    share = (lambda k: k / n) if n else (lambda k: NAN)
    out = {
        "batch.records": float(n),
        "batch.quarantined": float(profile.quarantined_total),
        "length.mean_words": float(w.mean()) if n else NAN,
        "length.cv_words": float(w.std() / w.mean()) if n and w.mean() > 0 else NAN,
        "length.p10_words": p10, "length.median_words": p50, "length.p90_words": p90,
        "length.mean_chars": float(chars.mean()) if n else NAN,
        "vintage.after_cutoff_share": share(int((day[dated] >= days(profile.cutoff)).sum())),
        "vintage.undated_share": share(int((~dated).sum())),
        "mode.exact_duplicate_share": share(n - len(np.unique(profile.accepted("text_hash")))),
    }
    for code, name in enumerate(PROVENANCE):
        out[f"provenance.declared_{name}_share"] = share(int((prov == code).sum()))
    return out


def compute_indicators(profile: BatchProfile, settings: IndicatorSettings, anchors: Anchors | None = None) -> dict[str, float]:
    """Every indicator of one batch: whole-batch ones, then the sample's text indicators."""
    return {**batch_indicators(profile), **text_indicators(profile.sample_texts, settings, anchors)}


def trend_indicators(values: dict[str, float], previous: dict[str, float]) -> dict[str, float]:
    """``trend.<name>.vs_previous`` = this check's value / the dataset's previous check's, for each indicator in
    :data:`TRENDED` (nan on a first check, or when either value is missing).

    Collapse is a trend across retrains: a model refit on its own samples (``replace``) loses a share of its rare
    bigrams at every generation, while one that keeps its human data (``accumulate``) stays nearly flat. At 300
    documents per batch the step separates them where no level does (benchmarks/lead_time_study.py)."""
    out = {}
    for name in TRENDED:
        v, p = values.get(name, NAN), previous.get(name, NAN)
        ok = v is not None and p is not None and math.isfinite(v) and math.isfinite(p) and p > 0
        out[f"trend.{name}.vs_previous"] = v / p if ok else NAN
    return out


def with_ratios(values: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Add ``<name>.ratio`` = value / reference baseline for every compared indicator."""
    out = dict(values)
    for name in COMPARED:
        v, b = values.get(name, NAN), baseline.get(name, NAN)
        out[f"{name}.ratio"] = v / b if b and math.isfinite(b) and math.isfinite(v) else NAN
    return out
