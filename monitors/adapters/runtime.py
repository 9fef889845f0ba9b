"""Process set-up at an entry point (CLI, deployment): where the local stores live, telemetry off.

Nothing here runs at import. :func:`prepare` is called once, before prefect is imported, because Prefect
reads ``PREFECT_HOME`` and its API URL when it loads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from monitors.config import Settings
from monitors.core.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    #: The MLflow tracking URI as MLflow needs it. It may hold a password (``http://user:PASS@host``), so it
    #: prints and serialises (Prefect flow-run parameters, logs) as '**********'; show :attr:`tracking_uri`.
    tracking: SecretStr
    artifact_root: str | None
    prefect_api_url: str | None  # None: Prefect's ephemeral API

    @property
    def tracking_uri(self) -> str:
        """The tracking URI without credentials: what may be printed or logged."""
        from monitors.adapters.delivery import scrub

        return scrub(self.tracking.get_secret_value())

    @property
    def prefect_mode(self) -> str:
        return self.prefect_api_url or "ephemeral (no server; its database is under the state directory)"


def prepare(settings: Settings, *, quiet_prefect: bool = True) -> Runtime:
    """Create the state directory and point MLflow and Prefect at it unless real servers are configured."""
    state = settings.state_path
    try:
        state.mkdir(parents=True, exist_ok=True)
        if not state.is_dir():  # a symlink to a file
            raise NotADirectoryError(f"not a directory: {state}")
    except OSError as exc:
        raise ConfigError(f"state directory {state} (--state-dir or state_dir) cannot be used: "
                          f"{exc.strerror or exc}; point it at a folder collapse-monitor may create and write") from None
    tracking = settings.mlflow_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow writes "View run ... at: URL" to stdout when a run ends on a tracking server: that would break
    # the one-JSON-object contract of --json (and is noise in a scheduled job).
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    api = settings.prefect_api()
    if api:
        os.environ["PREFECT_API_URL"] = api
    else:
        home = state / "prefect"
        home.mkdir(exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(home))
        os.environ.setdefault("PREFECT_MEMO_STORE_PATH", str(home / "memo_store.toml"))
        # The 20 s default times out on a busy 2-core machine (PLATFORM.md).
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    _remove_temp_dirs_of_dead_processes()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if quiet_prefect:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by mlflow when it is imported
        for name in ("great_expectations", "mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return Runtime(tracking=SecretStr(tracking), artifact_root=settings.mlflow_artifact_root(), prefect_api_url=api)


_OURS = re.compile(r"^cm-(?:gx-docs|run)-(\d+)-")


def _remove_temp_dirs_of_dead_processes() -> None:
    """Temp dirs (``cm-run-<pid>-*``, ``cm-gx-docs-<pid>-*``) of a run that was killed: no one else removes them."""
    for path in Path(tempfile.gettempdir()).glob("cm-*-*"):
        m = _OURS.match(path.name)
        if not m or not path.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError, ValueError):
            pass  # alive (another user's), or not a pid


def mlflow_client(runtime: Runtime):
    from mlflow import MlflowClient

    uri = runtime.tracking.get_secret_value()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
