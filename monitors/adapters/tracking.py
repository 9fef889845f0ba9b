"""MLflow adapter: every check is a run, every indicator a metric, every alert a tag and an artifact.

The tracker takes an ``MlflowClient`` (handed in by the entry point) and never reads global state, except
for model logging and loading, which MLflow only offers through its fluent API (the entry point sets the
tracking URI for the process before calling those).

Layout: experiment ``collapse-monitor/<dataset>``; runs tagged ``collapse.kind`` = ``reference`` | ``check``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlflow.entities import Metric, Param, RunTag

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from monitors.core.reference import ReferenceProfile  # imported when used: SciPy, not needed to read runs
from mlflow.exceptions import MlflowException

from monitors.core.errors import UserError, checked_reference, no_reference
from monitors.core.alerting import AlertState, Silence, states_from_json
from monitors.core.runrecord import RunRecord
from monitors.core.history import history_row
from monitors.core.schema import (
    EXPERIMENT_PREFIX,
    Artifact,
    RunKind,
    Tag,
    experiment_name,
    scope_kind,
)
from monitors.core.numbers import finite_items, json_safe

# MLflow 3's UI opens an experiment in its GenAI view (traces, an assistant) unless this tag says it is a
# classic one; the value is the UI's CUSTOM_MODEL_DEVELOPMENT kind (mlflow/server/js, 3.17).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


@dataclass(frozen=True)
class PreviousCheck:
    """The running state a check carries on from the dataset's newest finished check."""

    corpus: dict[str, float]  # corpus.* running totals
    hours_since: float | None  # since it ended (None: there is none)
    alert_states: dict[str, AlertState]  # its alerts/state.json, by fingerprint
    metrics: dict[str, float] = field(default_factory=dict)  # its indicators (trend rules compare with them)


class RunStore(Protocol):
    """The port the flows log to and read state from. :class:`MlflowTracker` is the real one;
    :class:`~monitors.adapters.memory_store.InMemoryRunStore` the fake (the contract suite holds them alike)."""

    def experiment_id(self, dataset: str, create: bool = True) -> str | None: ...
    def scopes(self) -> list[str]: ...
    def save_reference(self, ref: ReferenceProfile, source: str) -> str: ...
    def reference_run(self, dataset: str, run_id: str | None = None) -> str: ...
    def latest_reference(self, dataset: str, run_id: str | None = None) -> tuple[str, ReferenceProfile]: ...
    def previous_check(self, dataset: str) -> PreviousCheck: ...
    def previous_alert_state(self, dataset: str) -> dict[str, AlertState]: ...
    def silences(self, dataset: str) -> list[Silence]: ...
    def add_silence(self, dataset: str, silence: Silence) -> None: ...
    def log_check(self, req: RunRecord) -> str: ...
    def replay(self, req: RunRecord) -> str: ...
    def run_for_content(self, dataset: str, sha256: str) -> str | None: ...
    def artifact_location(self, run_id: str, name: str) -> str: ...
    def record_delivery(self, run_id: str, outcome: dict[str, Any]) -> None: ...
    def probe_results(self, scope: str, probe_digest: str, tag: str = Tag.PROBE_SET) -> dict[str, dict[str, Any]]: ...
    def history(self, dataset: str | None = None, last: int | None = 20, kind: str = RunKind.CHECK) -> list[dict[str, Any]]: ...
    def load_detector(self, uri: str): ...


def open_tracker(runtime) -> MlflowTracker:
    """The tracker on the runtime's MLflow store (``runtime`` from :func:`monitors.adapters.runtime.prepare`)."""
    from monitors.adapters.runtime import mlflow_client

    return MlflowTracker(mlflow_client(runtime), runtime.artifact_root)


def scopes_with_alert(store: RunStore, fingerprint: str) -> list[str]:
    """The datasets (and model scopes) whose newest run holds an alert with this fingerprint."""
    return [scope for scope in store.scopes() if fingerprint in store.previous_alert_state(scope)]


_finite = finite_items


