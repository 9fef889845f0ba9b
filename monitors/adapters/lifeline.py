"""Child processes die with their parent (issue 18, item 10): after ``kill -9`` of the CLI nothing of it may
keep running (Prefect's temporary API server, shard workers blocked in a pipe write).

:func:`die_with_parent` is called first thing in the child. On Linux the kernel sends SIGKILL when the parent
dies (``prctl(PR_SET_PDEATHSIG)``); a daemon thread that polls ``os.getppid()`` covers other systems and the
corner where the parent died before the call. Note: PR_SET_PDEATHSIG fires when the *thread* that started the
child ends, so start children from a thread that outlives them (the main thread, or the one that owns a pool).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None, interval: float = 0.5) -> None:
    """End this process (SIGKILL, or ``os._exit`` from a watchdog thread) when ``parent`` (default: the current
    parent) is gone."""
    parent = parent or os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog still works
    if os.getppid() != parent:  # died before prctl took effect: we were already reparented
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
