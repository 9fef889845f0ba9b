"""Where a batch comes from: a local path, a glob, a folder or any fsspec URL, cut into shards.

A *shard* is a piece of one file that one process reads on its own: a byte range of an uncompressed JSONL
file (a line belongs to the shard its first byte falls in), one Parquet row group, or a whole file (gzip,
CSV, whose quoted newlines make byte ranges unsafe). Rows come out one at a time with their line (or row)
number, so memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import glob as _glob
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from monitors.core.errors import InputError
from monitors.core.text import shown

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
CHUNK_ROWS = 10_000
#: Longest JSONL line read by default (ingest passes its own limit, see IngestSettings.max_line_bytes).
MAX_LINE_BYTES = 16 << 20
#: How the problem of a line over the limit starts (ingest quarantines it as ``oversize_text``).
OVERSIZE_LINE = "line too long"
#: A row: (line or row number, the parsed object or None, why it could not be parsed or None, its raw bytes,
#: where it starts in its file: the byte offset of a JSONL line (of the decompressed file), else the row number).
#: Line numbers of a JSONL byte-range shard count from the shard's start; the offset is global and free.
class Row(NamedTuple):
    number: int  # line number (JSONL, from the shard's start) or row number
    obj: dict[str, Any] | None  # the parsed record, or None when it could not be parsed
    problem: str | None  # why it could not be parsed
    raw: bytes  # the record as read (what a quarantine entry keeps)
    start: int  # byte offset of a JSONL line in its (decompressed) file, else the row number
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Batch:
    """A batch spec (file, folder, glob or URL) resolved once to its files, sorted: what a check hashes,
    plans and reads. Flows take a spec or a Batch; a spec is resolved where the flow starts."""

    spec: str
    files: tuple[str, ...]

    @classmethod
    def resolve(cls, spec: str | Batch) -> Batch:
        return spec if isinstance(spec, Batch) else cls(spec, tuple(expand(spec)))

    @property
    def total_bytes(self) -> int:
        return total_bytes(list(self.files))

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class Shard:
    url: str  # as fsspec opens it (a plain path for local files)
    fmt: str
    index: int  # position in the batch: shards are merged in this order
    start: int = 0  # byte offset (jsonl) or row group (parquet)
    end: int | None = None  # exclusive; None = to the end of the file
    compressed: bool = False

    @property
    def file(self) -> str:
        return self.url


def file_format(path: str) -> tuple[str, bool]:
    """``(format, gzipped)`` from a file name; raises :class:`InputError` for an unknown extension."""
    suffixes = Path(path).suffixes
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    rest = [s for s in suffixes if s != ".gz"]
    fmt = FORMATS.get(rest[-1].lower()) if rest else None
    if fmt is None or (compressed and fmt != "jsonl"):
        raise InputError(f"{shown(path)}: unknown batch format {''.join(suffixes) or '(no extension)'}; "
                         f"use one of {', '.join(sorted(FORMATS))} (JSONL may be gzipped)")
    return fmt, compressed


def _is_url(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def _fs(spec: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(spec)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{shown(spec)}: cannot open this URL: {exc}") from None


def expand(spec: str) -> list[str]:
    """The files a batch spec names, sorted: a file, a folder (its batch files), a glob, or an fsspec URL.

    Raises :class:`InputError` naming the spec when nothing matches.
    """
    spec = str(spec)
    if not _is_url(spec):
        local = spec.removeprefix("file://")
        if any(c in local for c in "*?["):
            files = _once(sorted(p for p in _glob.glob(local, recursive=True) if Path(p).is_file()))
        elif Path(local).is_dir():
            files = sorted(str(p) for p in Path(local).iterdir() if p.is_file() and _known(p.name))
        elif Path(local).is_file():
            return [local]
        else:
            raise InputError(f"{shown(spec)}: no such batch file or folder")
        if not files:
            raise InputError(f"{shown(spec)}: matches no batch file ({', '.join(sorted(FORMATS))}, JSONL may be gzipped)")
        return files
    fs, path = _fs(spec)
    if any(c in path for c in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = [p for p in fs.ls(path, detail=False) if _known(p)]
    elif fs.isfile(path):
        found = [path]
    else:
        raise InputError(f"{shown(spec)}: no such batch file or folder")
    files = sorted(fs.unstrip_protocol(p) for p in found if fs.isfile(p))
    if not files:
        raise InputError(f"{shown(spec)}: matches no batch file")
    return files


def _once(paths: list[str]) -> list[str]:
    """Each file once, under its first path: a ``**`` glob follows symlinks, through a loop many times over."""
    seen: set[str] = set()
    return [p for p in paths if not ((real := os.path.realpath(p)) in seen or seen.add(real))]


def _known(name: str) -> bool:
    try:
        file_format(name)
        return True
    except InputError:
        return False


def _size(url: str) -> int:
    if not _is_url(url):
        return Path(url.removeprefix("file://")).stat().st_size
    fs, path = _fs(url)
    return int(fs.size(path) or 0)


def stat(url: str) -> tuple[int, float | None]:
    """A file's size and modification time (None when its store cannot tell) without reading it."""
    if not _is_url(url):
        st = Path(url.removeprefix("file://")).stat()
        return st.st_size, st.st_mtime
    size = _size(url)
    try:
        fs, path = _fs(url)
        info = fs.info(path)
    except Exception:  # noqa: BLE001 - a store that cannot tell
        return size, None
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if hasattr(value, "timestamp"):
            return size, value.timestamp()
        if isinstance(value, (int, float)):
            return size, float(value)
    return size, None


