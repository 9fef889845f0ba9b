"""Mergeable partial profiles of a batch.

A :class:`BatchProfile` is computed per shard and merged in shard order. It holds

* a few numbers per record (id and text hashes, length, date, provenance, character sanity), about 45
  bytes each: whole-batch indicators (length, vintage, exact duplicates) and the record-quality suite are
  computed from these exactly; the texts themselves are never kept;
* a **bottom-k sample** of the accepted documents (the ``sample_size`` smallest 64-bit id hashes, with their
  text): a uniform random sample that merges exactly, because the bottom-k of a union is the bottom-k of
  the parts' bottom-k. Every text indicator (n-grams, entropy, near-duplicates, embeddings, drift) is
  computed on it, at a fixed size, which is both what removes the length bias and what keeps the cost of a
  batch of 10 M documents that of a few thousand.

``merge(profile(a), profile(b))`` equals ``profile(a + b)``: arrays concatenate, counters add, samples
merge. An id seen in an earlier part is quarantined in the later one, as a single pass would have done
(see :meth:`BatchProfile.merge`).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import numpy as np

#: Per-record columns and their dtypes. ``line`` is the line (or row) number within its shard.
COLUMNS = {
    "id_hash": np.uint64, "has_id": np.bool_, "text_chars": np.int64, "words": np.int32, "text_hash": np.uint64,
    "day": np.int32, "date_state": np.int8, "provenance": np.int8, "bad_chars": np.float32,
    "accepted": np.bool_, "shard": np.int32, "line": np.int64,
}
NO_DAY = np.iinfo(np.int32).min
DATE_ABSENT, DATE_BAD, DATE_OK = -1, 0, 1
PROVENANCE = ("human", "synthetic", "unknown")
PROV_ABSENT, PROV_OTHER = -1, len(PROVENANCE)
EPOCH = date(1970, 1, 1)


def stable_hash(text: str) -> int:
    """A stable 64-bit hash (the same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")



def _empty_columns() -> dict[str, np.ndarray]:
    return {k: np.empty(0, dtype=t) for k, t in COLUMNS.items()}


@dataclass
class BatchProfile:
    """What one shard (or, merged, one batch) looked like; finalize with :mod:`monitors.core.indicators`."""

    sample_size: int
    cutoff: date
    cols: dict[str, np.ndarray] = field(default_factory=_empty_columns)
    #: (id hash, id, text) of the accepted documents with the smallest id hashes, sorted, at most sample_size.
    sample: list[tuple[int, str, str]] = field(default_factory=list)
    #: Records that were quarantined, by reason kind (the entries themselves are in quarantine files).
    quarantined: Counter = field(default_factory=Counter)
    #: Rows that could not be parsed at all (they have no per-record columns).
    unparsed: int = 0
    #: (shard, line) of accepted records whose id an earlier part already had; see :meth:`merge`.
    late_duplicates: list[tuple[int, int]] = field(default_factory=list)
    quarantine_files: list[str] = field(default_factory=list)
    #: Quarantine entries kept in memory (when the reader was given no folder to write them to).
    entries: list[dict] = field(default_factory=list)
    #: Per file with a parsed record: None when some record has the text column, else the columns found.
    text_column: dict[str, list[str] | None] = field(default_factory=dict)

    # -- merging ---------------------------------------------------------------------------
    def merge(self, later: BatchProfile) -> BatchProfile:
        """A new profile of ``self`` followed by ``later``; neither input is changed.

        A record of ``later`` whose id is accepted in ``self`` is moved to quarantine (reason
        ``duplicate_id``), as one pass over both would have done; its (shard, line) is kept in
        :attr:`late_duplicates` so that the caller can write its quarantine entry.
        """
        if (later.sample_size, later.cutoff) != (self.sample_size, self.cutoff):
            raise ValueError(f"cannot merge profiles made with sample size/cutoff {self.sample_size}/{self.cutoff} "
                             f"and {later.sample_size}/{later.cutoff}")
        cols = {k: np.concatenate([self.cols[k], later.cols[k]]) for k in COLUMNS}
        late = list(self.late_duplicates) + list(later.late_duplicates)
        quarantined = self.quarantined + later.quarantined
        mine = self.cols["id_hash"][self.cols["accepted"]]
        theirs = later.cols["accepted"] & np.isin(later.cols["id_hash"], mine)
        dropped_hashes: set[int] = set()
        if theirs.any():
            offset = len(self.cols["accepted"])
            idx = np.flatnonzero(theirs) + offset
            cols["accepted"][idx] = False
            cols["text_hash"][idx], cols["words"][idx] = 0, -1  # as for any record quarantined at ingest
            late += list(zip(cols["shard"][idx].tolist(), cols["line"][idx].tolist()))
            quarantined["duplicate_id"] += len(idx)
            dropped_hashes = set(later.cols["id_hash"][theirs].tolist())
        their_sample = [s for s in later.sample if s[0] not in dropped_hashes]
        return BatchProfile(
            sample_size=self.sample_size, cutoff=self.cutoff, cols=cols,
            sample=heapq.nsmallest(self.sample_size, heapq.merge(self.sample, their_sample)),
            quarantined=quarantined, unparsed=self.unparsed + later.unparsed, late_duplicates=late,
            quarantine_files=self.quarantine_files + later.quarantine_files, entries=self.entries + later.entries,
            text_column=_merge_text_column(self.text_column, later.text_column),
        )

    # -- what finalizing needs ------------------------------------------------------------------
    @property
    def records(self) -> int:
        """Accepted records."""
        return int(self.cols["accepted"].sum())

    @property
    def quarantined_total(self) -> int:
        return int(sum(self.quarantined.values()))

    def accepted(self, column: str) -> np.ndarray:
        return self.cols[column][self.cols["accepted"]]

    def late_duplicates_by_shard(self) -> dict[int, frozenset[int]]:
        """The lines of :attr:`late_duplicates`, by shard index."""
        by_shard: dict[int, set[int]] = {}
        for shard, line in self.late_duplicates:
            by_shard.setdefault(shard, set()).add(line)
        return {shard: frozenset(lines) for shard, lines in by_shard.items()}

    @property
    def sample_texts(self) -> list[str]:
        return [t for _, _, t in self.sample]

    def declared(self) -> tuple[int, int, int]:
        """Accepted records that declare themselves (human, synthetic), and the undeclared rest
        (no provenance, or ``unknown``)."""
        prov = self.accepted("provenance")
        human, synthetic = int((prov == 0).sum()), int((prov == 1).sum())
        return human, synthetic, len(prov) - human - synthetic

    def undeclared_sample_texts(self) -> list[str]:
        """Texts of the sample whose records do not declare a provenance (what the detector must judge).

        Accepted ids are unique, so each sampled id hash finds exactly its own record.
        """
        hashes, prov = self.accepted("id_hash"), self.accepted("provenance")
        order = np.argsort(hashes)
        wanted = np.fromiter((h for h, _, _ in self.sample), dtype=np.uint64, count=len(self.sample))
        codes = prov[order][np.searchsorted(hashes[order], wanted)] if len(wanted) else np.empty(0, np.int8)
        return [t for (_, _, t), c in zip(self.sample, codes) if c not in (0, 1)]


def _merge_text_column(a: dict[str, list[str] | None], b: dict[str, list[str] | None]) -> dict[str, list[str] | None]:
    out = dict(a)
    for file, cols in b.items():
        mine = out.get(file, [])
        out[file] = None if mine is None or cols is None else sorted(set(mine) | set(cols))
    return out


def days(d: date) -> int:
    return (d - EPOCH).days
