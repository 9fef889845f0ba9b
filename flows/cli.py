"""The ``collapse-monitor`` command. Subcommands mirror the flows and call the same functions.

Exit codes: 0 ran and no critical alert is firing; 3 ran and a critical alert is firing;
2 usage or input error (the message names the problem); 1 internal failure (a bug: traceback shown).
Prefect, MLflow and GX are imported only by the commands that need them, after the runtime is prepared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from flows import simulate
from monitors.adapters import sources
from monitors.config import ENV_PREFIX, dataset_name, load_settings
from monitors.core.errors import UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CRITICAL = 0, 1, 2, 3

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
  collapse-monitor probes build --input heldout.jsonl --frequencies train.jsonl --out probes.jsonl
  collapse-monitor probe --model models:/intent@production --probes probes.jsonl
  collapse-monitor history --dataset news
  collapse-monitor report --dataset news --out reports/news   # HTML trend report with charts
  collapse-monitor ui                                 # the MLflow UI on the results

configuration: --config FILE, ${ENV_PREFIX}CONFIG or ./collapse-monitor.yaml, and {ENV_PREFIX}* variables
(see the README's configuration reference). Exit codes: 0 ok, 3 critical alert firing, 2 usage or
input error, 1 internal failure."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _common_options(top: bool) -> argparse.ArgumentParser:
    """--config, --state-dir, -v: accepted before the command and after it (or its action). The top level
    holds the defaults; a subcommand sets a value only when it is given there (SUPPRESS), so that one given
    before the command is not overwritten by the subcommand's default."""
    common = argparse.ArgumentParser(add_help=False)
    default = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--config", metavar="FILE", help="YAML settings file (default: $COLLAPSE_MONITOR_CONFIG or "
                        "./collapse-monitor.yaml)", **default)
    common.add_argument("--state-dir", metavar="DIR", help="where local stores live (default ./.collapse-monitor)", **default)
    common.add_argument("-v", "--verbose", action="store_true", help="show Prefect's own log lines", **default)
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options(top=False)
    p = argparse.ArgumentParser(prog="collapse-monitor", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_Formatter, parents=[_common_options(top=True)])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "check", parents=[common], formatter_class=_Formatter,
        help="check one batch file against its dataset's reference (runs the check_incoming_data flow)",
        description="Check one batch file (JSONL, Parquet or CSV) against the dataset's latest human reference: "
                    "collapse indicators, synthetic share with a 95 % interval, alert rules. Logs one MLflow run "
                    "in experiment collapse-monitor/<dataset>.",
        epilog="example:\n  collapse-monitor check --input landing/2026-11-21T06.jsonl --dataset news --json\n\n"
               "exit codes: 0 no critical alert firing, 3 a critical alert firing, 2 usage or input error, 1 internal failure",
    )
    c.add_argument("--input", required=True, metavar="PATH",
                   help="the batch: a file, a folder of batch files, a glob ('landing/*.jsonl.gz') or an fsspec URL")
    c.add_argument("--dataset", metavar="NAME", type=_dataset, help="dataset name (default: the 'dataset' setting)")
    c.add_argument("--reference", metavar="RUN_ID", help="compare with this reference run instead of the latest")
    c.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    c.add_argument("--recount", action="store_true",
                   help="add the batch to the corpus totals even if a check already counted the same content (by "
                        "default a re-check is checked and logged, but not counted twice)")
    c.add_argument("--task-runner", choices=("local", "dask"),
                   help="local (default): shards in worker processes here; dask: each shard a Prefect task on the "
                        "Dask cluster at --dask-address (prefect-dask)")
    c.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="scheduler of an existing Dask cluster")

    r = sub.add_parser("reference", parents=[common], formatter_class=_Formatter,
                       help="build the human reference a dataset is compared with",
                       description="Manage a dataset's human reference.",
                       epilog="example:\n  collapse-monitor reference build --input trusted_human.jsonl --dataset news")
    rsub = r.add_subparsers(dest="action", metavar="ACTION", required=True)
    rb = rsub.add_parser(
        "build", parents=[common], formatter_class=_Formatter,
        help="profile trusted human text into a new reference version",
        description="Profile trusted human text (from before the contamination cutoff) into a versioned reference, "
                    "stored as an MLflow run. Later checks of the dataset compare with the newest one.",
        epilog="example:\n  collapse-monitor reference build --input trusted_human.jsonl --dataset news",
    )
    rb.add_argument("--input", required=True, metavar="PATH",
                    help="trusted human text (JSONL, Parquet, CSV): a file, a folder, a glob or an fsspec URL")
    rb.add_argument("--dataset", metavar="NAME", type=_dataset, help="dataset name (default: the 'dataset' setting)")

    dt = sub.add_parser("detector", parents=[common], formatter_class=_Formatter,
                        help="train the synthetic-text detector and register it in the MLflow model registry",
                        description="Manage the detector behind the synthetic-share estimate.")
    dsub = dt.add_subparsers(dest="action", metavar="ACTION", required=True)
    dtr = dsub.add_parser(
        "train", parents=[common], formatter_class=_Formatter,
        help="train, evaluate and register a detector from labelled human and machine text",
        description="Train a calibrated word and character n-gram detector (plus the local LM's statistics, "
                    "unless --no-lm) on labelled text, or on human text and examples the local LM makes from it "
                    "(--generate N), evaluate it on "
                    "a held-out 40 % (ROC AUC, TPR and FPR at the operating point, calibration error), choose the "
                    "quantification estimator (ACC, PACC or EM) on that held-out part, and register it in the MLflow "
                    "model registry (skops format) with those figures, its held-out scores and the hashes of its "
                    "training data. `check` uses models:/collapse-detector@production unless detector.model_uri "
                    "says otherwise.",
        epilog="examples:\n"
               "  collapse-monitor detector train --human human.jsonl --synthetic machine.jsonl --alias production\n"
               "  collapse-monitor detector train --human 'human/*.parquet' --synthetic gen/ --name news-detector\n"
               "  collapse-monitor detector train --human human.jsonl --generate 600 --alias production\n\n"
               "Inputs are read like batches (JSONL, Parquet, CSV; file, folder, glob or URL; the config's column "
               "mapping); unusable records are quarantined and logged with the detector's run.")
    dtr.add_argument("--human", required=True, metavar="PATH", help="human-written text")
    dtr.add_argument("--synthetic", metavar="PATH", help="machine-generated text (or --generate N)")
    dtr.add_argument("--generate", type=int, default=0, metavar="N",
                     help="make N synthetic examples with the local LM, prompted with openings of the --human texts "
                          "under 8 rotating decoding settings (temperature 0.7-1.1, top-p 0.9-1.0, repetition penalty "
                          "1.0-1.3, chat instruction or plain continuation); they are logged with the detector's run. "
                          "Replaces --synthetic, or adds to it")
    dtr.add_argument("--name", metavar="NAME", help="registered model name (default: the name in detector.model_uri, "
                                                    "collapse-detector)")
    dtr.add_argument("--alias", metavar="ALIAS", help="point this alias at the new version (e.g. production); "
                                                      "without it the version is registered but not used by checks")
    dtr.add_argument("--max-docs", type=int, default=100_000, metavar="N",
                     help="train on a uniform sample of at most N texts per class (default 100000)")
    dtr.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default 0)")
    dtr.add_argument("--lm", action=argparse.BooleanOptionalAction, default=None,
                     help="add the local LM's five statistics (NLL, entropy, log-rank, curvature, NLL/entropy) to the "
                          "n-gram features; checks then score with the LM too (default: on when the LM is "
                          "enabled and loads)")

    pb = sub.add_parser("probes", parents=[common], formatter_class=_Formatter,
                        help="build long-tail probe sets (head / torso / tail slices) for `probe`",
                        description="Manage long-tail probe sets: JSONL files of examples with a slice column.")
    pbsub = pb.add_subparsers(dest="action", metavar="ACTION", required=True)
    pbb = pbsub.add_parser(
        "build", parents=[common], formatter_class=_Formatter,
        help="slice labelled (or unlabelled) examples into head / torso / tail",
        description="Build a probe set: a JSONL file, one example per line, with id, text, slice (head | torso | "
                    "tail), label (when labelled), origin (built | edge_case) and optionally prompt.\n\n"
                    "--by label: by class frequency. Classes are ordered from most to least frequent; those that "
                    "make up the first --head of the examples are the head, those after 1 - --tail the tail, the "
                    "rest the torso. Frequencies are counted in --frequencies (e.g. the training data) or else in "
                    "--input.\n"
                    "--by tokens: by the rarity of a text's words in a human reference (--reference): the share of "
                    "its words outside the words that make up 80 % of the reference's tokens. The --head share of "
                    "least rare texts is the head, the --tail share of rarest texts the tail.\n\n"
                    "Use examples the model was not trained on. Hand-written edge cases (--edge-cases, JSONL with "
                    "text and optionally label, slice (default tail) and prompt) are appended.",
        epilog="examples:\n"
               "  collapse-monitor probes build --input heldout.jsonl --frequencies train.jsonl --out probes.jsonl\n"
               "  collapse-monitor probes build --input prompts.jsonl --by tokens --reference human.jsonl "
               "--edge-cases edge.jsonl --out gen-probes.jsonl")
    pbb.add_argument("--input", required=True, metavar="PATH", help="examples (JSONL, CSV or Parquet)")
    pbb.add_argument("--out", required=True, metavar="PATH", help="the probe set to write (JSONL)")
    pbb.add_argument("--by", choices=("label", "tokens"), default="label", help="slice by class frequency "
                     "(default) or by word rarity")
    pbb.add_argument("--frequencies", metavar="PATH", help="--by label: count class frequencies here (default: --input)")
    pbb.add_argument("--reference", metavar="PATH", help="--by tokens: human reference text (JSONL, CSV or Parquet)")
    pbb.add_argument("--edge-cases", metavar="PATH", help="hand-written examples to append")
    pbb.add_argument("--head", type=float, default=0.5, metavar="SHARE", help="head share (default 0.5)")
    pbb.add_argument("--tail", type=float, default=0.2, metavar="SHARE", help="tail share (default 0.2)")
    pbb.add_argument("--max-per-class", type=int, default=0, metavar="N", help="--by label: keep at most N examples "
                     "per class (default: all)")
    pbb.add_argument("--text-column", default="text", metavar="NAME", help="column holding the text (default text)")
    pbb.add_argument("--label-column", default="label", metavar="NAME", help="column holding the label (default label)")

    pr = sub.add_parser(
        "probe", parents=[common], formatter_class=_Formatter,
        help="evaluate a registered model on a probe set (runs the evaluate_long_tail_probes flow)",
        description="Load a model from the MLflow registry by alias or version and evaluate it per slice. "
                    "Classifiers: accuracy, macro-F1, calibration error, tail-to-head ratio. Generators (a pyfunc "
                    "taking a DataFrame with a text column and a task parameter, generate or loglik): perplexity "
                    "of the probe texts and diversity of its outputs against the human texts. Results are compared "
                    "with the previous registry version (evaluated now if it has no result on this probe set) and "
                    "the oldest version evaluated on it; the teacher chain (tag collapse.teacher) gives the "
                    "distillation depth. Rules: expectations/probe_indicators.json. Logs one MLflow run in "
                    "experiment collapse-monitor/models/<name>.",
        epilog="examples:\n"
               "  collapse-monitor probe --model models:/support-intent@production --probes probes.jsonl\n"
               "  collapse-monitor probe --model models:/writer/7 --probes gen-probes.jsonl --kind generator --json\n\n"
               "exit codes: 0 no critical alert firing, 3 a critical alert firing, 2 usage or input error (a broken "
               "alias, a model that raises), 1 internal failure")
    pr.add_argument("--model", required=True, metavar="URI", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pr.add_argument("--probes", required=True, metavar="PATH", help="a probe set from `probes build`")
    pr.add_argument("--kind", choices=("classifier", "generator"),
                    help="what the model is (default: its tag collapse.model_kind, else classifier)")
    pr.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    rp = sub.add_parser(
        "report", parents=[common], formatter_class=_Formatter,
        help="write a self-contained HTML trend report of a dataset (and log it to MLflow)",
        description="Write DIR/index.html (charts inlined as PNG, also in DIR/charts/): every indicator across the "
                    "dataset's checks with its alert thresholds and the runs where each rule was pending, fired or "
                    "resolved; the synthetic share with its interval; when each alert first started; the probed "
                    "models' tail/head ratio by version; links to every MLflow run. The folder is also logged as "
                    "the artifacts of a 'report' run in the dataset's experiment.",
        epilog="example:\n  collapse-monitor report --dataset news --out reports/news && xdg-open reports/news/index.html")
    rp.add_argument("--dataset", metavar="NAME", type=_dataset, help="the dataset (default: the 'dataset' setting)")
    rp.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    rp.add_argument("--ui-url", default="http://127.0.0.1:5000", metavar="URL",
                    help="MLflow UI the run links point at when the tracking store is not a server "
                         "(default: what `collapse-monitor ui` serves)")

    sv = sub.add_parser(
        "serve", parents=[common], formatter_class=_Formatter,
        help="run the scheduled data check and probes in this process (needs a real Prefect server)",
        description="Serve the deployments the config asks for, in this one process (prefect.serve): the data "
                    "check of schedules.landing every schedules.data_every (3h) and the probes of schedules.models "
                    "on schedules.probe_set every schedules.probes_every (6h); cron expressions (data_cron, "
                    "probes_cron) win over intervals. Each deployment runs at most one run at a time: a run that "
                    "would overlap the one in progress is cancelled (concurrency limit 1, CANCEL_NEW). Each new "
                    "landing file is checked exactly once (see the README's landing zone section).\n\n"
                    "Schedules only fire on a real Prefect server (`prefect server start`): set PREFECT_API_URL "
                    "(or prefect_api_url). For the worker route instead, see deployments/prefect.yaml. Stop with "
                    "Ctrl-C or SIGTERM; the schedules are paused on the way out.",
        epilog="example:\n"
               "  export PREFECT_API_URL=http://127.0.0.1:4200/api MLFLOW_TRACKING_URI=http://127.0.0.1:5000\n"
               "  COLLAPSE_MONITOR_SCHEDULES__LANDING=/data/landing/news COLLAPSE_MONITOR_SCHEDULES__DATASET=news \\\n"
               "    collapse-monitor serve --data-every 3h")
    sv.add_argument("--data-every", metavar="DURATION", help="override schedules.data_every (e.g. 30s, 3h)")
    sv.add_argument("--probes-every", metavar="DURATION", help="override schedules.probes_every (e.g. 6h)")

    al = sub.add_parser("alerts", parents=[common], formatter_class=_Formatter,
                        help="list alert states and silences; silence an alert for a while",
                        description="Alert states live in MLflow: each check stores the state of every rule "
                                    "(alerts/state.json) and silences are tags of the dataset's experiment.")
    asub = al.add_subparsers(dest="action", metavar="ACTION", required=True)
    al_list = asub.add_parser("list", parents=[common], formatter_class=_Formatter,
                              help="pending and firing alerts and silences, per dataset",
                              description="Pending and firing alerts (as of each dataset's newest check) and silences.",
                              epilog="examples:\n  collapse-monitor alerts list\n  collapse-monitor alerts list --dataset news --json")
    al_list.add_argument("--dataset", metavar="NAME", type=_dataset, help="only this dataset (default: all)")
    al_list.add_argument("--json", action="store_true", help="print a JSON object")
    al_sil = asub.add_parser("silence", parents=[common], formatter_class=_Formatter,
                             help="hold back an alert's notifications until the silence expires",
                             description="Silence one alert (by the fingerprint `alerts list` shows): its state still "
                                         "changes and is logged, but nothing is sent until the silence expires.",
                             epilog="example:\n  collapse-monitor alerts silence 3f2a9c0d1e4b5a6f --for 24h "
                                    "--reason 'known vendor backfill'")
    al_sil.add_argument("fingerprint", metavar="FINGERPRINT")
    al_sil.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 90m, 24h, 7d")
    al_sil.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with the silence)")
    al_sil.add_argument("--dataset", metavar="NAME", type=_dataset,
                        help="the alert's dataset (default: the dataset whose newest check has this fingerprint)")

    h = sub.add_parser("history", parents=[common], formatter_class=_Formatter,
                       help="past checks from MLflow with key indicators and alerts, newest first",
                       description="List past checks from MLflow, newest first, with key indicators and firing alerts.",
                       epilog="examples:\n  collapse-monitor history --dataset news --last 5\n"
                              "  collapse-monitor history --since 7d --severity critical\n"
                              "  collapse-monitor history --dataset news --state firing --csv > firing.csv\n"
                              "  collapse-monitor history --json | jq '.[0]'")
    h.add_argument("--dataset", metavar="NAME", type=_dataset, help="only this dataset (default: all datasets)")
    h.add_argument("--since", metavar="WHEN", help="only runs since then: a duration back (7d, 12h) or an ISO date "
                                                   "(2026-11-01, UTC)")
    h.add_argument("--severity", choices=("warning", "critical"),
                   help="only runs with a firing alert of this severity or worse")
    h.add_argument("--state", choices=("pending", "firing", "resolved"), help="only runs with an alert in this state")
    h.add_argument("--last", type=int, default=20, metavar="N", help="at most N runs (default 20; 0 = all)")
    fmt = h.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list")
    fmt.add_argument("--csv", action="store_true", help="print CSV: one line per run")

    d = sub.add_parser("demo", parents=[common], formatter_class=_Formatter,
                       help="run the whole job on a simulated collapsing data stream (no network, no server)",
                       description="Build a human reference from Jane Austen's novels, then check batches in which text "
                                   "from a recursively retrained generator replaces more and more human text. Each batch "
                                   "is a Prefect flow run and an MLflow run in experiment collapse-monitor/demo. Then "
                                   "register classifier and generator lineages (replace vs accumulate) version by "
                                   "version and probe each on long-tail probe sets.",
                       epilog="examples:\n  collapse-monitor demo            # 10 batches, 4 model generations, the share from human text alone; about 4.5 minutes\n"
                              "  collapse-monitor demo --quick    # 5 smaller batches, 3 generations, no LM; about 1.75 minutes")
    d.add_argument("--quick", action="store_true", help="5 smaller batches")

    g = sub.add_parser("gc", parents=[common], formatter_class=_Formatter,
                       help="delete old checks' Evidently drift reports (retention)",
                       description="Delete the Evidently drift reports (artifacts drift/) of checks that started more "
                                   "than indicators.drift_keep_days days ago (default 90). The runs, their metrics, "
                                   "alerts and other artifacts stay; each run is tagged collapse.drift_report_deleted.",
                       epilog="examples:\n  collapse-monitor gc --dry-run                 # what would go, and how much\n"
                              "  collapse-monitor gc --dataset news --keep-days 30")
    g.add_argument("--dataset", metavar="NAME", type=_dataset, help="only this dataset (default: all datasets)")
    g.add_argument("--keep-days", type=float, metavar="DAYS",
                   help="keep the reports of the last DAYS days (default: indicators.drift_keep_days)")
    g.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    g.add_argument("--json", action="store_true", help="print one JSON object")

    u = sub.add_parser("ui", parents=[common], formatter_class=_Formatter,
                       help="open the MLflow UI on the results",
                       description="Start the MLflow UI on the configured tracking store, on 127.0.0.1.",
                       epilog="example:\n  collapse-monitor ui --port 5000    # then browse http://127.0.0.1:5000")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    simulate.add_parser(sub, parents=[common], formatter_class=_Formatter)
    return p


