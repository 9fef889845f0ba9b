"""Ctrl-C that is not lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be. When that is a
finalizer or a weakref callback (during garbage collection), Python prints "Exception ignored in ..." and goes on:
the interrupt is lost and the command finishes as if nothing happened (seen in CI: a check through the warm
service, interrupted, exited 0). :func:`install` keeps a note of every SIGINT besides raising it, and
:func:`checkpoint` raises it again where losing it would matter (before a check logs its run, and before it
prints its result). :func:`handled` clears the note once a KeyboardInterrupt has been caught and reported.
"""

from __future__ import annotations

import signal
import threading

_pending = False


def _on_sigint(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


def install():
    """Take over SIGINT in the main thread (where Python delivers it) and return the handler it had, for
    :func:`restore`; elsewhere, or when SIGINT is ignored (a job started with it ignored), leave it alone (None)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        return None
    signal.signal(signal.SIGINT, _on_sigint)
    return previous


def restore(previous) -> None:
    """Put back the handler :func:`install` replaced (a process that runs many commands, such as the tests)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def pending() -> bool:
    """Whether a SIGINT arrived that no handler has dealt with yet."""
    return _pending


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived and was lost on the way (see the module docstring)."""
    if _pending:
        raise KeyboardInterrupt


def handled() -> None:
    global _pending
    _pending = False
