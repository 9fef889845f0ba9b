"""``collapse-monitor simulate``: recursive training reproduced next to the model-collapse papers' closed forms,
and (scenario ``text``) the real check run on every generation, to measure each alert rule's lead time.

Scenarios ``gaussian``, ``regression`` and ``zipf`` are pure computations (:mod:`monitors.core.collapse_sim`);
``text`` fits a word n-gram model on Jane Austen's paragraphs shipped with the project, refits it on its own
samples generation after generation, and sends each generation's sample through ``check_incoming_data``
against a human reference of other paragraphs, one dataset (MLflow experiment) per policy. This module
imports :mod:`monitors.demo` because it replays that shipped human text (tests/unit/test_layering.py allows it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from monitors.core.errors import UserError

if TYPE_CHECKING:  # imported where used: numpy is not on the CLI's start-up path
    from monitors.core import collapse_sim as cs

SCENARIOS = ("gaussian", "regression", "zipf", "text")
SELF_BLEU_DOCS = 100  # Self-BLEU on a fixed-size sample: it grows with the number of references
HAPAX_WINDOW = 10_000  # tokens
AUSTEN_PARAGRAPHS = 7087  # monitors/data/austen_paragraphs.jsonl.gz
#: what the simulator reports of each generation's check
INDICATORS = ("tail.rare_coverage.ratio", "tail.distinct_2.ratio", "tail.entropy_1.ratio", "mode.compression_ratio.ratio",
              "tail.distinct_2_wide", "trend.tail.distinct_2_wide.vs_previous", "tail.hapax_share", "mode.self_bleu")


def add_parser(subparsers, **kwargs) -> argparse.ArgumentParser:
    """Register ``simulate`` (``kwargs`` go to ``add_parser``: the CLI's common options and formatter)."""
    s = subparsers.add_parser(
        "simulate", **kwargs,
        help="reproduce the model-collapse papers by recursive training; measure each alert's lead time",
        description="Refit a model on its own samples generation after generation under a data policy (replace: "
                    "only the newest samples; mix:P: a share P of fresh human data; accumulate: everything so far, "
                    "human data included) and print what the papers predict next to what happens. Scenarios: "
                    "gaussian (Shumailov et al. 2024, Thm 3.1: variance collapse), regression (Gerstgrasser et al. "
                    "2024: test error, replace vs accumulate), zipf (a unigram model: types lost, tail mass with "
                    "and without top-k/top-p), text (a word n-gram model on shipped Austen text; every "
                    "generation's sample goes through the real check against a human reference (dataset sim-text), "
                    "one dataset per policy (sim-text-<policy>), and the table gives the first generation at which each alert rule fires).",
        epilog="examples:\n"
               "  collapse-monitor simulate gaussian --generations 20\n"
               "  collapse-monitor simulate zipf --top-p 0.95\n"
               "  collapse-monitor simulate text --policy replace            # about a minute\n"
               "  collapse-monitor simulate text --generations 10 --json     # all three policies\n\n"
               "Generation 0 is the human distribution, generation t the t-th fit (the first on human data).\n"
               "exit codes: 0 simulated (alerts are results here, not failures), 2 usage error, 1 internal failure")
    s.add_argument("scenario", choices=SCENARIOS, metavar="SCENARIO", help="gaussian, regression, zipf or text")
    s.add_argument("--generations", type=int, default=None, metavar="N",
                   help="generations to fit (default 10; text: 5)")
    s.add_argument("--policy", action="append", metavar="POLICY",
                   help="replace, mix:P (0 < P < 1, e.g. mix:0.1) or accumulate; repeat it for several "
                        "(default: all of replace, mix:0.1, accumulate)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--samples", type=int, default=None, metavar="N",
                   help="training size of each generation: gaussian samples (default 10), regression rows T "
                        "(default 50), zipf tokens (default 100000), text documents (default 1000)")
    s.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="independent lineages averaged (gaussian default 2000, regression 1000)")
    s.add_argument("--dims", type=int, default=10, metavar="D", help="regression: features d (default 10)")
    s.add_argument("--noise", type=float, default=1.0, metavar="SIGMA", help="regression: label noise sd (default 1)")
    s.add_argument("--vocab", type=int, default=10_000, help="zipf: vocabulary size (default 10000)")
    s.add_argument("--alpha", type=float, default=1.1, help="zipf: exponent (default 1.1)")
    s.add_argument("--order", type=int, default=2, help="text: n-gram order (default 2, a bigram model)")
    s.add_argument("--top-k", type=int, default=None, metavar="K", help="zipf, text: sample from the K most probable only")
    s.add_argument("--top-p", type=float, default=None, metavar="P", help="zipf, text: nucleus sampling at P")
    s.add_argument("--batch-docs", type=int, default=300, metavar="N",
                   help="text: documents of each generation's sample that are checked (default 300)")
    s.add_argument("--reference-docs", type=int, default=1500, metavar="N",
                   help="text: human paragraphs in the reference (default 1500)")
    s.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    return s


