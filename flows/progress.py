"""Progress of long commands (``reference build``, ``detector train``) on stderr: stdout keeps the results.

Flows run in the CLI's process, so one module-level reporter serves them; it is silent until the CLI
enables it. Stages are lines with the time since the start; a count is a bar redrawn in place on a terminal,
and a line per quarter elsewhere (logs stay short).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30


class Progress:
    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream, self.clock = stream, clock
        self.started = clock()
        self._open_bar = False  # a bar is drawn on the current line
        self._quarter = -1

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    def _end_bar(self) -> None:
        if self._open_bar:
            self._write("\n")
            self._open_bar = False

    def stage(self, message: str) -> None:
        self._end_bar()
        self._quarter = -1
        self._write(f"[{self.clock() - self.started:5.0f} s] {message}\n")

    def count(self, label: str, done: int, total: int) -> None:
        if self.stream is None or total <= 0:
            return
        done = min(done, total)
        if self.stream.isatty():
            filled = BAR_WIDTH * done // total
            self._write(f"\r        {label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}")
            self._open_bar = True
            if done == total:
                self._end_bar()
        elif (quarter := 4 * done // total) > self._quarter:
            self._quarter = quarter
            self._write(f"        {label}: {done}/{total}\n")


#: the reporter flows write to; ``enable`` points it at stderr
current = Progress(None)


def enable(stream: TextIO | None = None) -> Progress:
    global current
    current = Progress(stream or sys.stderr)
    return current


def stage(message: str) -> None:
    current.stage(message)


def count(label: str) -> Callable[[int, int], None]:
    """A ``tick(done, total)`` callback that draws ``label``'s bar."""
    return lambda done, total: current.count(label, done, total)
