"""`collapse-monitor ui` starts MLflow's server without a Starlette deprecation warning per worker (issue 20,
item 8): MLflow's server module imports starlette.middleware.wsgi, which warns on import; users cannot act on it."""

import os
import subprocess
import sys

from flows.cli import main


def test_ui_server_processes_do_not_print_starlette_deprecations(tmp_path, monkeypatch):
    started = {}

    def fake_execv(path, cmd):
        started.update(path=path, cmd=cmd, env=dict(os.environ))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    try:
        main(["ui", "--state-dir", str(tmp_path / "state"), "--port", "5999"])
    except SystemExit:
        pass
    assert started["cmd"][1:4] == ["-m", "mlflow", "ui"] and "5999" in started["cmd"]
    # What every uvicorn worker of `mlflow ui` imports first, in a process with the environment ui hands on.
    done = subprocess.run([sys.executable, "-c", "import mlflow.server.fastapi_app"], env=started["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning" not in done.stderr, done.stderr
