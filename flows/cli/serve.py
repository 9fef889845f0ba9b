"""``collapse-monitor serve``: the scheduled data check and probes, served by this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flows.cli import common
from flows.cli.common import EXIT_OK, Formatter, setup
from monitors.core.errors import UserError


def add_parser(sub, common) -> None:
    sv = sub.add_parser(
        "serve", parents=[common], formatter_class=Formatter,
        help="run the scheduled data check and probes in this process (needs a real Prefect server)",
        description="Serve the deployments the config asks for, in this one process (prefect.serve): the data "
                    "check of schedules.landing every schedules.data_every (3h) and the probes of schedules.models "
                    "on schedules.probe_set every schedules.probes_every (6h); cron expressions (data_cron, "
                    "probes_cron) win over intervals. Each deployment runs at most one run at a time: a run that "
                    "would overlap the one in progress is cancelled (concurrency limit 1, CANCEL_NEW). Each new "
                    "landing file is checked exactly once (see the README's landing zone section).\n\n"
                    "Schedules only fire on a real Prefect server (`prefect server start`): set PREFECT_API_URL "
                    "(or prefect_api_url). For the worker route instead, see deployments/prefect.yaml. Stop with "
                    "Ctrl-C or SIGTERM; the schedules are paused on the way out.\n\n"
                    "Beside the schedules it starts the warm check service (`collapse-monitor warm --help`): a "
                    "`check`, `history` or `alerts list` of the same user and settings then runs without its "
                    "imports (about 3 s instead of 11 s for a check). --no-warm: not.",
        epilog="example:\n"
               "  export PREFECT_API_URL=http://127.0.0.1:4200/api MLFLOW_TRACKING_URI=http://127.0.0.1:5000\n"
               "  COLLAPSE_MONITOR_SCHEDULES__LANDING=/data/landing/news COLLAPSE_MONITOR_SCHEDULES__DATASET=news \\\n"
               "    collapse-monitor serve --data-every 3h")
    sv.add_argument("--data-every", metavar="DURATION", help="override schedules.data_every (e.g. 30s, 3h)")
    sv.add_argument("--probes-every", metavar="DURATION", help="override schedules.probes_every (e.g. 6h)")
    sv.add_argument("--no-warm", action="store_true",
                    help="do not start the warm check service beside the schedules (see `collapse-monitor warm --help`)")


def start_warm(args) -> subprocess.Popen:
    """``collapse-monitor warm`` as a child of this process (before Prefect starts its threads here: the service
    forks, so it must be a process of its own), with the environment this command was started with."""
    cmd = [sys.executable, "-m", "flows.cli", "warm", "--parent", str(os.getpid())]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.state_dir:
        cmd += ["--state-dir", str(args.state_dir)]
    return subprocess.Popen(cmd, env=common.started_env or dict(os.environ), stdin=subprocess.DEVNULL)


def stop_warm(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # it removes its socket and lets the commands it runs finish (10 s at most)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(args) -> int:
    settings, rt = setup(args)
    if rt.prefect_api_url is None:
        raise UserError("serve needs a real Prefect server: schedules never fire on Prefect's ephemeral API. Start "
                        "one (`prefect server start`, see the README's 'Running it in production') and set "
                        "PREFECT_API_URL=http://127.0.0.1:4200/api, or prefect_api_url in the config file")
    from prefect import serve

    from flows.scheduled import deployments
    from monitors.config import config_path

    deps = deployments(settings, config_path(args.config), data_every=args.data_every, probes_every=args.probes_every)
    from flows import automations

    urls = settings.channel_urls()
    for line in (automations.watch(deps, urls, settings.alerts.dead_man_min_seconds) if urls else
                 ["no on-call channel (COLLAPSE_MONITOR_ALERT_URLS or alerts.urls): no dead man's switch"]):
        print(line, file=sys.stderr)
    for d in deps:
        sched = d.schedules[0].schedule if d.schedules else None
        print(f"serving {d.flow_name}/{d.name}: {sched}; parameters {json.dumps(d.parameters)}", file=sys.stderr)
    print(f"Prefect API {rt.prefect_api_url}; MLflow {rt.tracking_uri}; Ctrl-C or SIGTERM stops", file=sys.stderr)
    warm = None if args.no_warm else start_warm(args)
    try:
        serve(*deps, print_starting_message=False)
    finally:
        stop_warm(warm)
    return EXIT_OK
