"""MLflow adapter: every check is a run, every indicator a metric, every alert a tag and an artifact.

The tracker takes an ``MlflowClient`` (handed in by the entry point) and never reads global state, except
for model logging and loading, which MLflow only offers through its fluent API (the entry point sets the
tracking URI for the process before calling those).

Layout: experiment ``collapse-monitor/<dataset>``; runs tagged ``collapse.kind`` = ``reference`` | ``check``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from monitors.core.errors import ReferenceNotFound, UserError
from monitors.core.reference import ReferenceProfile
from monitors.adapters.spool import SPOOL_TAG, LogRequest

EXPERIMENT_PREFIX = "collapse-monitor/"
REFERENCE_ARTIFACT = "reference/profile.json"
REFERENCE_ARRAYS = "reference/embedding.npz"
KIND = "collapse.kind"
ALERT_STATE = "alerts/state.json"
SILENCE_TAG = "collapse.silence."
CONTENT_TAG = "collapse.content_sha256"
RECHECK_TAG = "collapse.recheck_of"  # a re-check of content that run counted: not counted again
DRIFT_ARTIFACTS = "drift"  # Evidently's report of a check; `collapse-monitor gc` deletes old ones
DRIFT_DELETED_TAG = "collapse.drift_report_deleted"
# MLflow 3's UI opens an experiment in its GenAI view (traces, an assistant) unless this tag says it is a
# classic one; the value is the UI's CUSTOM_MODEL_DEVELOPMENT kind (mlflow/server/js, 3.17).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


@dataclass(frozen=True)
class PreviousCheck:
    """The running state a check carries on from the dataset's newest finished check."""

    corpus: dict[str, float]  # corpus.* running totals
    hours_since: float | None  # since it ended (None: there is none)
    alert_states: list[dict[str, Any]]  # its alerts/state.json


def experiment_name(dataset: str) -> str:
    """``collapse-monitor/<dataset>``; a model's probes live in scope ``models/<name>`` (a dataset name never
    holds a '/', so the two cannot clash)."""
    return EXPERIMENT_PREFIX + dataset


MODEL_SCOPE = "models/"


def model_scope(name: str) -> str:
    return MODEL_SCOPE + name


def scope_kind(scope: str) -> str:
    """The kind of run that carries a scope's alert state: ``probe`` for a model, ``check`` for a dataset."""
    return "probe" if scope.startswith(MODEL_SCOPE) else "check"


