"""Reading a batch: where its shards run (worker processes here, or a Dask cluster), the quarantine file, the
content hash that keys it, the temporary workspace of a check."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from monitors.adapters import ingest, ledger, lifeline, sources
from monitors.config import Settings
from monitors.core.profile import BatchProfile


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


def read_options(settings: Settings, quarantine_dir: Path, sample_size: int | None = None,
                 whole_quarantine: bool = False) -> ingest.ReadOptions:
    """How shards are read; ``whole_quarantine`` (the filter): every quarantined record kept whole."""
    opts = ingest.ReadOptions(settings.columns, settings.ingest, sample_size or settings.indicators.sample_size,
                              settings.contamination_cutoff, str(quarantine_dir))
    if whole_quarantine:
        import dataclasses

        opts = dataclasses.replace(opts, shown_bytes=settings.ingest.max_line_bytes, keep_every_entry=True)
    return opts


#: Below this many input bytes, worker processes cost more than they save.
PARALLEL_MIN_BYTES = 16 << 20


@contextmanager
def shard_mapper(settings: Settings, batch: sources.Batch) -> Iterator:
    """The ``map`` to run shard jobs with: a pool of worker processes when the batch is large enough, else the
    builtin ``map`` (in this process)."""
    workers = _workers(settings, batch.spec)
    if workers > 1 and batch.total_bytes >= PARALLEL_MIN_BYTES:
        # spawn: forking a process that runs Prefect's threads and event loop is not safe. The workers die with
        # this process (kill -9 included), so a worker blocked writing its result to a dead parent does not linger.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=lifeline.die_with_parent, initargs=(os.getpid(),)) as pool:
            yield pool.map
    else:
        yield map


@task(cache_policy=NONE)  # a bad file is not fixed by retrying
def profile_batch(spec: str | sources.Batch, settings: Settings, quarantine_dir: Path, sample_size: int | None = None,
                  whole_quarantine: bool = False) -> tuple[BatchProfile, list[sources.Shard]]:
    """Read and profile every shard of the batch, in worker processes when it is large enough."""
    opts = read_options(settings, quarantine_dir, sample_size, whole_quarantine)
    batch = sources.Batch.resolve(spec)
    with shard_mapper(settings, batch) as mapper:
        return ingest.profile_input(batch, opts, mapper=mapper, shard_bytes=settings.ingest.shard_mb << 20)


@task(name="profile_shard", cache_policy=NONE)
def profile_shard(job, shard: sources.Shard) -> BatchProfile:
    return job(shard)


def profile_batch_on_runner(spec: str | sources.Batch, settings: Settings, quarantine_dir: Path) -> tuple[BatchProfile, list[sources.Shard]]:
    """Every shard as its own Prefect task on the flow's task runner (a Dask cluster), merged here in order.

    Not a task itself: tasks are submitted from the flow. The quarantine folder must be reachable from the
    workers (the same machine, or a shared file system)."""
    opts = read_options(settings, quarantine_dir)

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


def batch_sha256(spec: str | sources.Batch) -> str:
    """A batch's content hash: its file's SHA-256 (what the landing zone's ledger keys on), or for several
    files the SHA-256 of their sorted SHA-256s. The same bytes under another name are the same batch."""

    hashes = sorted(ledger.file_sha256(url, sources.open_binary)[0] for url in sources.Batch.resolve(spec).files)
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(hashes).encode()).hexdigest()
