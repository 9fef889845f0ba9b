"""The warm check service without Prefect or MLflow (flows/warm.py): which commands a client sends to it, what
must match, and the fork server itself on a command that fails before any heavy import (a missing batch file),
so that these run in seconds. The real check through it: tests/integration/test_warm_daemon.py."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import warm
from flows.cli import _parser
from monitors.config import load_settings
from tests.conftest import REPO

API = "http://127.0.0.1:9/api"  # never reached: the commands below fail before Prefect is used


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


@pytest.fixture
def served_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", API)
    monkeypatch.setenv("COLLAPSE_MONITOR_STATE_DIR", str(tmp_path / "state"))
    sock = warm.socket_path(tmp_path / "state")
    sock.parent.mkdir(parents=True)
    sock.touch()  # decide() only looks for the file; whether anyone listens is try_served's business
    return sock


def test_a_check_goes_to_the_service_when_its_socket_exists(served_env):
    path, why, settings = warm.decide(_args("check", "--input", "b.jsonl"))
    assert (path, why) == (served_env, "") and settings.state_path == served_env.parents[1].resolve()
    assert warm.decide(_args("history"))[0] == served_env
    assert warm.decide(_args("alerts", "list"))[0] == served_env


def test_without_a_prefect_server_a_check_goes_to_the_service_too(served_env, monkeypatch):
    """The service runs Prefect's API itself when none is configured (the ephemeral case)."""
    monkeypatch.delenv("PREFECT_API_URL")
    assert warm.decide(_args("check", "--input", "b.jsonl"))[:2] == (served_env, "")


@pytest.mark.parametrize("argv, env, reason", [
    (["reference", "build", "--input", "x"], {}, "not served"),
    (["alerts", "silence", "abc", "--for", "1h", "--reason", "r"], {}, "not served"),
    (["check", "--input", "x", "--no-daemon"], {}, "--no-daemon"),
    (["--no-daemon", "check", "--input", "x"], {}, "--no-daemon"),
    (["check", "--input", "x"], {"COLLAPSE_MONITOR_NO_DAEMON": "1"}, "COLLAPSE_MONITOR_NO_DAEMON"),
    (["check", "--input", "x", "-v"], {}, "-v"),
    (["check", "--input", "x", "--config", "missing.yaml"], {}, "settings not readable"),
])
def test_otherwise_the_command_runs_in_process(served_env, monkeypatch, argv, env, reason):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path, why, _ = warm.decide(_args(*argv))
    assert path is None and reason in why


def test_no_socket_no_service(served_env):
    served_env.unlink()
    path, why, _ = warm.decide(_args("check", "--input", "x"))
    assert path is None and "no warm service" in why


def test_the_fingerprint_covers_settings_variables_config_and_state_dir(tmp_path, monkeypatch):
    config = tmp_path / "cm.yaml"
    config.write_text("dataset: news\n")
    monkeypatch.setenv("PREFECT_API_URL", API)
    settings = load_settings(config)
    base = warm.fingerprint(settings, config)
    assert warm.fingerprint(settings, config) == base
    monkeypatch.setenv("COLLAPSE_MONITOR_NO_DAEMON", "0")  # the opt-out itself changes nothing the child reads
    monkeypatch.setenv("COLLAPSE_MONITOR_SCHEDULES__LANDING", "/data/landing")  # read by serve alone
    assert warm.fingerprint(settings, config) == base
    monkeypatch.setenv("COLLAPSE_MONITOR_DATASET", "news")  # any other setting must match
    assert warm.differences(base, warm.fingerprint(settings, config)) == ["$COLLAPSE_MONITOR_DATASET"]
    monkeypatch.delenv("COLLAPSE_MONITOR_DATASET")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:SECRET@127.0.0.1:1")
    other = warm.fingerprint(settings, config)
    assert other != base and warm.differences(base, other) == ["$MLFLOW_TRACKING_URI"]
    assert "SECRET" not in json.dumps(warm.differences(base, other))  # names, never values
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    config.write_text("dataset: other\n")
    assert warm.differences(base, warm.fingerprint(settings, config)) == ["config file content"]
    moved = settings.model_copy(update={"state_dir": tmp_path / "elsewhere"})
    assert "state directory" in warm.differences(base, warm.fingerprint(moved, config))


def test_a_socket_nobody_listens_on_means_in_process(served_env):
    served_env.unlink()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(served_env))  # a daemon killed with -9 leaves this
    stale.close()
    assert warm.try_served(_args("check", "--input", "x"), ["check", "--input", "x"]) is None


def test_no_fork_while_threads_run(tmp_path, monkeypatch):
    daemon = warm.Daemon(tmp_path / "run" / "check.sock", {"fp": 1})
    ok = {"op": "run", "fingerprint": {"fp": 1}}
    monkeypatch.setattr(warm.threading, "active_count", lambda: 2)  # this test process may run others' threads
    assert daemon._refusal(ok, [0, 1, 2]) == "it runs threads"
    with pytest.raises(RuntimeError, match="threads"):
        daemon.serve_forever()
    monkeypatch.setattr(warm.threading, "active_count", lambda: 1)
    assert daemon._refusal(ok, [0, 1, 2]) is None
    assert "other settings" in daemon._refusal({"op": "run", "fingerprint": {"fp": 2}}, [0, 1, 2])
    assert daemon._refusal(ok, [0, 1]) == "malformed request"


