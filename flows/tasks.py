"""Tasks shared by the flows. Each wraps one ``monitors`` call; only I/O tasks retry.

Caching is off: inputs are whole batches (hashing them costs more than the work) and a check must run
every time it is asked to.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from monitors.adapters import delivery, drift, files, gx_records, gx_rules, ingest, ledger, lifeline, locks, registry, sources, spool
from monitors.core import alerting, bands, indicators, quantify
from monitors.config import ALERT_URLS_ENV, Settings
from monitors.core.profile import BatchProfile
from monitors.core.runrecord import RunRecord
from monitors.core.quantify import Provenance, ShareEstimate, combine_with_declared
from monitors.core.reference import ReferenceProfile
from monitors.core.rules import RuleSuite
from monitors.adapters.gx_rules import load_rules
from monitors.adapters.runtime import Runtime, mlflow_client
from monitors.adapters.tracking import MlflowTracker, PreviousCheck, RunStore
from monitors.adapters.failures import FailureStore

def _transient(task, task_run, state) -> bool:
    """Retry I/O that failed by chance; a user's error (a missing model, a bad alias) fails at once."""
    from monitors.core.errors import UserError

    return not isinstance(state.data, UserError)


io_task = task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE, retry_condition_fn=_transient)
compute_task = task(cache_policy=NONE)
#: Below this many input bytes, worker processes cost more than they save.
PARALLEL_MIN_BYTES = 16 << 20


def tracker_for(runtime: Runtime) -> RunStore:
    return MlflowTracker(mlflow_client(runtime), runtime.artifact_root)


def batch_sha256(spec: str | sources.Batch) -> str:
    """A batch's content hash: its file's SHA-256 (what the landing zone's ledger keys on), or for several
    files the SHA-256 of their sorted SHA-256s. The same bytes under another name are the same batch."""
    import hashlib

    hashes = sorted(ledger.file_sha256(url, sources.open_binary)[0] for url in sources.Batch.resolve(spec).files)
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(hashes).encode()).hexdigest()


@contextmanager
def workspace() -> Iterator[Path]:
    """A private folder for one run's quarantine parts, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"cm-run-{os.getpid()}-"))  # the pid: a later start removes it if killed
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _workers(settings: Settings, spec: str) -> int:
    if str(spec).startswith("memory://"):  # an in-memory filesystem is not shared with other processes
        return 1
    return settings.ingest.workers or os.cpu_count() or 1


def _read_options(settings: Settings, quarantine_dir: Path, sample_size: int | None = None) -> ingest.ReadOptions:
    return ingest.ReadOptions(settings.columns, settings.ingest, sample_size or settings.indicators.sample_size,
                              settings.contamination_cutoff, str(quarantine_dir))


@task(cache_policy=NONE)  # a bad file is not fixed by retrying
def profile_batch(spec: str | sources.Batch, settings: Settings, quarantine_dir: Path, sample_size: int | None = None
                  ) -> tuple[BatchProfile, list[sources.Shard]]:
    """Read and profile every shard of the batch, in worker processes when it is large enough."""
    opts = _read_options(settings, quarantine_dir, sample_size)
    shard_bytes = settings.ingest.shard_mb << 20
    batch = sources.Batch.resolve(spec)
    workers = _workers(settings, batch.spec)
    if workers > 1 and batch.total_bytes >= PARALLEL_MIN_BYTES:
        # spawn: forking a process that runs Prefect's threads and event loop is not safe. The workers die with
        # this process (kill -9 included), so a worker blocked writing its result to a dead parent does not linger.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=lifeline.die_with_parent, initargs=(os.getpid(),)) as pool:
            return ingest.profile_input(batch, opts, mapper=pool.map, shard_bytes=shard_bytes)
    return ingest.profile_input(batch, opts, shard_bytes=shard_bytes)


@task(name="profile_shard", cache_policy=NONE)
def profile_shard(job, shard: sources.Shard) -> BatchProfile:
    return job(shard)


def profile_batch_on_runner(spec: str | sources.Batch, settings: Settings, quarantine_dir: Path) -> tuple[BatchProfile, list[sources.Shard]]:
    """Every shard as its own Prefect task on the flow's task runner (a Dask cluster), merged here in order.

    Not a task itself: tasks are submitted from the flow. The quarantine folder must be reachable from the
    workers (the same machine, or a shared file system)."""
    opts = _read_options(settings, quarantine_dir)

    def on_runner(job, shards):
        return [future.result() for future in [profile_shard.submit(job, shard) for shard in shards]]

    return ingest.profile_input(spec, opts, mapper=on_runner, shard_bytes=settings.ingest.shard_mb << 20)


def with_task_runner(flow_fn, settings: Settings):
    """The flow with the configured task runner: as is, or on the Dask cluster at ``dask_address``."""
    if settings.task_runner != "dask":
        return flow_fn
    if not settings.dask_address:
        from monitors.core.errors import ConfigError

        raise ConfigError("task_runner dask needs dask_address (--dask-address tcp://HOST:PORT or "
                          "COLLAPSE_MONITOR_DASK_ADDRESS): the scheduler of an existing Dask cluster")
    from prefect_dask import DaskTaskRunner

    return flow_fn.with_options(task_runner=DaskTaskRunner(address=settings.dask_address))


@task(cache_policy=NONE)
def write_quarantine(prof: BatchProfile, shards: list[sources.Shard], folder: Path, settings: Settings) -> Path | None:
    """The batch's quarantine entries in one JSONL file (the first N of each reason); None when there are none."""
    if not prof.quarantined_total:
        return None
    return ingest.write_quarantine(prof, shards, folder / "quarantine.jsonl", settings.columns.id,
                                   settings.ingest.quarantine_entries_per_reason, settings.ingest.max_line_bytes)


