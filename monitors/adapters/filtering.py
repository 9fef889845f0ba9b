"""The filter's I/O: score a shard's records and write them to part files (kept, flagged, or pending for the
LM), then assemble the output folder (``kept.*``, ``flagged.*``, ``quarantine.jsonl``, ``filter.json``).

A shard is read through :func:`monitors.adapters.ingest.examine_rows`, the same decision a check makes, so a
record the check quarantines is never kept. Parts are JSONL: a JSONL input's line keeps its bytes, with
``"synthetic_score"`` added before the closing brace (a record that already has that key is re-serialised);
a Parquet or CSV row becomes its JSON object plus the score. The final files are written into a staging
folder inside the output folder and renamed into place only when every record is accounted for, so a crash
(or a full disk) leaves the previous output as it was.
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitors.adapters import ingest, sources
from monitors.adapters.files import atomic_write_json
from monitors.core.errors import InputError
from monitors.core.textfilter import FastScorer

CHUNK = 4096
EXAMPLES_PER_SHARD = 20
SCORE_KEY = "synthetic_score"
FORMAT_SUFFIX = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "csv": ".csv", "parquet": ".parquet"}
OUTPUTS = ("kept", "flagged")


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to filter one shard (picklable)."""

    opts: ingest.ReadOptions
    scorer: FastScorer
    threshold: float
    band: tuple[float, float] | None  # (low, high]: pending for the LM stage
    parts: str  # folder for the part files
    late_duplicates: dict[int, frozenset[int]] = field(default_factory=dict)  # shard index -> lines
    several_files: bool = False  # then an unreadable file was quarantined whole by the profile

    def __call__(self, shard: sources.Shard) -> ShardOutcome:
        return filter_shard(shard, self)


@dataclass
class ShardOutcome:
    index: int
    counts: dict[str, int]
    parts: dict[str, str]
    examples: list[dict[str, Any]]


def output_line(row: sources.Row, score: float) -> bytes:
    """The record as it came, plus its score: a JSONL line's bytes are kept (the score goes before its closing
    brace) unless the record already has the key; other formats' rows are their object plus the score."""
    raw = row.raw.rstrip()
    if raw.endswith(b"}") and row.raw[:1] == b"{" and SCORE_KEY not in row.obj:
        body = raw[:-1].rstrip()
        sep = b"" if body.endswith(b"{") else b", "
        return body + sep + b'"' + SCORE_KEY.encode() + b'": ' + repr(float(score)).encode() + b"}\n"
    obj = dict(row.obj)
    obj[SCORE_KEY] = float(score)
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def filter_shard(shard: sources.Shard, job: ShardJob) -> ShardOutcome:
    """Score every usable record of the shard and append it to its part: kept, flagged, or pending."""
    late = job.late_duplicates.get(shard.index, frozenset())
    folder = Path(job.parts)
    names = {k: folder / f"{k}-{shard.index:06d}.jsonl" for k in ("kept", "flagged", "pending")}
    handles = {k: open(p, "wb") for k, p in names.items()}
    counts = {"kept": 0, "flagged": 0, "pending": 0, "skipped_quarantined": 0}
    examples: list[dict[str, Any]] = []
    chunk: list[tuple[sources.Row, Any]] = []

    def flush() -> None:
        scores = job.scorer.score([r.text for _, r in chunk], [r.id_hash for _, r in chunk])
        for (row, rec), s in zip(chunk, scores.tolist()):
            line = output_line(row, s)
            if job.band is not None and job.band[0] < s <= job.band[1]:
                entry = {"h": rec.id_hash, "s": s, "text": rec.text, "out": line.decode("utf-8")}
                handles["pending"].write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
                counts["pending"] += 1
                continue
            kind = "flagged" if s > job.threshold else "kept"
            handles[kind].write(line)
            counts[kind] += 1
            if kind == "flagged" and len(examples) < EXAMPLES_PER_SHARD:
                examples.append({"id": rec.doc_id, "score": s, "text": rec.text[:500]})
        chunk.clear()

    try:
        rows = sources.rows(shard, job.opts.ingest.max_line_bytes)
        for row, rec, kind, _ in ingest.examine_rows(rows, job.opts, shard.file):
            if kind is not None or rec is None or row.number in late:
                counts["skipped_quarantined"] += 1  # in quarantine.jsonl, written from the profile
                continue
            chunk.append((row, rec))
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
    except InputError:
        # a file of a several-file batch that cannot be read was quarantined whole by the profile: none of it counts
        if not job.several_files:
            raise
        for h in handles.values():
            h.close()
        for p in names.values():
            open(p, "wb").close()
        counts = dict.fromkeys(counts, 0)
        examples = []
    finally:
        for h in handles.values():
            h.close()
    return ShardOutcome(shard.index, counts, {k: str(p) for k, p in names.items()}, examples)


