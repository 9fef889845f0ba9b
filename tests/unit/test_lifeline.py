"""Issue 18, item 10: a child that called ``die_with_parent`` ends when its parent is killed with SIGKILL, also when
it is blocked writing to a pipe nobody reads (what a shard worker of a killed check used to do forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

# The parent starts the child, prints its pid, then sleeps; the child fills a pipe nobody reads and blocks.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {child!r}])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import os, sys
sys.path.insert(0, %r)
{setup}
r, w = os.pipe()
while True:
    os.write(w, b"x" * 65536)
""" % str(REPO)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _orphan_after_kill(setup: str) -> tuple[int, bool]:
    code = PARENT.format(child=CHILD.format(setup=setup))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child is blocked in its write by now
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    until = time.monotonic() + 3
    while time.monotonic() < until and _alive(child):
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    return child, alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_without_a_lifeline_outlives_its_killed_parent():  # what the fix is for
    _, alive = _orphan_after_kill("")
    assert alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_with_a_lifeline_dies_with_its_killed_parent():
    _, alive = _orphan_after_kill("import os\nfrom monitors.adapters.lifeline import die_with_parent\ndie_with_parent(os.getppid())")
    assert not alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_watchdog_alone_ends_an_orphan(monkeypatch):
    """Without prctl (other systems) the getppid watchdog does it, within its polling interval."""
    setup = ("import os, ctypes\nfrom monitors.adapters import lifeline\n"
             "lifeline.sys.platform = 'other'\nlifeline.die_with_parent(os.getppid(), interval=0.1)")
    _, alive = _orphan_after_kill(setup)
    assert not alive