@io_task
def load_reference(tracker: RunStore, dataset: str, run_id: str | None) -> tuple[str, ReferenceProfile]:
    return tracker.latest_reference(dataset, run_id)


@compute_task
def read_rules(settings: Settings) -> RuleSuite:
    return load_rules(settings.rules_path)


@compute_task
def read_record_suite(settings: Settings) -> dict:
    return gx_records.load_suite(settings.record_rules_path)


@io_task
def load_detector(tracker: RunStore, uri: str) -> registry.LoadedDetector | registry.NoDetector:
    """The registered detector, or why there is none (a check still runs without one)."""
    try:
        return tracker.load_detector(uri)
    except registry.DetectorUnavailable as exc:
        return registry.NoDetector(str(exc))


@compute_task
def compute_indicators(prof: BatchProfile, ref: ReferenceProfile, settings: Settings) -> dict[str, float]:
    ref.check_compatible(settings.indicators)
    values = indicators.compute_indicators(prof, settings.indicators, ref.anchors)
    return indicators.with_ratios(values, ref.baseline)


@compute_task
def drift_report(prof: BatchProfile, ref: ReferenceProfile, settings: Settings) -> drift.DriftReport | None:
    if not settings.indicators.drift:
        return None
    return drift.drift_report(prof.sample_texts, ref.sample)


@compute_task
def band_scores(values: dict[str, float], ref: ReferenceProfile, records: int) -> dict[str, float]:
    return bands.z_scores(values, ref.band_for(records))


@compute_task
def validate_records(prof: BatchProfile, suite_raw: dict) -> gx_records.RecordQuality:
    return gx_records.validate(prof, suite_raw)


def lm_scorer(settings: Settings, label: str = "LM scoring"):
    """The local LM scorer of the settings, with the content cache under the state directory (loads lazily)."""
    from monitors.adapters import lmscore

    cfg = lmscore.ScorerConfig(model_file=settings.lm.model_file, token_budget=settings.lm.token_budget,
                               dtype=settings.lm.dtype, batch_size=settings.lm.batch_size, threads=settings.lm.threads)
    folder = lmscore.cache_dir(settings.lm.cache_dir)
    cache = lmscore.ScoreCache(folder / "lm-scores.sqlite") if settings.lm.cache else None
    from flows import progress

    return lmscore.LMScorer(cfg, cache=cache, converted_dir=folder / "models" if settings.lm.cache else None,
                            progress=lambda done, total: progress.current.count(label, done, total))


@compute_task
def score_reference(ref: ReferenceProfile, prof: BatchProfile, settings: Settings) -> ReferenceProfile:
    """The reference with its held-out documents scored by the local LM (the human score distribution that
    the share is estimated against), or unchanged with a warning when the LM is unavailable."""
    import dataclasses

    from monitors.adapters.lmscore import ScorerUnavailable
    from monitors.core.reference import LMReference, split_sample

    from prefect import get_run_logger

    if not settings.lm.enabled:
        return ref
    from flows import progress

    texts = split_sample(prof)[1][: settings.lm.reference_docs]
    progress.current.stage(f"scoring {len(texts)} held-out documents with the local LM (cached by content)")
    try:
        scorer = lm_scorer(settings, "documents")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        get_run_logger().warning("reference built without LM scores, so checks need a trained detector for the "
                       "synthetic share: %s", exc)
        return ref
    clusters = ref.embedding.assign(ref.embedding.transform(texts)) if ref.embedding is not None else np.zeros(len(texts), int)
    return dataclasses.replace(ref, lm=LMReference(scorer.tag, features, clusters))


