"""Read-only answers from MLflow's own SQLite tracking store, without importing MLflow.

The read-only commands (``history``, ``alerts list``) and the fail-fast reference lookup of ``check`` ask a
few questions of the store: which datasets exist, a dataset's newest reference, its runs newest first, the
alert state of its newest finished check, its silences. Importing MLflow and opening its store cost about 2 s of
a 3 s ``history`` (issue 20, item 6); these queries cost milliseconds. :class:`SqliteRunReader` answers them
with SQL on the tables MLflow's ``search_runs`` reads (``experiments``, ``runs``, ``tags``,
``latest_metrics``, ``experiment_tags``), in the same order and with the same filters (active runs; runs
newest first by start time, then by run id), and returns what :class:`~monitors.adapters.tracking.MlflowTracker`
returns: tests/unit/test_mlflow_sqlite.py holds the two alike on one store.

It is used only when it can be exact (:func:`open_reader`): a local ``sqlite:///`` store whose schema is the
one the pinned MLflow writes (:data:`SCHEMA`, its Alembic revision, which a unit test checks against the
installed MLflow), without MLflow's workspaces, and artifacts on the local disk. Anything else (a tracking
server, another schema, an artifact in object storage) gets ``None`` or, for one artifact, the real tracker.
Nothing here writes: the database is opened read-only.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from monitors.core.alerting import AlertState, Silence, states_from_json
from monitors.core.errors import checked_reference, no_reference
from monitors.core.history import history_row
from monitors.core.schema import EXPERIMENT_PREFIX, Artifact, RunKind, Tag, scope_kind

#: Alembic revision of the tracking schema MLflow 3.17 creates (``alembic_version``); another revision means
#: another MLflow wrote the store, and MLflow itself answers.
SCHEMA = "dc11669786a5"


def database_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` tracking URI (MLflow's form: three slashes, then the path)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _workspaces_on() -> bool:
    return (os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() in ("1", "true", "yes")
            or bool(os.environ.get("MLFLOW_WORKSPACE")))


def open_reader(uri: str, fallback: Callable[[], Any]) -> SqliteRunReader | None:
    """A reader on the store at ``uri``, or None when it cannot answer exactly as MLflow would (not a local
    SQLite file, no such file yet, another schema revision, workspaces on, the file unreadable).
    ``fallback()`` makes the real tracker, for an artifact that is not on the local disk."""
    path = database_path(uri)
    if path is None or _workspaces_on() or not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            con.close()
            return None
    except sqlite3.Error:
        return None
    if row is None or row[0] != SCHEMA:
        con.close()
        return None
    return SqliteRunReader(con, fallback)


class SqliteRunReader:
    """The read-only part of the run store (see the module docstring), on an open read-only connection."""

    def __init__(self, con: sqlite3.Connection, fallback: Callable[[], Any]) -> None:
        self._con = con
        self._fallback = fallback
        self._tracker = None

    def close(self) -> None:
        self._con.close()

    # -- experiments ----------------------------------------------------------------------------
    def experiment_id(self, dataset: str, create: bool = False) -> str | None:
        if create:
            raise ValueError("the SQLite reader is read-only")
        # MLflow's get_experiment_by_name finds deleted experiments too (ViewType.ALL)
        row = self._con.execute("SELECT experiment_id FROM experiments WHERE name = ?",
                                (EXPERIMENT_PREFIX + dataset,)).fetchone()
        return None if row is None else str(row[0])

    def _experiments(self) -> list[tuple[str, str]]:
        """(id, name) of the active collapse-monitor experiments (MLflow's search_experiments: ACTIVE_ONLY)."""
        rows = self._con.execute("SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")
        return [(str(i), n) for i, n in rows if n.startswith(EXPERIMENT_PREFIX)]

    def scopes(self) -> list[str]:
        return sorted(n.removeprefix(EXPERIMENT_PREFIX) for _, n in self._experiments())

    # -- runs ---------------------------------------------------------------------------------------
    def _runs(self, exp_ids: list[str], tags: dict[str, str], finished: bool = False,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Active runs of the experiments whose tags equal ``tags``, as MLflow's search_runs orders them:
        start time descending (unset last), then run id."""
        if not exp_ids:
            return []
        sql = [f"SELECT r.run_uuid, r.experiment_id, r.start_time, r.end_time, r.status, r.artifact_uri FROM runs r "
               f"WHERE r.experiment_id IN ({','.join('?' * len(exp_ids))}) AND r.lifecycle_stage = 'active'"]
        args: list[Any] = [int(e) for e in exp_ids]
        for key, value in tags.items():
            sql.append("AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)")
            args += [key, value]
        if finished:
            sql.append("AND r.status = 'FINISHED'")
        sql.append("ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid")
        if limit:
            sql.append("LIMIT ?")
            args.append(int(limit))
        return [{"run_id": r[0], "experiment_id": str(r[1]), "start_time": r[2], "end_time": r[3], "status": r[4],
                 "artifact_uri": r[5]} for r in self._con.execute(" ".join(sql), args)]

    def _with_data(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each run with its tags and latest metrics (MLflow's ``run.data``)."""
        by_id = {r["run_id"]: {**r, "tags": {}, "metrics": {}} for r in runs}
        ids = list(by_id)
        for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            part = ids[i:i + 500]
            marks = ",".join("?" * len(part))
            for run_id, key, value in self._con.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", part):
                by_id[run_id]["tags"][key] = value
            for run_id, key, value, is_nan in self._con.execute(
                    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", part):
                by_id[run_id]["metrics"][key] = math.nan if is_nan else value
        return [by_id[r["run_id"]] for r in runs]

    def reference_run(self, dataset: str, run_id: str | None = None) -> str:
        """As :meth:`MlflowTracker.reference_run`."""
        if run_id is not None:
            found = self._con.execute("SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,)).fetchone() is not None
            kind = self._con.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?",
                                     (run_id, Tag.KIND)).fetchone()
            return checked_reference(run_id, found, kind[0] if kind else None)
        exp = self.experiment_id(dataset)
        runs = self._runs([exp] if exp else [], {Tag.KIND: RunKind.REFERENCE}, finished=True, limit=1)
        if not runs:
            raise no_reference(dataset)
        return runs[0]["run_id"]

    def history(self, dataset: str | None = None, last: int | None = 20, kind: str = RunKind.CHECK) -> list[dict[str, Any]]:
        """As :meth:`MlflowTracker.history`."""
        if dataset is not None:
            exp_ids = [e for e in [self.experiment_id(dataset)] if e]
        else:
            exp_ids = [i for i, _ in self._experiments()]
        runs = self._with_data(self._runs(exp_ids, {Tag.KIND: kind}, limit=last or 50_000))
        return [history_row(r["run_id"], r["experiment_id"], r["start_time"], r["status"], r["metrics"], r["tags"])
                for r in runs]

    def previous_alert_state(self, dataset: str) -> dict[str, AlertState]:
        """As :meth:`MlflowTracker.previous_alert_state`: ``alerts/state.json`` of the newest finished check."""
        exp = self.experiment_id(dataset)
        runs = self._runs([exp] if exp else [], {Tag.KIND: scope_kind(dataset)}, finished=True, limit=1)
        if not runs:
            return {}
        return states_from_json(self._alert_state(runs[0]))

    def _alert_state(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        local = _local_path(run["artifact_uri"])
        if local is None:  # object storage, a proxied server: MLflow's own artifact client
            if self._tracker is None:
                self._tracker = self._fallback()
            return self._tracker._alert_state(run["run_id"])
        try:
            return json.loads((local / Artifact.ALERT_STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []  # a check from before alert state existed

    def silences(self, dataset: str) -> list[Silence]:
        """As :meth:`MlflowTracker.silences`: experiment tags ``collapse.silence.<fingerprint>``."""
        exp = self.experiment_id(dataset)
        if exp is None:
            return []
        rows = self._con.execute("SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (int(exp),))
        return [Silence(**json.loads(v)) for k, v in sorted(rows) if k.startswith(Tag.SILENCE)]


def _local_path(uri: str | None) -> Path | None:
    """A run's artifact folder on this disk: a plain path or a ``file:`` URI; None for anything else."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None
