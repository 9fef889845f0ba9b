"""What the MLflow UI shows of a check (issue 20, item 10): a classic experiment (not the GenAI view, which
MLflow 3 opens unless the experiment's ``mlflow.experimentKind`` tag says otherwise) and the check's real
start and end (the run was created when logging began, so it showed 50-170 ms for checks of 20-35 s)."""

import time

from mlflow import MlflowClient

from monitors.adapters import spool
from monitors.core.runrecord import RunRecord
from monitors.adapters.tracking import EXPERIMENT_KIND, MlflowTracker
from monitors.core.schema import experiment_name


def _tracker(tmp_path) -> MlflowTracker:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return MlflowTracker(MlflowClient(tracking_uri=uri, registry_uri=uri), (tmp_path / "artifacts").as_uri())


def test_experiments_open_in_the_classic_view_old_ones_too(tmp_path):
    tracker = _tracker(tmp_path)
    assert EXPERIMENT_KIND == ("mlflow.experimentKind", "custom_model_development")
    new = tracker.experiment_id("news")
    assert tracker.client.get_experiment(new).tags.get("mlflow.experimentKind") == "custom_model_development"
    old = tracker.client.create_experiment(experiment_name("older"))  # made before this tag was set
    assert tracker.experiment_id("older") == old
    assert tracker.client.get_experiment(old).tags.get("mlflow.experimentKind") == "custom_model_development"
    tracker.client.set_experiment_tag(old, "mlflow.experimentKind", "genai_development")  # a user's choice stays
    tracker.experiment_id("older")
    assert tracker.client.get_experiment(old).tags["mlflow.experimentKind"] == "genai_development"


def test_check_run_spans_the_check_and_a_spooled_one_keeps_its_times(tmp_path):
    tracker = _tracker(tmp_path)
    began = time.time() - 30
    req = RunRecord("news", "b.jsonl", {"x": 1.0}, {}, {}, {}, "d", started=began)
    run = tracker.client.get_run(tracker.log_check(req))
    assert abs(run.info.start_time - began * 1000) < 2
    assert run.info.end_time - run.info.start_time >= 30_000

    ended = began + 12
    saved = spool.save(tmp_path / "spool", RunRecord("news", "c.jsonl", {}, {}, {}, {}, "d", started=began,
                                                      finished=ended))
    again = tracker.client.get_run(tracker.replay(spool.load(saved)))
    assert (again.info.start_time, again.info.end_time) == (int(began * 1000), int(ended * 1000))
