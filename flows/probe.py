"""``evaluate_long_tail_probes``: a registered model on a long-tail probe set, against its earlier versions."""

from __future__ import annotations

import time

import numpy as np
from prefect import flow

from flows import oncall, tasks
from monitors.adapters import models, probe_files
from monitors.adapters.gx_rules import load_rules
from monitors.adapters.models import LoadedModel, ModelRef
from monitors.adapters.runtime import Runtime
from monitors.adapters.tracking import MlflowTracker, model_scope
from monitors.config import Settings
from monitors.core import probes
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
def earlier_results(tracker: MlflowTracker, ref: ModelRef, digest: str) -> tuple[str | None, dict]:
    """The previous registry version and every version's stored result on this probe set."""
    return (tracker.previous_model_version(ref.name, ref.version),
            tracker.probe_results(model_scope(ref.name), digest))


@tasks.compute_task  # the model's own failure is not fixed by retrying
def evaluate_model(ref: ModelRef, kind: str, probe_set: probes.ProbeSet, settings: Settings) -> tuple[dict, list, str]:
    """Load the model and compute its per-slice metrics; returns (metrics, per-example outputs, note)."""
    model: LoadedModel = models.load(ref, kind)
    note = ""
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


def _tags(ref: ModelRef, kind: str, probe_set: probes.ProbeSet, role: str) -> dict[str, str]:
    return {Tag.MODEL: ref.name, Tag.MODEL_VERSION: ref.version, Tag.MODEL_URI: ref.uri,
            Tag.MODEL_KIND: kind, Tag.PROBE_SET: probe_set.digest, Tag.ROLE: role}


def _baseline_request(ref: ModelRef, kind: str, probe_set: probes.ProbeSet, metrics: dict, outputs: list,
                      for_version: str) -> RunRecord:
    return RunRecord(model_scope(ref.name), f"v{ref.version}", metrics, {"probe_set": probe_set.path},
                      _tags(ref, kind, probe_set, "baseline"), {Artifact.PROBE_OUTPUTS: outputs},
                      f"{ref.label} on probe set {probe_set.path}, evaluated as the baseline of version {for_version}",
                      kind=RunKind.PROBE_BASELINE, run_name=f"probe {ref.name} v{ref.version} (baseline)")


@flow(name="evaluate_long_tail_probes", flow_run_name="probe {model_uri}", validate_parameters=False)
def evaluate_long_tail_probes(model_uri: str, probes_path: str, settings: Settings, runtime: Runtime,
                              kind: str | None = None) -> ProbeResult:
    """Evaluate the model a registry URI names on a probe set (head / torso / tail), compare it with the
    previous registry version (evaluated now if it has no result on this probe set yet) and with the oldest
    version evaluated on it, follow its teacher chain, evaluate the probe rules and log one MLflow run in
    experiment ``collapse-monitor/models/<name>``.

    A probe that fails (a broken alias, a model that raises) is itself an alert, ``probe_failed``, sent to
    on-call through the outbox, and resolved by the model's next successful probe."""
    try:
        scope = model_scope(models.parse_uri(model_uri)[0])
    except models.ModelUnavailable:
        scope = model_scope(model_uri.replace("/", "_"))
    try:
        with tasks.dataset_lock(settings, scope):  # the model's state, read then logged, as for a dataset
            result = _probe(model_uri, probes_path, settings, runtime, kind)
    except Exception as exc:
        oncall.report_failure(settings, scope, f"{model_uri} on {probes_path}", exc, rule=FAILED_RULE, what="probe")
        raise
    return oncall.after_run(result, settings, runtime, scope,
                           f"Alerts of probe run {result.run_id} ({result.model} v{result.version}, "
                           f"{time.strftime('%Y-%m-%d %H:%M')})", FAILED_RULE, "probe")


def _probe(model_uri: str, probes_path: str, settings: Settings, runtime: Runtime, kind: str | None) -> ProbeResult:
    started = time.time()
    tracker = tasks.tracker_for(runtime)
    replayed = tasks.replay_spool(tracker, settings)
    ref = resolve_model(tracker, model_uri)
    kind = models.kind_of(ref, kind)
    probe_set = read_probe_set(probes_path, kind)
    suite = read_probe_rules(settings)
    scope = model_scope(ref.name)
    lineage = trace_lineage(tracker, ref)
    prev_version, stored = earlier_results(tracker, ref, probe_set.digest)
    previous, silences = tasks.load_previous(tracker, scope)
    notes = [f"replayed {len(replayed)} spooled run(s) into MLflow: {', '.join(replayed)}"] if replayed else []

    metrics, outputs, note = evaluate_model(ref, kind, probe_set, settings)
    notes += [note] if note else []
    prev_info = None
    if prev_version is not None:
        if prev_version not in stored:
            try:
                prev_ref = resolve_model(tracker, f"models:/{ref.name}/{prev_version}")
                prev_metrics, prev_outputs, _ = evaluate_model(prev_ref, kind, probe_set, settings)
            except UserError as exc:  # the old version is broken: this one is still worth evaluating
                notes.append(f"the previous version {prev_version} could not be evaluated, so there is no "
                             f"comparison with it: {exc}")
            else:
                run_id, _, spool_note = tasks.log_or_spool(
                    tracker, _baseline_request(prev_ref, kind, probe_set, prev_metrics, prev_outputs, ref.version),
                    settings)
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
    if lineage.note:
        notes.append(f"lineage: {lineage.note}")
    breached = tasks.evaluate_rules(suite, row, scope)
    stepped = tasks.advance_alerts(previous.alert_states, silences, suite, row, breached, scope, settings)
    result = ProbeResult(
        run_id="", model_uri=model_uri, model=ref.name, version=ref.version, kind=kind, probe_set=probes_path,
        probe_digest=probe_set.digest, examples=probe_set.counts(), indicators=row, previous=prev_info,
        first=first_info, lineage={"depth": lineage.depth, "chain": list(lineage.chain),
                                   "synthetic_fraction": None if np.isnan(lineage.synthetic_fraction) else lineage.synthetic_fraction},
        alerts=stepped.alerts, notes=notes, notifications=[n.to_dict() for n in stepped.notifications],
        silenced=[n.to_dict() for n in stepped.silenced])
    tags = {**_tags(ref, kind, probe_set, "current"), Tag.LINEAGE_DEPTH: str(lineage.depth),
            Tag.COMPARED_WITH: ",".join(f"v{i['version']}" for i in (prev_info, first_info) if i) or "none"}
    params = {"probe_set": probes_path, "head_tolerance": settings.probes.head_tolerance,
              "prompt_words": settings.probes.prompt_words, "teacher_chain": " <- ".join(lineage.chain)}
    description = (f"{ref.label} ({kind}) on {probe_set.path}: tail/head ratio {row['probe.tail_head_ratio']:.3f}; "
                   f"{firing_summary(result.alerts)}")
    req = rule_run(scope, f"v{ref.version}", kind=RunKind.PROBE, metrics=row, params=params, tags=tags,
                   artifacts={Artifact.PROBE_OUTPUTS: outputs}, description=description, summary=result.to_dict(),
                   alerts=result.alerts, states=stepped.states, notifications=stepped.notifications,
                   silenced=stepped.silenced, started=started, run_name=f"probe {ref.name} v{ref.version}")
    result.run_id, result.spooled, note = tasks.log_or_spool(tracker, req, settings)
    result.notes += [note] if note else []
    return result
