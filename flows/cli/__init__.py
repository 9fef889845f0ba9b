"""The ``collapse-monitor`` command. Subcommands mirror the flows and call the same functions.

One module per command group (``check``, ``reference``, ``detector``, ``probes``, ``alerts``, ``review`` for
history / report / gc / ui, ``serve``, ``demo``): each declares its parser (``add_*parser``) and runs it
(``run*``); ``common`` holds what they share, ``render`` the text tables. This module assembles the parser
and maps errors to exit codes.

Exit codes: 0 ran and no critical alert is firing; 3 ran and a critical alert is firing;
2 usage or input error (the message names the problem); 1 internal failure (a bug: traceback shown).
Prefect, MLflow and GX are imported only by the commands that need them, after the runtime is prepared.
"""

from __future__ import annotations

import argparse
import sys

from flows.cli import alerts, check, demo, detector, probes, reference, review, serve, simulate, warm
from flows.cli import filter as filter_cmd
from flows.cli.common import (  # noqa: F401 - re-exported for callers and tests
    EXIT_CRITICAL,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    Formatter,
    RunFailureFilter,
    common_options,
    console_reports_failures_once,
    json_error,
)
from monitors.config import ENV_PREFIX
from monitors.core.errors import NotRecorded, UserError

# the names tests and older callers know
_RunFailureFilter, _console_reports_failures_once = RunFailureFilter, console_reports_failures_once

DESCRIPTION = """\
Watch training data and models for collapse: the synthetic (AI-generated) share of incoming batches,
tail loss and mode collapse against a trusted human reference, with alerts logged to MLflow.

Runs on embedded defaults with no server: MLflow in ./.collapse-monitor/mlflow.db and Prefect's
ephemeral API. Set MLFLOW_TRACKING_URI / PREFECT_API_URL (or a config file) to use real servers."""

EPILOG = f"""\
first steps:
  collapse-monitor demo --quick                       # a short tour on a simulated collapsing stream
  collapse-monitor reference build --input human.jsonl --dataset news
  collapse-monitor detector train --human human.jsonl --synthetic machine.jsonl --alias production
  collapse-monitor check --input batch.jsonl --dataset news
  collapse-monitor filter --input batch.jsonl --out clean --dataset news   # machine text out before a retrain
  collapse-monitor probes build --input heldout.jsonl --frequencies train.jsonl --out probes.jsonl
  collapse-monitor probe --model models:/intent@production --probes probes.jsonl
  collapse-monitor history --dataset news
  collapse-monitor report --dataset news --out reports/news   # HTML trend report with charts
  collapse-monitor ui                                 # the MLflow UI on the results

configuration: --config FILE, ${ENV_PREFIX}CONFIG or ./collapse-monitor.yaml, and {ENV_PREFIX}* variables
(see the README's configuration reference). Exit codes: 0 ok, 3 critical alert firing, 2 usage or
input error, 1 internal failure."""

#: the subcommands in the order `--help` lists them: (declare the parser, run it)
SUBCOMMANDS = [
    ("check", check.add_parser, check.run),
    ("filter", filter_cmd.add_parser, filter_cmd.run),
    ("reference", reference.add_parser, reference.run),
    ("detector", detector.add_parser, detector.run),
    ("probes", probes.add_build_parser, probes.run_probes),
    ("probe", probes.add_probe_parser, probes.run_probe),
    ("report", review.add_report_parser, review.run_report),
    ("serve", serve.add_parser, serve.run),
    ("alerts", alerts.add_parser, alerts.run),
    ("history", review.add_history_parser, review.run_history),
    ("demo", demo.add_parser, demo.run),
    ("gc", review.add_gc_parser, review.run_gc),
    ("ui", review.add_ui_parser, review.run_ui),
    ("warm", warm.add_parser, warm.run),
    ("simulate", simulate.add_parser, simulate.run),
]
COMMANDS = {name: run for name, _, run in SUBCOMMANDS}


def _parser() -> argparse.ArgumentParser:
    common = common_options(top=False)
    p = argparse.ArgumentParser(prog="collapse-monitor", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=Formatter, parents=[common_options(top=True)])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _, add, _ in SUBCOMMANDS:
        add(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    from flows.cli import common

    common.started_env = dict(os.environ)  # before runtime.prepare: what a warm service compares clients with
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    from flows import warm as warm_service

    served = warm_service.try_served(args, argv)  # before any heavy import: see flows/warm.py
    if served is not None:
        return served
    from flows import interrupts

    previous = interrupts.install()
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"collapse-monitor: error: {exc}", file=sys.stderr)
        json_error(args, str(exc), EXIT_USAGE)
        return EXIT_USAGE
    except NotRecorded as exc:  # a full disk: not a bug, no traceback; on-call was paged
        print(f"collapse-monitor: error: {exc}", file=sys.stderr)
        json_error(args, str(exc), EXIT_INTERNAL)
        return EXIT_INTERNAL
    except BrokenPipeError:  # not an error to report on the very output that is gone: see entry()
        raise
    except OSError as exc:
        from monitors.adapters import files

        if not files.is_no_space(exc):
            json_error(args, f"{type(exc).__name__}: {exc}", EXIT_INTERNAL)
            raise
        message = f"cannot write {files.describe(exc)}; free space there and run the command again"
        print(f"collapse-monitor: error: {message}", file=sys.stderr)
        json_error(args, message, EXIT_INTERNAL)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        interrupts.handled()
        print("collapse-monitor: interrupted", file=sys.stderr)
        json_error(args, "interrupted", 130)
        return 130
    except Exception as exc:  # a bug: the traceback goes to stderr as usual, --json still gets its one object
        if _interrupted(exc):
            interrupts.handled()
            print("collapse-monitor: interrupted", file=sys.stderr)
            json_error(args, "interrupted", 130)
            return 130
        json_error(args, f"{type(exc).__name__}: {exc}", EXIT_INTERNAL)
        raise
    finally:
        interrupts.restore(previous)


def entry() -> None:
    """The ``collapse-monitor`` program: :func:`main`, then the end of the process without the interpreter's
    teardown (:func:`flows.cli.common.exit_process`). An exception (a bug) ends it the usual way, traceback
    included."""
    from flows.cli import common

    try:
        code = main()
    except BrokenPipeError:  # the reader of our output went away (`| head`): as if killed by SIGPIPE, quietly
        code = common.reader_gone()
    common.exit_process(code)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C was being handled: Prefect's engine catches the
    KeyboardInterrupt of an interrupted task and its clean-up can raise another error (``ValueError: Task run
    is not set``), which is still the user's Ctrl-C, not a bug."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 50:
        if isinstance(e, KeyboardInterrupt):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False