@compute_task
def estimate_share(prof: BatchProfile, detector: registry.LoadedDetector | registry.NoDetector, settings: Settings,
                   reference: ReferenceProfile | None = None) -> ShareEstimate:
    """Declared provenance counted exactly; for the undeclared rest (on the uniform sample, whose bootstrap
    interval covers the sampling) the registered detector's quantification estimate or, without a detector,
    the local LM's mixture-proportion estimate against the human reference."""
    declared = Provenance(*prof.declared())
    if declared.undeclared == 0:
        return combine_with_declared(declared, ShareEstimate.unavailable(""))
    texts = prof.undeclared_sample_texts()
    if isinstance(detector, registry.NoDetector):
        return combine_with_declared(declared, share_from_reference(texts, reference, settings, detector.reason))
    method = detector.method if settings.detector.method == "auto" else settings.detector.method
    if detector.lm_tag and settings.lm.enabled and len(texts) > settings.lm.sample_size:
        # the LM's time bounds the check: the sample is in hash order, so any prefix is a uniform sample
        texts = texts[: settings.lm.sample_size]
    features, lm_note = detector_lm_features(texts, detector, settings)
    undeclared = quantify.estimate_share(detector.scores(texts, features), detector.validation, method=method,
                                         replicates=settings.detector.bootstrap, seed=settings.detector.seed)
    if lm_note:
        import dataclasses

        undeclared = dataclasses.replace(undeclared, note=". ".join(n for n in (undeclared.note, lm_note) if n))
    return combine_with_declared(declared, undeclared)


def detector_lm_features(texts: list[str], detector: registry.LoadedDetector, settings: Settings
                         ) -> tuple[np.ndarray | None, str]:
    """The LM features a detector trained with them needs, and a note when they could not be had as trained.

    Without the LM (off, or not loadable) the detector still scores: its LM block falls back to its training
    medians, so the n-grams alone decide, and its validation (made with real LM features) fits less well."""
    from monitors.adapters.lmscore import ScorerUnavailable

    if not detector.lm_tag or not texts:
        return None, ""
    fallback = (f"detector {detector.label} was trained with LM features, but {{why}}: it scored on its n-grams "
                f"alone (LM features set to their training medians), so its validated error rates may not hold")
    if not settings.lm.enabled:
        return None, fallback.format(why="the local LM is off (lm.enabled)")
    try:
        scorer = lm_scorer(settings, f"LM features of {len(texts)} documents for the detector")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        return None, fallback.format(why=f"the local LM is unavailable ({exc})")
    if scorer.tag != detector.lm_tag:
        return features, (f"detector {detector.label} was trained with LM features of {detector.lm_tag!r}, but the "
                          f"settings give {scorer.tag!r} (lm.model_file, lm.token_budget, lm.dtype): its LM features "
                          f"may be shifted; retrain it or restore those settings")
    return features, ""


def share_from_reference(texts: list[str], reference: ReferenceProfile | None, settings: Settings,
                         no_detector: str) -> ShareEstimate:
    """The LM path of :func:`estimate_share`; unavailable (with every reason) when it cannot run."""
    from monitors.core import mixture
    from monitors.adapters.lmscore import ScorerUnavailable

    if not settings.lm.enabled:
        return ShareEstimate.unavailable(f"{no_detector}; the local LM is off (lm.enabled)")
    if reference is None or reference.lm is None:
        return ShareEstimate.unavailable(
            f"{no_detector}; and the dataset's reference has no LM scores to estimate against: rebuild it with "
            f"`collapse-monitor reference build` (the local LM scores its held-out documents)")
    texts = texts[: settings.lm.sample_size]  # the sample is in hash order: any prefix is a uniform sample
    try:
        scorer = lm_scorer(settings, "LM-scored documents")
        if scorer.tag != reference.lm.tag:
            scorer.load()  # a file that cannot be loaded is the better reason to give
            return ShareEstimate.unavailable(
                f"{no_detector}; the reference was scored by {reference.lm.tag!r} but the settings give "
                f"{scorer.tag!r} (lm.model_file, lm.token_budget, lm.dtype): rebuild the reference or restore them")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        return ShareEstimate.unavailable(f"{no_detector}; {exc}")
    emb = reference.embedding
    clusters = emb.assign(emb.transform(texts)) if emb is not None else None
    return mixture.estimate_from_reference(
        mixture.machine_score(features), mixture.machine_score(reference.lm.features),
        batch_clusters=clusters, human_clusters=reference.lm.clusters if emb is not None else None,
        clusters=reference.settings.clusters, replicates=settings.detector.bootstrap, seed=settings.detector.seed,
        reweight=settings.lm.topic_weights)


