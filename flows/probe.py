"""``evaluate_long_tail_probes``: a registered model on a long-tail probe set and/or the memorization probe
(how much of its training data it gives back), against its earlier versions."""

from __future__ import annotations

import time

import numpy as np
from prefect import flow

from flows import oncall, tasks
from monitors.adapters import models, probe_files
from monitors.adapters.gx_rules import load_rules
from monitors.adapters.models import LoadedModel, ModelRef
from monitors.adapters.runtime import Runtime
from monitors.adapters.tracking import MlflowTracker
from monitors.core.schema import model_scope
from monitors.config import Settings
from monitors.core import memorization, probes
from monitors.core.errors import UserError
from monitors.core.results import ProbeResult
from monitors.core.rules import RuleSuite
from monitors.core.runrecord import RunRecord, firing_summary, rule_run
from monitors.core.schema import Artifact, RunKind, Tag

FAILED_RULE = "probe_failed"


@tasks.io_task
def resolve_model(tracker: MlflowTracker, uri: str) -> ModelRef:
    return tracker.resolve_model(uri)


@tasks.compute_task
def read_probe_set(path: str, kind: str) -> probes.ProbeSet:
    return probe_files.load_probe_set(path, kind)


@tasks.compute_task
def read_probe_rules(settings: Settings) -> RuleSuite:
    return load_rules(settings.probes.rules_path)


@tasks.io_task
def trace_lineage(tracker: MlflowTracker, ref: ModelRef) -> probes.Lineage:
    return probes.follow_lineage(ref.version_uri, ref.tags, tracker.model_tags)


@tasks.io_task
def earlier_results(tracker: MlflowTracker, ref: ModelRef, digest: str | None, tag: str = Tag.PROBE_SET
                    ) -> tuple[str | None, dict]:
    """The previous registry version and every version's stored result on these inputs (the digest in ``tag``)."""
    return (tracker.previous_model_version(ref.name, ref.version),
            tracker.probe_results(model_scope(ref.name), digest, tag) if digest is not None else {})


@tasks.compute_task
def read_memorization(plan: memorization.Plan) -> memorization.Inputs:
    return probe_files.load_memorization(plan)


def _probe_metrics(model: LoadedModel, probe_set: probes.ProbeSet, settings: Settings) -> tuple[dict, list, str]:
    """Per-slice metrics; returns (metrics, per-example outputs, note)."""
    ref, kind, note = model.ref, model.kind, ""
    if kind == "classifier":
        predicted, confidence = model.classify(probe_set.texts)
        metrics = probes.classifier_metrics(probe_set, predicted, confidence, settings.probes.ece_bins)
        if confidence is None:
            note = f"{ref.label} gives no probabilities: no calibration error"
        outputs = [{"id": r["id"], "slice": r["slice"], "label": r["label"], "predicted": predicted[i],
                    **({"confidence": round(float(confidence[i]), 6)} if confidence is not None else {})}
                   for i, r in enumerate(probe_set.rows)]
        return metrics, outputs, note
    generated = model.generate(probe_set.prompts(settings.probes.prompt_words), settings.probes.seed)
    scored = model.loglik(probe_set.texts)
    if isinstance(scored, str):
        ll = tok = None
        note = scored + ": no perplexity, and the tail is compared on output diversity only"
    else:
        ll, tok = scored
    metrics = probes.generator_metrics(probe_set, generated, ll, tok, settings.indicators.compress_bytes)
    outputs = [{"id": r["id"], "slice": r["slice"], "output": generated[i],
                **({"loglik": round(float(ll[i]), 4), "tokens": int(tok[i])} if ll is not None else {})}
               for i, r in enumerate(probe_set.rows)]
    return metrics, outputs, note


def _memorization_metrics(model: LoadedModel, mem: memorization.Inputs, settings: Settings) -> tuple[dict, dict, list[str]]:
    notes = []
    if not model.declares("greedy"):
        notes.append(f"{model.ref.label} declares no 'greedy' parameter: its continuations may be sampled rather "
                     f"than greedy, which understates extraction")
    metrics, artifact, more = memorization.evaluate(
        mem, lambda prompts, n: model.generate(prompts, settings.probes.seed, greedy=True, max_words=n), model.loglik)
    notes += [f"memorization: {n}" for n in more]
    artifact["notes"] = notes
    return metrics, artifact, notes


