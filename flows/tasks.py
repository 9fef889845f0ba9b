"""Tasks shared by the flows. Each wraps one ``monitors`` call; only I/O tasks retry.

Caching is off: inputs are whole batches (hashing them costs more than the work) and a check must run
every time it is asked to.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from monitors import gx_rules, indicators, ingest, profile, registry
from monitors.config import Settings
from monitors.quantify import ShareEstimate, adjusted_classify_and_count
from monitors.reference import ReferenceProfile
from monitors.rules import RuleSuite, load_rules
from monitors.runtime import Runtime, mlflow_client
from monitors.tracking import MlflowTracker

io_task = task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE)
compute_task = task(cache_policy=NONE)


def tracker_for(runtime: Runtime) -> MlflowTracker:
    return MlflowTracker(mlflow_client(runtime), runtime.artifact_root)


@task(cache_policy=NONE)  # a bad file is not fixed by retrying
def read_batch(path: str, settings: Settings) -> ingest.Batch:
    return ingest.read_batch(path, settings.columns, settings.ingest)


@io_task
def load_reference(tracker: MlflowTracker, dataset: str, run_id: str | None) -> tuple[str, ReferenceProfile]:
    return tracker.latest_reference(dataset, run_id)


@compute_task
def read_rules(settings: Settings) -> RuleSuite:
    return load_rules(settings.rules_path)


@io_task
def load_detector(tracker: MlflowTracker, uri: str) -> registry.LoadedDetector | str:
    """The registered detector, or the reason there is none (a check still runs without one)."""
    try:
        return registry.load_detector(tracker.client, uri)
    except registry.DetectorUnavailable as exc:
        return str(exc)


@compute_task
def profile_batch(batch: ingest.Batch, settings: Settings) -> profile.TextProfile:
    recs = batch.records
    return profile.profile_documents(
        [r.id for r in recs], [r.text for r in recs], [r.created_at for r in recs],
        cutoff=settings.contamination_cutoff, sample_size=settings.indicators.sample_size,
    )


@compute_task
def compute_indicators(prof: profile.TextProfile, ref: ReferenceProfile, settings: Settings) -> dict[str, float]:
    ref.check_compatible(settings.indicators)
    values = indicators.compute_indicators(prof, settings.indicators, ref.tail)
    return indicators.with_ratios(values, ref.baseline)


@compute_task
def estimate_share(batch: ingest.Batch, detector: registry.LoadedDetector | str, settings: Settings) -> ShareEstimate:
    if isinstance(detector, str):
        return ShareEstimate.unavailable(detector)
    flags = detector.flag([r.text for r in batch.records])
    return adjusted_classify_and_count(flags, detector.rates, replicates=settings.detector.bootstrap, seed=settings.detector.seed)


@compute_task
def evaluate_rules(suite: RuleSuite, row: dict[str, float], dataset: str):
    return gx_rules.evaluate(suite, row, dataset)

