"""``build_reference``: profile trusted human text into a versioned reference, logged to MLflow."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from flows import tasks
from monitors.config import Settings
from monitors.errors import InputError
from monitors.reference import ReferenceProfile, build_reference
from monitors.runtime import Runtime


@task(cache_policy=NONE)
def profile_reference(batch, dataset: str, settings: Settings) -> ReferenceProfile:
    recs = batch.records
    if not recs:
        raise InputError(f"{batch.path}: no usable record for a reference ({len(batch.quarantine)} quarantined)")
    return build_reference([r.id for r in recs], [r.text for r in recs], [r.created_at for r in recs],
                           dataset=dataset, settings=settings.indicators, cutoff=settings.contamination_cutoff)


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
def save_reference(tracker, ref: ReferenceProfile, source: str) -> str:
    return tracker.save_reference(ref, source)


@flow(name="build_reference", flow_run_name="reference {dataset}", validate_parameters=False)
def build_reference_flow(input_path: str, dataset: str, settings: Settings, runtime: Runtime) -> tuple[str, ReferenceProfile, int]:
    """Returns the reference's MLflow run id, the profile and how many input records were quarantined."""
    batch = tasks.read_batch(input_path, settings)
    ref = profile_reference(batch, dataset, settings)
    run_id = save_reference(tasks.tracker_for(runtime), ref, input_path)
    return run_id, ref, len(batch.quarantine)
