"""``collapse-monitor warm``: the warm check service (flows/warm.py), for users who do not run ``serve``."""

from __future__ import annotations

import argparse

from flows.cli import common
from flows.cli.common import EXIT_OK, Formatter, setup
from monitors.core.errors import UserError


def add_parser(sub, common_parser) -> None:
    w = sub.add_parser(
        "warm", parents=[common_parser], formatter_class=Formatter,
        help="keep a process with everything imported (and Prefect's API running), so that check, history and "
             "alerts list start in about a second",
        description="Run the warm check service in the foreground until Ctrl-C or SIGTERM. It imports MLflow, "
                    "Prefect, scikit-learn, Evidently and Great Expectations once (about 10 s), then listens on "
                    "<state dir>/run/check.sock (folder 0700, socket 0600, other users refused). A `check`, "
                    "`history` or `alerts list` of the same user, state directory, config file and PREFECT_*, "
                    "MLFLOW_* and COLLAPSE_MONITOR_* variables (the schedules' aside) then runs in a child forked from it, on the "
                    "command's own terminal, files and exit code: the same output as without it, without the "
                    "imports (a check of 300 documents on a 2-core machine: 10-12 s without, about 4 s with).\n\n"
                    "Anything else runs in-process as before, silently: another environment or config, -v, "
                    "--no-daemon or COLLAPSE_MONITOR_NO_DAEMON=1, or no service running (a stale socket is ignored "
                    "and replaced at the next start). -v on the command says where it ran and why.\n\n"
                    "With a real Prefect server (PREFECT_API_URL or prefect_api_url) the commands use it. Without "
                    "one, the service runs Prefect's API itself, on the state directory's Prefect database (what "
                    "each command would otherwise start for itself, for about 4 s of CPU), until it stops. "
                    "`collapse-monitor serve` starts a service itself (--no-warm to not). Restart it "
                    "after changing the config file, the variables or the code: until then commands run in-process. "
                    "Its log (stderr) names each command it runs, and the variables that differ for one it refuses "
                    "(never their values). -v has no effect on the service itself.",
        epilog="example:\n"
               "  collapse-monitor warm &            # or under systemd (a user service)\n"
               "  collapse-monitor check --input batch.jsonl --dataset news   # served by it\n"
               "  collapse-monitor -v check ...      # says whether it was served, and why not")
    w.add_argument("--parent", type=int, metavar="PID", help=argparse.SUPPRESS)  # set by serve


def run(args) -> int:
    from flows import warm
    from monitors.config import config_path

    # Prefect's log level is fixed at import, and the commands it serves run without -v: import as they would
    args.verbose = False
    settings, _ = setup(args)
    try:
        warm.run_daemon(settings, config_path(args.config), common.started_env or {}, parent=args.parent)
    except (FileExistsError, PermissionError) as exc:
        raise UserError(f"cannot start the warm check service: {exc}") from None
    return EXIT_OK
