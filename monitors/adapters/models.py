"""MLflow model-registry adapter for the models under test (the probes' side; the detector has its own).

A model is named by ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``. What it is:

* **classifier** (the default): anything whose ``predict`` takes texts and returns labels. A model with the
  ``sklearn`` flavour is loaded as such, so its ``predict_proba`` gives the confidence for calibration.
* **generator**: an MLflow pyfunc over a DataFrame with a ``text`` column and a ``task`` parameter:
  ``task=generate`` (default) returns one continuation per prompt; ``task=loglik``, where it can, returns a
  DataFrame with ``loglik`` (natural log, summed over the text's tokens) and ``tokens`` per text.
  ``task=generate`` takes ``seed`` and, optionally, ``greedy`` (bool: always the most likely next token, as
  the memorization probe needs) and ``max_words`` (int: how many tokens to continue with). Both are sent only
  when asked for, so a model whose signature does not declare them keeps working (MLflow drops parameters a
  signature does not declare, with a warning): :meth:`LoadedModel.declares` tells whether it does, and the
  memorization probe notes when its continuations may be sampled rather than greedy.

The kind comes from ``--kind``, else the version's (or the registered model's) tag ``collapse.model_kind``.
Lineage tags: ``collapse.teacher`` (the model whose outputs trained this one, as ``models:/NAME/VERSION``)
and ``collapse.synthetic_fraction`` (the model-made share of its training data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitors.core.errors import UserError
from monitors.core.modeluri import FORM, parse_model_uri
from monitors.core.probes import KINDS
from monitors.core.schema import Tag

KIND_TAG = Tag.MODEL_KIND


class ModelUnavailable(UserError):
    """The URI names no loadable model version (a broken alias, a deleted version, a bad URI)."""


class ModelFailed(UserError):
    """The model raised, or returned something unusable, when asked to predict."""


@dataclass(frozen=True)
class ModelRef:
    uri: str  # as asked for
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)  # the registered model's tags, overlaid by the version's

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    parsed = parse_model_uri(uri)
    if parsed is None:
        raise ModelUnavailable(f"model {uri!r} is not of the form {FORM}")
    return parsed.name, parsed.alias, parsed.version


def resolve(client, uri: str) -> ModelRef:
    """The model version a URI names now, with its tags; a broken alias names the aliases that exist."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_uri(uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise ModelUnavailable(f"model {uri}: no registered model named {name!r} in the MLflow registry") from None
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        aliases = sorted(getattr(registered, "aliases", {}) or {})
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ModelUnavailable(f"model {uri}: {name!r} has no {what} (aliases: "
                               f"{', '.join('@' + a for a in aliases) or 'none'}); set one with "
                               f"MlflowClient().set_registered_model_alias({name!r}, ALIAS, VERSION)") from None
    tags = {**(registered.tags or {}), **(mv.tags or {})}
    return ModelRef(uri, name, str(mv.version), mv.run_id, tags)


def previous_version(client, name: str, version: str) -> str | None:
    """The newest registered version older than ``version`` (None for the first)."""
    older = [int(mv.version) for mv in client.search_model_versions(f"name = '{name}'") if int(mv.version) < int(version)]
    return str(max(older)) if older else None


def tags_of(client, uri: str) -> dict[str, str] | None:
    """A teacher's tags (for the lineage walk), or None when the registry does not know it."""
    from mlflow.exceptions import MlflowException

    try:
        return resolve(client, uri).tags
    except (ModelUnavailable, MlflowException):
        return None


def kind_of(ref: ModelRef, override: str | None) -> str:
    kind = override or ref.tags.get(KIND_TAG) or "classifier"
    if kind not in KINDS:
        raise ModelUnavailable(f"model {ref.label}: kind {kind!r} (tag {KIND_TAG} or --kind) is not one of {KINDS}")
    return kind


def _texts(model_output: Any, n: int, what: str) -> list[str]:
    import pandas as pd

    if isinstance(model_output, pd.DataFrame):
        model_output = model_output.iloc[:, 0]
    out = list(model_output)
    if len(out) != n:
        raise ModelFailed(f"{what} returned {len(out)} results for {n} inputs")
    return [str(x) for x in out]


