"""``collapse-monitor filter``: machine-written documents out of a corpus before a retrain (the
filter_synthetic_text flow)."""

from __future__ import annotations

import json
from pathlib import Path

from flows.cli.common import (
    EXIT_OK,
    Formatter,
    add_task_runner_options,
    console_reports_failures_once,
    dataset_option,
    open_reader,
    prefect_server_early,
    setup,
    with_task_runner_options,
)
from monitors.adapters import sources
from monitors.core.errors import UserError

FORMATS = ("jsonl", "jsonl.gz", "csv", "parquet")


def _share(value: str) -> float:
    import argparse

    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1 (0.05 = 5 %)")
    return x


def add_parser(sub, common) -> None:
    f = sub.add_parser(
        "filter", parents=[common], formatter_class=Formatter,
        help="split a batch into kept and flagged (machine-written) records before a retrain",
        description="Score every usable record of a batch for how machine-written it looks and write it to "
                    "OUT/kept.* or OUT/flagged.* (the original record plus synthetic_score), every quarantined "
                    "record to OUT/quarantine.jsonl, and what was done to OUT/filter.json. The threshold flags "
                    "at most --max-human-loss of the dataset's held-out human reference documents. Needs the "
                    "dataset's reference (`collapse-monitor reference build`); no labelled machine text. Logs one "
                    "MLflow run of kind 'filter' in experiment collapse-monitor/<dataset>.",
        epilog="examples:\n"
               "  collapse-monitor filter --input crawl/2026-12/*.jsonl.gz --out clean/2026-12 --dataset news\n"
               "  collapse-monitor filter --input batch.parquet --out clean --max-human-loss 0.02 --json\n\n"
               "how it decides: a fast stage (hashed word n-grams, a linear model that tells the reference from\n"
               "the batch, cross-fitted so no document is scored by a model that saw it) scores every record;\n"
               "the records it cannot decide go to the local LM, at most --lm-budget of them.\n\n"
               "exit codes: 0 written, 2 usage or input error (nothing written), 1 internal failure",
    )
    f.add_argument("--input", required=True, metavar="PATH",
                   help="the batch: a file, a folder, a glob ('crawl/*.jsonl.gz') or an fsspec URL, as for check")
    f.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created); files of an earlier run there are replaced only once this one "
                        "has written everything")
    f.add_argument("--dataset", metavar="NAME", type=dataset_option, help="dataset name (default: the 'dataset' setting)")
    point = f.add_mutually_exclusive_group()
    point.add_argument("--max-human-loss", type=_share, metavar="SHARE",
                       help="flag at most this share of human text (default: filter.max_human_loss, 0.05)")
    point.add_argument("--threshold", type=float, metavar="T",
                       help="flag records whose synthetic_score is above T instead (no LM stage)")
    f.add_argument("--format", choices=FORMATS, dest="out_format",
                   help="output format (default: the input's; needed when the input mixes formats)")
    f.add_argument("--lm-budget", type=int, metavar="N",
                   help="uncertain records the local LM scores (default: filter.lm_budget, 200; 0: none)")
    f.add_argument("--reference", metavar="RUN_ID", help="calibrate on this reference run instead of the latest")
    f.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    add_task_runner_options(f)


def run(args) -> int:
    settings, rt = setup(args)
    settings = with_task_runner_options(settings, args)
    if args.lm_budget is not None and args.lm_budget < 0:
        raise UserError(f"--lm-budget {args.lm_budget}: give 0 or more documents")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder")
    dataset = args.dataset or settings.dataset
    batch = sources.Batch.resolve(args.input)  # fail fast, before Prefect starts
    from monitors.adapters import filtering

    fmt = filtering.output_format(batch, args.out_format)
    reference = open_reader(rt).reference_run(dataset, args.reference)
    with prefect_server_early():
        from flows import batches, progress
        from flows.filter import filter_synthetic_text

        runner = batches.with_task_runner(filter_synthetic_text, settings)
    console_reports_failures_once(args)
    progress.enable()
    result = runner(batch, dataset, str(out), settings, rt, max_human_loss=args.max_human_loss,
                    threshold=args.threshold, out_format=fmt, lm_budget=args.lm_budget, reference_run_id=reference)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"MLflow: {rt.tracking_uri} (run {result.run_id})" if result.run_id else
              f"MLflow was unreachable: the run waits in {result.spooled}")
    return EXIT_OK