@tasks.compute_task  # the model's own failure is not fixed by retrying
def evaluate_model(ref: ModelRef, kind: str, probe_set: probes.ProbeSet | None, settings: Settings,
                   mem: memorization.Inputs | None = None) -> tuple[dict, dict, list[str]]:
    """Load the model once and run what is asked: the probe set's per-slice metrics and/or the memorization
    probe; returns (metrics, artifacts by path, notes)."""
    model: LoadedModel = models.load(ref, kind)
    metrics, artifacts, notes = {}, {}, []
    if probe_set is not None:
        m, outputs, note = _probe_metrics(model, probe_set, settings)
        metrics.update(m)
        artifacts[Artifact.PROBE_OUTPUTS] = outputs
        notes += [note] if note else []
    if mem is not None:
        m, artifact, more = _memorization_metrics(model, mem, settings)
        metrics.update(m)
        artifacts[Artifact.MEMORIZATION_OUTPUTS] = artifact
        notes += more
    return metrics, artifacts, notes


def _tags(ref: ModelRef, kind: str, probe_set: probes.ProbeSet | None, mem: memorization.Inputs | None,
          role: str) -> dict[str, str]:
    tags = {Tag.MODEL: ref.name, Tag.MODEL_VERSION: ref.version, Tag.MODEL_URI: ref.uri, Tag.MODEL_KIND: kind,
            Tag.ROLE: role}
    if probe_set is not None:
        tags[Tag.PROBE_SET] = probe_set.digest
    if mem is not None:
        tags[Tag.MEMORIZATION_SET] = mem.digest
    return tags


def _what(probe_set: probes.ProbeSet | None, mem: memorization.Inputs | None) -> str:
    parts = [f"probe set {probe_set.path}"] if probe_set is not None else []
    parts += [f"the memorization probe on {mem.plan.training}"] if mem is not None else []
    return " and ".join(parts)


def _params(probe_set: probes.ProbeSet | None, mem: memorization.Inputs | None) -> dict:
    params = {"probe_set": probe_set.path} if probe_set is not None else {}
    if mem is not None:
        plan = mem.plan
        params.update({"memorization.training": plan.training, "memorization.heldout": plan.heldout or "none",
                       "memorization.canaries": plan.canaries or "none",
                       **{f"memorization.{k}": v for k, v in plan.settings().items()}})
    return params


def _baseline_request(ref: ModelRef, kind: str, probe_set: probes.ProbeSet | None, mem: memorization.Inputs | None,
                      metrics: dict, artifacts: dict, for_version: str) -> RunRecord:
    return RunRecord(model_scope(ref.name), f"v{ref.version}", metrics, _params(probe_set, mem),
                      _tags(ref, kind, probe_set, mem, "baseline"), artifacts,
                      f"{ref.label} on {_what(probe_set, mem)}, evaluated as the baseline of version {for_version}",
                      kind=RunKind.PROBE_BASELINE, run_name=f"probe {ref.name} v{ref.version} (baseline)")


def _stored(tracker, ref: ModelRef, probe_set: probes.ProbeSet | None, mem: memorization.Inputs | None
            ) -> tuple[str | None, dict]:
    """The previous registry version, and per version its stored metrics on everything asked (the probe set's
    from the newest run on that probe set, the memorization probe's from the newest on those inputs): a
    version counts only when it has both."""
    prev_version, by_probe = earlier_results(tracker, ref, probe_set.digest if probe_set is not None else None,
                                             Tag.PROBE_SET)
    parts = [] if probe_set is None else [(by_probe, "probe.")]
    if mem is not None:
        parts.append((earlier_results(tracker, ref, mem.digest, Tag.MEMORIZATION_SET)[1], memorization.PREFIX))
    versions = set.intersection(*(set(found) for found, _ in parts))
    stored = {}
    for v in versions:
        metrics = {}
        for found, prefix in parts:
            metrics.update({k: x for k, x in found[v]["metrics"].items() if k.startswith(prefix)})
        stored[v] = {"run_id": parts[0][0][v]["run_id"], "metrics": metrics}
    return prev_version, stored


