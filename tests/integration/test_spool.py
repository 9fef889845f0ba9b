"""MLflow stopped mid-run: the check's results are spooled locally, on-call is still told, and the next check
replays them into the restarted server: nothing lost, nothing duplicated. A real `mlflow server` on
127.0.0.1 (SQLite store in a temp folder), started and stopped by PID."""

import json
import os
import random
import sys

import pytest
from mlflow import MlflowClient

from flows import tasks
from flows.cli import main
from monitors.demo.simulate import recursive_generations
from tests import stack
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


class MlflowServer:
    """A real `mlflow server` on a SQLite store that can be stopped and restarted on the same port."""

    def __init__(self, folder, port):
        self.folder, self.port, self.proc = folder, port, None

    def start(self):
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = stack.start(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port)],
            self.folder / "server.log", env, cwd=self.folder)
        try:
            stack.wait_http(f"http://127.0.0.1:{self.port}/health", 120, self.proc, self.folder / "server.log")
        except Exception:
            self.stop()
            raise

    def stop(self):
        stack.stop(self.proc)  # the server and its workers, by PID


@pytest.fixture
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), stack.free_port())
    srv.start()
    yield srv
    srv.stop()


def _check(path, capsys):
    code = main(["check", "--input", str(path), "--dataset", "news", "--json"])
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_mlflow_stopped_mid_run_spools_and_the_next_check_replays(isolated, server, austen, capsys, monkeypatch, receiver):
    uri = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while the server is down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://KEY@127.0.0.1:{receiver.port}/e")
    rng = random.Random(4)
    paras = list(austen)
    rng.shuffle(paras)
    ref = write_jsonl(isolated / "ref.jsonl", [{"id": p["id"], "text": p["text"]} for p in paras[:1200]])
    human = write_jsonl(isolated / "human.jsonl", [{"id": p["id"], "text": p["text"]} for p in paras[1200:1500]])
    gen = recursive_generations([p["text"] for p in paras[1500:2700]], 8, 300, seed=3)[-1].sample(300, rng)
    collapsed = write_jsonl(isolated / "collapsed.jsonl", [{"id": f"g{i}", "text": t} for i, t in enumerate(gen)])
    assert main(["reference", "build", "--input", str(ref), "--dataset", "news"]) == 0
    capsys.readouterr()
    assert _check(human, capsys)[0] == 0

    # Stop the server after every read, while the batch is being checked.
    original = tasks.evaluate_rules

    def stop_then_evaluate(*args, **kwargs):
        server.stop()
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks, "evaluate_rules", stop_then_evaluate)
    code, spooled = _check(collapsed, capsys)
    assert code == 3 and spooled["run_id"] == "" and spooled["spooled"]
    assert any("spooled" in n for n in spooled["notes"])
    assert os.path.isdir(spooled["spooled"])
    # on-call heard about it anyway: delivery does not need MLflow
    assert [e["json"]["event_action"] for e in receiver.received] == ["trigger"] and spooled["delivery"]["queued"] == 0

    monkeypatch.setattr(tasks, "evaluate_rules", original)
    server.start()
    code, after = _check(human, capsys)
    assert any(n.startswith("replayed 1 spooled check(s)") for n in after["notes"])
    assert not os.listdir(isolated / ".collapse-monitor" / "spool")
    # the replayed run is there once, with the spooled results; the state machine continued from it
    assert {"resolved"} == {n["kind"] for n in after["notifications"]}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("collapse-monitor/news")
    checks = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'", order_by=["attributes.start_time ASC"])
    assert len(checks) == 3 and all(r.info.status == "FINISHED" for r in checks)
    replayed = checks[1]
    assert replayed.data.tags["collapse.batch"] == "collapsed.jsonl"
    assert replayed.data.metrics["batch.records"] == 300
    assert replayed.data.metrics["tail.rare_coverage.ratio"] == pytest.approx(spooled["indicators"]["tail.rare_coverage.ratio"])
    summary = json.loads(client.download_artifacts(replayed.info.run_id, "summary.json", str(isolated)) and
                         open(os.path.join(isolated, "summary.json")).read())
    assert summary["run_id"] == replayed.info.run_id
    # and a later check replays nothing again
    code, last = _check(human, capsys)
    assert not any("replayed" in n for n in last["notes"])
    assert len(client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'")) == 4
