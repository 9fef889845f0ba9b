"""Names collapse-monitor writes into MLflow: run kinds, tag keys and artifact paths, in one place.

Every run carries ``collapse.kind`` (a :class:`RunKind`) and ``collapse.dataset`` (its scope: a dataset, or
``models/<name>`` for a model's probes). Tag keys and artifact paths are part of the stored format: a new
version must keep reading the old ones, so they change only with a migration.
"""

from __future__ import annotations

from enum import StrEnum

EXPERIMENT_PREFIX = "collapse-monitor/"
MODEL_SCOPE = "models/"


def experiment_name(dataset: str) -> str:
    """``collapse-monitor/<dataset>``; a model's probes live in scope ``models/<name>`` (a dataset name never
    holds a '/', so the two cannot clash)."""
    return EXPERIMENT_PREFIX + dataset


def model_scope(name: str) -> str:
    return MODEL_SCOPE + name


def scope_kind(scope: str) -> str:
    """The kind of run that carries a scope's alert state: ``probe`` for a model, ``check`` for a dataset."""
    return "probe" if scope.startswith(MODEL_SCOPE) else "check"


class RunKind(StrEnum):
    REFERENCE = "reference"
    CHECK = "check"
    PROBE = "probe"
    PROBE_BASELINE = "probe-baseline"
    REPORT = "report"
    DETECTOR = "detector"
    FILTER = "filter"


class Tag:
    """Run, experiment and model-version tag keys."""

    KIND = "collapse.kind"
    DATASET = "collapse.dataset"
    BATCH = "collapse.batch"
    SEQUENCE = "collapse.sequence"
    SPOOL_ID = "collapse.spool_id"
    SOURCE = "collapse.source"
    NOTE = "mlflow.note.content"  # MLflow's run description
    # a check
    CONTENT = "collapse.content_sha256"  # the content a check counted (landing zone, re-checks)
    RECHECK_OF = "collapse.recheck_of"  # a re-check of content that run counted: not counted again
    REFERENCE_RUN = "collapse.reference_run"
    DETECTOR = "collapse.detector"
    DRIFT_REPORT_DELETED = "collapse.drift_report_deleted"
    # every run that evaluates rules
    ALERT = "collapse.alert."  # + rule name: that rule's status in this run
    ALERTS_FIRING = "collapse.alerts.firing"
    MAX_SEVERITY = "collapse.alerts.max_severity"
    NOTIFICATIONS = "collapse.notifications"
    DELIVERY_SENT = "collapse.delivery.sent"
    DELIVERY_QUEUED = "collapse.delivery.queued"
    # experiment tags
    SILENCE = "collapse.silence."  # + fingerprint: a silence (JSON)
    # a probe run and registry model versions
    MODEL = "collapse.model"
    MODEL_VERSION = "collapse.model_version"
    MODEL_URI = "collapse.model_uri"
    MODEL_KIND = "collapse.model_kind"
    PROBE_SET = "collapse.probe_set"
    MEMORIZATION_SET = "collapse.memorization_set"  # sha256 of the memorization probe's inputs and settings
    ROLE = "collapse.role"
    LINEAGE_DEPTH = "collapse.lineage.depth"
    COMPARED_WITH = "collapse.compared_with"
    TEACHER = "collapse.teacher"
    SYNTHETIC_FRACTION = "collapse.synthetic_fraction"


def alert_tag(rule: str) -> str:
    return Tag.ALERT + rule


def is_alert_tag(key: str) -> bool:
    """``collapse.alert.<rule>`` (not the ``collapse.alerts.*`` summary tags)."""
    return key.startswith(Tag.ALERT)


class Artifact:
    """Artifact paths inside a run."""

    SUMMARY = "summary.json"  # the --json contract, with the run's own id
    ALERTS = "alerts.json"  # every alert of the run, one shape: rules.Alert.to_dict()
    ALERT_STATE = "alerts/state.json"  # the alert state machine's state after this run
    NOTIFICATIONS = "alerts/notifications.json"  # {"notify": [...], "silenced": [...]}
    DELIVERY = "alerts/delivery.json"
    QUARANTINE = "quarantine.jsonl"
    RECORD_QUALITY = "record_quality/results.json"
    DATA_DOCS = "record_quality/data_docs.html"
    FILTER_SAMPLE = "filter/flagged_sample.html"  # flagged documents, escaped
    FILTER_SAMPLE_JSON = "filter/flagged_sample.json"
    DRIFT = "drift"  # folder: Evidently's report; `collapse-monitor gc` deletes old ones
    REFERENCE_PROFILE = "reference/profile.json"
    REFERENCE_ARRAYS = "reference/embedding.npz"
    PROBE_OUTPUTS = "probes/outputs.json"
    MEMORIZATION_OUTPUTS = "probes/memorization.json"  # per record and canary: what the model gave back
    REPORT = "report"  # folder
