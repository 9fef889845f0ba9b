"""The warm check service for real (flows/warm.py): a `prefect server start` on a free port of 127.0.0.1 and an
MLflow store in a temporary folder, `collapse-monitor warm`, and `collapse-monitor` commands run as a user runs
them (subprocesses). A check through the service prints what the same check prints in-process and lands in
MLflow; another environment runs in-process; the client's Ctrl-C reaches the check, and its death kills it;
SIGTERM stops the service and removes its socket. Everything is stopped by PID."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import warm
from tests import stack
from tests.conftest import REPO, write_jsonl

pytestmark = pytest.mark.integration


def _cli(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


_wait = functools.partial(stack.wait_until, every=0.1)


@pytest.fixture(scope="module")
def service(tmp_path_factory, austen):
    home = tmp_path_factory.mktemp("warm")
    procs = []
    try:
        port = stack.free_port()
        server_env = stack.base_env(home) | {"PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}
        procs.append(stack.start([str(stack.BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                  str(port)], home / "prefect-server.log", server_env))
        api = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_"))}
        env.update(PYTHONPATH=str(REPO), PREFECT_API_URL=api, COLLAPSE_MONITOR_STATE_DIR=str(home / "state"),
                   COLLAPSE_MONITOR_LM__ENABLED="false", DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true")
        texts = [p["text"] for p in austen]
        write_jsonl(home / "ref.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(texts[:600])])
        write_jsonl(home / "batch.jsonl", [{"id": f"b{i}", "text": t} for i, t in enumerate(texts[600:900])])
        stack.wait_http(f"{api}/health", 180, procs[0], home / "prefect-server.log")
        built = _cli(["reference", "build", "--input", "ref.jsonl", "--dataset", "ds0"], env, home)
        assert built.returncode == 0, built.stderr
        reference = re.search(r"MLflow run ([0-9a-f]{32})", built.stdout).group(1)
        log = home / "warm.log"
        procs.append(stack.start([sys.executable, "-m", "flows.cli", "warm"], log, env, cwd=home))
        _wait("the warm service", lambda: "ready" in log.read_text(), 180, log)
        yield {"home": home, "env": env, "log": log, "daemon": procs[-1], "api": api, "reference": reference}
    finally:
        for proc in reversed(procs):
            stack.stop(proc)


def _normal(out: str, dataset: str) -> dict:
    """A check's JSON without what differs between two datasets' runs of one batch: ids, the dataset's name (and
    the alert fingerprints made from it), the clock."""
    obj = json.loads(out.replace(dataset, "DATASET"))
    obj.pop("run_id")
    obj["indicators"].pop("schedule.hours_since_last_check")
    for alert in obj["alerts"]:
        alert.pop("fingerprint")
    return obj


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):  # sums over sets: their order follows the hash seed
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_a_check_through_the_service_prints_what_it_prints_in_process_and_lands_in_mlflow(service):
    home, env, log = service["home"], service["env"], service["log"]
    sock = warm.socket_path(home / "state")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    started = time.perf_counter()
    check = ["check", "--input", "batch.jsonl", "--reference", service["reference"], "--json"]
    served = _cli([*check, "--dataset", "ds1"], env, home)
    took = time.perf_counter() - started
    assert re.search(r"child \d+ runs `check` for pid \d+", log.read_text()), log.read_text()
    local = _cli(["--no-daemon", *check, "--dataset", "ds2"], env, home)
    assert served.returncode == local.returncode and served.returncode in (0, 3), served.stderr
    assert len(served.stdout.splitlines()) == 1  # one JSON object, as promised
    a, b = _normal(served.stdout, "ds1"), _normal(local.stdout, "ds2")
    assert a.keys() == b.keys() and _diff(a, b) == []
    print(f"check through the warm service: {took:.1f} s")
    run = MlflowClient(tracking_uri=f"sqlite:///{home / 'state' / 'mlflow.db'}").get_run(json.loads(served.stdout)["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["batch.records"] == 300


def test_read_only_commands_are_served_and_another_environment_runs_in_process(service):
    home, env, log = service["home"], service["env"], service["log"]
    served = _cli(["history", "--dataset", "ds1"], env, home)
    assert "runs `history`" in log.read_text()
    local = _cli(["history", "--dataset", "ds1", "--no-daemon"], env, home)
    assert (served.returncode, served.stdout) == (local.returncode, local.stdout) and "batch.jsonl" in served.stdout
    alerts = _cli(["alerts", "list"], env, home)
    assert alerts.returncode == 0 and "runs `alerts list`" in log.read_text()
    argv = [sys.executable, "-m", "flows.cli", "history", "--dataset", "ds1"]
    both = [subprocess.Popen(argv, env=env, cwd=home, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in both]
    assert outs == [local.stdout] * 2  # at once, each in its own child
    children = {re.search(rf"child (\d+) runs `history` for pid {p.pid}\b", log.read_text()).group(1) for p in both}
    assert len(children) == 2
    other = _cli(["history", "--dataset", "ds1"], env | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3"}, home)
    assert "refused" in log.read_text() and "$MLFLOW_HTTP_REQUEST_MAX_RETRIES" in log.read_text()
    assert (other.returncode, other.stdout) == (local.returncode, local.stdout)


def _child_of(client: subprocess.Popen, log: Path) -> int:
    found = _wait("the child", lambda: re.search(rf"child (\d+) runs `check` for pid {client.pid}\b",
                                                       log.read_text()), 60, log)
    return int(found.group(1))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_clients_ctrl_c_reaches_the_check_and_its_death_kills_it(service):
    home, env, log = service["home"], service["env"], service["log"]
    argv = [sys.executable, "-m", "flows.cli", "check", "--input", "batch.jsonl", "--dataset", "ds1", "--reference",
            service["reference"], "--json"]
    client = subprocess.Popen(argv, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = _child_of(client, log)
    time.sleep(0.5)
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert json.loads(out.splitlines()[-1])["error"] == "interrupted"
    _wait("the child's end", lambda: _gone(child), 20, log)

    client = subprocess.Popen(argv, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _child_of(client, log)
    client.kill()
    client.wait(10)
    _wait("the orphaned child's end", lambda: _gone(child), 20, log)  # killed and reaped, not a zombie
    assert f"child {child} died of signal SIGKILL" in log.read_text()


def test_without_a_prefect_server_the_service_runs_prefects_api_for_its_checks(service):
    """No PREFECT_API_URL (the ephemeral case): the service runs Prefect's API itself, on its state directory's
    Prefect database; checks through it print what they print in-process; a command that fails on its input does
    not take that API down; when the API dies, the service stops and commands run in-process again."""
    home = service["home"]
    env = {k: v for k, v in service["env"].items() if k != "PREFECT_API_URL"}
    state = home / "ephemeral-state"  # its own service and Prefect database; the MLflow store with the reference
    env.update(COLLAPSE_MONITOR_STATE_DIR=str(state), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'state' / 'mlflow.db'}")
    log = home / "warm-ephemeral.log"
    daemon = stack.start([sys.executable, "-m", "flows.cli", "warm"], log, env, cwd=home)
    try:
        _wait("the warm service", lambda: "ready" in log.read_text(), 180, log)
        api_pid = int(re.search(r"Prefect's API for the commands it runs: http://127\.0\.0\.1:\d+/api \(pid (\d+)\)",
                                log.read_text()).group(1))
        missing = _cli(["check", "--input", "batch.jsonl", "--dataset", "no-such", "--json"], env, home)
        assert missing.returncode == 2 and "no reference yet" in json.loads(missing.stdout)["error"]
        assert "exited 2" in log.read_text() and not _gone(api_pid)  # the API outlives a failed command
        check = ["check", "--input", "batch.jsonl", "--reference", service["reference"], "--json"]
        served = _cli([*check, "--dataset", "ds3"], env, home)
        assert served.returncode in (0, 3), served.stderr
        assert len(re.findall(r"child \d+ runs `check` for pid \d+", log.read_text())) == 2
        local = _cli(["--no-daemon", *check, "--dataset", "ds4"], env, home)
        assert local.returncode == served.returncode, local.stderr
        a, b = _normal(served.stdout, "ds3"), _normal(local.stdout, "ds4")
        assert a.keys() == b.keys() and _diff(a, b) == []
        with sqlite3.connect(state / "prefect" / "prefect.db") as db:  # both flow runs, in the state's database
            runs = dict(db.execute("select name, state_type from flow_run where name like 'check ds%'").fetchall())
        assert runs == {"check ds3: batch.jsonl": "COMPLETED", "check ds4: batch.jsonl": "COMPLETED"}
        os.kill(api_pid, signal.SIGKILL)
        assert daemon.wait(30) == 0
        assert "exited: stopping" in log.read_text() and not warm.socket_path(state).exists()
    finally:
        stack.stop(daemon)


def test_sigterm_stops_the_service_and_removes_its_socket(service):
    home, daemon = service["home"], service["daemon"]
    os.killpg(daemon.pid, signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert not warm.socket_path(home / "state").exists()
    served = service["log"].read_text().count("runs `history`")
    after = _cli(["history", "--dataset", "ds1"], service["env"], home)  # no service: in-process, silently
    assert after.returncode == 0 and "batch.jsonl" in after.stdout and after.stderr == ""
    assert service["log"].read_text().count("runs `history`") == served
