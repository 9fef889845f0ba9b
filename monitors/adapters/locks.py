"""An exclusive advisory lock on a file (``fcntl.flock``): between processes, and between threads that open the
file separately. The kernel drops it when its holder dies, so a crashed run never leaves a stale lock."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, timeout: float | None = None, poll: float = 0.05) -> Iterator[bool]:
    """Hold the lock on ``path`` while the block runs; yields False (not holding it) when ``timeout`` seconds
    passed without getting it. ``timeout=None`` waits as long as it takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(poll)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