def _dataset(value: str) -> str:
    """--dataset is checked like the 'dataset' setting, before anything is written under its name."""
    try:
        return dataset_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value[:40]!r}{'...' if len(value) > 40 else ''} {exc}") from None


def _setup(args):
    from monitors.adapters import runtime

    settings = load_settings(args.config)
    if args.state_dir:
        settings = settings.model_copy(update={"state_dir": Path(args.state_dir)})
    return settings, runtime.prepare(settings, quiet_prefect=not args.verbose)


class _RunFailureFilter(logging.Filter):
    """Drops Prefect's console copy of a failed run: the CLI reports every failure itself (a message for a
    user error, a traceback for a bug), and Prefect's API log still keeps the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def _console_reports_failures_once(args) -> None:
    if args.verbose:
        return
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RunFailureFilter) for f in handler.filters):  # main() may run many times
            handler.addFilter(_RunFailureFilter())


def _check(args) -> int:
    settings, rt = _setup(args)
    overrides = {k: v for k, v in (("task_runner", args.task_runner or ("dask" if args.dask_address else None)),
                                   ("dask_address", args.dask_address)) if v}
    if overrides:
        settings = settings.model_copy(update=overrides)
    dataset = args.dataset or settings.dataset
    batch = sources.Batch.resolve(args.input)  # fail fast, before Prefect starts; the flow reads these files
    from flows import progress, tasks
    from flows.check import check_incoming_data

    _console_reports_failures_once(args)
    progress.enable()  # on stderr: the LM scoring of a batch takes up to a minute
    # Fail fast, before Prefect starts, and pin the reference found so the flow uses that same one.
    tracker = tasks.tracker_for(rt)
    reference = tracker.reference_run(dataset, args.reference)
    sha = tasks.batch_sha256(batch)  # keyed by content, as the landing zone is: counted once
    result = tasks.with_task_runner(check_incoming_data, settings)(
        batch, dataset, settings, rt, batch_name=Path(args.input).name, reference_run_id=reference,
        content_sha256=sha, recount=args.recount)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        if result.spooled:
            print(f"MLflow at {rt.tracking_uri} was unreachable: the run waits in {result.spooled} and the next "
                  f"check replays it")
        else:
            print(f"MLflow: {rt.tracking_uri} (run {result.run_id}); open it with `collapse-monitor ui`")
    return EXIT_CRITICAL if result.critical_firing else EXIT_OK


def _reference(args) -> int:
    settings, rt = _setup(args)
    dataset = args.dataset or settings.dataset
    sources.expand(args.input)  # fail fast, before Prefect starts, on a path that matches nothing
    from flows import progress
    from flows.reference import build_reference_flow

    _console_reports_failures_once(args)
    progress.enable()  # on stderr
    run_id, ref, quarantined = build_reference_flow(args.input, dataset, settings, rt)
    print(f"reference for dataset {dataset!r}: {ref.documents} documents, {ref.tokens} tokens, "
          f"{len(ref.tail)} tail types; MLflow run {run_id}")
    if quarantined:
        print(f"  {quarantined} input record(s) were quarantined and are not part of the reference")
    if ref.lm is not None:
        print(f"  {len(ref.lm.features)} held-out documents scored by the local LM: checks estimate the synthetic "
              f"share from this reference when no detector is registered")
    else:
        print("  no LM scores (lm.enabled is false, or the local LM is unavailable: see the warning above): the "
              "synthetic share will need a trained detector")
    return EXIT_OK


def _detector(args) -> int:
    settings, rt = _setup(args)
    if not args.synthetic and args.generate <= 0:
        raise UserError("detector train needs machine text: --synthetic PATH, or --generate N to make N examples "
                         "with the local LM from openings of the human text")
    sources.expand(args.human)  # fail fast on paths that match nothing
    if args.synthetic:
        sources.expand(args.synthetic)
    from flows import progress
    from flows.detector import train_detector_flow
    from monitors.adapters.registry import model_name

    _console_reports_failures_once(args)
    progress.enable()  # on stderr
    name = args.name or model_name(settings.detector.model_uri)
    r = train_detector_flow(args.human, args.synthetic, name, args.alias, settings, rt, max_docs=args.max_docs,
                            seed=args.seed, lm=args.lm, generate=max(args.generate, 0))
    m, mae = r.detector.metrics(), r.detector.selection_mae
    print(f"registered detector {r.name} version {r.version}" + (f" as @{r.alias}" if r.alias else " (no alias set)"))
    print(f"  trained on {r.detector.trained_on['human']} human and {r.detector.trained_on['synthetic']} synthetic texts; "
          f"held out {int(m['val_negatives'])} human and {int(m['val_positives'])} synthetic")
    print(f"  held-out ROC AUC {m['roc_auc']:.4f}; at threshold {m['threshold']:.2f}: TPR {m['tpr']:.4f}, "
          f"FPR {m['fpr']:.4f}; calibration error (ECE) {m['ece']:.4f}")
    if r.generated:
        g = r.generated
        print(f"  generated {g['requested']} synthetic examples with the local LM ({g['dropped_short']} under "
              f"{g['min_words']} words dropped) at {g['speed'].get('tokens_per_s', 0):.0f} new tokens/s; logged with "
              f"the run as generated/synthetic.jsonl, settings in generated/decoding.json")
    print("  features: word and character n-grams" + (f" + LM statistics ({r.detector.lm_tag})" if r.detector.lm_tag
                                                        else f" (no LM statistics: {r.lm_note})" if r.lm_note else ""))
    print(f"  quantifier: {r.detector.method} (validation MAE " + ", ".join(f"{k} {v:.4f}" for k, v in mae.items()) + ")")
    for label, n in r.quarantined.items():
        if n:
            print(f"  {n} {label} record(s) quarantined (logged with the detector's run)")
    uri = f"models:/{r.name}@{r.alias}" if r.alias else f"models:/{r.name}/{r.version}"
    if uri != settings.detector.model_uri:
        print(f"  checks use {settings.detector.model_uri}; to use this one set "
              f"{ENV_PREFIX}DETECTOR__MODEL_URI={uri} (or detector.model_uri in the config file)")
    return EXIT_OK


def _probes(args) -> int:
    from monitors.adapters import probe_files
    from monitors.core import probes

    if not (0 < args.head <= 1 - args.tail < 1):
        raise UserError(f"--head {args.head} and --tail {args.tail}: need 0 < head <= 1 - tail < 1")
    rows = probe_files.read_rows(args.input)
    if not rows:
        raise UserError(f"{args.input}: no examples")
    if args.by == "label":
        freq = probe_files.read_rows(args.frequencies) if args.frequencies else None
        report = probes.build_by_label(rows, args.input, frequencies=freq, text_col=args.text_column,
                                       label_col=args.label_column, head_mass=args.head, tail_mass=args.tail,
                                       max_per_class=args.max_per_class)
    else:
        if not args.reference:
            raise UserError("--by tokens needs --reference PATH: human text whose word frequencies define rarity")
        ref_rows = probe_files.read_rows(args.reference)
        texts = [r.get(args.text_column) for r in ref_rows if isinstance(r.get(args.text_column), str)]
        if not texts:
            raise UserError(f"{args.reference}: no '{args.text_column}' texts")
        report = probes.build_by_tokens(rows, args.input, probes.head_vocabulary(texts), text_col=args.text_column,
                                        head_share=args.head, tail_share=args.tail)
    if args.edge_cases:
        report = probes.merge_edge_cases(report, probe_files.read_rows(args.edge_cases), args.edge_cases, args.text_column)
    missing = [s for s in ("head", "tail") if not report.by_slice.get(s)]
    if missing:
        raise UserError(f"the probe set would have no {' and no '.join(missing)} examples; change --head/--tail "
                        f"or give more examples")
    probe_files.write_jsonl(report.rows, args.out)
    print(f"wrote {len(report.rows)} probes to {args.out}: "
          + ", ".join(f"{s} {report.by_slice.get(s, 0)}" for s in probes.SLICES)
          + (f" (incl. {report.edge_cases} edge cases)" if report.edge_cases else ""))
    for sl in probes.SLICES:
        members = [c for c, s in report.classes.items() if s == sl]
        if members:
            print(f"  {sl}: {', '.join(members)}")
    return EXIT_OK


def _probe(args) -> int:
    settings, rt = _setup(args)
    from flows.probe import evaluate_long_tail_probes

    _console_reports_failures_once(args)
    result = evaluate_long_tail_probes(args.model, args.probes, settings, rt, kind=args.kind)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"MLflow: {rt.tracking_uri} (run {result.run_id}, experiment collapse-monitor/models/{result.model})")
    return EXIT_CRITICAL if result.critical_firing else EXIT_OK


def _report(args) -> int:
    settings, rt = _setup(args)
    from flows.report import build_report, run_url_for
    from flows.tasks import tracker_for

    dataset = args.dataset or settings.dataset
    page, run_id, n = build_report(tracker_for(rt), settings, dataset, Path(args.out), run_url_for(rt.tracking_uri, args.ui_url))
    print(f"report of {n} checks of dataset {dataset!r}: {page} (logged to MLflow run {run_id})")
    return EXIT_OK


def _serve(args) -> int:
    settings, rt = _setup(args)
    if rt.prefect_api_url is None:
        raise UserError("serve needs a real Prefect server: schedules never fire on Prefect's ephemeral API. Start "
                        "one (`prefect server start`, see the README's 'Running it in production') and set "
                        "PREFECT_API_URL=http://127.0.0.1:4200/api, or prefect_api_url in the config file")
    from prefect import serve

    from flows.scheduled import deployments
    from monitors.config import config_path

    deps = deployments(settings, config_path(args.config), data_every=args.data_every, probes_every=args.probes_every)
    from flows import automations
    from flows.tasks import channel_urls

    urls = channel_urls(settings)
    for line in (automations.watch(deps, urls) if urls else
                 ["no on-call channel (COLLAPSE_MONITOR_ALERT_URLS or alerts.urls): no dead man's switch"]):
        print(line, file=sys.stderr)
    for d in deps:
        sched = d.schedules[0].schedule if d.schedules else None
        print(f"serving {d.flow_name}/{d.name}: {sched}; parameters {json.dumps(d.parameters)}", file=sys.stderr)
    print(f"Prefect API {rt.prefect_api_url}; MLflow {rt.tracking_uri}; Ctrl-C or SIGTERM stops", file=sys.stderr)
    serve(*deps, print_starting_message=False)
    return EXIT_OK


def _datasets(tracker, only: str | None) -> list[str]:
    if only:
        return [only]
    return tracker.scopes()


def _alerts(args) -> int:
    settings, rt = _setup(args)
    from flows.tasks import open_failures, tracker_for
    from monitors.core.alerting import parse_duration
    from monitors.core.rules import SEVERITIES

    tracker = tracker_for(rt)
    now = time.time()
    if args.action == "silence":
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--for: {exc}") from None
        dataset = args.dataset
        if dataset is None:
            owners = [d for d in _datasets(tracker, None)
                      if any(s["fingerprint"] == args.fingerprint for s in tracker.previous_alert_state(d))]
            if len(owners) != 1:
                raise UserError(f"no current alert has fingerprint {args.fingerprint!r} (see `collapse-monitor alerts "
                                f"list`); give --dataset to silence it before it fires" if not owners else
                                f"fingerprint {args.fingerprint!r} is current in several datasets {owners}; give --dataset")
            dataset = owners[0]
        silence = {"fingerprint": args.fingerprint, "until": now + seconds, "reason": args.reason, "created": now}
        tracker.add_silence(dataset, silence)
        until = datetime.utcfromtimestamp(silence["until"]).strftime("%Y-%m-%d %H:%M UTC")
        print(f"silenced {args.fingerprint} on dataset {dataset!r} until {until}: {args.reason}")
        return EXIT_OK
    report = {}
    failures = {}  # a failed check or probe logs no run: its alert lives in the state directory
    for f in open_failures(settings):
        if args.dataset in (None, f["dataset"]):
            failures.setdefault(f["dataset"], []).append(f)
    for dataset in sorted(set(_datasets(tracker, args.dataset)) | set(failures)):
        states = failures.get(dataset, []) + tracker.previous_alert_state(dataset)
        silences = tracker.silences(dataset)
        for s in silences:
            s["active"] = now < s["until"]
        report[dataset] = {"alerts": states, "silences": silences}
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    if not any(v["alerts"] or v["silences"] for v in report.values()):
        print("no pending or firing alerts and no silences")
        return EXIT_OK
    rows = []
    for dataset, v in report.items():
        muted = {s["fingerprint"] for s in v["silences"] if s["active"]}
        for a in v["alerts"]:
            since = datetime.utcfromtimestamp(a["since"]).strftime("%Y-%m-%d %H:%M")
            runs = f"{a['breaches']}" + (f"/{a['for_runs']}" if a.get("for_runs") and a["status"] == "pending" else "") \
                if a.get("breaches") is not None else "-"
            rank = (-SEVERITIES.index(a["severity"]), a["status"] != "firing", dataset, a["rule"])
            rows.append((rank, f"{a['severity']:<9} {a['status']:<8} {a['rule']:<28} {dataset:<14} {since:<17} {runs:>5}  "
                               f"{a['fingerprint']}" + ("  [silenced]" if a["fingerprint"] in muted else "")
                               + (f"  {a['summary']}" if a.get("failure") else "")))
    if rows:
        print(f"{'SEVERITY':<9} {'STATUS':<8} {'RULE':<28} {'DATASET':<14} {'SINCE (UTC)':<17} {'RUNS':>5}  FINGERPRINT")
        print("\n".join(line for _, line in sorted(rows)))
    silences = [(d, s) for d, v in report.items() for s in v["silences"]]
    if silences:
        print(f"\n{'SILENCE':<9} {'UNTIL (UTC)':<17} {'DATASET':<14} {'FINGERPRINT':<16}  REASON")
    for dataset, s in silences:
        until = datetime.utcfromtimestamp(s["until"]).strftime("%Y-%m-%d %H:%M")
        print(f"{'active' if s['active'] else 'expired':<9} {until:<17} {dataset:<14} {s['fingerprint']:<16}  {s['reason']}")
    return EXIT_OK


def _history(args) -> int:
    settings, rt = _setup(args)
    from flows.tasks import tracker_for
    from monitors.core.results import KEY_INDICATORS

    from monitors.core import history

    try:
        since = history.since_ms(args.since) if args.since else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    filtered = bool(since or args.severity or args.state)
    rows = tracker_for(rt).history(args.dataset, None if filtered else args.last)
    rows = history.select(rows, since=since, severity=args.severity, state=args.state, last=args.last)
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    if args.csv:
        sys.stdout.write(history.to_csv(rows))
        return EXIT_OK
    if not rows:
        print("no checks yet" + (f" for dataset {args.dataset!r}" if args.dataset else "") + f" in {rt.tracking_uri}")
        return EXIT_OK
    short = {"synthetic.share": "syn", "human.share": "human", "corpus.human_share": "corp.hum", "tail.distinct_2.ratio": "dist2",
             "tail.rare_coverage.ratio": "rarecov", "mode.compression_ratio.ratio": "compr",
             "vintage.after_cutoff_share": "post-cut", "tail.rare_coverage.z": "rarecov.z",
             "mode.near_duplicate_share": "neardup", "mode.cluster_entropy.z": "clust.z", "drift.text_auc": "txt-auc"}
    print(f"{'started (UTC)':<17} {'dataset':<10} {'batch':<22} " + " ".join(f"{short[k]:>8}" for k in KEY_INDICATORS) + "  alerts")
    for row in rows:
        when = datetime.utcfromtimestamp(row["started"] / 1000).strftime("%Y-%m-%d %H:%M")
        vals = " ".join(f"{row['metrics'][k]:>8.3f}" if k in row["metrics"] else f"{'n/a':>8}" for k in KEY_INDICATORS)
        alerts = ", ".join(row["alerts"]) or "-"
        print(f"{when:<17} {str(row['dataset'])[:10]:<10} {str(row['batch'])[:22]:<22} {vals}  {alerts}")
    return EXIT_OK


def _demo(args) -> int:
    settings, rt = _setup(args)
    started = time.monotonic()
    print(f"collapse-monitor demo: results go to MLflow at {rt.tracking_uri}; Prefect: {rt.prefect_mode}", file=sys.stderr)
    from flows import demo_probes
    from flows.demo import run_demo, table

    _console_reports_failures_once(args)
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
    prog, state = _program(), shlex.quote(str(settings.state_path))
    report = shlex.quote(str(settings.state_path / "demo" / "report"))
    print(f"Trend report (HTML with charts): {prog} report --dataset demo --out {report} --state-dir {state}")
    print(f"Open the MLflow UI on the results: {prog} ui --state-dir {state}  (then browse http://127.0.0.1:5000)")
    return EXIT_OK


def _program() -> str:
    """This program as it was started, for commands we print: ``.venv/bin/collapse-monitor`` when run that way
    (the README installs into .venv without activating it), ``collapse-monitor`` when that is what PATH finds."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "collapse-monitor" or os.sep not in argv0:
        return "collapse-monitor"
    found = shutil.which("collapse-monitor")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return "collapse-monitor"
    return shlex.quote(argv0)


