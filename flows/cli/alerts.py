"""``collapse-monitor alerts list | silence``: alert states and silences, per dataset."""

from __future__ import annotations

import json
import time
from datetime import datetime

from flows.cli import render
from flows.cli.common import (
    EXIT_OK,
    Formatter,
    dataset_option,
    datasets,
    open_reader,
    open_tracker,
    setup,
)
from monitors.core.errors import UserError


def add_parser(sub, common) -> None:
    al = sub.add_parser("alerts", parents=[common], formatter_class=Formatter,
                        help="list alert states and silences; silence an alert for a while",
                        description="Alert states live in MLflow: each check stores the state of every rule "
                                    "(alerts/state.json) and silences are tags of the dataset's experiment.")
    asub = al.add_subparsers(dest="action", metavar="ACTION", required=True)
    al_list = asub.add_parser("list", parents=[common], formatter_class=Formatter,
                              help="pending and firing alerts and silences, per dataset",
                              description="Pending and firing alerts (as of each dataset's newest check) and silences.",
                              epilog="examples:\n  collapse-monitor alerts list\n  collapse-monitor alerts list --dataset news --json")
    al_list.add_argument("--dataset", metavar="NAME", type=dataset_option, help="only this dataset (default: all)")
    al_list.add_argument("--json", action="store_true", help="print a JSON object")
    al_sil = asub.add_parser("silence", parents=[common], formatter_class=Formatter,
                             help="hold back an alert's notifications until the silence expires",
                             description="Silence one alert (by the fingerprint `alerts list` shows): its state still "
                                         "changes and is logged, but nothing is sent until the silence expires.",
                             epilog="example:\n  collapse-monitor alerts silence 3f2a9c0d1e4b5a6f --for 24h "
                                    "--reason 'known vendor backfill'")
    al_sil.add_argument("fingerprint", metavar="FINGERPRINT")
    al_sil.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 90m, 24h, 7d")
    al_sil.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with the silence)")
    al_sil.add_argument("--dataset", metavar="NAME", type=dataset_option,
                        help="the alert's dataset (default: the dataset whose newest check has this fingerprint)")


def run(args) -> int:
    settings, rt = setup(args)
    from dataclasses import asdict

    from monitors.adapters.failures import FailureStore
    from monitors.core.alerting import Silence
    from monitors.core.numbers import parse_duration

    now = time.time()
    if args.action == "silence":
        from monitors.adapters.tracking import scopes_with_alert

        tracker = open_tracker(rt)
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--for: {exc}") from None
        dataset = args.dataset
        if dataset is None:
            owners = scopes_with_alert(tracker, args.fingerprint)
            if len(owners) != 1:
                raise UserError(f"no current alert has fingerprint {args.fingerprint!r} (see `collapse-monitor alerts "
                                f"list`); give --dataset to silence it before it fires" if not owners else
                                f"fingerprint {args.fingerprint!r} is current in several datasets {owners}; give --dataset")
            dataset = owners[0]
        silence = Silence(args.fingerprint, until=now + seconds, reason=args.reason, created=now)
        tracker.add_silence(dataset, silence)
        until = datetime.utcfromtimestamp(silence.until).strftime("%Y-%m-%d %H:%M UTC")
        print(f"silenced {args.fingerprint} on dataset {dataset!r} until {until}: {args.reason}")
        return EXIT_OK
    store = open_reader(rt)
    report = {}
    failures = {}  # a failed check or probe logs no run: its alert lives in the state directory
    for f in FailureStore(settings.state_path).open():
        if args.dataset in (None, f["dataset"]):
            failures.setdefault(f["dataset"], []).append(f)
    for dataset in sorted(set(datasets(store, args.dataset)) | set(failures)):
        states = failures.get(dataset, []) + [asdict(s) for s in store.previous_alert_state(dataset).values()]
        silences = [asdict(s) | {"active": s.active(now)} for s in store.silences(dataset)]
        report[dataset] = {"alerts": states, "silences": silences}
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(render.alerts_table(report))
    return EXIT_OK
