"""``filter_synthetic_text``: a batch split into kept and flagged records (and its quarantine), with the human
loss it promised; one MLflow ``filter`` run. The math is :mod:`monitors.core.textfilter`, the files
:mod:`monitors.adapters.filtering`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NONE

from flows import batches, progress, tasks
from monitors.adapters import filtering, ingest
from monitors.adapters.runtime import Runtime
from monitors.adapters.sources import Batch
from monitors.config import Settings
from monitors.core import mixture, textfilter
from monitors.core.errors import InputError
from monitors.core.profile import stable_hash
from monitors.core.runrecord import RunRecord
from monitors.core.schema import Artifact, RunKind, Tag


@task(name="filter_shard", cache_policy=NONE)
def filter_shard_task(job: filtering.ShardJob, shard) -> filtering.ShardOutcome:
    return job(shard)


def _score_shards(job: filtering.ShardJob, shards, batch: Batch, settings: Settings) -> list[filtering.ShardOutcome]:
    if settings.task_runner == "dask":  # each shard a Prefect task on the Dask cluster
        return [f.result() for f in [filter_shard_task.submit(job, s) for s in shards]]
    with batches.shard_mapper(settings, batch) as mapper:
        return list(mapper(job, shards))


def _lm_stage(human: list[tuple[int, str]], cal_scores: np.ndarray, band: tuple[float, float], pending: list[str],
              settings: Settings, budget: int, max_loss: float):
    """LM machine scores of up to ``budget`` pending documents and the LM threshold from the reference documents
    of the band; returns (scores by id hash, LM threshold, expected cascade loss, note)."""
    from flows.synthetic_share import lm_scorer
    from monitors.adapters.lmscore import ScorerUnavailable

    hashes, texts = filtering.choose_for_lm(pending, budget)
    in_band = [t for (_, t), s in zip(human, cal_scores) if band[0] < s <= band[1]]
    try:
        scorer = lm_scorer(settings, "documents for the filter's LM stage")
        progress.current.stage(f"the local LM scores {len(in_band)} calibration and {len(texts)} uncertain documents")
        band_lm = mixture.machine_score(scorer.score(in_band)) if in_band else np.zeros(0)
        lm = mixture.machine_score(scorer.score(texts)) if texts else np.zeros(0)
    except ScorerUnavailable as exc:
        return {}, None, None, f"the LM stage was skipped ({exc}): the fast stage decided every document"
    t_lm = textfilter.lm_threshold(cal_scores, band, band_lm, max_loss)
    return dict(zip(hashes, lm.tolist())), t_lm, textfilter.cascade_loss(cal_scores, band, band_lm, t_lm), ""


@flow(name="filter_synthetic_text", flow_run_name="filter {dataset}", validate_parameters=False)
def filter_synthetic_text(input_path: str | Batch, dataset: str, out_dir: str, settings: Settings, runtime: Runtime,
                          *, max_human_loss: float | None = None, threshold: float | None = None,
                          out_format: str | None = None, lm_budget: int | None = None,
                          reference_run_id: str | None = None) -> textfilter.FilterResult:
    """Score every usable record of the batch and split it into ``kept`` and ``flagged`` files (plus every
    quarantined record in ``quarantine.jsonl``), at the threshold that flags at most ``max_human_loss`` of the
    held-out human reference (or at ``threshold``); log one MLflow ``filter`` run."""
    started = time.time()
    batch = Batch.resolve(input_path)
    fmt = filtering.output_format(batch, out_format)
    max_loss = settings.filter.max_human_loss if max_human_loss is None and threshold is None else max_human_loss
    budget = settings.filter.lm_budget if lm_budget is None else lm_budget
    tracker = tasks.tracker_for(runtime)
    reference_run, reference = tasks.load_reference(tracker, dataset, reference_run_id)
    out = Path(out_dir)
    stage = filtering.staging(out)
    try:
        with batches.workspace() as work:
            progress.current.stage("reading the batch (the same checks as `check`; every quarantined record kept)")
            prof, shards = batches.profile_batch(batch, settings, work, whole_quarantine=True)
            ingest.write_quarantine(prof, shards, stage / "quarantine.jsonl", settings.columns.id, None,
                                    settings.ingest.max_line_bytes)
            human = [(stable_hash(t), t) for t in reference.sample]
            if len(human) < textfilter.MIN_CALIBRATION:
                raise InputError(f"the reference of {dataset!r} keeps {len(reference.sample)} documents, too few to "
                                 f"calibrate the filter (it needs {textfilter.MIN_CALIBRATION}): rebuild it from "
                                 f"more human text")
            sample = [(h, t) for h, _, t in prof.sample]
            if len(sample) < textfilter.MIN_BATCH_SAMPLE:
                raise InputError(f"{batch.spec}: {prof.records} usable record(s); the filter learns from the batch "
                                 f"itself and needs at least {textfilter.MIN_BATCH_SAMPLE}")
            progress.current.stage(f"training the fast stage on {len(human)} reference and {len(sample)} batch documents")
            scorer = textfilter.train_fast(human, sample, seed=settings.detector.seed)
            cal_scores = textfilter.calibration_scores(scorer, human)
            point = textfilter.operating_point(cal_scores, max_human_loss=max_loss, threshold=threshold)
            lm_on = (threshold is None and budget > 0 and settings.lm.enabled and reference.lm is not None)
            band = textfilter.uncertain_band(cal_scores, max_loss) if lm_on else None
            job = filtering.ShardJob(batches.read_options(settings, work), scorer, point.threshold, band, str(work),
                                     prof.late_duplicates_by_shard(), len(batch.files) > 1)
            progress.current.stage(f"scoring {prof.records} documents in {len(shards)} shard(s)")
            outcomes = _score_shards(job, shards, batch, settings)
            pending = [o.parts["pending"] for o in outcomes]
            uncertain = sum(o.counts["pending"] for o in outcomes)
            lm_scores, t_lm, lm_loss, lm_note = {}, None, None, ""
            if band is not None and uncertain:
                lm_scores, t_lm, lm_loss, lm_note = _lm_stage(human, cal_scores, band, pending, settings, budget, max_loss)
            elif threshold is None and budget > 0 and not lm_on:
                lm_note = ("no LM stage: " + ("the local LM is off (lm.enabled)" if not settings.lm.enabled else
                           "the reference has no LM scores (rebuild it with the LM on)"))
            decide = textfilter.decider(point.threshold, lm_scores, t_lm)
            settled, late_examples, settled_parts = filtering.settle_pending(pending, work, decide)
            if t_lm is not None:
                import dataclasses

                point = dataclasses.replace(point, band=band, lm_threshold=t_lm, expected_human_loss=lm_loss)
            suffix = filtering.FORMAT_SUFFIX[fmt]
            files = {k: f"{k}{suffix}" for k in filtering.OUTPUTS}
            progress.current.stage("writing the kept and flagged files")
            written = {k: filtering.write_output([o.parts[k] for o in outcomes] + [settled_parts[k]], stage / files[k], fmt)
                       for k in filtering.OUTPUTS}
            quarantined_lines = filtering.count_lines(stage / "quarantine.jsonl")
            if written["kept"] + written["flagged"] != prof.records or quarantined_lines != prof.quarantined_total:
                raise RuntimeError(f"the filter lost count: {written['kept']} kept + {written['flagged']} flagged for "
                                   f"{prof.records} usable records, {quarantined_lines} quarantine entries for "
                                   f"{prof.quarantined_total} quarantined; nothing was written to {out}")
            before, after = textfilter.shares(scorer.score([t for _, t in sample], [h for h, _ in sample]), cal_scores,
                                              point.threshold, replicates=settings.detector.bootstrap,
                                              seed=settings.detector.seed)
            recall = textfilter.recall_estimate(written["flagged"] / max(prof.records, 1), before,
                                                point.expected_human_loss, point.loss_interval)
            result = textfilter.FilterResult(
                dataset=dataset, input=batch.spec, out_dir=str(out), format=fmt, records=prof.records,
                kept=written["kept"], flagged=written["flagged"], quarantined=prof.quarantined_total, point=point,
                lm_decided=settled["lm_decided"], lm_note=lm_note, recall=recall, share_before=before,
                share_after=after, reference_run_id=reference_run)
            result.notes.append("the shares are estimated from the fast stage's scores against held-out reference "
                                "documents (mixture-proportion estimation); a topic the reference lacks counts as machine-like")
            if band is not None and settled["lm_decided"] < uncertain:
                result.notes.append(f"{uncertain - settled['lm_decided']} uncertain document(s) over the LM budget ({budget}, --lm-budget) were "
                                    f"decided by the fast threshold")
            examples = [e for o in outcomes for e in o.examples][:100] + late_examples
            manifest = {**result.to_dict(), "files": {}}
            result.files = filtering.publish(stage, out, {**files, "quarantine": "quarantine.jsonl"}, manifest)
            result.files["manifest"] = str(out / "filter.json")
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
    req = RunRecord(dataset, Path(str(input_path)).name, result.metrics(),
                    {"input": batch.spec, "out": str(out), "format": fmt, "max_human_loss": max_loss,
                     "threshold_given": threshold, "lm_budget": budget},
                    {Tag.REFERENCE_RUN: reference_run},
                    {Artifact.SUMMARY: result.to_dict(), Artifact.FILTER_SAMPLE_JSON: examples,
                     Artifact.FILTER_SAMPLE: filtering.examples_html(examples, f"Flagged documents: filter {dataset}")},
                    f"filter: {result.kept} kept, {result.flagged} flagged, {result.quarantined} quarantined from {batch.spec}",
                    kind=RunKind.FILTER, run_name=f"filter {dataset} {Path(str(input_path)).name}", started=started)
    result.run_id, result.spooled, note = tasks.log_or_spool(tracker, req, settings)
    if note:
        result.notes.append(note)
    return result
