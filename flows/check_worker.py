"""A worker process for a check's Evidently drift report and Great Expectations work (record validation, the
alert rules), started by the CLI as it starts (issue 20, item 6).

Evidently (with scikit-learn, SciPy and Plotly) and Great Expectations take about 4 s to import, and the report
and the validation about 1.5 s to run, all one after the other on the CLI's core, while the other core idles
once Prefect's server is up (or from the start, with a running server). ``collapse-monitor check`` therefore
starts this process first thing: it imports Evidently and GX while the CLI imports MLflow and Prefect, and the
check hands it the report and the validation as soon as the batch is profiled, then computes the indicators
and the synthetic share meanwhile; the alert rules' GX evaluation goes there too, so the CLI never imports GX.
The work is the same functions (:func:`monitors.adapters.drift.drift_report`,
:func:`monitors.adapters.gx_records.validate`, :func:`monitors.adapters.gx_rules.evaluate`), only run in
another process; their Prefect tasks (``drift_report``, ``validate_records``, ``evaluate_rules``) wait for them.

Without :func:`start` (a flow called from Python, the tests, ``serve``) nothing changes: the tasks do the work
in-process. The worker dies with the CLI (:mod:`monitors.adapters.lifeline`); if it dies first, the tasks do
the work in-process after all.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ProcessPoolExecutor

_pool: ProcessPoolExecutor | None = None


def _warm(parent: int) -> None:
    from monitors.adapters import drift, gx_records, lifeline

    lifeline.die_with_parent(parent)
    drift.import_evidently()
    gx_records.import_gx()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def start() -> None:
    """Start the worker now (once per process) so that it imports Evidently and GX while this process goes on.
    Call it from the main thread: the worker's death signal is tied to the thread that starts it.

    Not when this process has imported Evidently already (a long-running process, such as the tests' or one
    that built a reference): there the work costs less in-process than a new worker's imports. Not with fewer
    than two CPUs for this process: the worker only gains where a core would idle, and its own imports of
    NumPy, pandas and scikit-learn (which this process needs too) cost about 1.5 s of CPU."""
    global _pool
    if _pool is not None or "evidently" in sys.modules or _cpus() < 2:
        return
    # spawn: forking a process that may already run Prefect's threads is not safe
    _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_warm,
                                initargs=(os.getpid(),))
    _pool.submit(int)  # the pool starts its process on the first submission


def submit(fn: Callable, *args, **kwargs) -> Future | None:
    """``fn(*args, **kwargs)`` under way in the worker (in the order submitted), or None when there is no
    worker (or it is gone)."""
    if _pool is None:
        return None
    try:
        return _pool.submit(fn, *args, **kwargs)
    except RuntimeError:  # BrokenProcessPool (the worker died) or a pool already shut down
        return None


def _quit() -> None:
    """The worker's last task: run its exit handlers (GX's Data Docs folder), then end without the interpreter's
    teardown of Evidently, GX, SciPy and pandas, which took about 1.7 s that the check waited for."""
    from flows.cli.common import exit_process

    exit_process(0)


def stop(kill: bool = False) -> None:
    """Stop the worker and forget it (once the check has its results, it has nothing left to do). ``kill``: at
    once, without waiting for it to finish importing (an input error was found before the check ran)."""
    global _pool
    pool, _pool = _pool, None
    if pool is None:
        return
    if kill:
        for process in list((pool._processes or {}).values()):  # no public way to end a worker mid-initializer
            process.kill()
    else:
        with contextlib.suppress(RuntimeError):  # already broken or shut down
            # waited for, not cancelled by the shutdown below: it ends as BrokenProcessPool once the worker is gone
            futures.wait([pool.submit(_quit)], timeout=30)
    pool.shutdown(wait=not kill, cancel_futures=True)


@contextlib.contextmanager
def started():
    """The worker started for the block; an error raised in the block kills it at once."""
    start()
    try:
        yield
    except BaseException:
        stop(kill=True)
        raise
