"""Prefect's temporary API server, started by the CLI itself instead of by Prefect's client.

Prefect (3.7) starts the same server (``uvicorn prefect.server.api.server:create_app`` with
``PREFECT__SERVER_EPHEMERAL=1``) the first time a flow needs its API, and only then: the CLI waited about 4 s
for it, after importing everything, and the parent imported Prefect's whole server package (about 2 s) just to
launch it. Started here, right after the input is checked and before Prefect is imported, it boots on the
other core while this process imports and reads MLflow; ``PREFECT_API_URL`` points Prefect's client at it, so
Prefect never loads its server code in this process. The child dies with this process (``kill -9`` included:
:mod:`monitors.adapters.lifeline`) and is stopped at exit as Prefect would stop it (SIGTERM, then SIGKILL).

Nothing happens when a real server is configured (``PREFECT_API_URL``) or when Prefect is already imported
(its settings are read at import, so the URL would not be seen: Prefect then starts its own server as before).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import monitors

_CHILD = """\
import os, runpy, sys
sys.path.insert(0, {repo!r})
from monitors.adapters.lifeline import die_with_parent
die_with_parent({parent})
sys.argv = ["uvicorn", "--app-dir", {app_dir!r}, "--factory", "prefect.server.api.server:create_app", "--host",
            "127.0.0.1", "--port", {port!r}, "--log-level", "error", "--lifespan", "on"]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EphemeralServer:
    def __init__(self) -> None:
        self._register()
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        spec = importlib.util.find_spec("prefect")
        app_dir = str(Path(spec.origin).parent.parent)
        code = _CHILD.format(repo=str(Path(monitors.__file__).resolve().parents[1]), parent=os.getpid(),
                             app_dir=app_dir, port=str(self.port))
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process: subprocess.Popen | None = subprocess.Popen([sys.executable, "-c", code], env=env)
        self._error: str | None = None
        self._waiter = threading.Thread(target=self._wait_healthy, name="prefect-server-start", daemon=True)
        self._waiter.start()
        atexit.register(self.stop)

    def _wait_healthy(self) -> None:
        limit = time.monotonic() + float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 90)
        while time.monotonic() < limit:
            proc = self.process
            if proc is None:
                self._error = "stopped before it was ready"
                return
            if proc.poll() is not None:
                self._error = f"exited with code {proc.returncode} before it was ready"
                return
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self._error = f"not healthy after {limit:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"

    def _register(self) -> None:
        """Note this process among the users of the state directory's Prefect database (``PREFECT_HOME``), and
        whether it is the only live one: then every run still 'Running' there belongs to a process that died."""
        from datetime import datetime, timezone

        self._pid_file: Path | None = None
        self.alone, self.since = False, datetime.now(timezone.utc)
        home = os.environ.get("PREFECT_HOME")
        if not home:
            return
        folder = Path(home) / "processes"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._pid_file = folder / str(os.getpid())
            self._pid_file.touch()
            atexit.register(self._pid_file.unlink, missing_ok=True)
            others = 0
            for f in folder.iterdir():
                if not f.name.isdigit() or int(f.name) == os.getpid():
                    continue
                try:
                    os.kill(int(f.name), 0)
                    others += 1
                except ProcessLookupError:
                    f.unlink(missing_ok=True)
                except PermissionError:
                    others += 1
            self.alone, self.since = others == 0, datetime.now(timezone.utc)
        except OSError:
            self.alone = False

    def crash_orphaned_runs(self) -> list[str]:
        """Mark the flow runs left 'Running' by a process that died (``kill -9``, OOM) as Crashed: only when no
        other live process uses this Prefect database, and only runs that started before this process looked.
        Never raises (it is housekeeping); returns the names of the runs it marked."""
        if not self.alone:
            return []
        try:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import (
                FlowRunFilter,
                FlowRunFilterStartTime,
                FlowRunFilterState,
                FlowRunFilterStateType,
            )
            from prefect.client.schemas.objects import StateType
            from prefect.states import Crashed

            marked = []
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                    start_time=FlowRunFilterStartTime(before_=self.since)), limit=200)
                for run in runs:
                    client.set_flow_run_state(run.id, Crashed(message="the collapse-monitor process running it died "
                                                              "(found by a later start)"), force=True)
                    marked.append(run.name)
            return marked
        except Exception as exc:  # noqa: BLE001
            print(f"collapse-monitor: could not mark flow runs of dead processes as crashed: {exc}", file=sys.stderr)
            return []

    def ready(self) -> None:
        """Wait until the server answers; raise if it cannot."""
        self._waiter.join()
        if self._error:
            raise RuntimeError(f"Prefect's temporary API server on {self.api_url} {self._error}")

    def detach(self) -> None:
        """Hand this server to a long-lived owner (the warm service): drop its exit handlers (the owner's forked
        children run them as they end, and must not stop it nor unlink its registration), and let :func:`start`
        no longer return it (a child's input error would discard it). The owner ends it with :meth:`close`."""
        global _server
        atexit.unregister(self.stop)
        if self._pid_file is not None:
            atexit.unregister(self._pid_file.unlink)
        if _server is self:
            _server = None

    def close(self) -> None:
        """Stop a detached server and remove its registration."""
        self.stop()
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)

    def stop(self, hard: bool = False) -> None:
        """SIGTERM and up to 5 s for it to finish (as Prefect stops its own), then SIGKILL. ``hard``: SIGKILL at
        once, for a server no flow has used yet (an input error found after it was started)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if hard:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_server: EphemeralServer | None = None


def start() -> EphemeralServer | None:
    """Start the temporary server (once per process) and point Prefect's client at it; None when Prefect will
    use a real server, or manage its own because it is already imported."""
    global _server
    if _server is not None:
        return _server
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    _server = EphemeralServer()
    os.environ["PREFECT_API_URL"] = _server.api_url
    return _server


def discard() -> None:
    """An input error was found before any flow ran: kill the unused server at once and forget its URL."""
    global _server
    if _server is not None:
        _server.stop(hard=True)
        if os.environ.get("PREFECT_API_URL") == _server.api_url:
            del os.environ["PREFECT_API_URL"]
        _server = None
