"""Read a batch into a :class:`~monitors.core.profile.BatchProfile`, quarantining what cannot be used.

Nothing a user sent is dropped silently: each unusable record becomes a quarantine entry (JSONL: file,
line or row, reason, the record's first bytes) and is counted by reason. Shards are read one row at a time
and can be profiled in separate processes (:func:`profile_input` takes the ``map`` to use), so memory
does not grow with the texts of a batch.

Reasons: ``unparseable`` (invalid UTF-8 or Unicode, bad JSON, not an object, or any error while reading the
record), ``missing_text``, ``text_not_string``, ``empty_text``, ``oversize_text`` (also a JSONL line too long
to read), ``binary_text``, ``markup``, ``bad_date``, ``bad_provenance``, ``duplicate_id``; and ``unreadable_file``, one
entry for a whole file of a several-file batch that cannot be read at all (see :func:`profile_shard`). Every record is
counted; the quarantine file keeps the first ``ingest.quarantine_entries_per_reason`` entries of each reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from monitors.adapters import sources
from monitors.adapters.files import atomic_writer
from monitors.config import ENV_PREFIX, Columns, IngestSettings
from monitors.core.errors import InputError
from monitors.core.profile import (
    COLUMNS, DATE_ABSENT, DATE_BAD, DATE_OK, NO_DAY, PROV_ABSENT, PROV_OTHER, PROVENANCE, BatchProfile, days,
    merge_profiles, stable_hash,
)

SHOWN_BYTES = 500
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_MARKUP = re.compile(r"<\s*(script|iframe|object|embed)\b|javascript\s*:", re.IGNORECASE)
_PROV_CODE = {p: i for i, p in enumerate(PROVENANCE)}


@dataclass(frozen=True)
class ReadOptions:
    """Everything a shard reader needs, picklable for worker processes."""

    columns: Columns
    ingest: IngestSettings
    sample_size: int
    cutoff: date
    quarantine_dir: str | None = None  # None: entries are kept on the profile (small in-memory batches)
    shown_bytes: int = SHOWN_BYTES  # how much of a quarantined record its entry keeps (the filter keeps it whole)
    keep_every_entry: bool = False  # the filter's quarantine keeps every record, not the first N per reason

    @property
    def per_reason(self) -> int | None:
        """Entries kept per reason (None: all)."""
        return None if self.keep_every_entry else self.ingest.quarantine_entries_per_reason


def parse_date(value: Any) -> date | None:
    """``None`` for no date; raises ValueError for one that cannot be read."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bool):
        raise ValueError(f"created_at {value!r} is not a date")
    if isinstance(value, (int, float)):  # epoch seconds
        return datetime.fromtimestamp(value, tz=timezone.utc).date()
    text = str(value).strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError(f"created_at {text[:40]!r} is not an ISO 8601 date") from None


class _Sink:
    """Quarantine entries of one shard, at most ``per_kind`` of each kind: to a part file, or kept in memory."""

    def __init__(self, shard: sources.Shard | None, folder: str | None, per_kind: int | None = None,
                 shown_bytes: int = SHOWN_BYTES):
        self.shard, self.folder, self.per_kind, self.shown_bytes = shard, folder, per_kind, shown_bytes
        self.entries: list[dict[str, Any]] = []
        self.path: str | None = None
        self.kept: Counter = Counter()
        self._fh = None
        self._line_offset: int | None = None

    def add(self, file: str, line: int, kind: str, reason: str, raw: bytes) -> None:
        if self.per_kind is not None and self.kept[kind] >= self.per_kind:
            return  # counted by the caller; the file keeps the first entries of each kind
        self.kept[kind] += 1
        if self._line_offset is None:  # counted once, and only when a shard has something to quarantine
            self._line_offset = sources.lines_before(self.shard) if self.shard and self.shard.fmt == "jsonl" else 0
        entry = quarantine_entry(file, line + self._line_offset, reason, raw, kind, self.shown_bytes)
        if self.folder is None:
            self.entries.append(entry)
            return
        if self._fh is None:
            index = self.shard.index if self.shard else 0
            self.path = str(Path(self.folder) / f"part-{index:06d}.jsonl")
            self._fh = open(self.path, "w", encoding="utf-8")
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def quarantine_entry(file: str, line: int, reason: str, raw: bytes, kind: str = "",
                     shown_bytes: int = SHOWN_BYTES) -> dict[str, Any]:
    return {"file": file, "line": line, "kind": kind, "reason": reason,
            "record": raw[:shown_bytes].decode("utf-8", errors="replace"), "truncated": len(raw) > shown_bytes}