@dataclass
class MlflowTracker:
    client: MlflowClient
    artifact_root: str | None = None

    # -- experiments and runs -------------------------------------------------------------
    def experiment_id(self, dataset: str, create: bool = True) -> str | None:
        name = experiment_name(dataset)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if EXPERIMENT_KIND[0] not in exp.tags:  # made before the kind was set; a user's own kind stays
                self.client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return exp.experiment_id
        if not create:
            return None
        location = f"{self.artifact_root}/{dataset}" if self.artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except MlflowException:  # created meanwhile by a concurrent run
            return self.client.get_experiment_by_name(name).experiment_id

    @contextmanager
    def _run(self, dataset: str, kind: str, run_name: str, tags: dict[str, str], started: float = 0.0,
             finished: float = 0.0) -> Iterator[str]:
        """The one run lifecycle: create the run, yield its id, end it FINISHED, or FAILED if the body raised
        (a failure to mark it FAILED is swallowed: the store is what failed, and the body's error is raised)."""
        run = self.client.create_run(
            self.experiment_id(dataset), run_name=run_name, start_time=int(started * 1000) if started else None,
            tags={Tag.KIND: kind, Tag.DATASET: dataset, **tags},
        )
        run_id = run.info.run_id
        try:
            yield run_id
        except BaseException:
            try:
                self.client.set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001
                pass
            raise
        self.client.set_terminated(run_id, "FINISHED", end_time=int(finished * 1000) if finished else None)

    def _newest(self, scope: str, where: str, max_results: int = 1, oldest_first: bool = False) -> list:
        """The scope's runs matching an MLflow filter ``where``, newest (or oldest) first; none without an experiment."""
        exp_id = self.experiment_id(scope, create=False)
        order = "ASC" if oldest_first else "DESC"
        return [] if exp_id is None else self.client.search_runs(
            [exp_id], filter_string=where, order_by=[f"attributes.start_time {order}"], max_results=max_results)

    def _log(self, run_id: str, metrics: dict[str, float | None], params: dict[str, Any], tags: dict[str, str], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step) for k, v in sorted(_finite(metrics).items())],
            params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
            tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())],
        )

    def _experiments(self) -> list:
        return self.client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")

    def scopes(self) -> list[str]:
        """Every dataset (and ``models/<name>`` probe scope) that has an experiment, sorted."""
        return sorted(e.name.removeprefix(EXPERIMENT_PREFIX) for e in self._experiments())

    # -- the model registry: the detector and probed models (the flows never see the client) ------------
    def register_detector(self, detector, *, scope: str, name: str, alias: str | None, data: dict[str, str],
                          artifacts: dict[str, Path] | None = None) -> str:
        from monitors.adapters import registry

        return registry.register_detector(self.client, detector, experiment_id=self.experiment_id(scope), name=name,
                                          alias=alias, data=data, **({"artifacts": artifacts} if artifacts else {}))

    def load_detector(self, uri: str):
        from monitors.adapters import registry

        return registry.load_detector(self.client, uri)

    def resolve_model(self, uri: str):
        from monitors.adapters import models

        return models.resolve(self.client, uri)

    def model_tags(self, uri: str) -> dict[str, str] | None:
        from monitors.adapters import models

        return models.tags_of(self.client, uri)

    def previous_model_version(self, name: str, version: str) -> str | None:
        from monitors.adapters import models

        return models.previous_version(self.client, name, version)

    def record_delivery(self, run_id: str, outcome: dict[str, Any]) -> None:
        """What delivery did with a run's notifications: two tags and ``alerts/delivery.json``."""
        self.client.set_tag(run_id, Tag.DELIVERY_SENT, str(outcome["sent"]))
        self.client.set_tag(run_id, Tag.DELIVERY_QUEUED, str(outcome["queued"]))
        self.client.log_dict(run_id, outcome, Artifact.DELIVERY)

    # -- references -----------------------------------------------------------------------
    def save_reference(self, ref: ReferenceProfile, source: str) -> str:
        with self._run(ref.dataset, RunKind.REFERENCE, f"reference {ref.dataset}", {Tag.SOURCE: source}) as run_id:
            self._log(
                run_id,
                {f"baseline.{k}": v for k, v in ref.baseline.items()},
                {"documents": ref.documents, "tokens": ref.tokens, "tail_types": len(ref.tail),
                 "cutoff": ref.cutoff.isoformat(), **{f"indicators.{k}": v for k, v in ref.settings.model_dump().items()}},
                {Tag.NOTE: f"Human reference for {ref.dataset}: {ref.documents} documents from {source}"},
            )
            self.client.log_text(run_id, ref.to_json(), Artifact.REFERENCE_PROFILE)
            self._log_bytes(run_id, Artifact.REFERENCE_ARRAYS, ref.arrays_npz())
        return run_id

    def reference_run(self, dataset: str, run_id: str | None = None) -> str:
        """The run id of the dataset's newest finished reference, or ``run_id`` once checked to be a reference.

        Cheap (no download): the CLI calls it to fail fast before Prefect starts, then pins the result.
        """
        if run_id is not None:
            try:
                found, kind = True, self.client.get_run(run_id).data.tags.get(Tag.KIND)
            except MlflowException:
                found, kind = False, None
            return checked_reference(run_id, found, kind)
        runs = self._newest(dataset, f"tags.`{Tag.KIND}` = '{RunKind.REFERENCE}' and attributes.status = 'FINISHED'")
        if not runs:
            raise no_reference(dataset)
        return runs[0].info.run_id

    def latest_reference(self, dataset: str, run_id: str | None = None) -> tuple[str, ReferenceProfile]:
        """The dataset's newest finished reference, or the one named by ``run_id``, with its profile."""
        run_id = self.reference_run(dataset, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, "reference", tmp)
                text = (Path(local) / Path(Artifact.REFERENCE_PROFILE).name).read_text(encoding="utf-8")
                arrays = Path(local) / Path(Artifact.REFERENCE_ARRAYS).name
                npz = arrays.read_bytes() if arrays.is_file() else None
            except (MlflowException, OSError) as exc:
                raise UserError(f"reference run {run_id} of dataset {dataset!r} has no readable {Artifact.REFERENCE_PROFILE}: {exc}") from None
            from monitors.core.reference import ReferenceProfile

            return run_id, ReferenceProfile.from_json(text, npz)

    def _log_bytes(self, run_id: str, name: str, data: bytes) -> None:
        self._log_file(run_id, name, lambda path: path.write_bytes(data))

    def _log_file(self, run_id: str, name: str, write) -> None:
        """Log an artifact called ``name`` (a path inside the run) whose content ``write(path)`` produces."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            write(path)
            folder = str(Path(name).parent)
            self.client.log_artifact(run_id, str(path), None if folder == "." else folder)

    # -- checks ---------------------------------------------------------------------------
    def next_sequence(self, dataset: str, kind: str = RunKind.CHECK) -> int:
        """The next run's sequence number among the runs of its kind in its dataset (or model) experiment."""
        runs = self._newest(dataset, f"tags.`{Tag.KIND}` = '{kind}'")
        return int(runs[0].data.tags.get(Tag.SEQUENCE, "-1")) + 1 if runs else 0

    def _newest_finished_check(self, dataset: str):
        """The newest finished run that carries alert state: a check, or for a model scope a probe."""
        runs = self._newest(dataset, f"tags.`{Tag.KIND}` = '{scope_kind(dataset)}' and attributes.status = 'FINISHED'")
        return runs[0] if runs else None

    def previous_check(self, dataset: str) -> PreviousCheck:
        """What a check (or probe) continues from: the scope's newest finished run (one query, one download)."""
        run = self._newest_finished_check(dataset)
        if run is None:
            return PreviousCheck({}, None, {})
        corpus = {k: v for k, v in run.data.metrics.items() if k.startswith("corpus.")}
        hours = max(0.0, (time.time() * 1000 - run.info.end_time) / 3.6e6) if run.info.end_time else None
        return PreviousCheck(corpus, hours, states_from_json(self._alert_state(run.info.run_id)), dict(run.data.metrics))

    def previous_alert_state(self, dataset: str) -> dict[str, AlertState]:
        """The alert state record (``alerts/state.json``) of the dataset's newest finished check."""
        run = self._newest_finished_check(dataset)
        return {} if run is None else states_from_json(self._alert_state(run.info.run_id))

    def _alert_state(self, run_id: str) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, Artifact.ALERT_STATE, tmp)
            except (MlflowException, OSError):
                return []  # a check from before alert state existed
            return json.loads(Path(path).read_text(encoding="utf-8"))

    def silences(self, dataset: str) -> list[Silence]:
        """Silences of the dataset's alerts: experiment tags ``collapse.silence.<fingerprint>``."""
        exp_id = self.experiment_id(dataset, create=False)
        if exp_id is None:
            return []
        tags = self.client.get_experiment(exp_id).tags
        return [Silence(**json.loads(v)) for k, v in sorted(tags.items()) if k.startswith(Tag.SILENCE)]

    def add_silence(self, dataset: str, silence: Silence) -> None:
        self.client.set_experiment_tag(self.experiment_id(dataset), Tag.SILENCE + silence.fingerprint,
                                       json.dumps(asdict(silence)))

    def log_check(self, req: RunRecord) -> str:
        """One finished run holding a whole check; its step is the run's sequence number in the dataset.

        The run spans the check (``req.started`` to ``req.finished``, or to now), not the logging of it.
        JSON artifacts are written with nan as null; a ``summary.json`` dict gets the new run's id.
        """
        step = self.next_sequence(req.dataset, req.kind)
        with self._run(req.dataset, req.kind, req.run_name or f"check {req.dataset} {req.batch_name}",
                       {Tag.BATCH: req.batch_name, Tag.SPOOL_ID: req.spool_id}, req.started, req.finished) as run_id:
            self._log(run_id, req.metrics, req.params, {**req.tags, Tag.NOTE: req.description,
                                                        Tag.SEQUENCE: str(step)}, step)
            for name, content in req.artifacts.items():
                if isinstance(content, Path):  # large: copied as a file, never read into memory
                    self._log_file(run_id, name, lambda path, src=content: shutil.copyfile(src, path))
                elif isinstance(content, bytes):
                    self._log_bytes(run_id, name, content)
                elif isinstance(content, str):
                    self.client.log_text(run_id, content, name)
                else:
                    if name == Artifact.SUMMARY and isinstance(content, dict):
                        content = {**content, "run_id": run_id}
                    self.client.log_text(run_id, to_json_text(content), name)
        return run_id

    def replay(self, req: RunRecord) -> str:
        """Log a spooled check unless a finished run with its spool id exists; a half-logged one is replaced."""
        exp_id = self.experiment_id(req.dataset, create=False)
        if exp_id is not None:
            for run in self.client.search_runs([exp_id], filter_string=f"tags.`{Tag.SPOOL_ID}` = '{req.spool_id}'"):
                if run.info.status == "FINISHED":
                    return run.info.run_id
                self.client.delete_run(run.info.run_id)
        return self.log_check(req)

    def log_report(self, dataset: str, folder: Path, description: str) -> str:
        """A finished ``report`` run in the dataset's experiment holding the report folder as ``report/``."""
        with self._run(dataset, RunKind.REPORT, f"report {dataset}", {Tag.NOTE: description}) as run_id:
            self.client.log_artifacts(run_id, str(folder), Artifact.REPORT)
        return run_id

    def delete_drift_reports(self, dataset: str, before_ms: int, dry_run: bool = False) -> list[dict[str, Any]]:
        """Delete the ``drift/`` artifacts (Evidently's report) of the dataset's checks that started before
        ``before_ms``; the runs, their metrics and other artifacts stay, tagged with when it was deleted."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        runs = self._newest(dataset, f"tags.`{Tag.KIND}` = '{RunKind.CHECK}' and attributes.start_time < {int(before_ms)}",
                            max_results=50000, oldest_first=True)
        deleted = []
        for run in runs:
            if Tag.DRIFT_REPORT_DELETED in run.data.tags:
                continue
            files = self.client.list_artifacts(run.info.run_id, Artifact.DRIFT)
            if not files:
                continue
            size = sum(f.file_size or 0 for f in files)
            if not dry_run:
                get_artifact_repository(run.info.artifact_uri).delete_artifacts(Artifact.DRIFT)
                self.client.set_tag(run.info.run_id, Tag.DRIFT_REPORT_DELETED, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            deleted.append({"dataset": dataset, "run_id": run.info.run_id, "batch": run.data.tags.get(Tag.BATCH, ""),
                            "started": run.info.start_time, "bytes": size})
        return deleted

    def artifact_location(self, run_id: str, name: str) -> str:
        """Where a run's artifact is: a local path for a local artifact store, else its URI."""
        from urllib.parse import unquote, urlparse

        uri = f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{name}"
        return unquote(urlparse(uri).path) if uri.startswith("file:") else uri

    def run_for_content(self, dataset: str, sha256: str) -> str | None:
        """The finished check that counted a landing file with this content, if one did."""
        runs = self._newest(dataset, f"tags.`{Tag.CONTENT}` = '{sha256}' and attributes.status = 'FINISHED'")
        return runs[0].info.run_id if runs else None

    def probe_results(self, scope: str, probe_digest: str, tag: str = Tag.PROBE_SET) -> dict[str, dict[str, Any]]:
        """Per model version, its newest finished result on this probe set (``probe`` or ``probe-baseline``
        run): ``{version: {"run_id", "metrics"}}`` with the raw ``probe.*`` and ``memorization.*`` metrics (no
        deltas). ``tag``: the tag holding the digest (``Tag.MEMORIZATION_SET`` for the memorization probe)."""
        runs = self._newest(scope, f"tags.`{tag}` = '{probe_digest}' and attributes.status = 'FINISHED'",
                            max_results=5000)
        return probe_results_of((r.info.run_id, r.data.tags, r.data.metrics) for r in runs)

    def history(self, dataset: str | None = None, last: int | None = 20, kind: str = RunKind.CHECK) -> list[dict[str, Any]]:
        """Runs of a kind (checks by default), newest first, as flat rows: run id, dataset, batch, time,
        sequence, metrics, every alert tag's state, the firing alerts, the maximum severity, the description."""
        if dataset is not None:
            exp_ids = [e for e in [self.experiment_id(dataset, create=False)] if e]
        else:
            exp_ids = [e.experiment_id for e in self._experiments()]
        if not exp_ids:
            return []
        runs = self.client.search_runs(
            exp_ids, filter_string=f"tags.`{Tag.KIND}` = '{kind}'", order_by=["attributes.start_time DESC"],
            max_results=last or 50_000)
        return [history_row(r.info.run_id, r.info.experiment_id, r.info.start_time, r.info.status, r.data.metrics,
                            r.data.tags) for r in runs]


def probe_results_of(runs: Iterable[tuple[str, dict[str, str], dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """From (run id, tags, metrics) of finished runs on one probe set, newest first: per model version its newest
    ``probe`` or ``probe-baseline`` result, ``{version: {"run_id", "metrics"}}``, raw ``probe.*`` and
    ``memorization.*`` metrics only."""
    out: dict[str, dict[str, Any]] = {}
    for run_id, tags, metrics in runs:
        version = tags.get(Tag.MODEL_VERSION)
        if version and version not in out and tags.get(Tag.KIND) in (RunKind.PROBE, RunKind.PROBE_BASELINE):
            out[version] = {"run_id": run_id, "metrics": {
                k: v for k, v in metrics.items()
                if k.startswith(("probe.", "memorization.")) and ".delta_" not in k and ".drop_" not in k}}
    return out


def to_json_text(data: Any) -> str:
    """JSON with nan/inf as null (MLflow and strict JSON readers reject NaN), and ``<``, ``>``, ``&`` written as
    ``\\u003c``... escapes: the same JSON to a reader, and inert if a viewer embeds it in HTML (artifacts hold
    text from training records and probe sets, which may hold markup)."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
