"""An in-memory run store with the MLflow tracker's contract: for fast tests of flow logic without MLflow.

It keeps runs as plain records (scope, kind, status, times, metrics, params, tags, artifacts) and answers the
same queries :class:`~monitors.adapters.tracking.MlflowTracker` answers from MLflow. The contract suite
(``tests/unit/test_run_store_contract.py``) runs the same tests against both, so the fake cannot drift from
the real store unnoticed. Model-registry calls (detector, probed models) are not faked: a fake has no detector.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monitors.adapters.tracking import (
    EXPERIMENT_PREFIX,
    PreviousCheck,
    history_row,
    probe_results_of,
    scope_kind,
    to_json_text,
)
from monitors.core.alerting import AlertState, Silence, states_from_json
from monitors.core.errors import checked_reference, no_reference
from monitors.core.reference import ReferenceProfile
from monitors.core.runrecord import RunRecord
from monitors.core.schema import Artifact, RunKind, Tag
from monitors.core.numbers import finite_items


@dataclass
class _Run:
    run_id: str
    scope: str
    kind: str
    start: int  # ms
    status: str = "RUNNING"
    end: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


class InMemoryRunStore:
    """The tracker's contract over a dict; every run ends FINISHED (or FAILED when its body raised)."""

    def __init__(self) -> None:
        self.runs: list[_Run] = []
        self.experiment_tags: dict[str, dict[str, str]] = {}
        self._clock = 0

    # -- the lifecycle --------------------------------------------------------------------------------
    def _now_ms(self) -> int:
        # strictly increasing, so "newest" is well defined even for runs logged within one millisecond
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        return self._clock

    @contextmanager
    def _run(self, scope: str, kind: str, tags: dict[str, str], started: float = 0.0,
             finished: float = 0.0) -> Iterator[_Run]:
        self.experiment_tags.setdefault(scope, {})
        start = int(started * 1000) if started else self._now_ms()
        self._clock = max(self._clock, start)
        run = _Run(uuid.uuid4().hex, scope, kind, start, tags={Tag.KIND: kind, Tag.DATASET: scope, **tags})
        self.runs.append(run)
        try:
            yield run
        except BaseException:
            run.status, run.end = "FAILED", self._now_ms()
            raise
        run.status, run.end = "FINISHED", int(finished * 1000) if finished else self._now_ms()

    def _newest(self, scope: str, keep=lambda r: True) -> list[_Run]:
        return sorted((r for r in self.runs if r.scope == scope and keep(r)), key=lambda r: r.start, reverse=True)

    # -- experiments ----------------------------------------------------------------------------------
    def experiment_id(self, dataset: str, create: bool = True) -> str | None:
        if dataset in self.experiment_tags or create:
            self.experiment_tags.setdefault(dataset, {})
            return EXPERIMENT_PREFIX + dataset
        return None

    def scopes(self) -> list[str]:
        return sorted(self.experiment_tags)

    # -- references -----------------------------------------------------------------------------------
    def save_reference(self, ref: ReferenceProfile, source: str) -> str:
        with self._run(ref.dataset, RunKind.REFERENCE, {Tag.SOURCE: source}) as run:
            run.artifacts[Artifact.REFERENCE_PROFILE] = ref.to_json()
            run.artifacts[Artifact.REFERENCE_ARRAYS] = ref.arrays_npz()
        return run.run_id

    def reference_run(self, dataset: str, run_id: str | None = None) -> str:
        if run_id is not None:
            run = next((r for r in self.runs if r.run_id == run_id), None)
            return checked_reference(run_id, run is not None, run.kind if run else None)
        runs = self._newest(dataset, lambda r: r.kind == RunKind.REFERENCE and r.status == "FINISHED")
        if not runs:
            raise no_reference(dataset)
        return runs[0].run_id

    def latest_reference(self, dataset: str, run_id: str | None = None) -> tuple[str, ReferenceProfile]:
        run_id = self.reference_run(dataset, run_id)
        run = next(r for r in self.runs if r.run_id == run_id)
        return run_id, ReferenceProfile.from_json(run.artifacts[Artifact.REFERENCE_PROFILE],
                                                  run.artifacts.get(Artifact.REFERENCE_ARRAYS))

    # -- checks and probes ----------------------------------------------------------------------------
    def next_sequence(self, dataset: str, kind: str = RunKind.CHECK) -> int:
        runs = self._newest(dataset, lambda r: r.kind == kind)
        return int(runs[0].tags.get(Tag.SEQUENCE, "-1")) + 1 if runs else 0

    def _newest_finished_check(self, dataset: str) -> _Run | None:
        runs = self._newest(dataset, lambda r: r.kind == scope_kind(dataset) and r.status == "FINISHED")
        return runs[0] if runs else None

    def previous_check(self, dataset: str) -> PreviousCheck:
        run = self._newest_finished_check(dataset)
        if run is None:
            return PreviousCheck({}, None, {})
        corpus = {k: v for k, v in run.metrics.items() if k.startswith("corpus.")}
        hours = max(0.0, (time.time() * 1000 - run.end) / 3.6e6) if run.end else None
        return PreviousCheck(corpus, hours, states_from_json(run.artifacts.get(Artifact.ALERT_STATE)), dict(run.metrics))

    def previous_alert_state(self, dataset: str) -> dict[str, AlertState]:
        run = self._newest_finished_check(dataset)
        return {} if run is None else states_from_json(run.artifacts.get(Artifact.ALERT_STATE))

    def silences(self, dataset: str) -> list[Silence]:
        tags = self.experiment_tags.get(dataset, {})
        return [Silence(**json.loads(v)) for k, v in sorted(tags.items()) if k.startswith(Tag.SILENCE)]

    def add_silence(self, dataset: str, silence: Silence) -> None:
        self.experiment_tags.setdefault(dataset, {})[Tag.SILENCE + silence.fingerprint] = json.dumps(asdict(silence))

    def log_check(self, req: RunRecord) -> str:
        step = self.next_sequence(req.dataset, req.kind)
        with self._run(req.dataset, req.kind, {Tag.BATCH: req.batch_name, Tag.SPOOL_ID: req.spool_id},
                       req.started, req.finished) as run:
            run.metrics = finite_items(req.metrics)
            run.params = {k: str(v)[:6000] for k, v in req.params.items()}
            run.tags.update({**req.tags, Tag.NOTE: req.description, Tag.SEQUENCE: str(step)})
            for name, content in req.artifacts.items():
                if isinstance(content, Path):
                    content = content.read_bytes()
                elif not isinstance(content, (bytes, str)):
                    if name == Artifact.SUMMARY and isinstance(content, dict):
                        content = {**content, "run_id": run.run_id}
                    content = json.loads(to_json_text(content))  # what a reader of the JSON artifact gets back
                run.artifacts[name] = content
        return run.run_id

    def replay(self, req: RunRecord) -> str:
        for run in self._newest(req.dataset, lambda r: r.tags.get(Tag.SPOOL_ID) == req.spool_id):
            if run.status == "FINISHED":
                return run.run_id
            self.runs.remove(run)
        return self.log_check(req)

    def run_for_content(self, dataset: str, sha256: str) -> str | None:
        runs = self._newest(dataset, lambda r: r.tags.get(Tag.CONTENT) == sha256 and r.status == "FINISHED")
        return runs[0].run_id if runs else None

    def artifact_location(self, run_id: str, name: str) -> str:
        return f"memory://{run_id}/{name}"

    def artifact(self, run_id: str, name: str) -> Any:
        """A logged artifact's content (JSON artifacts as parsed JSON): for tests."""
        return next(r for r in self.runs if r.run_id == run_id).artifacts[name]

    def record_delivery(self, run_id: str, outcome: dict[str, Any]) -> None:
        run = next(r for r in self.runs if r.run_id == run_id)
        run.tags[Tag.DELIVERY_SENT], run.tags[Tag.DELIVERY_QUEUED] = str(outcome["sent"]), str(outcome["queued"])
        run.artifacts[Artifact.DELIVERY] = copy.deepcopy(outcome)

    def probe_results(self, scope: str, probe_digest: str, tag: str = Tag.PROBE_SET) -> dict[str, dict[str, Any]]:
        runs = self._newest(scope, lambda r: r.tags.get(tag) == probe_digest and r.status == "FINISHED")
        return probe_results_of((r.run_id, r.tags, r.metrics) for r in runs)

    def history(self, dataset: str | None = None, last: int | None = 20, kind: str = RunKind.CHECK) -> list[dict[str, Any]]:
        runs = sorted((r for r in self.runs if r.kind == kind and (dataset is None or r.scope == dataset)),
                      key=lambda r: r.start, reverse=True)[: last or None]
        return [history_row(r.run_id, EXPERIMENT_PREFIX + r.scope, r.start, r.status, r.metrics, r.tags) for r in runs]

    def load_detector(self, uri: str):
        from monitors.adapters.registry import DetectorUnavailable

        raise DetectorUnavailable(f"no detector is registered at {uri} (in-memory run store)")
