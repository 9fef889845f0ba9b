"""The demo's second half: model lineages in the MLflow registry, audited on long-tail probe sets.

Two lineages of each kind, one generation per registered version, each version set as ``@production`` and
evaluated by the real ``evaluate_long_tail_probes`` flow:

* **replace**: generation g+1 learns only from generation g's outputs (a classifier from its labels on
  fresh text, a generator from its samples);
* **accumulate**: generation g+1 learns from the human data plus every generation's outputs so far.

The classifier tells six Austen novels apart, trained on a long-tailed share of them; the generator is the
word bigram model of the data demo. Probes: held-out paragraphs, sliced by class frequency (classifier) and
by word rarity against the human reference (generator).

Then the memorization probe, before and after "fine-tuning": version 1 of ``collapse-demo-generator-finetune``
is a smoothed bigram, version 2 an unsmoothed 8-gram, both trained on the same Austen paragraphs with six
canaries planted 1, 10 or 100 times; each is probed with ``--memorization`` (a few seconds in all).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from flows.probe import evaluate_long_tail_probes
from monitors.adapters import probe_files
from monitors.adapters.runtime import Runtime, mlflow_client
from monitors.adapters.tracking import MlflowTracker
from monitors.core.schema import model_scope
from monitors.config import Settings
from monitors.core import memorization, probes
from monitors.core.results import ProbeResult
from monitors.demo import probe_models as demo_models
from monitors.demo.corpus import austen_paragraphs
from monitors.demo.ngram import NgramGenerator
from monitors.demo.simulate import (
    classifier_lineage,
    long_tail_split,
    recursive_generations,
)

LINEAGES = ("replace", "accumulate")
MEMORIZATION = ("memorization", "fine-tuning")  # the results' key of the memorization demo
MEMORIZATION_MODEL = "collapse-demo-generator-finetune"
TRAIN_COUNTS = (600, 300, 150, 80, 40, 20)  # per novel, most to least common: a long tail of classes


@dataclass(frozen=True)
class ProbePlan:
    generations: int  # retrainings after generation 0: versions 1..generations+1
    test_per_class: int = 60
    relabel_docs: int = 890
    generator_docs: int = 1500
    refit_docs: int = 300
    text_probes: int = 150


FULL = ProbePlan(generations=3)
QUICK = ProbePlan(generations=2, test_per_class=40, text_probes=100)


def model_name(kind: str, lineage: str) -> str:
    return f"collapse-demo-{kind}-{lineage}"


def run_probe_demo(settings: Settings, runtime: Runtime, reference_texts: list[str], work: Path, progress,
                   quick: bool = False) -> dict[tuple[str, str], list[ProbeResult]]:
    """Register both lineages of both kinds version by version and probe each; results by (kind, lineage)."""
    plan = QUICK if quick else FULL
    client = mlflow_client(runtime)
    tracker = MlflowTracker(client, runtime.artifact_root)
    rows = austen_paragraphs()
    train, test, pool = long_tail_split(rows, "book", TRAIN_COUNTS, plan.test_per_class, seed=3)
    freq = [{"label": r["book"]} for r in train]
    built = probes.build_by_label([{"id": r["id"], "text": r["text"], "label": r["book"]} for r in test], "demo",
                                  frequencies=freq)
    clf_probes = work / "probes" / "classifier.jsonl"
    probe_files.write_jsonl(built.rows, clf_probes)
    rng = random.Random(5)
    held = [r for r in pool if len(r["text"].split()) >= 20]
    rng.shuffle(held)
    text_rows = held[:plan.text_probes]
    gen_train = [r["text"] for r in held[plan.text_probes:plan.text_probes + plan.generator_docs]]
    text_built = probes.build_by_tokens([{"id": r["id"], "text": r["text"]} for r in text_rows], "demo",
                                        probes.head_vocabulary(reference_texts))
    gen_probes = work / "probes" / "generator.jsonl"
    probe_files.write_jsonl(text_built.rows, gen_probes)
    progress(f"built probe sets: classifier {built.by_slice} (classes by training frequency: "
             + ", ".join(f"{c} {s}" for c, s in built.classes.items()) + f"); generator {text_built.by_slice}")

    results: dict[tuple[str, str], list[ProbeResult]] = {}
    for lineage in LINEAGES:
        acc = lineage == "accumulate"
        classifiers = classifier_lineage([(r["text"], r["book"]) for r in train], [r["text"] for r in pool],
                                         plan.generations, plan.relabel_docs, seed=1, accumulate=acc)
        generators = recursive_generations(gen_train, plan.generations, plan.refit_docs, seed=11, accumulate=acc)
        gen_fractions = [0.0] + [round(1 - len(gen_train) / (len(gen_train) + plan.refit_docs * g), 4) if acc else 1.0
                                 for g in range(1, plan.generations + 1)]
        for kind, lineage_models, path in (("classifier", [m for m, _ in classifiers], clf_probes),
                                           ("generator", generators, gen_probes)):
            fractions = [f for _, f in classifiers] if kind == "classifier" else gen_fractions
            name = model_name(kind, lineage)
            exp = tracker.experiment_id(model_scope(name))
            out = results.setdefault((kind, lineage), [])
            teacher = None
            for g, model in enumerate(lineage_models):
                tags = demo_models.lineage_tags(kind, teacher, fractions[g])
                register = demo_models.register_classifier if kind == "classifier" else demo_models.register_text_generator
                version = register(client, model, experiment_id=exp, name=name, alias="production", tags=tags,
                                   run_name=f"train {name} generation {g}")
                teacher = f"models:/{name}/{version}"
                r = evaluate_long_tail_probes(f"models:/{name}@production", str(path), settings, runtime)
                out.append(r)
                firing = ", ".join(a.rule for a in r.alerts if a.status == "firing") or "none"
                progress(f"{kind} {lineage} generation {g} (v{r.version}): tail/head "
                         f"{r.indicators['probe.tail_head_ratio']:.2f}, alerts: {firing}")
    results[MEMORIZATION] = run_memorization_demo(settings, runtime, rows, work, progress, client, tracker)
    return results


def run_memorization_demo(settings: Settings, runtime: Runtime, rows: list[dict], work: Path, progress, client,
                          tracker: MlflowTracker, n_records: int = 80) -> list[ProbeResult]:
    """v1 a smoothed bigram, v2 an unsmoothed 8-gram, on the same records with the same canaries planted;
    each probed for memorization (extraction against held-out paragraphs, canary exposure)."""
    long = [r for r in rows if len(memorization.tokens(r["text"])) >= 70]
    random.Random(13).shuffle(long)
    train, held = long[:n_records], long[n_records:2 * n_records]
    folder = work / "memorization"
    paths = {name: folder / f"{name}.jsonl" for name in ("training", "heldout", "canaries")}
    canaries = memorization.make_canaries(6, (1, 10, 100), random.Random(17))
    probe_files.write_jsonl([{"id": r["id"], "text": r["text"]} for r in train], paths["training"])
    probe_files.write_jsonl([{"id": r["id"], "text": r["text"]} for r in held], paths["heldout"])
    probe_files.write_jsonl([memorization.canary_row(c) for c in canaries], paths["canaries"])
    texts = memorization.planted([r["text"] for r in train], canaries)
    plan = memorization.Plan(str(paths["training"]), str(paths["heldout"]), str(paths["canaries"]), sample=n_records,
                             candidates=500)
    exp = tracker.experiment_id(model_scope(MEMORIZATION_MODEL))
    out = []
    for g, (what, gen) in enumerate((("smoothed bigram", NgramGenerator(2, 1.0)), ("unsmoothed 8-gram", NgramGenerator(8, 0.0)))):
        demo_models.register_ngram_generator(client, gen.fit(texts), experiment_id=exp, name=MEMORIZATION_MODEL,
                                             alias="production", tags=demo_models.lineage_tags("generator", None, 0.0),
                                             run_name=f"train {MEMORIZATION_MODEL} ({what})")
        r = evaluate_long_tail_probes(f"models:/{MEMORIZATION_MODEL}@production", None, settings, runtime,
                                      memorization_plan=plan)
        out.append(r)
        ind = r.indicators
        firing = ", ".join(a.rule for a in r.alerts if a.status == "firing") or "none"
        progress(f"memorization v{r.version} ({what}): extraction {ind['memorization.extraction_rate']:.2f}, "
                 f"control {ind['memorization.control_rate']:.2f}, max canary exposure "
                 f"{ind['memorization.max_exposure']:.1f} bits, alerts: {firing}")
    return out


def _f(v, width: int = 6, signed: bool = False) -> str:
    if v is None or v != v:
        return "n/a".rjust(width)
    return (f"{v:+.2f}" if signed else f"{v:.2f}").rjust(width)


def table(results: dict[tuple[str, str], list[ProbeResult]]) -> str:
    """Per lineage and version: head and tail quality, the tail/head ratio, lineage and alerts."""
    lines = []
    for (kind, lineage), rs in results.items():
        if (kind, lineage) == MEMORIZATION:
            continue
        metric = "accuracy" if kind == "classifier" else "perplexity"
        title = f"{kind} lineage '{lineage}' ({model_name(kind, lineage)})"
        head = (f"{'version':<8} {'depth':>5} {'synth':>5} {'head ' + metric[:4]:>9} {'tail ' + metric[:4]:>9} "
                f"{'tail/head':>9} {'Δ vs v1':>8}" + (f" {'dist-2':>6}" if kind == "generator" else "") + "  alerts")
        lines += [title, head, "-" * len(head)]
        for r in rs:
            ind = r.indicators
            alerts = ", ".join(f"{a.rule} ({a.severity[0].upper()})" for a in r.alerts if a.status == "firing") or "-"
            syn = r.lineage.get("synthetic_fraction")
            lines.append(f"v{r.version:<7} {r.lineage['depth']:>5} {_f(syn, 5)} {_f(ind.get(f'probe.head.{metric}'), 9)} "
                         f"{_f(ind.get(f'probe.tail.{metric}'), 9)} {_f(ind.get('probe.tail_head_ratio'), 9)} "
                         f"{_f(ind.get('probe.tail_head_ratio.delta_first'), 8, True)}"
                         + (f" {_f(ind.get('probe.all.distinct_2.ratio'))}" if kind == "generator" else "")
                         + f"  {alerts}")
        lines.append("")
    lines.append("depth: teacher hops (collapse.teacher tags); synth: model-made share of the training data; "
                 "tail/head: tail quality / head quality (accuracy, or 1/perplexity); Δ vs v1: its change since "
                 "the first version; dist-2: distinct bigrams of the outputs / of the human probe texts. "
                 "Severity: W warning, C critical.")
    if results.get(MEMORIZATION):
        lines += ["", memorization_table(results[MEMORIZATION])]
    return "\n".join(lines)


def memorization_table(rs: list[ProbeResult]) -> str:
    """Per version: extraction, control, excess, canary exposure (max and by times planted), alerts."""
    head = (f"{'version':<8} {'extract':>7} {'control':>7} {'excess':>7} {'max exp':>7} {'exp 1x':>6} "
            f"{'exp 10x':>7} {'exp 100x':>8}  alerts")
    lines = [f"Memorization before and after fine-tuning ({MEMORIZATION_MODEL}: v1 a smoothed bigram, v2 an "
             f"unsmoothed 8-gram)", head, "-" * len(head)]
    for r in rs:
        ind = r.indicators
        alerts = ", ".join(f"{a.rule} ({a.severity[0].upper()})" for a in r.alerts if a.status == "firing") or "-"
        lines.append(f"v{r.version:<7} {_f(ind.get('memorization.extraction_rate'), 7)} "
                     f"{_f(ind.get('memorization.control_rate'), 7)} {_f(ind.get('memorization.excess'), 7)} "
                     f"{_f(ind.get('memorization.max_exposure'), 7)} "
                     + " ".join(_f(ind.get(f"memorization.mean_exposure.repeats_{n}"), w)
                                for n, w in ((1, 6), (10, 7), (100, 8))) + f"  {alerts}")
    lines.append("extract: share of sampled training records whose next 32 tokens the model reproduces exactly from "
                 "their first 32; control: the same on held-out paragraphs; exp: canary exposure in bits (log2 of "
                 "10^9 = 29.9: fully extracted), by how many times the canary was planted.")
    return "\n".join(lines)

