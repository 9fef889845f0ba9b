"""MLflow model-registry adapter for the synthetic-text detector.

The detector is stored in MLflow's skops format (loading it does not unpickle arbitrary code) and its
held-out figures travel with the model version as tags, so a check knows the error rates to correct for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from monitors.detector import TrainedDetector
from monitors.errors import UserError
from monitors.quantify import DetectorRates

RATE_TAGS = ("collapse.tpr", "collapse.fpr", "collapse.val_positives", "collapse.val_negatives", "collapse.threshold")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class DetectorUnavailable(UserError):
    """No usable detector at the configured URI (none registered yet, or it lacks held-out rates)."""


@dataclass(frozen=True)
class LoadedDetector:
    uri: str
    version: str
    model: object  # a fitted sklearn pipeline
    rates: DetectorRates
    threshold: float

    def flag(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(np.asarray(texts, dtype=object))[:, 1] >= self.threshold

    @property
    def label(self) -> str:
        return f"{self.uri} (version {self.version})"


def register_detector(client, detector: TrainedDetector, *, experiment_id: str, name: str,
                      alias: str | None, data_hashes: dict[str, str]) -> str:
    """Log the pipeline as a skops model in a new run, register it, tag its rates; returns the version."""
    import mlflow
    import mlflow.sklearn

    example = np.array(["A short example of a document."], dtype=object)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"detector {name}",
                          tags={"collapse.kind": "detector"}) as run:
        mlflow.log_metrics(detector.metrics())
        mlflow.log_params({f"data.{k}": v for k, v in data_hashes.items()})
        info = mlflow.sklearn.log_model(
            detector.pipeline, name="detector", serialization_format="skops",
            skops_trusted_types=_trusted_types(detector.pipeline),
            input_example=example, pip_requirements=["scikit-learn", "skops"],
        )
    version = mlflow.register_model(info.model_uri, name, tags={"collapse.run_id": run.info.run_id}).version
    r = detector.rates
    for key, value in zip(RATE_TAGS, (r.tpr, r.fpr, r.positives, r.negatives, detector.threshold)):
        client.set_model_version_tag(name, version, key, str(value))
    client.set_model_version_tag(name, version, "collapse.roc_auc", str(detector.roc_auc))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def _trusted_types(pipeline) -> list[str]:
    """The types skops will not load unless told to; ours are scikit-learn's and numpy's own."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))


def load_detector(client, uri: str) -> LoadedDetector:
    """Load a registered detector and its held-out rates, or raise :class:`DetectorUnavailable`."""
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    m = _URI.match(uri)
    if not m:
        raise DetectorUnavailable(f"detector.model_uri {uri!r} is not of the form models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if m["alias"]:
            mv = client.get_model_version_by_alias(m["name"], m["alias"])
        else:
            mv = client.get_model_version(m["name"], m["version"])
    except MlflowException:
        raise DetectorUnavailable(
            f"no detector is registered at {uri}; point detector.model_uri "
            f"(COLLAPSE_MONITOR_DETECTOR__MODEL_URI) at a registered one, e.g. models:/collapse-demo-detector@production "
            f"after `collapse-monitor demo`"
        ) from None
    missing = [t for t in RATE_TAGS if t not in mv.tags]
    if missing:
        raise DetectorUnavailable(f"detector {uri} (version {mv.version}) lacks its held-out rates (tags {missing}); retrain it")
    t = mv.tags
    rates = DetectorRates(float(t["collapse.tpr"]), float(t["collapse.fpr"]),
                          int(t["collapse.val_positives"]), int(t["collapse.val_negatives"]))
    model = mlflow.sklearn.load_model(f"models:/{m['name']}/{mv.version}")
    return LoadedDetector(uri=uri, version=str(mv.version), model=model, rates=rates,
                          threshold=float(t["collapse.threshold"]))