@flow(name="evaluate_long_tail_probes", flow_run_name="probe {model_uri}", validate_parameters=False)
def evaluate_long_tail_probes(model_uri: str, probes_path: str | None, settings: Settings, runtime: Runtime,
                              kind: str | None = None, memorization_plan: memorization.Plan | None = None
                              ) -> ProbeResult:
    """Evaluate the model a registry URI names on a probe set (head / torso / tail) and/or, with a
    ``memorization_plan``, on the memorization probe (extraction of training records against a held-out
    control, canary exposure); compare it with the previous registry version (evaluated now if it has no
    result on these inputs yet) and with the oldest version evaluated on them, follow its teacher chain,
    evaluate the probe rules and log one MLflow run in experiment ``collapse-monitor/models/<name>``.

    A probe that fails (a broken alias, a model that raises) is itself an alert, ``probe_failed``, sent to
    on-call through the outbox, and resolved by the model's next successful probe."""
    if probes_path is None and memorization_plan is None:
        raise UserError("nothing to probe: give a probe set (--probes PATH) and/or --memorization --training PATH")
    what = " and ".join(([probes_path] if probes_path else [])
                        + ([f"memorization on {memorization_plan.training}"] if memorization_plan else []))
    try:
        scope = model_scope(models.parse_uri(model_uri)[0])
    except models.ModelUnavailable:
        scope = model_scope(model_uri.replace("/", "_"))
    try:
        with tasks.dataset_lock(settings, scope):  # the model's state, read then logged, as for a dataset
            result = _probe(model_uri, probes_path, settings, runtime, kind, memorization_plan)
    except Exception as exc:
        oncall.report_failure(settings, scope, f"{model_uri} on {what}", exc, rule=FAILED_RULE, what="probe")
        raise
    return oncall.after_run(result, settings, runtime, scope,
                           f"Alerts of probe run {result.run_id} ({result.model} v{result.version}, "
                           f"{time.strftime('%Y-%m-%d %H:%M')})", FAILED_RULE, "probe")


