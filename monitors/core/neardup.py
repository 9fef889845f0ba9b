"""Near-duplicate rate by MinHash with banded LSH, on the fixed-size sample.

Each document is a set of word 3-shingles; 64 MinHash values estimate the Jaccard similarity of two sets
with a standard error of about ``sqrt(J(1-J)/64)`` (at most 0.06). 16 bands of 4 rows propose candidate
pairs (a pair with Jaccard 0.7 is proposed with probability 0.998); candidates are kept when their
estimated Jaccard reaches the threshold.
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from monitors.core.text import words

PERMUTATIONS, BANDS = 64, 16
_PRIME = np.uint64((1 << 61) - 1)
_rng = np.random.default_rng(20240101)
_A = _rng.integers(1, 1 << 31, PERMUTATIONS, dtype=np.uint64)
_B = _rng.integers(0, 1 << 31, PERMUTATIONS, dtype=np.uint64)


def shingles(text: str, k: int = 3) -> np.ndarray:
    toks = words(text)
    grams = [" ".join(toks[i:i + k]) for i in range(max(len(toks) - k + 1, 1))] if toks else []
    return np.fromiter((zlib.crc32(g.encode("utf-8")) & 0x7FFFFFFF for g in grams), dtype=np.uint64, count=len(grams))


def signatures(texts: list[str]) -> np.ndarray:
    """One row of MinHash values per text (a text without words gets all-max, matching nothing)."""
    out = np.full((len(texts), PERMUTATIONS), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i, text in enumerate(texts):
        x = shingles(text)
        if len(x):
            out[i] = ((_A[:, None] * x[None, :] + _B[:, None]) % _PRIME).min(axis=1)
    return out


def near_duplicate_share(texts: list[str], threshold: float) -> float:
    """Share of documents that have at least one near-duplicate (estimated Jaccard >= threshold) among the others."""
    n = len(texts)
    if n < 2:
        return float("nan")
    sig = signatures(texts)
    rows = PERMUTATIONS // BANDS
    empty = np.iinfo(np.uint64).max
    has_dup = np.zeros(n, dtype=bool)
    for b in range(BANDS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        part = sig[:, b * rows:(b + 1) * rows]
        for i in range(n):
            if part[i, 0] != empty:
                buckets[part[i].tobytes()].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            m = np.asarray(members)
            sims = (sig[m][:, None, :] == sig[m][None, :, :]).mean(axis=2)
            np.fill_diagonal(sims, 0.0)
            has_dup[m[(sims >= threshold).any(axis=1)]] = True
    return float(has_dup.mean())