def _finite(metrics: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


@dataclass
class MlflowTracker:
    client: Any  # mlflow.MlflowClient
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

    def _start(self, dataset: str, kind: str, run_name: str, tags: dict[str, str], started: float = 0.0) -> str:
        run = self.client.create_run(
            self.experiment_id(dataset), run_name=run_name, start_time=int(started * 1000) if started else None,
            tags={KIND: kind, "collapse.dataset": dataset, **tags},
        )
        return run.info.run_id

    def _log(self, run_id: str, metrics: dict[str, float | None], params: dict[str, Any], tags: dict[str, str], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step) for k, v in sorted(_finite(metrics).items())],
            params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
            tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())],
        )

    # -- references -----------------------------------------------------------------------
    def save_reference(self, ref: ReferenceProfile, source: str) -> str:
        run_id = self._start(ref.dataset, "reference", f"reference {ref.dataset}", {"collapse.source": source})
        try:
            self._log(
                run_id,
                {f"baseline.{k}": v for k, v in ref.baseline.items()},
                {"documents": ref.documents, "tokens": ref.tokens, "tail_types": len(ref.tail),
                 "cutoff": ref.cutoff.isoformat(), **{f"indicators.{k}": v for k, v in ref.settings.model_dump().items()}},
                {"mlflow.note.content": f"Human reference for {ref.dataset}: {ref.documents} documents from {source}"},
            )
            self.client.log_text(run_id, ref.to_json(), REFERENCE_ARTIFACT)
            self._log_bytes(run_id, REFERENCE_ARRAYS, ref.arrays_npz())
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def reference_run(self, dataset: str, run_id: str | None = None) -> str:
        """The run id of the dataset's newest finished reference, or ``run_id`` once checked to be a reference.

        Cheap (no download): the CLI calls it to fail fast before Prefect starts, then pins the result.
        """
        if run_id is not None:
            try:
                kind = self.client.get_run(run_id).data.tags.get(KIND)
            except MlflowException:
                raise UserError(f"--reference {run_id}: no such MLflow run") from None
            if kind != "reference":
                raise UserError(f"--reference {run_id}: that run is a {kind or 'non-collapse-monitor'} run, not a reference")
            return run_id
        exp_id = self.experiment_id(dataset, create=False)
        runs = [] if exp_id is None else self.client.search_runs(
            [exp_id], filter_string=f"tags.`{KIND}` = 'reference' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if not runs:
            raise ReferenceNotFound(
                f"dataset {dataset!r} has no reference yet: build one from trusted human text with "
                f"`collapse-monitor reference build --input PATH --dataset {dataset}`"
            )
        return runs[0].info.run_id

    def latest_reference(self, dataset: str, run_id: str | None = None) -> tuple[str, ReferenceProfile]:
        """The dataset's newest finished reference, or the one named by ``run_id``, with its profile."""
        run_id = self.reference_run(dataset, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, "reference", tmp)
                text = (Path(local) / Path(REFERENCE_ARTIFACT).name).read_text(encoding="utf-8")
                arrays = Path(local) / Path(REFERENCE_ARRAYS).name
                npz = arrays.read_bytes() if arrays.is_file() else None
            except (MlflowException, OSError) as exc:
                raise UserError(f"reference run {run_id} of dataset {dataset!r} has no readable {REFERENCE_ARTIFACT}: {exc}") from None
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
    def next_sequence(self, dataset: str, kind: str = "check") -> int:
        """The next run's sequence number among the runs of its kind in its dataset (or model) experiment."""
        exp_id = self.experiment_id(dataset, create=False)
        runs = [] if exp_id is None else self.client.search_runs(
            [exp_id], filter_string=f"tags.`{KIND}` = '{kind}'", order_by=["attributes.start_time DESC"], max_results=1)
        return int(runs[0].data.tags.get("collapse.sequence", "-1")) + 1 if runs else 0

    def _newest_finished_check(self, dataset: str):
        """The newest finished run that carries alert state: a check, or for a model scope a probe."""
        exp_id = self.experiment_id(dataset, create=False)
        runs = [] if exp_id is None else self.client.search_runs(
            [exp_id], filter_string=f"tags.`{KIND}` = '{scope_kind(dataset)}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def previous_check(self, dataset: str) -> PreviousCheck:
        """What a check (or probe) continues from: the scope's newest finished run (one query, one download)."""
        run = self._newest_finished_check(dataset)
        if run is None:
            return PreviousCheck({}, None, [])
        corpus = {k: v for k, v in run.data.metrics.items() if k.startswith("corpus.")}
        hours = max(0.0, (time.time() * 1000 - run.info.end_time) / 3.6e6) if run.info.end_time else None
        return PreviousCheck(corpus, hours, self._alert_state(run.info.run_id))

    def previous_alert_state(self, dataset: str) -> list[dict[str, Any]]:
        """The alert state record (``alerts/state.json``) of the dataset's newest finished check."""
        run = self._newest_finished_check(dataset)
        return [] if run is None else self._alert_state(run.info.run_id)

    def _alert_state(self, run_id: str) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, ALERT_STATE, tmp)
            except (MlflowException, OSError):
                return []  # a check from before alert state existed
            return json.loads(Path(path).read_text(encoding="utf-8"))

    def silences(self, dataset: str) -> list[dict[str, Any]]:
        """Silences of the dataset's alerts: experiment tags ``collapse.silence.<fingerprint>``."""
        exp_id = self.experiment_id(dataset, create=False)
        if exp_id is None:
            return []
        tags = self.client.get_experiment(exp_id).tags
        return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(SILENCE_TAG)]

    def add_silence(self, dataset: str, silence: dict[str, Any]) -> None:
        self.client.set_experiment_tag(self.experiment_id(dataset), SILENCE_TAG + silence["fingerprint"],
                                       json.dumps(silence))

    def log_check(self, req: LogRequest) -> str:
        """One finished run holding a whole check; its step is the run's sequence number in the dataset.

        The run spans the check (``req.started`` to ``req.finished``, or to now), not the logging of it.
        JSON artifacts are written with nan as null; a ``summary.json`` dict gets the new run's id.
        """
        step = self.next_sequence(req.dataset, req.kind)
        run_id = self._start(req.dataset, req.kind, req.run_name or f"check {req.dataset} {req.batch_name}",
                             {"collapse.batch": req.batch_name, SPOOL_TAG: req.spool_id}, req.started)
        try:
            self._log(run_id, req.metrics, req.params, {**req.tags, "mlflow.note.content": req.description,
                                                        "collapse.sequence": str(step)}, step)
            for name, content in req.artifacts.items():
                if isinstance(content, Path):  # large: copied as a file, never read into memory
                    self._log_file(run_id, name, lambda path, src=content: shutil.copyfile(src, path))
                elif isinstance(content, bytes):
                    self._log_bytes(run_id, name, content)
                elif isinstance(content, str):
                    self.client.log_text(run_id, content, name)
                else:
                    if name == "summary.json" and isinstance(content, dict):
                        content = {**content, "run_id": run_id}
                    self.client.log_text(run_id, to_json_text(content), name)
        except Exception:
            try:
                self.client.set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001 - the store is what failed; a replay replaces this run
                pass
            raise
        self.client.set_terminated(run_id, "FINISHED", end_time=int(req.finished * 1000) if req.finished else None)
        return run_id

    def replay(self, req: LogRequest) -> str:
        """Log a spooled check unless a finished run with its spool id exists; a half-logged one is replaced."""
        exp_id = self.experiment_id(req.dataset, create=False)
        if exp_id is not None:
            for run in self.client.search_runs([exp_id], filter_string=f"tags.`{SPOOL_TAG}` = '{req.spool_id}'"):
                if run.info.status == "FINISHED":
                    return run.info.run_id
                self.client.delete_run(run.info.run_id)
        return self.log_check(req)

    def log_report(self, dataset: str, folder: Path, description: str) -> str:
        """A finished ``report`` run in the dataset's experiment holding the report folder as ``report/``."""
        run_id = self._start(dataset, "report", f"report {dataset}", {"mlflow.note.content": description})
        try:
            self.client.log_artifacts(run_id, str(folder), "report")
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def delete_drift_reports(self, dataset: str, before_ms: int, dry_run: bool = False) -> list[dict[str, Any]]:
        """Delete the ``drift/`` artifacts (Evidently's report) of the dataset's checks that started before
        ``before_ms``; the runs, their metrics and other artifacts stay, tagged with when it was deleted."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        exp_id = self.experiment_id(dataset, create=False)
        if exp_id is None:
            return []
        runs = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{KIND}` = 'check' and attributes.start_time < {int(before_ms)}",
            order_by=["attributes.start_time ASC"], max_results=50000)
        deleted = []
        for run in runs:
            if DRIFT_DELETED_TAG in run.data.tags:
                continue
            files = self.client.list_artifacts(run.info.run_id, DRIFT_ARTIFACTS)
            if not files:
                continue
            size = sum(f.file_size or 0 for f in files)
            if not dry_run:
                get_artifact_repository(run.info.artifact_uri).delete_artifacts(DRIFT_ARTIFACTS)
                self.client.set_tag(run.info.run_id, DRIFT_DELETED_TAG, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            deleted.append({"dataset": dataset, "run_id": run.info.run_id, "batch": run.data.tags.get("collapse.batch", ""),
                            "started": run.info.start_time, "bytes": size})
        return deleted

    def artifact_location(self, run_id: str, name: str) -> str:
        """Where a run's artifact is: a local path for a local artifact store, else its URI."""
        from urllib.parse import unquote, urlparse

        uri = f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{name}"
        return unquote(urlparse(uri).path) if uri.startswith("file:") else uri

    def run_for_content(self, dataset: str, sha256: str) -> str | None:
        """The finished check that counted a landing file with this content, if one did."""
        exp_id = self.experiment_id(dataset, create=False)
        runs = [] if exp_id is None else self.client.search_runs(
            [exp_id], filter_string=f"tags.`{CONTENT_TAG}` = '{sha256}' and attributes.status = 'FINISHED'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def probe_results(self, scope: str, probe_digest: str) -> dict[str, dict[str, Any]]:
        """Per model version, its newest finished result on this probe set (``probe`` or ``probe-baseline``
        run): ``{version: {"run_id", "metrics"}}`` with the raw ``probe.*`` metrics (no deltas)."""
        exp_id = self.experiment_id(scope, create=False)
        if exp_id is None:
            return {}
        runs = self.client.search_runs(
            [exp_id], filter_string=f"tags.`collapse.probe_set` = '{probe_digest}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=5000)
        out: dict[str, dict[str, Any]] = {}
        for r in runs:
            version = r.data.tags.get("collapse.model_version")
            if version and version not in out and r.data.tags.get(KIND) in ("probe", "probe-baseline"):
                out[version] = {"run_id": r.info.run_id, "metrics": {
                    k: v for k, v in r.data.metrics.items()
                    if k.startswith("probe.") and ".delta_" not in k and ".drop_" not in k}}
        return out

    def history(self, dataset: str | None = None, last: int | None = 20, kind: str = "check") -> list[dict[str, Any]]:
        """Runs of a kind (checks by default), newest first, as flat rows: run id, dataset, batch, time,
        sequence, metrics, every alert tag's state, the firing alerts, the maximum severity, the description."""
        if dataset is not None:
            exp_ids = [e for e in [self.experiment_id(dataset, create=False)] if e]
        else:
            exps = self.client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")
            exp_ids = [e.experiment_id for e in exps]
        if not exp_ids:
            return []
        runs = self.client.search_runs(
            exp_ids, filter_string=f"tags.`{KIND}` = '{kind}'", order_by=["attributes.start_time DESC"],
            max_results=last or 50_000)
        rows = []
        for r in runs:
            tags = r.data.tags
            states = {k.removeprefix("collapse.alert."): v for k, v in tags.items()
                      if k.startswith("collapse.alert.") and not k.startswith("collapse.alerts.")}
            rows.append({
                "run_id": r.info.run_id,
                "experiment_id": r.info.experiment_id,
                "dataset": tags.get("collapse.dataset"),
                "batch": tags.get("collapse.batch"),
                "sequence": int(tags.get("collapse.sequence", "-1")),
                "started": r.info.start_time,
                "status": r.info.status,
                "metrics": dict(r.data.metrics),
                "alert_states": states,
                "alerts": sorted(k for k, v in states.items() if v == "firing"),
                "max_severity": tags.get("collapse.alerts.max_severity", "none"),
                "description": tags.get("mlflow.note.content", ""),
                "tags": {k: v for k, v in tags.items() if k.startswith("collapse.") and "." not in k[len("collapse."):]},
            })
        return rows


def to_json_text(data: Any) -> str:
    """JSON with nan/inf as null (MLflow and strict JSON readers reject NaN)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(data), indent=2, sort_keys=True, default=str)
