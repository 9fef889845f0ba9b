"""Throwaway servers for integration tests: PostgreSQL, a Prefect server and an MLflow server, each on a
free port of 127.0.0.1, in temporary folders, started in their own process group and stopped by PID."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}:\n{log.read_text()[-3000:] if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:] if log else ''}")


def wait_until(what: str, predicate, timeout: float, log: Path, every: float = 0.5):
    """Poll ``predicate`` until it returns something true (returned); on timeout fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    fh = open(log, "ab")
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process group started by :func:`start` (SIGKILL when it does not go in time)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not on PATH (nor in /usr/lib/postgresql/*/bin): install the "
                           f"postgresql package to run this test")
    return found


class Postgres:
    """A throwaway PostgreSQL cluster (trust auth, user ``cm``); as root it runs as the postgres user."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="cm-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "cm"

    def _run(self, args: list[str]) -> None:
        cmd = args
        if os.geteuid() == 0:  # postgres refuses to run as root
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data, "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user])
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-o",
                   f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start"])
        return self

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def url(self, db: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        try:
            self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_"))}
    env.update({"HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    return env


def start_prefect(pg: Postgres, home: Path, wait: bool = True) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on ``pg``; its API URL. ``wait=False``: return at once (then :func:`wait_healthy`), so
    that another server can start meanwhile."""
    port = free_port()
    env = base_env(home) | {"PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "asyncpg"),
                            "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 home / "prefect-server.log", env)
    api = f"http://127.0.0.1:{port}/api"
    if wait:
        wait_healthy(proc, api, home)
    return proc, api


def start_mlflow(pg: Postgres, home: Path, wait: bool = True) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on ``pg``; its tracking URI. ``wait=False``: as for :func:`start_prefect`."""
    port = free_port()
    artifacts = home / "mlflow-artifacts"
    artifacts.mkdir(exist_ok=True)
    proc = start([str(BIN / "mlflow"), "server", "--backend-store-uri", pg.url("mlflow").replace("+psycopg2", ""),
                  "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
                  "--workers", "1"], home / "mlflow-server.log", base_env(home))
    uri = f"http://127.0.0.1:{port}"
    if wait:
        wait_healthy(proc, uri, home)
    return proc, uri


def wait_healthy(proc: subprocess.Popen, url: str, home: Path) -> None:
    """Wait for a server of :func:`start_prefect` (``url`` its API) or :func:`start_mlflow` to answer its health check."""
    if url.endswith("/api"):
        wait_http(f"{url}/health", 180, proc, home / "prefect-server.log")
    else:
        wait_http(f"{url}/health", 120, proc, home / "mlflow-server.log")
