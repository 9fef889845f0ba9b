"""MLflow model-registry adapter for the synthetic-text detector.

The detector is stored in MLflow's skops format (loading it does not unpickle arbitrary code) and its
held-out scores travel with it (``validation/scores.json`` in its run), so a check knows how the detector
behaves on labelled text it was not trained on. Its figures (ROC AUC, TPR, FPR, calibration error, the chosen
quantifier) and training-data hashes are tags of the model version.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitors.core.detector import LM_COLUMNS, TrainedDetector, detector_input
from monitors.core.errors import UserError
from monitors.core.modeluri import FORM, ModelUri, parse_model_uri
from monitors.core.quantify import Validation
from monitors.core.schema import Tag, RunKind

VALIDATION_ARTIFACT = "validation/scores.json"
#: Modules whose classes detectors registered before monitors/ was split into core/adapters/demo name in their
#: skops files (e.g. monitors.detector.Stylometry): loading one imports the class from its new home.
LEGACY_MODULES = {"monitors.detector": "monitors.core.detector"}


def alias_legacy_modules() -> None:
    for old, new in LEGACY_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))


class DetectorUnavailable(UserError):
    """No usable detector at the configured URI (none registered yet, or it lacks its validation scores)."""


@dataclass(frozen=True)
class NoDetector:
    """Why a check has no registered detector (it then estimates the share from the human reference)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class LoadedDetector:
    uri: str
    version: str
    model: object  # a fitted, calibrated sklearn classifier over raw texts (and LM features, see lm_tag)
    validation: Validation
    method: str
    #: the LM scorer whose features the model takes next to the texts (monitors.adapters.lmscore.LMScorer.tag); ""
    #: for a detector on n-grams alone
    lm_tag: str = ""

    def scores(self, texts: list[str], lm_features: np.ndarray | None = None) -> np.ndarray:
        """Scores of the texts; a detector with ``lm_tag`` needs their LM features (nan rows when there are
        none: the model then imputes its training medians)."""
        if not texts:
            return np.empty(0)
        if self.lm_tag and lm_features is None:
            lm_features = np.full((len(texts), len(LM_COLUMNS)), np.nan)
        return self.model.predict_proba(detector_input(texts, lm_features if self.lm_tag else None))[:, 1]

    @property
    def label(self) -> str:
        return f"{self.uri} (version {self.version})"


def register_detector(client, detector: TrainedDetector, *, experiment_id: str, name: str,
                      alias: str | None, data: dict[str, str], artifacts: dict[str, Path] | None = None) -> str:
    """Log the detector as a skops model with its figures and validation scores, register it; returns the version.

    ``data`` describes the training data (hashes, counts, where it came from) and becomes run params and
    version tags. ``artifacts`` (run path -> local file) are logged too, e.g. quarantine entries of the input.
    """
    import mlflow
    import mlflow.sklearn

    example = detector_input(["A short example of a document."],
                             np.array([[3.2, 3.0, 1.2, 0.5, 1.07]]) if detector.lm_tag else None)
    v = detector.validation
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"detector {name}",
                          tags={Tag.KIND: RunKind.DETECTOR}) as run:
        mlflow.log_metrics(detector.metrics())
        mlflow.log_params({f"data.{k}": str(val)[:500] for k, val in data.items()} | {"quantifier": detector.method})
        mlflow.log_dict({"scores": [round(float(x), 6) for x in v.scores], "labels": v.labels.astype(int).tolist(),
                         "threshold": v.threshold, "train_prior": v.train_prior, "method": detector.method,
                         "lm_features": detector.lm_tag},
                        VALIDATION_ARTIFACT)
        for path, local in (artifacts or {}).items():
            folder = str(Path(path).parent)
            mlflow.log_artifact(str(local), None if folder == "." else folder)
        info = mlflow.sklearn.log_model(
            detector.model, name="detector", serialization_format="skops",
            skops_trusted_types=_trusted_types(detector.model),
            input_example=example, pip_requirements=["scikit-learn", "skops"],
        )
    figures = {"collapse.run_id": run.info.run_id, "collapse.quantifier": detector.method,
               **{f"collapse.{k}": f"{val:.4g}" for k, val in detector.metrics().items()
                  if k in ("roc_auc", "tpr", "fpr", "ece", "threshold")},
               **{f"collapse.data.{k}": str(val)[:500] for k, val in data.items()},
               "collapse.lm_features": detector.lm_tag or "none"}
    return register_version(client, info, name, figures, alias)


def register_version(client, info, name: str, tags: dict[str, str], alias: str | None) -> str:
    """Register a logged model (``info`` from ``log_model``) as a new version of ``name``; returns the version.

    What ``mlflow.register_model`` does, through the client: that one prints two lines per version on stderr
    ("Successfully registered model", "Created version"), 16 lines in the demo.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = str(client.create_model_version(name, source=info.model_uri, run_id=info.run_id, tags=tags,
                                              model_id=info.model_id).version)
    linked = json.loads(client.get_logged_model(info.model_id).tags.get("mlflow.modelVersions") or "[]")
    client.set_logged_model_tags(info.model_id, {"mlflow.modelVersions": json.dumps(
        linked + [{"name": name, "version": version}])})  # the UI's link from the logged model to its versions
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def _trusted_types(model) -> list[str]:
    """The types skops will not load unless told to: scikit-learn's, numpy's and our own Stylometry."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def model_name(uri: str) -> str:
    """The registered model's name in a models:/NAME@ALIAS or models:/NAME/VERSION URI."""
    return _parse(uri).name


def _parse(uri: str) -> ModelUri:
    parsed = parse_model_uri(uri)
    if parsed is None:
        raise DetectorUnavailable(f"detector.model_uri {uri!r} is not of the form {FORM}")
    return parsed


def load_detector(client, uri: str) -> LoadedDetector:
    """Load a registered detector and its validation scores, or raise :class:`DetectorUnavailable`."""
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    m = _parse(uri)
    try:
        if m.alias:
            mv = client.get_model_version_by_alias(m.name, m.alias)
        else:
            mv = client.get_model_version(m.name, m.version)
    except MlflowException:
        raise DetectorUnavailable(
            f"no detector is registered at {uri}; train one with `collapse-monitor detector train --human H "
            f"--synthetic S --alias production`, or point detector.model_uri (COLLAPSE_MONITOR_DETECTOR__MODEL_URI) "
            f"at a registered one, e.g. models:/collapse-demo-detector@production after `collapse-monitor demo`"
        ) from None
    try:
        raw = json.loads(Path(client.download_artifacts(mv.run_id, VALIDATION_ARTIFACT)).read_text())
        val = Validation(np.asarray(raw["scores"]), np.asarray(raw["labels"]), float(raw["threshold"]),
                         float(raw["train_prior"]))
    except (MlflowException, OSError, KeyError, ValueError) as exc:
        raise DetectorUnavailable(f"detector {uri} (version {mv.version}) has no usable {VALIDATION_ARTIFACT} in "
                                  f"run {mv.run_id} ({exc}); retrain it with `collapse-monitor detector train`") from None
    alias_legacy_modules()
    model = mlflow.sklearn.load_model(f"models:/{m.name}/{mv.version}")
    return LoadedDetector(uri=uri, version=str(mv.version), model=model, validation=val, method=str(raw["method"]),
                          lm_tag=str(raw.get("lm_features") or ""))  # older detectors: n-grams alone
