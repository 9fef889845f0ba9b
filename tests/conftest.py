"""Isolation for every test: no test touches the user's real MLflow store, Prefect home or settings.

PREFECT_HOME is set once per session, before prefect is imported, because Prefect's ephemeral server
(started in-process by the first flow call) keeps its database there for the whole session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SESSION_HOME = tempfile.mkdtemp(prefix="cm-test-prefect-")


def pytest_configure(config):
    for key in list(os.environ):
        if key.startswith(("COLLAPSE_MONITOR_", "PREFECT_", "MLFLOW_")):
            del os.environ[key]
    os.environ.update({
        "PREFECT_HOME": _SESSION_HOME,
        "PREFECT_MEMO_STORE_PATH": os.path.join(_SESSION_HOME, "memo_store.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        # Prefect's console handler keeps the stderr of the moment its logging is set up; under pytest that is a
        # capture stream pytest later closes ('--- Logging error --- I/O operation on closed file' when Prefect
        # logs afterwards, e.g. while its server stops at exit). The process's own stderr (fd 2, which pytest
        # still captures per test) lives as long as the process.
        "PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM": "ext://sys.__stderr__",
        "PREFECT_LOGGING_LEVEL": "WARNING",  # as the CLI sets it: no 'Stopping temporary server' after the summary
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        # The local LM costs minutes of CPU per reference; tests of other features run without it, and the
        # LM's own tests (tests/integration/test_lm_share.py) turn it on.
        "COLLAPSE_MONITOR_LM__ENABLED": "false",
    })


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder, and whatever it sets in os.environ is undone afterwards."""
    # A module-scoped fixture that runs the CLI must restore os.environ itself (the CLI points MLflow at its
    # state dir there): otherwise every later test silently reads that fixture's store.
    assert "MLFLOW_TRACKING_URI" not in os.environ, "a fixture left MLFLOW_TRACKING_URI set: restore os.environ"
    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def austen():
    from monitors.demo.corpus import austen_paragraphs

    return austen_paragraphs()


def write_jsonl(path: Path, rows) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST; ``fail_next(n)`` answers the next n with 500."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []  # accepted requests only, in order
        self.attempts = 0
        self._fail = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.attempts += 1
                    failing = outer._fail > 0
                    if failing:
                        outer._fail -= 1
                    else:
                        outer.received.append({"path": self.path, "json": json.loads(body or b"null")})
                self.send_response(500 if failing else 202)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, n: int) -> None:
        self._fail = n

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