@dataclass
class _Record:
    """What profiling keeps of one parsed record, and why it is quarantined (kind None: it is not)."""

    raw_id: Any
    doc_id: str
    id_hash: int
    text: Any
    n_chars: int
    bad: float
    when: date | None
    date_state: int
    prov_code: int
    kind: str | None
    reason: str | None


def _examine(obj: dict[str, Any], cols: Columns, ing: IngestSettings, file: str, where: int) -> _Record:
    """Read one record's fields and decide whether it is usable (a duplicate id is decided by the caller).

    A record without an id gets one made of its file's full path and where it starts in the file (a JSONL
    line's byte offset, a row number): unique in the batch however the files are named or cut into shards."""
    raw_id = obj.get(cols.id)
    doc_id = f"{file}@{where}" if raw_id is None else str(raw_id)
    text = obj.get(cols.text)
    when, date_state, date_problem = None, DATE_ABSENT, ""
    try:
        when = parse_date(obj.get(cols.created_at))
        date_state = DATE_ABSENT if when is None else DATE_OK
    except (ValueError, OverflowError, OSError) as exc:
        date_state, date_problem = DATE_BAD, str(exc)
    prov = obj.get(cols.provenance)
    prov_code = PROV_ABSENT if prov is None else _PROV_CODE.get(prov, PROV_OTHER) if isinstance(prov, str) else PROV_OTHER
    is_str = isinstance(text, str)
    n_chars = len(text) if is_str else -1
    # The length check comes before any scan of the characters: an oversize text is never scanned.
    scan = is_str and 0 < n_chars <= ing.max_text_chars
    bad = len(_BAD_CHARS.findall(text)) / n_chars if scan else float("nan")

    if text is None:
        kind, reason = "missing_text", f"missing text (column {cols.text!r})"
    elif not is_str:
        kind, reason = "text_not_string", f"text is a {type(text).__name__}, not a string"
    elif n_chars > ing.max_text_chars:
        kind, reason = "oversize_text", f"text has {n_chars} characters, over ingest.max_text_chars={ing.max_text_chars}"
    elif not text.strip():
        kind, reason = "empty_text", "empty text"
    elif bad > ing.max_bad_char_share:
        kind, reason = "binary_text", (f"{bad:.0%} of the text is control or replacement characters "
                                       f"(over ingest.max_bad_char_share={ing.max_bad_char_share}): binary junk?")
    elif ing.quarantine_markup and (m := _MARKUP.search(text)):
        kind, reason = "markup", (f"text contains active HTML/JS markup ({m.group(0)!r}); extraction junk? "
                                  f"(set ingest.quarantine_markup=false to accept it)")
    elif date_state == DATE_BAD:
        kind, reason = "bad_date", date_problem
    elif prov_code == PROV_OTHER:
        kind, reason = "bad_provenance", f"provenance {str(prov)[:40]!r} is not one of {list(PROVENANCE)}"
    else:
        kind = reason = None
    return _Record(raw_id, doc_id, stable_hash(doc_id), text, n_chars, bad, when, date_state, prov_code, kind, reason)


class Verdict(NamedTuple):
    """One row's fate: ``rec`` is set for a parsed record; ``kind`` (and ``reason``) when it is quarantined."""

    row: sources.Row
    rec: _Record | None
    kind: str | None
    reason: str | None


def examine_rows(rows: Iterable[sources.Row], opts: ReadOptions, file: str) -> Iterator[Verdict]:
    """Each row with whether it is usable: THE one place that decides what is quarantined (a profile and the
    filter both read a batch through it, so they agree record for record). Ids repeated within these rows
    are ``duplicate_id``; one repeated across shards is decided when the shards' profiles merge."""
    cols, ing = opts.columns, opts.ingest
    seen: set[int] = set()
    for row in map(sources.Row._make, rows):
        problem = row.problem
        if problem is None:
            try:
                rec = _examine(row.obj, cols, ing, file, row.start)
            except Exception as exc:  # noqa: BLE001 - one record never kills a batch
                problem = f"could not be read: {type(exc).__name__}: {str(exc)[:200]}"
        if problem is not None:
            if problem.startswith(sources.OVERSIZE_LINE):
                yield Verdict(row, None, "oversize_text", f"{problem}: over ingest.max_text_chars={ing.max_text_chars} "
                                                          "plus room for the other fields")
            else:
                yield Verdict(row, None, "unparseable", problem)
            continue
        kind, reason = rec.kind, rec.reason
        if kind is None and rec.id_hash in seen:
            kind, reason = "duplicate_id", f"duplicate id {rec.doc_id[:80]!r}"
        if kind is None:
            seen.add(rec.id_hash)
        yield Verdict(row, rec, kind, reason)


