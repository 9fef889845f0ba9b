"""``collapse-monitor reference build``: trusted human text into a versioned reference."""

from __future__ import annotations

from flows.cli.common import (
    EXIT_OK,
    Formatter,
    console_reports_failures_once,
    dataset_option,
    prefect_server_early,
    setup,
)
from monitors.adapters import sources


def add_parser(sub, common) -> None:
    r = sub.add_parser("reference", parents=[common], formatter_class=Formatter,
                       help="build the human reference a dataset is compared with",
                       description="Manage a dataset's human reference.",
                       epilog="example:\n  collapse-monitor reference build --input trusted_human.jsonl --dataset news")
    rsub = r.add_subparsers(dest="action", metavar="ACTION", required=True)
    rb = rsub.add_parser(
        "build", parents=[common], formatter_class=Formatter,
        help="profile trusted human text into a new reference version",
        description="Profile trusted human text (from before the contamination cutoff) into a versioned reference, "
                    "stored as an MLflow run. Later checks of the dataset compare with the newest one.",
        epilog="example:\n  collapse-monitor reference build --input trusted_human.jsonl --dataset news",
    )
    rb.add_argument("--input", required=True, metavar="PATH",
                    help="trusted human text (JSONL, Parquet, CSV): a file, a folder, a glob or an fsspec URL")
    rb.add_argument("--dataset", metavar="NAME", type=dataset_option, help="dataset name (default: the 'dataset' setting)")


def run(args) -> int:
    settings, rt = setup(args)
    dataset = args.dataset or settings.dataset
    sources.expand(args.input)  # fail fast, before Prefect starts, on a path that matches nothing
    with prefect_server_early():
        from flows import progress
        from flows.reference import build_reference_flow
    console_reports_failures_once(args)
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