@io_task
def load_previous(tracker: RunStore, dataset: str) -> tuple[PreviousCheck, list[alerting.Silence]]:
    """What this check continues from (corpus totals, time since, alert states) and the dataset's silences."""
    return tracker.previous_check(dataset), tracker.silences(dataset)


@io_task
def replay_spool(tracker: RunStore, settings: Settings) -> list[str]:
    """Log every spooled check (oldest first) and remove it; returns the run ids. Stops at the first that
    fails to log (MLflow is away), leaving it and the rest for the next run. An entry that cannot be read is
    moved to ``spool/corrupt/`` with an alert and skipped: it would otherwise block every later check."""
    done = []
    for entry in spool.entries(settings.state_path / "spool"):
        try:
            req = spool.load(entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _set_aside(settings, entry, exc)
            continue
        done.append(tracker.replay(req))
        shutil.rmtree(entry)
    return done


def _set_aside(settings: Settings, entry: Path, exc: Exception) -> None:
    aside = entry.parent / "corrupt" / entry.name
    aside.parent.mkdir(exist_ok=True)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(entry, aside)
    summary = (f"spooled run {entry.name} cannot be read ({type(exc).__name__}: {str(exc)[:200]}): it was moved to "
               f"{aside} and skipped, so its check is not in MLflow. Inspect it, then delete it")
    logging.getLogger(__name__).error(summary)
    send_notifications(settings, [alerting.failure_notification("firing", "spool", "warning", summary,
                                                                "spool_entry_corrupt")], f"spool-{entry.name}")


@contextmanager
def dataset_lock(settings: Settings, dataset: str) -> Iterator[None]:
    """Serialise the runs of one dataset (or model scope) that read its state and log the next: two at once would
    both carry on from the same corpus totals, alert states and sequence number. With a PostgreSQL ledger
    (several workers), an advisory lock in its database; else a lock file in the state dir. Either is released
    if its holder dies; a run waits for it at most ``landing.lease_minutes``."""
    url, wait = settings.ledger_url(), settings.landing.lease_minutes * 60
    if url.startswith("postgresql"):
        lock, where = ledger.advisory_lock(url, f"collapse-monitor/{dataset}", wait), "the ledger database's advisory lock"
    else:
        path = settings.state_path / "locks" / f"{hashlib.sha256(dataset.encode()).hexdigest()[:16]}.lock"
        lock, where = locks.file_lock(path, timeout=wait), f"its lock file {path}"
    with lock as locked:
        if not locked:
            raise RuntimeError(f"another check of {dataset!r} held {where} for {wait:.0f} s (landing.lease_minutes); "
                               f"if no check is running, remove the lock file (or end that database session) and retry")
        yield


def open_failures(settings: Settings) -> list[dict]:
    """The open check_failed / probe_failed alerts of this state directory (see :class:`FailureStore`)."""
    return FailureStore(settings.state_path).open()


def report_failure(settings: Settings, dataset: str, batch: str, exc: Exception, rule: str = "check_failed",
                   what: str = "check") -> None:
    """A failed run is an alert: remembered locally (MLflow may be what failed) and sent via the outbox.
    Not a task: it runs when the flow is already failing, and must not fail itself."""
    from monitors.core.errors import UserError

    from monitors.core.errors import NotRecorded

    log = logging.getLogger(__name__)
    store = FailureStore(settings.state_path)
    try:
        open_since = store.since(dataset, rule) or time.time()
        severity = "warning" if isinstance(exc, UserError) and rule == "check_failed" else "critical"
        if isinstance(exc, NotRecorded):
            summary = f"the {what} of {batch} COULD NOT RECORD its results: {delivery.scrub(str(exc))}"[:700]
        else:
            summary = f"the {what} of {batch} failed: {delivery.scrub(f'{type(exc).__name__}: {exc}')[:500]}"
        note = alerting.failure_notification("firing", dataset, severity, summary, rule)
    except Exception:  # noqa: BLE001 - reporting must never hide the failure being reported
        log.exception("could not report the failed %s", what)
        return
    # remembered, so that the next successful run resolves it; a full disk must not stop the page below
    if not store.remember(dataset, rule, {**note, "since": open_since}):
        note = {**note, "summary": note["summary"] + " (this alert could not be saved locally: resolve it by "
                                                     "hand once the run succeeds again)"}
    try:
        send_notifications(settings, [note], f"failed-{int(time.time())}")
    except Exception:  # noqa: BLE001 - reporting must never hide the failure being reported
        log.exception("could not send the alert of the failed %s", what)


def clear_failure(settings: Settings, dataset: str, run_id: str, rule: str = "check_failed",
                  what: str = "check") -> list[dict]:
    """The ``resolved`` notification of an open check_failed (probe_failed) alert of the scope (and forget it).
    A file that cannot be read still means an open alert: it is resolved (as critical, the worst it can be)."""
    old = FailureStore(settings.state_path).forget(dataset, rule)
    if old is None:
        return []
    severity = old.get("severity") if old.get("severity") in ("warning", "critical") else "critical"
    return [alerting.failure_notification("resolved", dataset, severity,
                                          f"the {what} of {dataset} succeeded again (run {run_id})", rule)]


@compute_task
def advance_alerts(states: dict[str, alerting.AlertState], silences: list[alerting.Silence], suite: RuleSuite,
                   row: dict[str, float], breached: list, dataset: str, settings: Settings) -> alerting.StepResult:
    return alerting.step(states, suite.rules, row, dataset, time.time(), silences,
                         repeat_interval=settings.alerts.repeat_interval_hours * 3600,
                         breached={a.rule for a in breached})


def channel_urls(settings: Settings) -> list[str]:
    return settings.channel_urls()


def send_notifications(settings: Settings, notifications: list[dict], run_id: str) -> delivery.Outcome | None:
    """Send notifications (and whatever earlier runs left in the outbox) to every channel; None without any."""
    urls = channel_urls(settings)
    if not urls:
        return None
    return delivery.deliver(delivery.Outbox(settings.state_path / "outbox"), urls,
                            [{**n, "run_id": run_id} for n in notifications],
                            retries=settings.alerts.delivery_retries, backoff=settings.alerts.delivery_backoff_seconds,
                            timeout=settings.alerts.delivery_timeout_seconds, budget=settings.alerts.delivery_budget_seconds,
                            max_items=settings.alerts.outbox_max_items, max_age_hours=settings.alerts.outbox_max_age_hours)


#: retries happen inside, per notification, with backoff; the outbox keeps the rest
deliver_notifications = task(send_notifications, name="deliver_notifications", cache_policy=NONE)


@compute_task
def evaluate_rules(suite: RuleSuite, row: dict[str, float], dataset: str):
    return gx_rules.evaluate(suite, row, dataset)


@io_task
def artifact_location(tracker: RunStore, run_id: str, name: str) -> str:
    """Where a run's artifact is; never fails (it is asked after the run is logged, when nothing may)."""
    try:
        return tracker.artifact_location(run_id, name)
    except Exception:  # noqa: BLE001 - a store that went away now is no reason to fail a logged check
        return f"{name} in MLflow run {run_id}"


@io_task
def log_check(tracker: RunStore, req: RunRecord) -> str:
    return tracker.log_check(req)


def log_or_spool(tracker: RunStore, req: RunRecord, settings: Settings) -> tuple[str, str, str]:
    """Log the run; when MLflow cannot take it, keep it in the spool for the next run to replay.

    Returns (run id, spool folder, a note for the user); exactly one of the first two is set."""
    from monitors.core.errors import NotRecorded

    try:
        return log_check(tracker, req), "", ""
    except Exception as exc:  # noqa: BLE001 - the store went away mid-run: keep the results, replay later
        lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("(raised as a result")]
        why = delivery.scrub(lines[0] if lines else type(exc).__name__)[:200]  # SQLAlchemy's first line can be noise
        folder = settings.state_path / "spool"
        try:
            spooled = str(spool.save(folder, req))
        except OSError as err:  # a full disk: say so, loudly; the caller pages on-call (over the network)
            raise NotRecorded(f"MLflow did not take the results ({why}) and they could not be spooled in {folder}: "
                              f"{files.describe(err)}. Nothing of this check was recorded; free space there and "
                              f"check the batch again") from err
        return "", spooled, (f"MLflow could not take the results ({why}); they are "
                             f"spooled in {spooled} and the next run replays them")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "scope"