def _policies(args) -> list[cs.Policy]:
    from monitors.core import collapse_sim as cs

    return [cs.parse_policy(p) for p in (args.policy or cs.POLICIES)]


def _positive(name: str, value, minimum=1) -> None:
    if value is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, not {value}")


def run(args) -> int:
    """The CLI handler: 0 when the simulation ran (alerts are its results, not a failure)."""
    generations = args.generations if args.generations is not None else (5 if args.scenario == "text" else 10)
    _positive("--generations", generations)
    for name in ("samples", "repeats"):
        _positive(f"--{name}", getattr(args, name), 2)
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], not {args.top_p}")
    _positive("--top-k", args.top_k)
    policies = _policies(args)
    if args.scenario == "text":
        return _run_text(args, generations, policies)
    out = {"gaussian": _gaussian, "regression": _regression, "zipf": _zipf}[args.scenario](args, generations, policies)
    if args.json:
        print(json.dumps(out))
    else:
        print(out.pop("text"))
    return 0


# -- the pure scenarios ---------------------------------------------------------------------------------------

def _gaussian(args, generations: int, policies: list[cs.Policy]) -> dict:
    from monitors.core import collapse_sim as cs

    n, repeats = args.samples or 10, args.repeats or 2000
    result = {p.label: cs.gaussian_run(n, generations, p, repeats=repeats, seed=args.seed) for p in policies}
    lines = [f"gaussian: N(0, 1) refit by maximum likelihood (mean, variance with divisor n) on n={n} samples of "
             f"the previous fit; {repeats} lineages. Theory (replace): E[var_t] = ((n-1)/n)^t, "
             f"E[log var_t] = t (digamma((n-1)/2) + log(2/n)), E[W2^2] closed form (Shumailov et al. 2024, Thm 3.1).", ""]
    for label, rows in result.items():
        lines.append(f"policy {label}")
        lines.append(f"{'gen':>4} {'var mean':>9} {'theory':>8} {'var median':>10} {'log var':>8} {'theory':>8} "
                     f"{'W2^2':>7} {'theory':>7}")
        theory = label == "replace"
        for r in rows:
            th = (lambda k, w: f"{r[k]:>{w}.4f}") if theory else (lambda k, w: f"{'-':>{w}}")
            lines.append(f"{r['generation']:>4} {r['variance_mean']:>9.4f} {th('theory_variance', 8)} "
                         f"{r['variance_median']:>10.4f} {r['log_variance_mean']:>8.3f} {th('theory_log_variance', 8)} "
                         f"{r['w2_squared_mean']:>7.4f} {th('theory_w2_squared', 7)}")
        lines.append("")
    return {"scenario": "gaussian", "samples": n, "repeats": repeats, "policies": result, "text": "\n".join(lines).rstrip()}


def _regression(args, generations: int, policies: list[cs.Policy]) -> dict:
    from monitors.core import collapse_sim as cs

    T, d, sigma, repeats = args.samples or 50, args.dims, args.noise, args.repeats or 1000
    result = {p.label: cs.regression_run(d, T, sigma, generations, p, repeats=repeats, seed=args.seed) for p in policies}
    bound = cs.regression_bound(d, T, sigma)
    lines = [f"regression: least squares refit on its own labels, d={d} features, T={T} rows (fixed design), "
             f"noise sd {sigma:g}, {repeats} lineages; test error = ||w_t - w*||^2. Gerstgrasser et al. 2024: replace "
             f"sigma^2 d/(T-d-1) * t; accumulate sigma^2 d/(T-d-1) * sum 1/i^2 < {bound:.4f} (the pi^2/6 bound).", ""]
    labels = list(result)
    lines.append(f"{'gen':>4} " + " ".join(f"{lab:>10} {'formula':>8}" for lab in labels))
    for t in range(generations + 1):
        cells = []
        for lab in labels:
            r = result[lab][t]
            cells.append(f"{r['test_error']:>10.4f} " + (f"{r['theory']:>8.4f}" if r["theory"] is not None else f"{'-':>8}"))
        lines.append(f"{t:>4} " + " ".join(cells))
    return {"scenario": "regression", "dims": d, "rows": T, "noise": sigma, "repeats": repeats,
            "accumulate_bound": bound, "policies": result, "text": "\n".join(lines)}


