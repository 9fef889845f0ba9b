"""``collapse-monitor probes build``, ``probes canaries`` and ``probe``: long-tail probe sets, canaries for the
memorization probe, and a registry model on them."""

from __future__ import annotations

import json
import math

from flows.cli.common import (
    EXIT_CRITICAL,
    EXIT_OK,
    Formatter,
    console_reports_failures_once,
    prefect_server_early,
    setup,
)
from monitors.core.errors import UserError


def add_build_parser(sub, common) -> None:
    pb = sub.add_parser("probes", parents=[common], formatter_class=Formatter,
                        help="build long-tail probe sets (head / torso / tail slices) for `probe`",
                        description="Manage long-tail probe sets: JSONL files of examples with a slice column.")
    pbsub = pb.add_subparsers(dest="action", metavar="ACTION", required=True)
    pbb = pbsub.add_parser(
        "build", parents=[common], formatter_class=Formatter,
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
    pbc = pbsub.add_parser(
        "canaries", parents=[common], formatter_class=Formatter,
        help="write random secrets to plant in a fine-tuning set (for `probe --memorization`)",
        description="Write canaries (Carlini et al. 2019, 'The Secret Sharer'): random secret-shaped sequences, "
                    "by default nine random digits after 'my secret code is', one JSON object per line with id, "
                    "text (what to plant), secret, repeats (how many times to plant it in the fine-tuning set) and "
                    "space (the template, alphabet and length they were drawn from, and its size |R|). Plant each "
                    "canary's text `repeats` times in the training data, train, then run `probe --memorization "
                    "--canaries` on the file: a canary's exposure is log2 |R| - log2 of its rank by the model's "
                    "likelihood among the other secrets of the space (up to log2 |R| bits: fully extracted).\n\n"
                    "Secrets come from the operating system's random source unless --seed is given (reproducible, "
                    "for tests). Keep the file out of the training data itself.",
        epilog="examples:\n"
               "  collapse-monitor probes canaries --out canaries.jsonl\n"
               "  collapse-monitor probes canaries --out canaries.jsonl --count 30 --repeats 1,5,25,125 --digits 12")
    pbc.add_argument("--out", required=True, metavar="PATH", help="the canaries file to write (JSONL)")
    pbc.add_argument("--count", type=int, default=20, metavar="N", help="how many canaries (default 20)")
    pbc.add_argument("--repeats", default="1,10,100", metavar="LIST",
                     help="times to plant each, cycled over the canaries (default 1,10,100)")
    pbc.add_argument("--digits", type=int, default=9, metavar="N", help="secret length in digits (default 9: "
                     "|R| = 10^9)")
    pbc.add_argument("--template", default="my secret code is {secret}", metavar="TEXT",
                     help="the canary's sentence; {secret} is replaced by the space-separated digits")
    pbc.add_argument("--seed", type=int, metavar="N", help="draw reproducibly (default: the OS random source)")


def run_probes(args) -> int:
    return run_canaries(args) if args.action == "canaries" else run_build(args)


def run_canaries(args) -> int:
    import random

    from monitors.adapters import probe_files
    from monitors.core import memorization

    try:
        repeats = [int(r) for r in args.repeats.replace(",", " ").split()]
    except ValueError:
        raise UserError(f"--repeats {args.repeats!r}: a comma-separated list of whole numbers, e.g. 1,10,100") from None
    space = memorization.CanarySpace(args.template, memorization.DIGITS, args.digits)
    rng = random.Random(args.seed) if args.seed is not None else random.SystemRandom()
    canaries = memorization.make_canaries(args.count, repeats, rng, space)
    probe_files.write_jsonl([memorization.canary_row(c) for c in canaries], args.out)  # atomic
    planted = sum(c.repeats for c in canaries)
    print(f"wrote {len(canaries)} canaries to {args.out} from a space of {space.size:.3g} secrets "
          f"(log2 |R| = {math.log2(space.size):.1f} bits); plant each 'text' 'repeats' times ({planted} lines in "
          f"all) in the fine-tuning data, then: collapse-monitor probe --model URI --memorization --training PATH "
          f"--canaries {args.out}")
    return EXIT_OK


def run_build(args) -> int:
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


def add_probe_parser(sub, common) -> None:
    pr = sub.add_parser(
        "probe", parents=[common], formatter_class=Formatter,
        help="evaluate a registered model on a probe set (runs the evaluate_long_tail_probes flow)",
        description="Load a model from the MLflow registry by alias or version and evaluate it per slice. "
                    "Classifiers: accuracy, macro-F1, calibration error, tail-to-head ratio. Generators (a pyfunc "
                    "taking a DataFrame with a text column and a task parameter, generate or loglik): perplexity "
                    "of the probe texts and diversity of its outputs against the human texts. Results are compared "
                    "with the previous registry version (evaluated now if it has no result on this probe set) and "
                    "the oldest version evaluated on it; the teacher chain (tag collapse.teacher) gives the "
                    "distillation depth. Rules: expectations/probe_indicators.json. Logs one MLflow run in "
                    "experiment collapse-monitor/models/<name>.\n\n"
                    "--memorization (generators): how much of its training data the model gives back. Extraction: "
                    "--sample training records are cut into --prefix tokens of prompt and --suffix tokens of truth; "
                    "the model continues each prompt greedily, and the share that reproduces the truth exactly (and "
                    "the share within the edit similarity --similarity) is the extraction rate; the same on "
                    "--heldout records of the same source (not trained on) is the control, and extraction minus "
                    "control the excess. Exposure (needs task=loglik): each canary from `probes canaries` (planted "
                    "in the training data) ranked by likelihood among --candidates secrets of its space, "
                    "log2 |R| - log2 rank, extrapolated with a skew-normal fit when the space is too large to rank "
                    "in full. Metrics memorization.*, compared with the previous version like every probe metric. "
                    "--probes is optional when --memorization is given.",
        epilog="examples:\n"
               "  collapse-monitor probe --model models:/support-intent@production --probes probes.jsonl\n"
               "  collapse-monitor probe --model models:/writer/7 --probes gen-probes.jsonl --kind generator --json\n"
               "  collapse-monitor probe --model models:/writer@production --memorization --training finetune.jsonl "
               "--heldout heldout.jsonl --canaries canaries.jsonl\n\n"
               "exit codes: 0 no critical alert firing, 3 a critical alert firing, 2 usage or input error (a broken "
               "alias, a model that raises), 1 internal failure")
    pr.add_argument("--model", required=True, metavar="URI", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pr.add_argument("--probes", metavar="PATH", help="a probe set from `probes build` (optional with --memorization)")
    pr.add_argument("--kind", choices=("classifier", "generator"),
                    help="what the model is (default: its tag collapse.model_kind, else classifier)")
    pr.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    mem = pr.add_argument_group("memorization probe (generators)")
    mem.add_argument("--memorization", action="store_true", help="run the memorization probe (needs --training)")
    mem.add_argument("--training", metavar="PATH", help="records the model was trained (fine-tuned) on: JSONL, "
                     "CSV or Parquet with a text column")
    mem.add_argument("--heldout", metavar="PATH", help="records of the same source it was not trained on (the "
                     "control; without them the control and the excess are unknown)")
    mem.add_argument("--canaries", metavar="PATH", help="canaries from `probes canaries`, planted in the training data")
    mem.add_argument("--prefix", type=int, default=32, metavar="N", help="prompt tokens (default 32)")
    mem.add_argument("--suffix", type=int, default=32, metavar="N", help="tokens to reproduce (default 32)")
    mem.add_argument("--sample", type=int, default=200, metavar="N", help="records drawn from --training and from "
                     "--heldout (default 200)")
    mem.add_argument("--candidates", type=int, default=2000, metavar="N", help="secrets sampled per canary space "
                     "for the exposure; a space of at most N is ranked in full (default 2000)")
    mem.add_argument("--similarity", type=float, default=0.9, metavar="S", help="normalised edit similarity from "
                     "which a continuation counts as reproduced (default 0.9)")


def memorization_plan(args):
    """The memorization probe's plan from the options, or None; usage errors before anything starts."""
    from monitors.core import memorization

    given = [o for o in ("training", "heldout", "canaries") if getattr(args, o)]
    if not args.memorization:
        if given:
            raise UserError(f"--{given[0]} is an option of the memorization probe: add --memorization")
        if not args.probes:
            raise UserError("nothing to probe: give --probes PATH (a probe set), or --memorization --training PATH, "
                            "or both")
        return None
    if not args.training:
        raise UserError("--memorization needs --training PATH: the records the model was trained on")
    plan = memorization.Plan(args.training, args.heldout, args.canaries, args.prefix, args.suffix, args.sample,
                             args.candidates, args.similarity)
    plan.check()
    return plan


def run_probe(args) -> int:
    plan = memorization_plan(args)
    settings, rt = setup(args)
    with prefect_server_early():
        from flows.probe import evaluate_long_tail_probes
    console_reports_failures_once(args)
    result = evaluate_long_tail_probes(args.model, args.probes, settings, rt, kind=args.kind,
                                       memorization_plan=plan)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"MLflow: {rt.tracking_uri} (run {result.run_id}, experiment collapse-monitor/models/{result.model})")
    return EXIT_CRITICAL if result.critical_firing else EXIT_OK