@task(cache_policy=NONE)
def publish_to_prefect(alerts: list, scope: str, run_id: str, description: str) -> None:
    """The run's alerts in the Prefect UI (a table artifact ``collapse-alerts-<scope>``) and one Prefect event
    per firing or resolved alert, ``collapse.alert.firing`` / ``collapse.alert.resolved``, for teams to hang
    automations on."""
    from prefect.artifacts import create_table_artifact
    from prefect.events import emit_event

    rows = [{"rule": a.rule, "severity": a.severity, "status": a.status,
             "value": None if a.value is None or a.value != a.value else round(a.value, 4),
             "threshold": a.threshold, "fingerprint": a.fingerprint} for a in alerts]
    create_table_artifact(rows or [{"rule": "-", "severity": "-", "status": "no alert"}],
                          key=f"collapse-alerts-{_slug(scope)}", description=description)
    for a, row in zip(alerts, rows):
        if a.status in ("firing", "resolved"):
            emit_event(event=f"collapse.alert.{a.status}",
                       resource={"prefect.resource.id": f"collapse.alert.{a.fingerprint}",
                                 "prefect.resource.name": a.rule, "collapse.dataset": scope,
                                 "collapse.severity": a.severity},
                       payload={"value": row["value"], "threshold": a.threshold, "summary": a.summary,
                                "mlflow_run_id": run_id})


