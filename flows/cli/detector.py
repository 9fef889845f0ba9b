"""``collapse-monitor detector train``: the synthetic-text detector, trained and registered."""

from __future__ import annotations

import argparse

from flows.cli.common import (
    EXIT_OK,
    Formatter,
    console_reports_failures_once,
    prefect_server_early,
    setup,
)
from monitors.adapters import sources
from monitors.config import ENV_PREFIX
from monitors.core.errors import UserError


def add_parser(sub, common) -> None:
    dt = sub.add_parser("detector", parents=[common], formatter_class=Formatter,
                        help="train the synthetic-text detector and register it in the MLflow model registry",
                        description="Manage the detector behind the synthetic-share estimate.")
    dsub = dt.add_subparsers(dest="action", metavar="ACTION", required=True)
    dtr = dsub.add_parser(
        "train", parents=[common], formatter_class=Formatter,
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


def run(args) -> int:
    settings, rt = setup(args)
    if not args.synthetic and args.generate <= 0:
        raise UserError("detector train needs machine text: --synthetic PATH, or --generate N to make N examples "
                         "with the local LM from openings of the human text")
    sources.expand(args.human)  # fail fast on paths that match nothing
    if args.synthetic:
        sources.expand(args.synthetic)
    with prefect_server_early():
        from flows import progress
        from flows.detector import train_detector_flow
        from monitors.adapters.registry import model_name
    console_reports_failures_once(args)
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