def _gc(args) -> int:
    settings, rt = _setup(args)
    from flows.tasks import tracker_for

    keep = args.keep_days if args.keep_days is not None else settings.indicators.drift_keep_days
    if keep is None:
        raise UserError("nothing to delete: indicators.drift_keep_days is unset (keep forever); give --keep-days")
    if keep <= 0:
        raise UserError(f"--keep-days must be positive, got {keep:g}")
    tracker = tracker_for(rt)
    before = int((time.time() - keep * 86400) * 1000)
    deleted = [r for ds in _datasets(tracker, args.dataset)
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


_STARLETTE_WSGI = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


def _ui(args) -> int:
    settings, rt = _setup(args)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # 10 worker processes otherwise
    # MLflow's server imports starlette.middleware.wsgi, which warns on import in each worker; not ours to act on.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _STARLETTE_WSGI]))
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", rt.tracking.get_secret_value(), "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on {rt.tracking_uri}: http://127.0.0.1:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    os.execv(sys.executable, cmd)
    return EXIT_INTERNAL  # not reached


COMMANDS = {"check": _check, "reference": _reference, "detector": _detector, "probes": _probes, "probe": _probe, "serve": _serve, "report": _report, "alerts": _alerts, "history": _history, "demo": _demo, "gc": _gc, "ui": _ui, "simulate": simulate.run}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"collapse-monitor: error: {exc}", file=sys.stderr)
        _json_error(args, str(exc), EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("collapse-monitor: interrupted", file=sys.stderr)
        _json_error(args, "interrupted", 130)
        return 130
    except Exception as exc:  # a bug: the traceback goes to stderr as usual, --json still gets its one object
        _json_error(args, f"{type(exc).__name__}: {exc}", EXIT_INTERNAL)
        raise


def _json_error(args, message: str, code: int) -> None:
    """Under --json a failed command still prints its one JSON object on stdout: what went wrong, the exit code."""
    if getattr(args, "json", False):
        from monitors.adapters.delivery import scrub

        print(json.dumps({"error": scrub(message), "exit_code": code}))


if __name__ == "__main__":
    sys.exit(main())