# -- the LM stage's documents ----------------------------------------------------------------------------------
def pending_entries(parts: Iterable[str]) -> Iterator[dict[str, Any]]:
    for part in parts:
        with open(part, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def choose_for_lm(parts: list[str], budget: int) -> tuple[list[int], list[str]]:
    """The id hashes and texts of the ``budget`` pending documents with the smallest id hashes: a uniform choice,
    in one streamed pass that holds at most ``budget`` texts."""
    if budget <= 0:
        return [], []
    heap: list[tuple[int, str]] = []  # (negated hash, text): a max-heap of the smallest hashes
    for e in pending_entries(parts):
        if len(heap) < budget:
            heapq.heappush(heap, (-e["h"], e["text"]))
        elif -e["h"] > heap[0][0]:
            heapq.heapreplace(heap, (-e["h"], e["text"]))
    return [-h for h, _ in heap], [t for _, t in heap]


def settle_pending(parts: list[str], folder: Path, decide) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, str]]:
    """Write every pending document to a kept or flagged part: ``decide(hash, fast score) -> (flagged, by_lm)``."""
    names = {k: folder / f"{k}-pending.jsonl" for k in OUTPUTS}
    counts = {"kept": 0, "flagged": 0, "lm_decided": 0}
    examples: list[dict[str, Any]] = []
    with open(names["kept"], "wb") as kept, open(names["flagged"], "wb") as flagged:
        for e in pending_entries(parts):
            is_flagged, by_lm = decide(e["h"], e["s"])
            counts["lm_decided"] += bool(by_lm)
            (flagged if is_flagged else kept).write(e["out"].encode("utf-8"))
            counts["flagged" if is_flagged else "kept"] += 1
            if is_flagged and len(examples) < EXAMPLES_PER_SHARD:
                examples.append({"id": "", "score": e["s"], "text": e["text"][:500], "decided_by": "lm" if by_lm else "fast"})
    return counts, examples, {k: str(p) for k, p in names.items()}


# -- the output folder -----------------------------------------------------------------------------------------
def output_format(batch: sources.Batch, requested: str | None) -> str:
    """The output's format: as asked, else the input's (a gzipped JSONL input gives gzipped JSONL)."""
    if requested:
        return requested
    kinds = {("jsonl.gz" if gz else fmt) for fmt, gz in (sources.file_format(f) for f in batch.files)}
    if len(kinds) > 1:
        raise InputError(f"the batch mixes formats ({', '.join(sorted(kinds))}): choose the output's with --format")
    return kinds.pop()


def _lines(parts: list[str]) -> Iterator[bytes]:
    for part in parts:
        with open(part, "rb") as fh:
            yield from fh


def write_output(parts: list[str], path: Path, fmt: str) -> int:
    """One output file from part files, in their order; returns the records written."""
    n = 0
    if fmt in ("jsonl", "jsonl.gz"):
        opener = (lambda p: gzip.open(p, "wb", compresslevel=6)) if fmt == "jsonl.gz" else (lambda p: open(p, "wb"))
        with opener(path) as out:
            for line in _lines(parts):
                out.write(line)
                n += 1
        return n
    import pyarrow as pa

    writer = None
    columns: list[str] | None = None
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal writer, columns
        if columns is None:
            columns = list(dict.fromkeys(k for obj in buf for k in obj))
            columns = [c for c in columns if c != SCORE_KEY] + [SCORE_KEY]
        table = pa.Table.from_pylist(buf)
        extra = set(table.column_names) - set(columns)
        if extra:
            raise InputError(f"records have columns the first records lacked ({', '.join(sorted(extra))[:200]}): "
                             f"write JSONL (--format jsonl) to keep every field")
        for c in columns:
            if c not in table.column_names:
                table = table.append_column(c, pa.nulls(len(table)))
        table = table.select(columns)
        if writer is None:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                writer = pq.ParquetWriter(path, table.schema)
            else:
                import pyarrow.csv as pcsv

                writer = pcsv.CSVWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema) if fmt == "parquet" else table)
        buf.clear()

    try:
        for line in _lines(parts):
            buf.append(json.loads(line))
            n += 1
            if len(buf) >= 20_000:
                flush()
        if buf:
            flush()
        if writer is None:  # no record: an empty file with just the score column
            table = pa.table({SCORE_KEY: pa.array([], pa.float64())})
            if fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, path)
            else:
                import pyarrow.csv as pcsv

                pcsv.write_csv(table, path)
    finally:
        if writer is not None:
            writer.close()
    return n


def staging(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".filter-staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def publish(stage: Path, out_dir: Path, files: dict[str, str], manifest: dict[str, Any]) -> dict[str, str]:
    """Move the staged files into the output folder (each rename atomic), remove outputs of an earlier run in
    another format, then write ``filter.json`` (what the folder holds) last."""
    placed = {}
    for key, name in files.items():
        src = stage / name
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, out_dir / name)
        placed[key] = str(out_dir / name)
    for old in out_dir.iterdir():
        stem = old.name.split(".", 1)[0]
        if stem in OUTPUTS and old.name not in files.values() and old.is_file():
            old.unlink()
    atomic_write_json(out_dir / "filter.json", {**manifest, "files": placed}, indent=2)
    shutil.rmtree(stage, ignore_errors=True)
    return placed


def examples_html(examples: list[dict[str, Any]], title: str) -> str:
    """A page of flagged documents; every text is escaped."""
    from html import escape

    rows = "\n".join(f"<tr><td>{escape(str(e.get('id', '')))}</td><td>{e['score']:.3f}</td>"
                     f"<td>{escape(str(e.get('decided_by', 'fast')))}</td><td>{escape(e['text'])}</td></tr>"
                     for e in examples)
    return (f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title><h1>{escape(title)}</h1>"
            f"<table><tr><th>id</th><th>score</th><th>stage</th><th>text (first 500 characters)</th></tr>\n{rows}</table>")


def count_lines(path: str | Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)
