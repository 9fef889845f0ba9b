"""Atomic file writes: a crash or a full disk leaves the old file or the new one, never half of one.

Every file collapse-monitor writes under its state directory, and every output a command writes (a probe set, a
trend report, the demo's batches), goes through here: the content is written to a temp file in the same folder,
flushed to disk (``fsync``) and renamed over the target (``os.replace``). When a write fails (``ENOSPC``, ``EDQUOT``,
an I/O error) the temp file is removed and the error is raised with the target's path in it, so nothing is left
behind that a later run could mistake for data (a 0-byte alert file broke every later check, issue 18).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: errnos that mean "the disk (or the user's quota) is full" or "cannot write here at all"
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _temp_for(path: Path) -> Path:
    # hidden, and unique per process and thread: two writers never share a temp file
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _with_path(exc: OSError, path: Path) -> OSError:
    """The error, naming the target (not the temp file) so that a message says which file could not be written."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return exc


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """A file handle to write ``path`` through: on success it is fsynced and renamed over ``path``; on any
    error the temp file is removed and ``path`` is untouched (an ``OSError`` names ``path``)."""
    path = Path(path)
    tmp = _temp_for(path)
    binary = "b" in mode
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise _with_path(exc, path) from exc
    except BaseException:
        _remove(tmp)
        raise
    _sync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_writer(path, "w", encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, **dump_kw) -> Path:
    return atomic_write_text(path, json.dumps(obj, **dump_kw))


def atomic_copy(src: str | Path, path: str | Path) -> Path:
    """Copy a file's bytes (streamed, never whole in memory) to ``path`` atomically."""
    with open(src, "rb") as fin, atomic_writer(path, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return Path(path)


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort (not every filesystem lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_no_space(exc: BaseException) -> bool:
    """True for an error that means the disk (or quota) is full, or the filesystem is read-only."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def describe(exc: OSError) -> str:
    """'/state/spool/x/request.json: No space left on device (ENOSPC)': the path and the cause, for a message."""
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = f"{exc.strerror or exc}{f' ({code})' if code else ''}"
    return f"{exc.filename}: {cause}" if exc.filename else cause