def _probe(model_uri: str, probes_path: str | None, settings: Settings, runtime: Runtime, kind: str | None,
           plan: memorization.Plan | None) -> ProbeResult:
    started = time.time()
    tracker = tasks.tracker_for(runtime)
    replayed = tasks.replay_spool(tracker, settings)
    ref = resolve_model(tracker, model_uri)
    kind = models.kind_of(ref, kind)
    if plan is not None and kind != "generator":
        raise UserError(f"model {ref.label} is a {kind}: the memorization probe needs a generator (tag "
                        f"collapse.model_kind=generator, or --kind generator)")
    probe_set = read_probe_set(probes_path, kind) if probes_path else None
    mem = read_memorization(plan) if plan is not None else None
    suite = read_probe_rules(settings)
    scope = model_scope(ref.name)
    lineage = trace_lineage(tracker, ref)
    prev_version, stored = _stored(tracker, ref, probe_set, mem)
    previous, silences = tasks.load_previous(tracker, scope)
    notes = [f"replayed {len(replayed)} spooled run(s) into MLflow: {', '.join(replayed)}"] if replayed else []

    metrics, artifacts, more = evaluate_model(ref, kind, probe_set, settings, mem)
    notes += more
    prev_info = None
    if prev_version is not None:
        if prev_version not in stored:
            try:
                prev_ref = resolve_model(tracker, f"models:/{ref.name}/{prev_version}")
                prev_metrics, prev_artifacts, _ = evaluate_model(prev_ref, kind, probe_set, settings, mem)
            except UserError as exc:  # the old version is broken: this one is still worth evaluating
                notes.append(f"the previous version {prev_version} could not be evaluated, so there is no "
                             f"comparison with it: {exc}")
            else:
                run_id, _, spool_note = tasks.log_or_spool(
                    tracker, _baseline_request(prev_ref, kind, probe_set, mem, prev_metrics, prev_artifacts,
                                               ref.version), settings)
                notes += [spool_note] if spool_note else []
                stored[prev_version] = {"run_id": run_id, "metrics": prev_metrics}
                prev_info = {"version": prev_version, "run_id": run_id, "evaluated_now": True}
        else:
            prev_info = {"version": prev_version, "run_id": stored[prev_version]["run_id"], "evaluated_now": False}
    first_version = min([*stored, ref.version], key=int)
    first_info = None if first_version == ref.version else {
        "version": first_version, "run_id": stored[first_version]["run_id"], "evaluated_now": False}

    row = {**metrics, **probes.compare(metrics, stored[prev_version]["metrics"] if prev_info else None,
                                       stored[first_version]["metrics"] if first_info else None,
                                       settings.probes.head_tolerance),
           "lineage.distillation_depth": float(lineage.depth),
           "lineage.synthetic_fraction": lineage.synthetic_fraction}
    if probe_set is None:  # the slice comparison has nothing to say
        row = {k: v for k, v in row.items() if not k.startswith("probe.")}
    if lineage.note:
        notes.append(f"lineage: {lineage.note}")
    breached = tasks.evaluate_rules(suite, row, scope)
    stepped = tasks.advance_alerts(previous.alert_states, silences, suite, row, breached, scope, settings)
    mem_summary = None
    if mem is not None:
        art = artifacts[Artifact.MEMORIZATION_OUTPUTS]
        mem_summary = {"training": mem.plan.training, "heldout": mem.plan.heldout, "canaries": mem.plan.canaries,
                       "sha256": mem.digest, "settings": mem.plan.settings(),
                       "exposures": [{k: c[k] for k in ("id", "repeats", "exposure", "rank", "of", "method")}
                                     for c in art["canaries"] or []]}
    result = ProbeResult(
        run_id="", model_uri=model_uri, model=ref.name, version=ref.version, kind=kind,
        probe_set=probes_path or "", probe_digest=probe_set.digest if probe_set is not None else "",
        examples=probe_set.counts() if probe_set is not None else {}, indicators=row, previous=prev_info,
        first=first_info, lineage={"depth": lineage.depth, "chain": list(lineage.chain),
                                   "synthetic_fraction": None if np.isnan(lineage.synthetic_fraction) else lineage.synthetic_fraction},
        alerts=stepped.alerts, notes=notes, notifications=[n.to_dict() for n in stepped.notifications],
        silenced=[n.to_dict() for n in stepped.silenced], memorization=mem_summary)
    tags = {**_tags(ref, kind, probe_set, mem, "current"), Tag.LINEAGE_DEPTH: str(lineage.depth),
            Tag.COMPARED_WITH: ",".join(f"v{i['version']}" for i in (prev_info, first_info) if i) or "none"}
    params = {**_params(probe_set, mem), "head_tolerance": settings.probes.head_tolerance,
              "prompt_words": settings.probes.prompt_words, "teacher_chain": " <- ".join(lineage.chain)}
    found = []
    if probe_set is not None:
        found.append(f"tail/head ratio {row['probe.tail_head_ratio']:.3f}")
    if mem is not None:
        found.append(f"memorization excess {_num(row.get('memorization.excess'))}, "
                     f"max canary exposure {_num(row.get('memorization.max_exposure'))}")
    description = f"{ref.label} ({kind}) on {_what(probe_set, mem)}: {'; '.join(found)}; {firing_summary(result.alerts)}"
    req = rule_run(scope, f"v{ref.version}", kind=RunKind.PROBE, metrics=row, params=params, tags=tags,
                   artifacts=artifacts, description=description, summary=result.to_dict(),
                   alerts=result.alerts, states=stepped.states, notifications=stepped.notifications,
                   silenced=stepped.silenced, started=started, run_name=f"probe {ref.name} v{ref.version}")
    result.run_id, result.spooled, note = tasks.log_or_spool(tracker, req, settings)
    result.notes += [note] if note else []
    return result


def _num(v) -> str:
    return "unknown" if v is None or v != v else f"{v:.3f}"
