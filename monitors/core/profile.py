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
from collections.abc import Sequence
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
        """A new profile of ``self`` followed by ``later``; neither input is changed (:func:`merge_profiles`)."""
        return merge_profiles([self, later])

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


def merge_profiles(parts: Sequence[BatchProfile], *, consume: bool = False) -> BatchProfile:
    """The profile of ``parts`` one after another, as one pass over all their records would have made it.

    A record whose id is accepted in an earlier part is moved to quarantine (reason ``duplicate_id``); its
    (shard, line) is kept in :attr:`BatchProfile.late_duplicates` so that the caller can write its quarantine
    entry. Each column is concatenated once; with ``consume`` each part's column is dropped as soon as it is
    copied (the parts are then unusable), so merging n records holds about one copy of their columns: merging
    part by part held up to three (144 MB at peak for 1 M records, 52 MB once merged)."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    for p in parts[1:]:
        if (p.sample_size, p.cutoff) != (first.sample_size, first.cutoff):
            raise ValueError(f"cannot merge profiles made with sample size/cutoff {first.sample_size}/{first.cutoff} "
                             f"and {p.sample_size}/{p.cutoff}")
    offsets = np.cumsum([0] + [len(p.cols["accepted"]) for p in parts])
    cols = {}
    for k in COLUMNS:
        cols[k] = np.concatenate([p.cols[k] for p in parts])
        if consume:
            for p in parts:
                del p.cols[k]
    # accepted ids are unique within a part (its reader quarantines repeats): the first accepted one stays
    accepted = np.flatnonzero(cols["accepted"])
    ids = cols["id_hash"][accepted]
    order = np.argsort(ids, kind="stable")  # equal ids in input order: the first of each run is the one kept
    ids = ids[order]
    late_idx = np.sort(accepted[order[1:][ids[1:] == ids[:-1]]])
    del ids, order
    cols["accepted"][late_idx] = False
    cols["text_hash"][late_idx], cols["words"][late_idx] = 0, -1  # as for any record quarantined at ingest
    quarantined: Counter = sum((p.quarantined for p in parts), Counter())
    if late_idx.size:
        quarantined["duplicate_id"] += int(late_idx.size)
    late: list[tuple[int, int]] = []
    samples = []
    bounds = np.searchsorted(late_idx, offsets)
    for j, p in enumerate(parts):
        mine = late_idx[bounds[j]:bounds[j + 1]]
        late += list(p.late_duplicates) + list(zip(cols["shard"][mine].tolist(), cols["line"][mine].tolist()))
        dropped = set(cols["id_hash"][mine].tolist())
        samples.append([x for x in p.sample if x[0] not in dropped] if dropped else p.sample)
    text_column: dict[str, list[str] | None] = {}
    for p in parts:
        text_column = _merge_text_column(text_column, p.text_column)
    return BatchProfile(
        sample_size=first.sample_size, cutoff=first.cutoff, cols=cols,
        sample=heapq.nsmallest(first.sample_size, heapq.merge(*samples)),
        quarantined=quarantined, unparsed=sum(p.unparsed for p in parts), late_duplicates=late,
        quarantine_files=[f for p in parts for f in p.quarantine_files], entries=[e for p in parts for e in p.entries],
        text_column=text_column,
    )


def _merge_text_column(a: dict[str, list[str] | None], b: dict[str, list[str] | None]) -> dict[str, list[str] | None]:
    out = dict(a)
    for file, cols in b.items():
        mine = out.get(file, [])
        out[file] = None if mine is None or cols is None else sorted(set(mine) | set(cols))
    return out


def days(d: date) -> int:
    return (d - EPOCH).days