def _zipf(args, generations: int, policies: list[cs.Policy]) -> dict:
    from monitors.core import collapse_sim as cs

    tokens = args.samples or 100_000
    runs = {p.label: cs.zipf_run(args.vocab, args.alpha, tokens, generations, p, seed=args.seed) for p in policies}
    truncated = {}
    if args.top_k or args.top_p:
        truncated = {p.label: cs.zipf_run(args.vocab, args.alpha, tokens, generations, p, top_k=args.top_k,
                                          top_p=args.top_p, seed=args.seed) for p in policies}
    trunc = ", ".join(x for x in (f"top-k {args.top_k}" if args.top_k else "", f"top-p {args.top_p:g}" if args.top_p else "") if x)
    lines = [f"zipf: a unigram model (counts / total) refit on {tokens} tokens sampled from the previous one; "
             f"Zipf({args.alpha:g}) over {args.vocab} types at generation 0. tail = the true distribution's types "
             f"outside the head holding 80 % of its mass; hapax = share of types seen once in {HAPAX_WINDOW} tokens.", ""]
    for label in runs:
        sets = [("", runs[label])] + ([(f" ({trunc})", truncated[label])] if truncated else [])
        for suffix, rows in sets:
            lines.append(f"policy {label}{suffix}")
            lines.append(f"{'gen':>4} {'types':>7} {'tail mass':>9} {'entropy':>8} {'hapax':>6}")
            for r in rows:
                hapax = f"{r['hapax_share']:>6.3f}" if "hapax_share" in r else f"{'-':>6}"
                lines.append(f"{r['generation']:>4} {r['types']:>7} {r['tail_mass']:>9.4f} {r['entropy_bits']:>8.3f} {hapax}")
            lines.append("")
    return {"scenario": "zipf", "vocab": args.vocab, "alpha": args.alpha, "tokens": tokens, "top_k": args.top_k,
            "top_p": args.top_p, "policies": runs, "truncated": truncated, "text": "\n".join(lines).rstrip()}


# -- text: the real check on every generation --------------------------------------------------------------------

@dataclass
class TextPlan:
    generations: int
    train_docs: int = 1000
    batch_docs: int = 300
    reference_docs: int = 1500
    order: int = 2
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def validate(self) -> None:
        """Fail before Prefect starts, naming the option."""
        _positive("--generations", self.generations)
        _positive("--order", self.order)
        _positive("--batch-docs", self.batch_docs)
        _positive("--reference-docs", self.reference_docs, 10)
        _positive("--samples", self.train_docs, 2)
        if self.reference_docs + self.train_docs > AUSTEN_PARAGRAPHS:
            raise UserError(f"--reference-docs plus --samples is {self.reference_docs + self.train_docs}, more than the "
                            f"{AUSTEN_PARAGRAPHS} shipped Austen paragraphs: lower one of them")
        if self.batch_docs > self.train_docs:
            raise UserError(f"--batch-docs ({self.batch_docs}) cannot exceed --samples ({self.train_docs}): the checked "
                            f"batch is part of a generation's sample")


@dataclass
class PolicyRun:
    policy: str
    dataset: str
    generations: list[dict] = field(default_factory=list)  # per generation: alerts, indicators, diversity
    lead_times: list[cs.RuleTimeline] = field(default_factory=list)

    @property
    def first_critical(self) -> int | None:
        from monitors.core import collapse_sim as cs

        return cs.first_critical(self.lead_times)

    def to_dict(self) -> dict:
        return {"policy": self.policy, "dataset": self.dataset, "first_critical": self.first_critical,
                "alerts_firing": sum(t.firing_generations for t in self.lead_times),
                "lead_times": [t.to_dict() for t in self.lead_times], "generations": self.generations}


def diversity(texts: list[str], seed: int = 0) -> dict[str, float]:
    """Self-BLEU-4 on a fixed-size sample of ``SELF_BLEU_DOCS`` documents and the hapax share of the first
    ``HAPAX_WINDOW`` tokens, words lower-cased (punctuation dropped)."""
    from monitors.core import collapse_sim as cs
    from monitors.demo.simulate import tokens

    docs = [[t.lower() for t in tokens(x) if t[0].isalnum()] for x in texts]
    sample = random.Random(seed).sample(docs, min(SELF_BLEU_DOCS, len(docs)))
    flat = [w for d in docs for w in d]
    return {"self_bleu": cs.self_bleu(sample), "hapax_share": cs.hapax_share(flat, HAPAX_WINDOW),
            "hapax_window_full": len(flat) >= HAPAX_WINDOW}


