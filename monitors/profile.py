"""Mergeable partial profiles of a batch of documents.

A :class:`TextProfile` is computed per shard and merged exactly: counters add, the fixed-size sample is a
bottom-k sample by a hash of the document id (the union of two bottom-k samples, cut to k, is the bottom-k
sample of the union). ``merge(profile(a), profile(b)) == profile(a + b)`` holds exactly, which is what
lets a large batch be split over processes or Dask workers.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from monitors.text import words

MAX_N = 3


def id_hash(doc_id: str) -> int:
    """A stable 64-bit hash of a document id (the same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass
class TextProfile:
    """Counts and a bottom-k sample of a set of documents; finalize with :mod:`monitors.indicators`."""

    sample_size: int
    docs: int = 0
    tokens: int = 0
    ngrams: tuple[Counter, ...] = field(default_factory=lambda: tuple(Counter() for _ in range(MAX_N)))
    dated: int = 0
    after_cutoff: int = 0
    # (id hash, id, text) of the sample_size documents with the smallest id hash, kept sorted.
    sample: list[tuple[int, str, str]] = field(default_factory=list)

    def merge(self, other: TextProfile) -> TextProfile:
        """A new profile of both inputs; neither input is changed."""
        if other.sample_size != self.sample_size:
            raise ValueError(f"cannot merge profiles with sample sizes {self.sample_size} and {other.sample_size}")
        return TextProfile(
            sample_size=self.sample_size,
            docs=self.docs + other.docs,
            tokens=self.tokens + other.tokens,
            ngrams=tuple(a + b for a, b in zip(self.ngrams, other.ngrams)),
            dated=self.dated + other.dated,
            after_cutoff=self.after_cutoff + other.after_cutoff,
            sample=heapq.nsmallest(self.sample_size, heapq.merge(self.sample, other.sample)),
        )

    @property
    def undated(self) -> int:
        return self.docs - self.dated


def profile_documents(
    ids: Iterable[str],
    texts: Iterable[str],
    created: Iterable[date | None],
    *,
    cutoff: date,
    sample_size: int,
) -> TextProfile:
    """Profile one shard: n-gram counts (n = 1..3, within documents), vintage counts, a bottom-k sample.

    >>> p = profile_documents(["a"], ["the cat sat"], [None], cutoff=date(2024, 1, 1), sample_size=10)
    >>> p.docs, p.tokens, p.undated, len(p.ngrams[1])
    (1, 3, 1, 2)
    """
    prof = TextProfile(sample_size=sample_size)
    keyed = []
    for doc_id, text, when in zip(ids, texts, created, strict=True):
        toks = words(text)
        prof.docs += 1
        prof.tokens += len(toks)
        for n in range(1, MAX_N + 1):
            prof.ngrams[n - 1].update(toks if n == 1 else zip(*(toks[i:] for i in range(n))))
        if when is not None:
            prof.dated += 1
            prof.after_cutoff += when >= cutoff
        keyed.append((id_hash(doc_id), doc_id, text))
    prof.sample = heapq.nsmallest(sample_size, keyed)
    return prof