def profile_rows(rows: Iterable[sources.Row], opts: ReadOptions, *, file: str, shard_index: int = 0,
                 sink: _Sink | None = None) -> BatchProfile:
    """Validate rows (:func:`examine_rows`) and fold them into a profile."""
    import heapq

    cols = opts.columns
    sink = sink or _Sink(None, None, opts.per_reason, opts.shown_bytes)
    out: dict[str, list] = {k: [] for k in COLUMNS}
    quarantined: Counter = Counter()
    unparsed = 0
    heap: list[tuple[int, str, str]] = []  # max-heap by negated hash: the sample_size smallest hashes

    columns: set[str] | None = set()  # the columns found, while no record has the text column (None: one has)
    parsed = False
    for (lineno, obj, problem, raw, _), rec, kind, reason in examine_rows(rows, opts, file):
        if problem is None:
            parsed = True
            if columns is not None:
                columns = None if cols.text in obj else (columns | set(obj) if len(columns) < 100 else columns)
        if rec is None:
            unparsed += 1
            quarantined[kind] += 1
            sink.add(file, lineno, kind, reason, raw)
            continue
        accepted = kind is None
        h = rec.id_hash
        if accepted:
            item = (-h, rec.doc_id, rec.text)
            if len(heap) < opts.sample_size:
                heapq.heappush(heap, item)
            elif -h > heap[0][0]:
                heapq.heapreplace(heap, item)
        else:
            quarantined[kind] += 1
            sink.add(file, lineno, kind, reason, raw)
        out["id_hash"].append(h)
        out["has_id"].append(rec.raw_id is not None)
        out["text_chars"].append(rec.n_chars)
        out["words"].append(len(rec.text.split()) if accepted else -1)
        out["text_hash"].append(stable_hash(rec.text) if accepted else 0)
        out["day"].append(days(rec.when) if rec.when is not None else NO_DAY)
        out["date_state"].append(rec.date_state)
        out["provenance"].append(rec.prov_code)
        out["bad_chars"].append(rec.bad)
        out["accepted"].append(accepted)
        out["line"].append(lineno)
    out["shard"] = [shard_index] * len(out["line"])
    sink.close()
    return BatchProfile(
        sample_size=opts.sample_size, cutoff=opts.cutoff,
        cols={k: np.asarray(v, dtype=COLUMNS[k]) for k, v in out.items()},
        sample=sorted((-nh, i, t) for nh, i, t in heap),
        quarantined=quarantined, unparsed=unparsed,
        quarantine_files=[sink.path] if sink.path else [], entries=sink.entries,
        text_column={file: None if columns is None else sorted(map(str, columns))} if parsed else {},
    )


def profile_shard(shard: sources.Shard, opts: ReadOptions, quarantine_unreadable: bool = False) -> BatchProfile:
    """Profile one shard (the unit of work a worker process gets).

    With ``quarantine_unreadable`` (a batch of several files), a shard whose container cannot be read (a
    malformed CSV, a truncated gzip, a broken Parquet file) is quarantined whole, as one ``unreadable_file``
    entry with the reason and path, and none of its records count; otherwise that is the batch's InputError."""
    sink = _Sink(shard, opts.quarantine_dir, opts.per_reason, opts.shown_bytes)
    try:
        return profile_rows(sources.rows(shard, opts.ingest.max_line_bytes), opts, file=shard.file,
                            shard_index=shard.index, sink=sink)
    except InputError as exc:
        if not quarantine_unreadable:
            raise
        sink.close()
        sink = _Sink(shard, opts.quarantine_dir, None, opts.shown_bytes)  # starts the shard's part file again: only the whole-file entry
        sink._line_offset = 0
        sink.add(shard.file, 0, "unreadable_file", f"{exc}; the whole file is quarantined", b"")
        sink.close()
        return BatchProfile(sample_size=opts.sample_size, cutoff=opts.cutoff, quarantined=Counter(unreadable_file=1),
                            unparsed=1, quarantine_files=[sink.path] if sink.path else [], entries=sink.entries)