def _fresh_dataset(tracker, base: str) -> str:
    """``base``, or ``base-2``, ``-3``, ... when a previous simulation left checks there: a dataset's alert state
    carries over from its last check, which would falsify this simulation's lead times."""
    name, k = base, 1
    while tracker.history(name, last=1):
        k += 1
        name = f"{base}-{k}"
    return name


def simulate_text(settings, runtime, policies: list[cs.Policy], plan: TextPlan, say=lambda msg: None) -> list[PolicyRun]:
    """One human reference, then per policy (one dataset each) every generation's sample checked by
    ``check_incoming_data`` against it."""
    from flows import tasks
    from flows.check import check_incoming_data
    from flows.reference import build_reference_flow
    from monitors.core import collapse_sim as cs
    from monitors.demo.corpus import austen_paragraphs
    from monitors.demo.simulate import text_lineage

    plan.validate()
    paragraphs = austen_paragraphs()
    random.Random(plan.seed).shuffle(paragraphs)
    need = plan.reference_docs + plan.train_docs
    reference, human = paragraphs[:plan.reference_docs], [p["text"] for p in paragraphs[plan.reference_docs:need]]
    tracker = tasks.tracker_for(runtime)
    work = settings.state_path / "simulate"
    # One reference for every policy (dataset sim-text): the policies differ in their lineage, not their yardstick.
    ref_file = _write(work / "reference.jsonl",
                      [{"id": p["id"], "text": p["text"], "source": p["book"], "created_at": "2020-01-01"} for p in reference])
    ref_run, _, _ = build_reference_flow(str(ref_file), "sim-text", settings, runtime)
    say(f"human reference of {len(reference)} Austen paragraphs built (dataset sim-text, run {ref_run})")
    runs = []
    for policy in policies:
        dataset = _fresh_dataset(tracker, f"sim-text-{policy.slug}")
        run = PolicyRun(policy.label, dataset)
        lineage = text_lineage(human, plan.generations, policy.name, policy.human_share, order=plan.order,
                               top_k=plan.top_k, top_p=plan.top_p, seed=plan.seed)
        for t, model, sample in lineage:
            batch = sample[:plan.batch_docs]
            # dated before the contamination cutoff: the vintage rule would otherwise fire on every batch
            path = _write(work / dataset / f"generation-{t:02d}.jsonl",
                          [{"id": f"g{t}-{i:05d}", "text": x, "source": "simulated", "created_at": "2023-06-01"}
                           for i, x in enumerate(batch)])
            result = check_incoming_data(str(path), dataset, settings, runtime, batch_name=path.name,
                                         reference_run_id=ref_run)
            ind = result.indicators
            alerts = [(a.rule, a.severity, a.status) for a in result.alerts]
            run.generations.append({
                "generation": t, "run_id": result.run_id, "model_types": model.types_,
                "alerts": [{"rule": r, "severity": s, "status": st} for r, s, st in alerts],
                "indicators": {k: _num(ind.get(k)) for k in INDICATORS},
                **diversity(batch, plan.seed)})
            firing = ", ".join(f"{r} ({s[0].upper()})" for r, s, st in alerts if st == "firing") or "none"
            say(f"{policy.label}: generation {t}/{plan.generations} checked, firing: {firing}")
        run.lead_times = cs.lead_times((g["generation"], [(a["rule"], a["severity"], a["status"]) for a in g["alerts"]])
                                       for g in run.generations)
        runs.append(run)
    return runs


