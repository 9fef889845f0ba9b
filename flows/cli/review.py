"""Reviewing results: ``history``, ``report`` (HTML trend report), ``gc`` (drift-report retention), ``ui`` (MLflow UI)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from flows.cli import render
from flows.cli.common import (
    EXIT_INTERNAL,
    EXIT_OK,
    Formatter,
    dataset_option,
    datasets,
    open_reader,
    open_tracker,
    setup,
)
from monitors.core.errors import UserError


def add_history_parser(sub, common) -> None:
    h = sub.add_parser("history", parents=[common], formatter_class=Formatter,
                       help="past checks (or filter runs) from MLflow with key indicators and alerts, newest first",
                       description="List past checks from MLflow, newest first, with key indicators and firing alerts "
                                   "(--kind filter: the filter runs, with what they kept and flagged).",
                       epilog="examples:\n  collapse-monitor history --dataset news --last 5\n"
                              "  collapse-monitor history --since 7d --severity critical\n"
                              "  collapse-monitor history --dataset news --state firing --csv > firing.csv\n"
                              "  collapse-monitor history --json | jq '.[0]'\n"
                              "  collapse-monitor history --dataset news --kind filter")
    h.add_argument("--dataset", metavar="NAME", type=dataset_option, help="only this dataset (default: all datasets)")
    h.add_argument("--since", metavar="WHEN", help="only runs since then: a duration back (7d, 12h) or an ISO date "
                                                   "(2026-11-01, UTC)")
    h.add_argument("--severity", choices=("warning", "critical"),
                   help="only runs with a firing alert of this severity or worse")
    h.add_argument("--state", choices=("pending", "firing", "resolved"), help="only runs with an alert in this state")
    h.add_argument("--kind", choices=("check", "filter"), default="check",
                   help="which runs: checks (default) or filter runs")
    h.add_argument("--last", type=int, default=20, metavar="N", help="at most N runs (default 20; 0 = all)")
    fmt = h.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list")
    fmt.add_argument("--csv", action="store_true", help="print CSV: one line per run")


def run_history(args) -> int:
    settings, rt = setup(args)

    from monitors.core import history

    try:
        since = history.since_ms(args.since) if args.since else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    filtered = bool(since or args.severity or args.state)
    rows = open_reader(rt).history(args.dataset, None if filtered else args.last, kind=args.kind)
    rows = history.select(rows, since=since, severity=args.severity, state=args.state, last=args.last)
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    if args.csv:
        sys.stdout.write(history.to_csv(rows))
        return EXIT_OK
    table = render.filter_table if args.kind == "filter" else render.history_table
    print(table(rows, args.dataset, rt.tracking_uri))
    return EXIT_OK


def add_report_parser(sub, common) -> None:
    rp = sub.add_parser(
        "report", parents=[common], formatter_class=Formatter,
        help="write a self-contained HTML trend report of a dataset (and log it to MLflow)",
        description="Write DIR/index.html (charts inlined as PNG, also in DIR/charts/): every indicator across the "
                    "dataset's checks with its alert thresholds and the runs where each rule was pending, fired or "
                    "resolved; the synthetic share with its interval; when each alert first started; the probed "
                    "models' tail/head ratio by version; links to every MLflow run. The folder is also logged as "
                    "the artifacts of a 'report' run in the dataset's experiment.",
        epilog="example:\n  collapse-monitor report --dataset news --out reports/news && xdg-open reports/news/index.html")
    rp.add_argument("--dataset", metavar="NAME", type=dataset_option, help="the dataset (default: the 'dataset' setting)")
    rp.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    rp.add_argument("--ui-url", default="http://127.0.0.1:5000", metavar="URL",
                    help="MLflow UI the run links point at when the tracking store is not a server "
                         "(default: what `collapse-monitor ui` serves)")


def run_report(args) -> int:
    settings, rt = setup(args)
    from flows.report import build_report, run_url_for

    dataset = args.dataset or settings.dataset
    page, run_id, n = build_report(open_tracker(rt), settings, dataset, Path(args.out), run_url_for(rt.tracking_uri, args.ui_url))
    print(f"report of {n} checks of dataset {dataset!r}: {page} (logged to MLflow run {run_id})")
    return EXIT_OK


def add_gc_parser(sub, common) -> None:
    g = sub.add_parser("gc", parents=[common], formatter_class=Formatter,
                       help="delete old checks' Evidently drift reports (retention)",
                       description="Delete the Evidently drift reports (artifacts drift/) of checks that started more "
                                   "than indicators.drift_keep_days days ago (default 90). The runs, their metrics, "
                                   "alerts and other artifacts stay; each run is tagged collapse.drift_report_deleted.",
                       epilog="examples:\n  collapse-monitor gc --dry-run                 # what would go, and how much\n"
                              "  collapse-monitor gc --dataset news --keep-days 30")
    g.add_argument("--dataset", metavar="NAME", type=dataset_option, help="only this dataset (default: all datasets)")
    g.add_argument("--keep-days", type=float, metavar="DAYS",
                   help="keep the reports of the last DAYS days (default: indicators.drift_keep_days)")
    g.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    g.add_argument("--json", action="store_true", help="print one JSON object")


def run_gc(args) -> int:
    settings, rt = setup(args)
    keep = args.keep_days if args.keep_days is not None else settings.indicators.drift_keep_days
    if keep is None:
        raise UserError("nothing to delete: indicators.drift_keep_days is unset (keep forever); give --keep-days")
    if keep <= 0:
        raise UserError(f"--keep-days must be positive, got {keep:g}")
    tracker = open_tracker(rt)
    before = int((time.time() - keep * 86400) * 1000)
    deleted = [r for ds in datasets(tracker, args.dataset)
               for r in tracker.delete_drift_reports(ds, before, dry_run=args.dry_run)]
    size = sum(r["bytes"] for r in deleted)
    if args.json:
        print(json.dumps({"keep_days": keep, "dry_run": args.dry_run, "deleted": deleted, "bytes": size}))
        return EXIT_OK
    for r in deleted:
        when = datetime.fromtimestamp(r["started"] / 1000).strftime("%Y-%m-%d %H:%M")
        print(f"{when}  {r['dataset']:<12} {r['batch']:<30} {r['bytes'] / 1e6:7.2f} MB  run {r['run_id']}")
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} the drift reports of {len(deleted)} check{'s' if len(deleted) != 1 else ''} started more than "
          f"{keep:g} days ago ({size / 1e6:.1f} MB)")
    return EXIT_OK


def add_ui_parser(sub, common) -> None:
    u = sub.add_parser("ui", parents=[common], formatter_class=Formatter,
                       help="open the MLflow UI on the results",
                       description="Start the MLflow UI on the configured tracking store, on 127.0.0.1.",
                       epilog="example:\n  collapse-monitor ui --port 5000    # then browse http://127.0.0.1:5000")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")


_STARLETTE_WSGI = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


def run_ui(args) -> int:
    settings, rt = setup(args)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # 10 worker processes otherwise
    # MLflow's server imports starlette.middleware.wsgi, which warns on import in each worker; not ours to act on.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _STARLETTE_WSGI]))
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", rt.tracking.get_secret_value(), "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on {rt.tracking_uri}: http://127.0.0.1:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    os.execv(sys.executable, cmd)
    return EXIT_INTERNAL  # not reached