@io_task
def record_delivery(tracker: RunStore, run_id: str, outcome: dict) -> None:
    tracker.record_delivery(run_id, outcome)


def after_run(result, settings: Settings, runtime: Runtime, scope: str, description: str,
              rule: str = "check_failed", what: str = "check"):
    """The tail every logged check and probe shares, outside the scope's lock: publish its alerts to Prefect
    (a copy for the Prefect UI; MLflow has them, so a failure is a note), then deliver its notifications and
    record what delivery did. Never raises: the run is logged (see :func:`deliver_and_record`)."""
    try:
        publish_to_prefect(result.alerts, scope, result.run_id, description)
    except Exception as exc:  # noqa: BLE001
        result.notes.append(f"could not publish the alerts to Prefect: {type(exc).__name__}: {str(exc)[:200]}")
    result.notifications, result.delivery = deliver_and_record(
        settings, runtime, scope, result.run_id, result.spooled, result.notifications, rule, what)
    return result


def deliver_and_record(settings: Settings, runtime: Runtime, scope: str, run_id: str, spooled: str,
                       notifications: list[dict], rule: str = "check_failed", what: str = "check"
                       ) -> tuple[list[dict], dict]:
    """After a successful run: resolve an open ``rule`` failure alert, deliver the run's notifications (and
    the outbox's), and record what delivery did with the run. Returns (all notifications, delivery).

    Never raises: the run is logged, and a failure here must not fail it (a landing zone would count its
    batch again). What could not be sent waits in the outbox for the next run; the error is returned."""
    try:
        notifications = notifications + clear_failure(settings, scope, run_id or "(spooled)", rule, what)
        outcome = deliver_notifications(settings, notifications, run_id or f"spooled-{Path(spooled).name}")
    except Exception as exc:  # noqa: BLE001 - see above: delivery's problem, not the run's
        logging.getLogger(__name__).exception("delivery after %s %s failed", what, run_id or spooled)
        return notifications, {"sent": 0, "queued": None,
                               "errors": [delivery.scrub(f"delivery failed: {type(exc).__name__}: {exc}")[:500]]}
    if outcome is not None:
        result = {"sent": outcome.sent, "queued": outcome.queued, "errors": outcome.errors}
        if run_id:
            try:
                record_delivery(tracker_for(runtime), run_id, result)
            except Exception as exc:  # noqa: BLE001 - the notifications went out; only their record is missing
                logging.getLogger(__name__).warning("could not record delivery with run %s: %s", run_id,
                                                    delivery.scrub(str(exc))[:200])
        return notifications, result
    if notifications:
        return notifications, {"sent": 0, "queued": 0, "errors": [
            f"no alert channel configured ({ALERT_URLS_ENV} or alerts.urls): logged to MLflow only"]}
    return notifications, {}