def _num(v):
    return None if v is None or v != v else float(v)


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def _run_text(args, generations: int, policies: list[cs.Policy]) -> int:
    from flows.cli.common import console_reports_failures_once as _console_reports_failures_once, setup as _setup

    plan = TextPlan(generations=generations, train_docs=args.samples or 1000, batch_docs=args.batch_docs,
                    reference_docs=args.reference_docs, order=args.order, top_k=args.top_k, top_p=args.top_p,
                    seed=args.seed)
    plan.validate()
    settings, rt = _setup(args)
    # The lead times are those of the collapse indicators: no LM scoring (minutes per reference) and no
    # detector (a user's production detector would make the synthetic share, and its rules, depend on it).
    settings = settings.model_copy(update={
        "lm": settings.lm.model_copy(update={"enabled": False}),
        "detector": settings.detector.model_copy(update={"model_uri": "models:/collapse-simulate-no-detector@none"})})
    _console_reports_failures_once(args)
    from flows import progress

    progress.enable()  # on stderr: the reference build's stages
    started = time.monotonic()
    print(f"collapse-monitor simulate text: results go to MLflow at {rt.tracking_uri}", file=sys.stderr)
    runs = simulate_text(settings, rt, policies, plan,
                         lambda msg: print(f"[{time.monotonic() - started:5.1f}s] {msg}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"scenario": "text", "plan": plan.__dict__, "policies": {r.policy: r.to_dict() for r in runs}}))
    else:
        print(text_report(runs, plan))
    return 0


def text_report(runs: list[PolicyRun], plan: TextPlan) -> str:
    decoding = ", ".join(x for x in (f"top-k {plan.top_k}" if plan.top_k else "", f"top-p {plan.top_p:g}" if plan.top_p else "") if x) or "untruncated"
    lines = [f"text: word {plan.order}-gram model ({decoding}) fitted on {plan.train_docs} Austen paragraphs, refit on "
             f"{plan.train_docs} of its own documents per generation; {plan.batch_docs} of them checked per generation "
             f"against a {plan.reference_docs}-paragraph human reference.", "",
             "Per generation (rare cov / dist-2: ratio to the reference; dist-2w: distinct bigrams per 15,000 and "
             "step: it over the previous check's, as computed by check; Self-BLEU-4 on "
             f"{SELF_BLEU_DOCS} docs; hapax: share of types seen once in {HAPAX_WINDOW} tokens):"]
    for r in runs:
        lines.append(f"  policy {r.policy} (dataset {r.dataset})")
        lines.append(f"  {'gen':>4} {'types':>6} {'rare cov':>8} {'dist-2':>6} {'dist-2w':>7} {'step':>5} "
                     f"{'self-bleu':>9} {'hapax':>6}  firing")
        for g in r.generations:
            ind = g["indicators"]
            f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            firing = ", ".join(f"{a['rule']} ({a['severity'][0].upper()})" for a in g["alerts"] if a["status"] == "firing") or "-"
            f3 = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"  {g['generation']:>4} {g['model_types']:>6} {f(ind['tail.rare_coverage.ratio']):>8} "
                         f"{f(ind['tail.distinct_2.ratio']):>6} {f3(ind['tail.distinct_2_wide']):>7} "
                         f"{f3(ind['trend.tail.distinct_2_wide.vs_previous']):>5} "
                         f"{g['self_bleu']:>9.3f} {g['hapax_share']:>6.3f}  {firing}")
    lines += ["", "Lead time: the first generation at which each rule fired (- = never; in brackets the first "
              "generation it was breached, pending or firing) and in how many generations it fired:"]
    rules: dict[str, str] = {}
    for r in runs:
        for t in r.lead_times:
            rules.setdefault(t.rule, t.severity)
    order = sorted(rules, key=lambda k: (rules[k] != "critical", k))
    head = f"  {'rule':<30} {'severity':<9}" + "".join(f" {r.policy:>16}" for r in runs)
    lines += [head, "  " + "-" * (len(head) - 2)]
    for rule in order:
        cells = []
        for r in runs:
            t = next((x for x in r.lead_times if x.rule == rule), None)
            cells.append("-" if t is None else
                         f"{'-' if t.first_firing is None else t.first_firing} [{t.first_breach}] x{t.firing_generations}")
        lines.append(f"  {rule:<30} {rules[rule]:<9}" + "".join(f" {c:>16}" for c in cells))
    lines.append(f"  {'first critical alert':<40}" + "".join(f" {'-' if r.first_critical is None else r.first_critical:>16}" for r in runs))
    lines.append(f"  {'alerts firing (rule x generation)':<40}" + "".join(f" {sum(t.firing_generations for t in r.lead_times):>16}" for r in runs))
    lines.append("")
    for r in runs:
        if r.policy == "replace":
            ok = r.first_critical is not None and r.first_critical <= 2
            lines.append(f"target replace, a critical alert by generation 2: {'met' if ok else 'MISSED'} "
                         f"(first critical: {r.first_critical if r.first_critical is not None else 'none'})")
        elif r.policy == "accumulate":
            ok = r.first_critical is None
            lines.append(f"target accumulate, no critical alert in {plan.generations} generations: {'met' if ok else 'MISSED'} "
                         f"(first critical: {r.first_critical if r.first_critical is not None else 'none'})")
        else:
            lines.append(f"{r.policy}: first critical alert "
                         f"{'at generation ' + str(r.first_critical) if r.first_critical is not None else 'never'} (no target)")
    return "\n".join(lines)