@dataclass
class LoadedModel:
    ref: ModelRef
    kind: str
    impl: Any
    sklearn: bool

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the model's own failure, reported as such
            raise ModelFailed(f"model {self.ref.uri} ({self.ref.label}) raised {type(exc).__name__} on {what}: "
                              f"{str(exc)[:300]}") from exc

    def classify(self, texts: list[str]) -> tuple[list[str], np.ndarray | None]:
        """Predicted labels and, where the model gives probabilities, the top-label confidence."""
        x = np.asarray(texts, dtype=object)
        if self.sklearn and hasattr(self.impl, "predict_proba"):
            proba = np.asarray(self._call("predict_proba", self.impl.predict_proba, x), dtype=float)
            if proba.shape != (len(texts), len(self.impl.classes_)):
                raise ModelFailed(f"model {self.ref.label}: predict_proba returned shape {proba.shape}")
            labels = [str(c) for c in np.asarray(self.impl.classes_)[proba.argmax(axis=1)]]
            return labels, proba.max(axis=1)
        if self.sklearn:
            return _texts(self._call("predict", self.impl.predict, x), len(texts), "predict"), None
        import pandas as pd

        out = self._call("predict", self.impl.predict, pd.DataFrame({"text": texts}))
        return _texts(out, len(texts), f"model {self.ref.label}'s predict"), None

    def declares(self, param: str) -> bool:
        """Whether the model's signature declares an inference parameter (e.g. ``greedy``)."""
        try:
            schema = self.impl.metadata.get_params_schema()
        except Exception:  # noqa: BLE001 - no metadata, no signature
            return False
        return schema is not None and any(p.name == param for p in schema.params)

    def generate(self, prompts: list[str], seed: int = 0, greedy: bool | None = None,
                 max_words: int | None = None) -> list[str]:
        import pandas as pd

        params: dict[str, Any] = {"task": "generate", "seed": seed}
        if greedy is not None:
            params["greedy"] = bool(greedy)
        if max_words is not None:
            params["max_words"] = int(max_words)
        out = self._call("predict (task=generate)", self.impl.predict, pd.DataFrame({"text": prompts}),
                         params=params)
        return _texts(out, len(prompts), f"model {self.ref.label}'s predict (task=generate)")

    def loglik(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray] | str:
        """Log-likelihoods and token counts, or why there are none (the model cannot score text)."""
        import pandas as pd

        try:
            out = self.impl.predict(pd.DataFrame({"text": texts}), params={"task": "loglik"})
            ll, tok = np.asarray(out["loglik"], dtype=float), np.asarray(out["tokens"], dtype=float)
        except Exception as exc:  # noqa: BLE001 - scoring is optional for a generator
            return f"model {self.ref.label} cannot score text (task=loglik: {type(exc).__name__}: {str(exc)[:200]})"
        if len(ll) != len(texts) or len(tok) != len(texts) or not np.isfinite(ll).all():
            return f"model {self.ref.label} returned unusable log-likelihoods (task=loglik)"
        return ll, tok


def load(ref: ModelRef, kind: str) -> LoadedModel:
    """Load a resolved version: sklearn-flavoured models natively, everything else as a pyfunc."""
    import mlflow.pyfunc

    try:
        from mlflow.models import get_model_info

        flavors = get_model_info(ref.version_uri).flavors
        if kind == "classifier" and "sklearn" in flavors:
            import mlflow.sklearn

            return LoadedModel(ref, kind, mlflow.sklearn.load_model(ref.version_uri), True)
        return LoadedModel(ref, kind, mlflow.pyfunc.load_model(ref.version_uri), False)
    except Exception as exc:  # noqa: BLE001 - missing artifacts, a flavour that needs absent packages, ...
        raise ModelUnavailable(f"model {ref.uri} ({ref.label}) cannot be loaded: {type(exc).__name__}: "
                               f"{str(exc)[:300]}") from exc