def open_binary(url: str):
    """A local path or fsspec URL opened for reading bytes."""
    return _open(url, "rb")


def plan_shards(files: list[str], target_bytes: int = 64 << 20) -> list[Shard]:
    """Cut files into shards of about ``target_bytes`` (see the module docstring for what can be cut)."""
    shards: list[Shard] = []
    for url in files:
        fmt, compressed = file_format(url)
        if fmt == "jsonl" and not compressed:
            size = _size(url)
            cuts = list(range(0, size, target_bytes)) or [0]
            for i, start in enumerate(cuts):
                end = cuts[i + 1] if i + 1 < len(cuts) else None
                shards.append(Shard(url, fmt, len(shards), start, end))
        elif fmt == "parquet":
            try:
                groups = _parquet_groups(url)
            except InputError:
                groups = 1  # one shard whose reading fails: the file is quarantined, or the batch rejected
            for g in range(max(groups, 1)):
                shards.append(Shard(url, fmt, len(shards), g, g + 1))
        else:
            shards.append(Shard(url, fmt, len(shards), compressed=compressed))
    return shards


def total_bytes(files: list[str]) -> int:
    return sum(_size(f) for f in files)


def _open(url: str, mode: str = "rb"):
    if not _is_url(url):
        return open(url.removeprefix("file://"), mode)
    import fsspec

    return fsspec.open(url, mode).open()


def _parquet_groups(url: str) -> int:
    import pyarrow.parquet as pq

    try:
        with _open(url) as fh:
            return pq.ParquetFile(fh).num_row_groups
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
        raise InputError(f"{shown(url)}: cannot be read as parquet: {exc}") from None


def rows(shard: Shard, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Row]:
    """The shard's rows; raises :class:`InputError` when the container itself cannot be read.

    A JSONL line over ``max_line_bytes`` is not held: it comes out as a problem row with its first bytes."""
    try:
        if shard.fmt == "jsonl":
            yield from _jsonl_rows(shard, max_line_bytes)
        elif shard.fmt == "parquet":
            yield from _parquet_rows(shard)
        else:
            yield from _csv_rows(shard)
    except InputError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{shown(shard.file)}: cannot be read as {shard.fmt}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise their own types for broken containers
        if type(exc).__module__.startswith(("pyarrow", "pandas")):
            raise InputError(f"{shown(shard.file)}: cannot be read as {shard.fmt}: {exc}") from None
        raise


def parse_json_line(raw: bytes) -> tuple[dict | None, str | None]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "not valid JSON here (nested too deeply to read)"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    if b"\\u" in raw:  # only an escape can make a lone surrogate, which no UTF-8 text can hold
        for key, value in obj.items():
            for field in (key, value):
                if isinstance(field, str) and _SURROGATE.search(field):
                    return None, f"invalid Unicode: a lone surrogate in field {key[:40]!r} (\\ud800-\\udfff escape)"
    return obj, None


class _CrAsLf:
    """A binary file whose line ends are lone CRs (classic Mac), read with LFs: the same length, so byte
    offsets and shard boundaries stay true. A raw CR cannot be part of a valid JSON line anyway."""

    def __init__(self, fh):
        self.fh = fh

    def read(self, size: int = -1) -> bytes:
        return self.fh.read(size).replace(b"\r", b"\n")

    def seek(self, *args) -> int:
        return self.fh.seek(*args)