def merge_all(parts: Iterable[BatchProfile], opts: ReadOptions) -> BatchProfile:
    """The shards' profiles merged in order; the parts are consumed (their columns freed as they are copied)."""
    return merge_profiles([BatchProfile(sample_size=opts.sample_size, cutoff=opts.cutoff), *parts], consume=True)


def late_duplicate_entries(profile: BatchProfile, shards: list[sources.Shard], id_column: str = "id",
                           max_line_bytes: int = sources.MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    """Quarantine entries for records whose id an earlier shard already had (re-read: a rare path)."""
    for index, lines in sorted(profile.late_duplicates_by_shard().items()):
        shard = shards[index]
        offset = sources.lines_before(shard) if shard.fmt == "jsonl" else 0
        for lineno, obj, _, raw, _ in sources.rows(shard, max_line_bytes):
            if lineno in lines:
                doc_id = (obj or {}).get(id_column)
                yield quarantine_entry(shard.file, lineno + offset, f"duplicate id {str(doc_id)[:80]!r} (seen in an "
                                       f"earlier file or shard)", raw, "duplicate_id")


def write_quarantine(prof: BatchProfile, shards: list[sources.Shard], out: Path, id_column: str = "id",
                     per_reason: int | None = None, max_line_bytes: int = sources.MAX_LINE_BYTES) -> Path:
    """The batch's quarantine entries in one JSONL file, in input order, at most ``per_reason`` of each kind
    (every quarantined record is counted in ``prof.quarantined`` all the same)."""
    kept: Counter = Counter()

    def room(kind: str) -> bool:
        if per_reason is not None and kept[kind] >= per_reason:
            return False
        kept[kind] += 1
        return True

    with atomic_writer(out) as fh:  # a full temp disk leaves no half-written quarantine file
        for part in prof.quarantine_files:
            with open(part, encoding="utf-8") as src:
                for line in src:
                    if room(json.loads(line).get("kind", "")):
                        fh.write(line)
        for entry in prof.entries:
            if room(entry["kind"]):
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        for entry in late_duplicate_entries(prof, shards, id_column, max_line_bytes):
            if not room("duplicate_id"):
                break  # the rest are counted; re-reading shards for entries nobody keeps is wasted
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return out


Mapper = Callable[[Callable, list], Iterable]


def profile_input(spec: str | sources.Batch, opts: ReadOptions, *, mapper: Mapper | None = None,
                  shard_bytes: int = 64 << 20) -> tuple[BatchProfile, list[sources.Shard]]:
    """Profile every shard of a batch spec (path, glob, folder or fsspec URL) and merge them in order.

    ``mapper`` runs :func:`profile_shard` over the shards: the builtin ``map`` in-process, or a process
    pool's ``map`` (the flow chooses). Raises :class:`~monitors.core.errors.InputError` for a spec that
    matches nothing or a file that cannot be read at all.
    """
    files = list(sources.Batch.resolve(spec).files)
    shards = sources.plan_shards(files, shard_bytes)
    parts = (mapper or map)(_ShardJob(opts, quarantine_unreadable=len(files) > 1), shards)
    profile = merge_all(parts, opts)
    check_text_column(profile, opts.columns.text)
    return profile, shards


def check_text_column(profile: BatchProfile, text: str) -> None:
    """A file none of whose records has the text column was mapped wrong, not sent empty: an input error."""
    for file, found in profile.text_column.items():
        if found is not None:
            raise InputError(f"{file}: no record has the text column {text!r} (columns found: {', '.join(found) or 'none'}). "
                             f"If the text is in another column, set columns.text to it (in the config file, or "
                             f"{ENV_PREFIX}COLUMNS__TEXT=NAME)")


@dataclass(frozen=True)
class _ShardJob:
    opts: ReadOptions
    quarantine_unreadable: bool = False

    def __call__(self, shard: sources.Shard) -> BatchProfile:
        return profile_shard(shard, self.opts, self.quarantine_unreadable)


def records_from_dicts(objs: Iterable[dict[str, Any]]) -> Iterator[sources.Row]:
    """Rows from in-memory records (tests, the reference's pseudo-batches)."""
    for i, obj in enumerate(objs, start=1):
        yield sources.Row(i, obj, None, json.dumps(obj, default=str).encode("utf-8"), i)