# ---- the fork server, for real, on a command that needs no Prefect

_DAEMON = """
import os, sys
from flows import warm
from monitors.config import config_path, load_settings
settings = load_settings(None)
fp = warm.fingerprint(settings, config_path(None), dict(os.environ))
warm.Daemon(warm.socket_path(settings.state_path), fp).serve_forever()
"""


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_"))}
    env.update(PYTHONPATH=str(REPO), PREFECT_API_URL=API, COLLAPSE_MONITOR_STATE_DIR=str(tmp_path / "state"),
               COLLAPSE_MONITOR_LM__ENABLED="false", **extra)
    return env


def _start(tmp_path: Path, env: dict, name: str = "warm") -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-c", _DAEMON], env=env, cwd=tmp_path, stderr=open(log, "ab"),
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, log


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(20)


def test_the_fork_server_runs_the_cli_on_the_clients_files_and_cwd(tmp_path):
    env = _env(tmp_path)
    daemon, log = _start(tmp_path, env)
    try:
        sock = warm.socket_path(tmp_path / "state")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        work = tmp_path / "work"
        work.mkdir()
        argv = ["check", "--input", "missing.jsonl", "--dataset", "news", "--json"]
        served = _cli(argv, env, work)
        assert "child" in log.read_text() and "exited 2" in log.read_text()
        here = _cli(argv, env | {"COLLAPSE_MONITOR_NO_DAEMON": "1"}, work)
        assert (served.returncode, served.stdout, served.stderr) == (here.returncode, here.stdout, here.stderr)
        assert served.returncode == 2 and json.loads(served.stdout)["exit_code"] == 2
        assert "missing.jsonl" in served.stderr  # resolved in the client's folder, reported on its stderr
        # another environment: refused, and the command still runs (in-process) with the same result
        other = _cli(argv, env | {"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true"}, work)
        assert "refused" in log.read_text() and "$PREFECT_API_TLS_INSECURE_SKIP_VERIFY" in log.read_text()
        assert (other.returncode, other.stdout) == (here.returncode, here.stdout)
        verbose = _cli([*argv, "-v"], env, work)
        assert "running in this process: -v" in verbose.stderr
        # a large environment (sent whole, not cut at the socket's buffer: the request is 1 MB here)
        big = _cli(argv, env | {f"BIG_{i}": "x" * 100_000 for i in range(10)}, work)
        assert big.returncode == 2 and log.read_text().count("exited 2") == 2, log.read_text()
    finally:
        assert _stop(daemon) == 0
    assert not warm.socket_path(tmp_path / "state").exists()  # removed on SIGTERM
    assert "stopped" in log.read_text()


def test_a_request_that_stalls_is_dropped_without_keeping_the_clients_files(tmp_path):
    """A client that sends its descriptors but not its whole request: the service drops it after 5 s and
    closes its copies, so whatever reads that client's output sees the end of it (it hung before)."""
    env = _env(tmp_path)
    daemon, log = _start(tmp_path, env)
    try:
        read_end, write_end = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(warm.socket_path(tmp_path / "state")))
        socket.send_fds(sock, [(1000).to_bytes(4, "big") + b'{"op": '], [0, write_end, 2])
        os.close(write_end)  # now only the service holds the pipe's write end
        deadline = time.monotonic() + 30
        while "dropped a request" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        os.set_blocking(read_end, False)
        deadline = time.monotonic() + 10
        while True:  # EOF (b"") once the service has closed its copy; BlockingIOError while it holds it
            try:
                assert os.read(read_end, 10) == b""
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the service kept the client's stdout open"
                time.sleep(0.05)
        sock.close()
        os.close(read_end)
    finally:
        assert _stop(daemon) == 0


def test_a_stale_socket_is_replaced_and_a_live_one_kept(tmp_path):
    env = _env(tmp_path)
    daemon, log = _start(tmp_path, env)
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait(10)
    sock = warm.socket_path(tmp_path / "state")
    assert sock.exists()  # left by kill -9
    served = _cli(["check", "--input", "missing.jsonl", "--json"], env, tmp_path)
    assert served.returncode == 2 and json.loads(served.stdout)["exit_code"] == 2  # in-process, silently
    assert "warm" not in served.stderr
    again, log = _start(tmp_path, env, "again")
    try:
        assert "replacing the stale socket" in log.read_text()
        second = subprocess.run([sys.executable, "-c", _DAEMON], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode != 0 and "already listens" in second.stderr
    finally:
        assert _stop(again) == 0


def test_a_child_that_crashes_is_exit_1_with_a_message(tmp_path):
    env = _env(tmp_path)
    daemon, log = _start(tmp_path, env)
    try:
        # history imports MLflow in this bare service (it imported nothing): time to kill its child meanwhile
        client = subprocess.Popen([sys.executable, "-m", "flows.cli", "history"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (found := re.search(rf"child (\d+) runs `history` for pid {client.pid}\b", log.read_text())):
            assert time.monotonic() < deadline and client.poll() is None, log.read_text()
            time.sleep(0.02)
        os.kill(int(found.group(1)), signal.SIGKILL)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 1 and "died of signal SIGKILL" in err, err
    finally:
        assert _stop(daemon) == 0