def _line_ends_fixed(fh):
    """``fh`` as is, or read through :class:`_CrAsLf` when its first block has CRs and no LF at all."""
    head = fh.read(1 << 16)
    fh.seek(0)
    return _CrAsLf(fh) if b"\r" in head and b"\n" not in head else fh


def lines_before(shard: Shard) -> int:
    """Lines in the file before the shard's first line (counted only when a line number is needed).

    A line cut by the shard's start belongs to the previous shard, so it counts as before.
    """
    if shard.start == 0:
        return 0
    count, left, last = 0, shard.start, b"\n"
    with _open(shard.url) as raw_fh:
        fh = _line_ends_fixed(raw_fh)
        while left > 0:
            block = fh.read(min(left, 8 << 20))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
            last = block[-1:]
    return count + (last != b"\n")


def _lines(fh, cap: int, block_bytes: int = 1 << 16) -> Iterator[tuple[bytes, int]]:
    """(line, its length in bytes) for each line of a binary file; of a line longer than ``cap`` only the
    first ``cap + 1`` bytes are kept, so memory never depends on how long a line is."""
    if isinstance(fh, io.BufferedIOBase):  # local files, gzip: readline takes a limit (fast, in C)
        while raw := fh.readline(cap + 1):
            size = len(raw)
            if size > cap and not raw.endswith(b"\n"):
                while more := fh.readline(block_bytes):  # the rest of the line, counted and dropped
                    size += len(more)
                    if more.endswith(b"\n"):
                        break
            yield raw, size
        return
    head, size = bytearray(), 0  # fsspec's files: readline has no limit, so split blocks here
    while block := fh.read(block_bytes):
        start = 0
        while True:
            end = block.find(b"\n", start)
            piece = block[start:] if end < 0 else block[start:end + 1]
            size += len(piece)
            if len(head) <= cap:
                head += piece[:cap + 1 - len(head)]
            if end < 0:
                break
            yield bytes(head), size
            head, size, start = bytearray(), 0, end + 1
    if size:
        yield bytes(head), size


def _jsonl_rows(shard: Shard, cap: int = MAX_LINE_BYTES) -> Iterator[Row]:
    """Line numbers here count from the shard's start; the reader adds :func:`lines_before` when needed."""
    raw_fh = _open(shard.url)
    zipped = gzip.open(raw_fh, "rb") if shard.compressed else raw_fh
    with raw_fh, zipped:
        fh = _line_ends_fixed(zipped)
        pos, skip = shard.start, False
        if pos > 0:
            fh.seek(pos - 1)
            skip = fh.read(1) != b"\n"  # mid-line: that line belongs to the previous shard
        lineno = 0
        for raw, size in _lines(fh, cap):
            if skip:
                pos, skip = pos + size, False
                continue
            if shard.end is not None and pos >= shard.end:
                break
            start, pos = pos, pos + size
            lineno += 1
            if size > cap:
                yield Row(lineno, None, f"{OVERSIZE_LINE}: {size} bytes, over the limit of {cap} (not read)", raw, start)
                continue
            if start == 0 and raw.startswith(codecs.BOM_UTF8):  # a byte order mark is no part of the record
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            obj, problem = parse_json_line(raw)
            yield Row(lineno, obj, problem, raw, start)


def _clean(obj: dict) -> dict:
    import math

    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in obj.items()}


def _parquet_rows(shard: Shard) -> Iterator[Row]:
    import pyarrow.parquet as pq

    with _open(shard.url) as fh:
        pf = pq.ParquetFile(fh)
        first = sum(pf.metadata.row_group(g).num_rows for g in range(shard.start))
        rowno = first
        if pf.num_row_groups == 0:
            return
        for rb in pf.iter_batches(batch_size=CHUNK_ROWS, row_groups=[shard.start]):
            for obj in rb.to_pylist():
                rowno += 1
                obj = _clean(obj)
                yield Row(rowno, obj, None, json.dumps(obj, default=str).encode("utf-8"), rowno)


def _csv_rows(shard: Shard) -> Iterator[Row]:
    import pandas as pd

    with _open(shard.url) as fh:
        rowno = 0
        for chunk in pd.read_csv(fh, dtype=str, keep_default_na=False, na_values=[""], chunksize=CHUNK_ROWS):
            for obj in chunk.to_dict("records"):
                rowno += 1
                obj = _clean(obj)
                yield Row(rowno, obj, None, json.dumps(obj, default=str).encode("utf-8"), rowno)
