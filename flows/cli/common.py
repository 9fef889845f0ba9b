"""What every command shares: exit codes, options, settings and runtime set-up, the early Prefect server."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from monitors.config import dataset_name, load_settings

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CRITICAL = 0, 1, 2, 3
#: os.environ as main() found it, before runtime.prepare set MLflow's and Prefect's variables: a warm service
#: (flows/warm.py) started from this process is compared with its clients on these
started_env: dict[str, str] | None = None


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def common_options(top: bool) -> argparse.ArgumentParser:
    """--config, --state-dir, -v: accepted before the command and after it (or its action). The top level
    holds the defaults; a subcommand sets a value only when it is given there (SUPPRESS), so that one given
    before the command is not overwritten by the subcommand's default."""
    common = argparse.ArgumentParser(add_help=False)
    default = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--config", metavar="FILE", help="YAML settings file (default: $COLLAPSE_MONITOR_CONFIG or "
                        "./collapse-monitor.yaml)", **default)
    common.add_argument("--state-dir", metavar="DIR", help="where local stores live (default ./.collapse-monitor)", **default)
    common.add_argument("-v", "--verbose", action="store_true", help="show Prefect's own log lines", **default)
    common.add_argument("--no-daemon", action="store_true",
                        help="run here even when a warm check service (`collapse-monitor warm`) is running", **default)
    return common


def exit_process(code: int):
    """End this process as the interpreter would, minus its teardown: non-daemon threads finish, exit handlers
    run (Prefect's log worker, MLflow's queues, the temporary Prefect server's stop, temporary folders), the
    output is flushed; then ``os._exit``. Freeing every module of MLflow, Prefect, scikit-learn and pandas one by
    one took 2-3 s after a check had printed its result (issue 20, item 6)."""
    import atexit
    import threading

    with contextlib.suppress(BaseException):
        threading._shutdown()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader went away (`| head`)
            code = code or reader_gone()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF if isinstance(code, int) else 1)


def reader_gone() -> int:
    """Our standard output's reader went away: send what is still buffered nowhere (so that flushing it at the
    end fails no more) and end with 141, as a process killed by SIGPIPE does."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141


def dataset_option(value: str) -> str:
    """--dataset is checked like the 'dataset' setting, before anything is written under its name."""
    try:
        return dataset_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value[:40]!r}{'...' if len(value) > 40 else ''} {exc}") from None


def settings_for(args):
    """The settings the command line gives: the config file (or the defaults) and ``--state-dir`` over them."""
    settings = load_settings(args.config)
    if args.state_dir:
        settings = settings.model_copy(update={"state_dir": Path(args.state_dir)})
    return settings


def setup(args):
    from monitors.adapters import runtime

    settings = settings_for(args)
    return settings, runtime.prepare(settings, quiet_prefect=not args.verbose)


class RunFailureFilter(logging.Filter):
    """Drops Prefect's console copy of a failed run: the CLI reports every failure itself (a message for a
    user error, a traceback for a bug), and Prefect's API log still keeps the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def console_reports_failures_once(args) -> None:
    if args.verbose:
        return
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RunFailureFilter) for f in handler.filters):  # main() may run many times
            handler.addFilter(RunFailureFilter())


def open_tracker(rt):
    """The MLflow tracker, without importing Prefect (flows.tasks does): read-only commands need no Prefect."""
    from monitors.adapters.tracking import open_tracker as open_

    return open_(rt)


def open_reader(rt):
    """What the read-only commands ask the run store: on the default local SQLite store, read with SQL and no
    MLflow import (monitors/adapters/mlflow_sqlite.py: about 2 s less per command); anywhere else, the tracker."""
    from monitors.adapters.mlflow_sqlite import open_reader as open_sqlite

    return open_sqlite(rt.tracking.get_secret_value(), lambda: open_tracker(rt)) or open_tracker(rt)


@contextlib.contextmanager
def prefect_server_early():
    """Start Prefect's temporary server now (see flows/prefect_server.py), so it boots while the block imports
    and checks; when the block ends, wait for it and mark runs that dead processes left 'Running' as Crashed.
    An input error raised in the block kills the server at once instead of waiting for its shutdown."""
    from flows import prefect_server

    server = prefect_server.start()
    try:
        yield
        if server is not None:
            server.ready()
            server.crash_orphaned_runs()
    except BaseException:
        prefect_server.discard()
        raise


def datasets(tracker, only: str | None) -> list[str]:
    if only:
        return [only]
    return tracker.scopes()


def program() -> str:
    """This program as it was started, for commands we print: ``.venv/bin/collapse-monitor`` when run that way
    (the README installs into .venv without activating it), ``collapse-monitor`` when that is what PATH finds."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "collapse-monitor" or os.sep not in argv0:
        return "collapse-monitor"
    found = shutil.which("collapse-monitor")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return "collapse-monitor"
    return shlex.quote(argv0)


def json_error(args, message: str, code: int) -> None:
    """Under --json a failed command still prints its one JSON object on stdout: what went wrong, the exit code."""
    if getattr(args, "json", False):
        from monitors.adapters.delivery import scrub

        print(json.dumps({"error": scrub(message), "exit_code": code}))


def add_task_runner_options(parser, what: str = "shards") -> None:
    """``--task-runner`` and ``--dask-address``, for the commands that read a batch in shards."""
    parser.add_argument("--task-runner", choices=("local", "dask"),
                        help=f"local (default): {what} in worker processes here; dask: each shard a Prefect task on "
                             f"the Dask cluster at --dask-address (prefect-dask)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="scheduler of an existing Dask cluster")


def with_task_runner_options(settings, args):
    """The settings with ``--task-runner`` / ``--dask-address`` applied (an address alone means dask)."""
    overrides = {k: v for k, v in (("task_runner", args.task_runner or ("dask" if args.dask_address else None)),
                                   ("dask_address", args.dask_address)) if v}
    return settings.model_copy(update=overrides) if overrides else settings
