"""``build_reference``: profile trusted human text into a versioned reference, logged to MLflow."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import batches, progress, synthetic_share, tasks
from monitors.adapters import drift
from monitors.adapters.runtime import Runtime
from monitors.config import Settings
from monitors.core.errors import InputError
from monitors.core.reference import ReferenceProfile, build_reference


@task(cache_policy=NONE)
def profile_reference(prof, source: str, dataset: str, settings: Settings) -> ReferenceProfile:
    if not prof.records:
        raise InputError(f"{source}: no usable record for a reference ({prof.quarantined_total} quarantined)")
    logger = get_run_logger()

    def stage(message: str) -> None:
        logger.info(message)
        progress.stage(message)

    stage(f"profiling {prof.records} documents into the reference")
    cache = tasks.cache_folder(settings)
    return build_reference(prof, dataset=dataset, settings=settings.indicators,
                           drift=(lambda cur, ref: drift.drift_values(cur, ref, cache)) if settings.indicators.drift else None,
                           progress=stage,
                           tick=progress.count("pseudo-batches"))


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
def save_reference(tracker, ref: ReferenceProfile, source: str) -> str:
    return tracker.save_reference(ref, source)


@flow(name="build_reference", flow_run_name="reference {dataset}", validate_parameters=False)
def build_reference_flow(input_path: str, dataset: str, settings: Settings, runtime: Runtime) -> tuple[str, ReferenceProfile, int]:
    """Returns the reference's MLflow run id, the profile and how many input records were quarantined."""
    with batches.workspace() as work:
        progress.stage(f"reading {input_path}")
        prof, _ = batches.profile_batch(input_path, settings, work, sample_size=settings.indicators.reference_docs)
        ref = profile_reference(prof, input_path, dataset, settings)
        ref = synthetic_share.score_reference(ref, prof, settings)
    progress.stage("saving the reference to MLflow")
    run_id = save_reference(tasks.tracker_for(runtime), ref, input_path)
    return run_id, ref, prof.quarantined_total
