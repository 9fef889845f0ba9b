"""``collapse-monitor demo``: the whole job on a simulated collapsing stream."""

from __future__ import annotations

import shlex
import sys
import time

from flows.cli.common import (
    EXIT_OK,
    Formatter,
    console_reports_failures_once,
    prefect_server_early,
    program,
    setup,
)


def add_parser(sub, common) -> None:
    d = sub.add_parser("demo", parents=[common], formatter_class=Formatter,
                       help="run the whole job on a simulated collapsing data stream (no network, no server)",
                       description="Build a human reference from Jane Austen's novels, then check batches in which text "
                                   "from a recursively retrained generator replaces more and more human text. Each batch "
                                   "is a Prefect flow run and an MLflow run in experiment collapse-monitor/demo. Then "
                                   "register classifier and generator lineages (replace vs accumulate) version by "
                                   "version and probe each on long-tail probe sets.",
                       epilog="examples:\n  collapse-monitor demo            # 10 batches, 4 model generations, the share from human text alone; about 4.5 minutes\n"
                              "  collapse-monitor demo --quick    # 5 smaller batches, 3 generations, no LM; about 1.75 minutes")
    d.add_argument("--quick", action="store_true", help="5 smaller batches")


def run(args) -> int:
    settings, rt = setup(args)
    started = time.monotonic()
    print(f"collapse-monitor demo: results go to MLflow at {rt.tracking_uri}; Prefect: {rt.prefect_mode}", file=sys.stderr)
    with prefect_server_early():
        from flows import demo_probes
        from flows.demo import run_demo, table
    console_reports_failures_once(args)
    results, probed, shared = run_demo(settings, rt, quick=args.quick)
    print(table(results))
    print("\nModel lineages on long-tail probes (each version an MLflow run in collapse-monitor/models/<name>):\n")
    print(demo_probes.table(probed))
    if shared:
        print("\nThe synthetic share from human text alone (no detector; the local LM against the human reference, "
              "dataset demo-share):\n")
        print(table(shared))
    elif args.quick:
        print("\n(The full demo, without --quick, also shows the synthetic share from human text alone, "
              "with the local LM.)")
    print(f"\nDone in {time.monotonic() - started:.0f} s: {len(results)} batches checked, each an MLflow run in "
          f"experiment collapse-monitor/demo; {sum(len(v) for v in probed.values())} model versions probed.")
    prog, state = program(), shlex.quote(str(settings.state_path))
    report = shlex.quote(str(settings.state_path / "demo" / "report"))
    print(f"Trend report (HTML with charts): {prog} report --dataset demo --out {report} --state-dir {state}")
    print(f"Open the MLflow UI on the results: {prog} ui --state-dir {state}  (then browse http://127.0.0.1:5000)")
    return EXIT_OK
